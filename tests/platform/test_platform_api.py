"""The platform's REST API over HTTP: declarative objects, versions, rules, traffic, events, auth."""

from __future__ import annotations

import json
import threading

import pytest
from platform_harness import PlatformProcess, deployment, service

from inferstack.platform.secretbox import SecretBox
from inferstack.targets.local.client import PlatformClient, PlatformError


def test_create_get_stale_update_dry_run_delete_over_http(platform: PlatformProcess) -> None:
    with platform.http() as http:
        created = http.put("/v1/services/flow", json=service("flow", description="one"))
        assert created.status_code == 201
        body = created.json()
        assert body["kind"] == "Service"
        assert body["metadata"]["generation"] == 1 and body["metadata"]["uid"]
        assert body["spec"]["description"] == "one"
        assert body["status"]["observed_generation"] == 0
        assert {c["type"] for c in body["status"]["conditions"]} == {"Ready", "Progressing", "Degraded"}
        assert body["status"]["converted"] is False and body["status"]["gateway_url"] is None
        version = body["metadata"]["resource_version"]

        got = http.get("/v1/services/flow")
        assert got.status_code == 200 and got.json() == body
        assert got.headers["etag"] == f'"{version}"'

        updated = http.put("/v1/services/flow", json=service("flow", description="two"),
                           headers={"If-Match": version})
        assert updated.status_code == 200
        assert updated.json()["metadata"]["generation"] == 2
        assert updated.json()["metadata"]["uid"] == body["metadata"]["uid"]

        stale = http.put("/v1/services/flow", json=service("flow", description="three"),
                         headers={"If-Match": version})
        assert stale.status_code == 409 and stale.json()["error"] == "conflict"
        assert http.get("/v1/services/flow").json()["spec"]["description"] == "two"

        dry = http.put("/v1/services/flow?dry_run=true", json=service("flow", description="four"))
        assert dry.status_code == 200
        assert dry.json()["dry_run"] is True
        change = dry.json()["plan"]["changes"][0]
        assert (change["kind"], change["id"], change["action"]) == ("service", "flow", "update")
        assert "description" in dry.json()["plan_text"]
        after = http.get("/v1/services/flow").json()
        assert after["spec"]["description"] == "two"
        assert after["metadata"] == updated.json()["metadata"]

        gone = http.delete("/v1/services/flow")
        assert gone.status_code == 200
        assert {c["object"] for c in gone.json()["changed"]} == {"services/flow", "services/flow/traffic"}
        assert http.get("/v1/services/flow").status_code == 404


def test_every_route_but_healthz_needs_the_bearer_token(platform: PlatformProcess) -> None:
    with platform.http(token=None) as anonymous, platform.http(token="wrong") as wrong:
        assert anonymous.get("/healthz").status_code == 200
        for method, path in [("GET", "/v1/services"), ("GET", "/openapi.json"), ("PUT", "/v1/services/x"),
                             ("POST", "/v1/apply"), ("GET", "/v1/queues/q-prepaid-a"), ("GET", "/v1/events"),
                             ("GET", "/nowhere")]:
            for http in (anonymous, wrong):
                response = http.request(method, path, json={})
                assert response.status_code == 401, (method, path)
                assert response.json()["error"] == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"


def test_missing_objects_are_404(client: PlatformClient, platform: PlatformProcess) -> None:
    for call in (lambda: client.get_service("nope"), lambda: client.get_deployment("nope", "x"),
                 lambda: client.get_traffic("nope"), lambda: client.delete_service("nope"),
                 lambda: client.put_deployment("nope", "x", deployment("x")),
                 lambda: client.get_inventory("queues", "nope"), lambda: client.delete_inventory("vpcs", "nope")):
        with pytest.raises(PlatformError) as err:
            call()
        assert err.value.status_code == 404 and err.value.error == "not_found"
    client.put_service("has-no-dep", service("has-no-dep"))
    with pytest.raises(PlatformError) as err:
        client.get_deployment("has-no-dep", "x")
    assert err.value.status_code == 404
    with platform.http() as http:
        assert http.get("/v1/nowhere").status_code == 404
        assert http.post("/v1/services").status_code == 405


def test_openapi_lists_the_routes(platform: PlatformProcess) -> None:
    with platform.http() as http:
        doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, methods in {
        "/v1/services/{key}": {"get", "put", "delete"},
        "/v1/services/{key}/deployments/{dkey}": {"get", "put", "delete"},
        "/v1/services/{key}/traffic": {"get", "put"},
        "/v1/services/{key}/events": {"get"},
        "/v1/apply": {"post"},
        "/v1/queues/{name}": {"get", "put", "delete"},
        "/v1/resource-groups/{name}": {"get", "put", "delete"},
        "/healthz": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    put = paths["/v1/services/{key}/deployments/{dkey}"]["put"]
    assert {"200", "201", "401", "409", "422"} <= set(put["responses"])
    assert {p["name"] for p in put["parameters"]} >= {"key", "dkey", "dry_run", "If-Match"}
    assert "Deployment" in doc["components"]["schemas"]


def test_deployment_write_carrying_a_weight_is_rejected_with_field_unknown(client: PlatformClient) -> None:
    client.put_service("weighty", service("weighty"))
    with pytest.raises(PlatformError) as err:
        client.put_deployment("weighty", "stable", deployment("stable", weight=100))
    assert err.value.status_code == 422
    assert [(f["rule"], f["path"]) for f in err.value.findings] == \
        [("field.unknown", "services[0].deployments[0].weight")]
    assert "field.unknown" in str(err.value) and "services[0].deployments[0].weight" in str(err.value)


def test_a_new_deployment_starts_at_weight_0_and_appears_in_the_traffic_object(client: PlatformClient) -> None:
    client.put_service("newdep", service("newdep"))
    first = client.put_deployment("newdep", "stable", deployment("stable"))
    assert first["metadata"]["generation"] == 1
    assert client.get_traffic("newdep")["spec"]["weights"] == {"stable": 100}
    client.put_deployment("newdep", "canary", deployment("canary"))
    assert client.get_traffic("newdep")["spec"]["weights"] == {"stable": 100, "canary": 0}
    status = client.get_deployment("newdep", "canary")["status"]
    assert status["roles"] == {"main": {"desired": 1, "ready": 0, "updated": 0, "instances": []}}


def test_deleting_a_deployment_that_takes_traffic_is_409_until_traffic_moves(client: PlatformClient) -> None:
    client.put_service("shift", service("shift"))
    client.put_deployment("shift", "stable", deployment("stable"))
    client.put_deployment("shift", "canary", deployment("canary"))
    client.put_traffic("shift", {"weights": {"stable": 90, "canary": 10}})
    with pytest.raises(PlatformError) as err:
        client.delete_deployment("shift", "canary")
    assert err.value.status_code == 409 and "shift traffic away first" in err.value.message
    client.put_traffic("shift", {"weights": {"stable": 100}, "header_rules": [
        {"header": "x-canary", "value": "1", "deployment": "canary"}]})
    with pytest.raises(PlatformError) as err:
        client.delete_deployment("shift", "canary")
    assert "header rule 0" in err.value.message
    client.put_traffic("shift", {"weights": {"stable": 100}})
    result = client.delete_deployment("shift", "canary")
    assert result["changed"] == [{"object": "services/shift/deployments/canary", "action": "delete"}]
    assert [d["metadata"]["key"] for d in client.list_deployments("shift")] == ["stable"]


def test_deleting_a_service_takes_its_traffic_away_then_removes_its_deployments(client: PlatformClient) -> None:
    client.put_service("doomed", service("doomed"))
    client.put_deployment("doomed", "stable", deployment("stable"))
    client.put_deployment("doomed", "canary", deployment("canary"))
    result = client.delete_service("doomed")
    assert [c["object"] for c in result["changed"]] == [
        "services/doomed/traffic", "services/doomed/deployments/stable", "services/doomed/deployments/canary",
        "services/doomed"]
    for call in (lambda: client.get_traffic("doomed"), lambda: client.get_deployment("doomed", "stable")):
        with pytest.raises(PlatformError) as err:
            call()
        assert err.value.status_code == 404
    assert [e["action"] for e in client.events("doomed")][-4:] == ["delete"] * 4


def test_a_legacy_flat_service_is_stored_as_default_and_converted_flips_with_a_second_deployment(
        client: PlatformClient) -> None:
    flat = {"services": [{**service("legacy"), **{k: v for k, v in deployment("ignored").items() if k != "name"}}]}
    client.apply(flat)
    svc = client.get_service("legacy")
    assert svc["spec"]["legacy_form"] is True and svc["status"]["converted"] is False
    default = client.get_deployment("legacy", "default")
    assert default["spec"]["name"] == "Default" and default["metadata"]["generation"] == 1
    assert client.get_traffic("legacy")["spec"]["weights"] == {"default": 100}

    client.put_deployment("legacy", "canary", deployment("canary"))
    assert client.get_service("legacy")["status"]["converted"] is True
    redeployed = client.get_deployment("legacy", "default")
    assert redeployed["spec"] == default["spec"]
    assert redeployed["metadata"]["generation"] == 2  # the conversion redeploys Default
    actions = [(e["object"], e["action"]) for e in client.events("legacy")][-4:]
    assert ("services/legacy", "convert") in actions and ("services/legacy/deployments/default", "redeploy") in actions


def test_a_rule_violation_is_422_with_rule_ids_and_paths_and_stores_nothing(client: PlatformClient) -> None:
    client.put_service("zones", service("zones"))
    bad = deployment("stable", subnet="subnet-b", env=[{"name": "1BAD", "value": "x"}])
    with pytest.raises(PlatformError) as err:
        client.put_deployment("zones", "stable", bad)
    assert err.value.status_code == 422 and err.value.body["error"] == "invalid"
    found = {(f["rule"], f["path"]) for f in err.value.findings}
    assert ("env.name_format", "services[0].deployments[0].env[0].name") in found
    with pytest.raises(PlatformError) as err:
        client.put_deployment("zones", "stable", deployment("stable", subnet="subnet-b"))
    finding = err.value.findings[0]
    assert (finding["rule"], finding["path"], finding["value"]) == \
        ("subnet.zone_matches_queue", "services[0].deployments[0].subnet", "subnet-b")
    assert client.list_deployments("zones") == []


def test_a_prepaid_write_that_does_not_fit_names_queue_spec_needed_and_free(client: PlatformClient) -> None:
    client.put_service("fits", service("fits"))
    client.put_deployment("fits", "base", deployment("base", queue="q-prepaid-b", subnet="subnet-b", compute_spec="cpu-large",
                                                     replicas=2, rolling_update={"max_unavailable": 50,
                                                                                 "max_surge": 0}))
    client.put_service("greedy", service("greedy"))
    with pytest.raises(PlatformError) as err:
        client.put_deployment("greedy", "big", deployment("big", queue="q-prepaid-b", subnet="subnet-b", compute_spec="cpu-large",
                                                          replicas=3, rolling_update={"max_unavailable": 0,
                                                                                      "max_surge": 34}))
    assert err.value.status_code == 422
    (finding,) = err.value.findings
    assert finding["rule"] == "capacity.prepaid_fits"
    message = finding["message"]
    assert "'q-prepaid-b'" in message and "'cpu-large'" in message
    assert "needs 5 instance(s)" in message and "2 are free" in message


def test_secrets_are_masked_in_reads_kept_when_the_mask_is_sent_back_and_never_in_events(
        client: PlatformClient, platform: PlatformProcess) -> None:
    client.put_service("secret", service("secret"))
    dep = deployment("stable", env=[{"name": "API_KEY", "secret": "s3cr3t-value"}, {"name": "MODE", "value": "a"}])
    client.put_deployment("secret", "stable", dep)
    read = client.get_deployment("secret", "stable")
    assert read["spec"]["env"][0] == {"name": "API_KEY", "secret": "[secret]"}
    spec = {**read["spec"], "env": [read["spec"]["env"][0], {"name": "MODE", "value": "b"}]}
    after = client.put_deployment("secret", "stable", spec)
    assert after["metadata"]["generation"] == 2
    stored = [row for row in platform.dump()["objects"] if row[0] == "deployment" and row[1] == "secret"]
    # Kept (the mask sent back means "unchanged"), and sealed at rest: the row holds no plain text.
    assert "s3cr3t-value" not in stored[0][8] and "[secret]" not in stored[0][8]
    assert SecretBox(platform.data_dir).open(json.loads(stored[0][8]))["env"][0]["secret"] == "s3cr3t-value"
    events = client.events("secret")
    assert "s3cr3t-value" not in repr(events) and events[-1]["changes"] == ["env[1].value"]
    with pytest.raises(PlatformError) as err:
        client.put_deployment("secret", "other", {**dep, "name": "other", "env": [
            {"name": "NEW", "secret": "[secret]"}]})
    assert err.value.findings[0]["path"] == "services[0].deployments[0].env[0].secret"


def test_a_put_of_the_stored_spec_writes_nothing(client: PlatformClient) -> None:
    client.put_service("same", service("same"))
    first = client.put_deployment("same", "stable", deployment("stable"))
    count = len(client.events("same"))
    again = client.put_deployment("same", "stable", deployment("stable", priority=5, graceful_shutdown_s=30.0))
    assert again["metadata"] == first["metadata"]
    traffic = client.get_traffic("same")
    assert client.put_traffic("same", {"weights": {"stable": 100.0}})["metadata"] == traffic["metadata"]
    assert len(client.events("same")) == count


def test_moving_weights_90_10_to_50_50_is_one_traffic_write_never_passing_an_invalid_state(
        client: PlatformClient, platform: PlatformProcess) -> None:
    client.put_service("split", service("split"))
    client.put_deployment("split", "stable", deployment("stable"))
    client.put_deployment("split", "canary", deployment("canary"))
    client.put_traffic("split", {"weights": {"stable": 90, "canary": 10}})
    seen: list[dict] = []
    stop = threading.Event()

    def watch() -> None:
        with platform.client() as watcher:
            while not stop.is_set():
                seen.append(watcher.get_traffic("split")["spec"]["weights"])

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        before = len(client.events("split"))
        moved = client.put_traffic("split", {"weights": {"stable": 50, "canary": 50}})
        while len(seen) < 5:
            pass
    finally:
        stop.set()
        thread.join()
    events = client.events("split")[before:]
    assert [(e["object"], e["action"]) for e in events] == [("services/split/traffic", "update")]
    assert moved["spec"]["weights"] == {"stable": 50, "canary": 50}
    assert all(w in ({"stable": 90, "canary": 10}, {"stable": 50, "canary": 50}) for w in seen)
    with pytest.raises(PlatformError) as err:
        client.put_traffic("split", {"weights": {"stable": 50, "canary": 40}})
    assert err.value.findings[0]["rule"] == "traffic.weights_sum"


def test_inventory_objects_are_written_read_and_protected_while_referenced(client: PlatformClient) -> None:
    queue = {"resource_group": "rg-default", "zone": "zone-a", "billing": "postpaid", "capacity": {"cpu-small": 4}}
    created = client.put_inventory("queues", "q-extra", queue)
    assert created["kind"] == "Queue" and created["metadata"]["name"] == "q-extra"
    assert "q-extra" in [q["metadata"]["name"] for q in client.list_inventory("queues")]
    assert client.get_inventory("images", "inferstack/echo")["spec"]["command"][0] == "{python}"
    with pytest.raises(PlatformError) as err:
        client.put_inventory("queues", "q-bad", {**queue, "resource_group": "rg-missing"})
    assert err.value.findings[0]["rule"] == "queue.resource_group_exists"
    assert err.value.findings[0]["path"] == "inventory.queues[0].resource_group"
    client.put_service("onq", service("onq"))
    client.put_deployment("onq", "stable", deployment("stable", queue="q-extra"))
    with pytest.raises(PlatformError) as err:
        client.delete_inventory("queues", "q-extra")
    assert err.value.status_code == 422 and err.value.findings[0]["rule"] == "deployment.queue_exists"
    client.delete_service("onq")
    client.delete_inventory("queues", "q-extra")
    with pytest.raises(PlatformError):
        client.get_inventory("queues", "q-extra")


def test_events_say_what_changed_when_and_by_which_request(platform: PlatformProcess) -> None:
    with platform.http() as http:
        http.put("/v1/services/evt", json=service("evt"), headers={"X-Request-Id": "req-create"})
        http.put("/v1/services/evt", json=service("evt", ports=[8000, 9000]), headers={"X-Request-Id": "req-ports"})
        items = http.get("/v1/events", params={"object": "services/evt"}).json()["items"]
    assert [(e["action"], e["request_id"], e["generation"]) for e in items] == \
        [("create", "req-create", 1), ("update", "req-ports", 2)]
    assert items[1]["changes"] == ["ports"] and items[1]["time"].endswith("Z")
    assert items[0]["seq"] < items[1]["seq"]
