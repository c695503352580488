"""`POST /v1/apply`: a whole stack file in one transaction, the plan it answers, and zero writes when unchanged."""

from __future__ import annotations

import copy

import pytest
from platform_harness import deployment, service

from inferstack.targets.local.client import PlatformClient, PlatformError


def _stack(key: str, canary_weight: float = 10) -> dict:
    return {
        "inventory": {"queues": [{"name": f"q-{key}", "resource_group": "rg-default", "zone": "zone-b",
                                  "billing": "prepaid", "capacity": {"cpu-small": 6}}]},
        "services": [{**service(key), "deployments": [
            {**deployment("stable", queue=f"q-{key}", subnet="subnet-b", replicas=2), "weight": 100 - canary_weight},
            {**deployment("canary", env=[{"name": "TOKEN", "secret": "hush"}]), "weight": canary_weight},
        ]}],
    }


def test_apply_writes_the_stack_and_a_second_apply_of_the_same_file_writes_nothing(client: PlatformClient) -> None:
    first = client.apply(_stack("twice"))
    assert first["writes"] == 5
    assert [c["object"] for c in first["changed"]] == [
        "queues/q-twice", "services/twice", "services/twice/deployments/stable",
        "services/twice/deployments/canary", "services/twice/traffic"]
    assert {c["action"] for c in first["plan"]["changes"]} == {"create"}
    assert client.get_traffic("twice")["spec"]["weights"] == {"stable": 90, "canary": 10}
    events = client.events("twice")
    inventory_events = client.events(object="queues/q-twice")

    second = client.apply(_stack("twice"))
    assert second["writes"] == 0 and second["changed"] == [] and second["plan"]["changes"] == []
    assert client.events("twice") == events
    assert client.events(object="queues/q-twice") == inventory_events
    assert "hush" not in repr(second) and "hush" not in repr(first)


def test_apply_changes_only_what_differs_and_moves_weights_in_one_traffic_write(client: PlatformClient) -> None:
    client.apply(_stack("diffs"))
    before = {d["metadata"]["key"]: d["metadata"] for d in client.list_deployments("diffs")}
    result = client.apply(_stack("diffs", canary_weight=50))
    assert result["changed"] == [{"object": "services/diffs/traffic", "action": "update"}]
    assert {d["metadata"]["key"]: d["metadata"] for d in client.list_deployments("diffs")} == before
    stack = _stack("diffs", canary_weight=50)
    del stack["services"][0]["deployments"][1]
    stack["services"][0]["deployments"][0]["weight"] = 100
    result = client.apply(stack)
    assert [(c["object"], c["action"]) for c in result["changed"]] == [
        ("services/diffs/traffic", "update"), ("services/diffs/deployments/canary", "delete")]


def test_apply_leaves_services_not_in_the_file_alone(client: PlatformClient) -> None:
    client.put_service("bystander", service("bystander"))
    client.put_deployment("bystander", "stable", deployment("stable"))
    events = client.events("bystander")
    client.apply({"services": [service("newcomer")]})
    assert client.events("bystander") == events
    assert client.get_service("newcomer")["spec"]["name"] == "newcomer"


def test_apply_dry_run_returns_the_plan_and_stores_nothing(client: PlatformClient) -> None:
    result = client.apply(_stack("dryrun"), dry_run=True)
    assert result["dry_run"] is True and result["writes"] == 0
    assert [c["id"] for c in result["plan"]["changes"]][:2] == ["queues/q-dryrun", "dryrun"]
    assert "create" in result["plan_text"]
    with pytest.raises(PlatformError) as err:
        client.get_service("dryrun")
    assert err.value.status_code == 404
    with pytest.raises(PlatformError):
        client.get_inventory("queues", "q-dryrun")


def test_apply_validates_the_whole_result_with_the_files_own_paths(client: PlatformClient) -> None:
    client.apply(_stack("holder"))  # holds 2 + 1 surge of q-holder's 6 cpu-small
    stack = _stack("holder")
    stack["services"].append({**service("other"), "deployments": [
        deployment("one", queue="q-holder", subnet="subnet-b", replicas=3),
        {**deployment("two"), "subnet": "subnet-b"}]})
    with pytest.raises(PlatformError) as err:
        client.apply(stack)
    found = {(f["rule"], f["path"]) for f in err.value.findings}
    assert ("subnet.zone_matches_queue", "services[1].deployments[1].subnet") in found
    # Admission judges what the write adds: the new deployment, not the unchanged one already holding capacity.
    assert ("capacity.prepaid_fits", "services[1].deployments[0].queue") in found
    assert ("capacity.prepaid_fits", "services[0].deployments[0].queue") not in found
    with pytest.raises(PlatformError) as err:
        client.apply({"services": [{"name": "Chat_One", "resource_group": "rg-default", "vpc": "vpc-default"}]})
    assert [(f["rule"], f["path"]) for f in err.value.findings] == [("service.key_required", "services[0]")]
    with pytest.raises(PlatformError) as err:
        client.apply({"services": [{**service("twins"), "traffic": {"weights": {"same": 100}},
                                    "deployments": [deployment("same"), deployment("same")]}]})
    assert ("deployment.key_unique", "services[0].deployments[1].key") in \
        {(f["rule"], f["path"]) for f in err.value.findings}
    with pytest.raises(PlatformError) as err:
        client.apply({"services": [{**service("typo"), "deploymnets": []}]})
    assert ("field.unknown", "services[0].deploymnets") in {(f["rule"], f["path"]) for f in err.value.findings}


def test_apply_may_add_inventory_that_references_stored_objects(client: PlatformClient) -> None:
    stack = {"inventory": {"subnets": [{"name": "subnet-extra", "vpc": "vpc-default", "zone": "zone-a"}]},
             "services": [{**service("extra"), "deployments": [deployment("stable", subnet="subnet-extra")]}]}
    assert client.apply(stack)["writes"] == 4
    assert client.get_inventory("subnets", "subnet-extra")["spec"]["zone"] == "zone-a"
    edited = copy.deepcopy(stack)
    edited["inventory"]["subnets"][0]["cidr"] = "10.0.9.0/24"
    assert client.apply(edited)["changed"] == [{"object": "subnets/subnet-extra", "action": "update"}]


def test_a_legacy_file_converted_to_the_list_form_redeploys_default_once(client: PlatformClient) -> None:
    inline = {k: v for k, v in deployment("x").items() if k != "name"}
    flat = {"services": [{**service("flat"), **inline}]}
    assert client.apply(flat)["writes"] == 3
    assert client.apply(flat)["writes"] == 0
    listed = {"services": [{**service("flat"), "deployments": [{**inline, "name": "Default", "key": "default"}]}]}
    assert client.apply(listed)["writes"] == 0  # the same service written the other way: no change
    listed["services"][0]["deployments"][0]["weight"] = 100
    listed["services"][0]["deployments"].append({**deployment("canary"), "weight": 0})
    result = client.apply(listed, dry_run=True)
    default = next(c for c in result["plan"]["changes"] if c["id"] == "flat/default")
    assert any("conversion" in reason for r in default["redeploy"] for reason in r["reasons"])
    result = client.apply(listed)
    assert {(c["object"], c["action"]) for c in result["changed"]} >= {
        ("services/flat/deployments/canary", "create"), ("services/flat/deployments/default", "redeploy"),
        ("services/flat", "convert")}
    assert client.get_service("flat")["status"]["converted"] is True
    assert client.get_deployment("flat", "default")["metadata"]["generation"] == 2
    assert client.apply(listed)["writes"] == 0
