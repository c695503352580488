"""`If-None-Match: *`: a write that may only create. An object that exists answers 412 and is left exactly as it was
(what the Pulumi providers' `create` relies on so that it never takes over an object it did not make)."""

from __future__ import annotations

import pytest
from platform_harness import PlatformProcess, deployment, service

from inferstack.targets.local.client import PlatformClient, PlatformError


def _unchanged(before: dict, after: dict) -> bool:
    return before["spec"] == after["spec"] and before["metadata"] == after["metadata"]


def test_create_only_creates_what_does_not_exist(client: PlatformClient) -> None:
    created = client.put_service("fresh", service("fresh"), create_only=True)
    assert created["metadata"]["generation"] == 1
    dep = client.put_deployment("fresh", "stable", deployment("stable"), create_only=True)
    assert dep["metadata"]["generation"] == 1
    queue = client.put_inventory("queues", "q-fresh", {"resource_group": "rg-default", "zone": "zone-a",
                                                       "billing": "postpaid", "capacity": {"cpu-small": 2}},
                                 create_only=True)
    assert queue["metadata"]["name"] == "q-fresh"


def test_create_only_over_an_existing_object_is_412_and_changes_nothing(client: PlatformClient) -> None:
    client.put_service("taken", service("taken", description="made by hand"))
    client.put_deployment("taken", "stable", deployment("stable", replicas=2, env=[{"name": "MODE", "value": "x"}]))
    before = [client.get_service("taken"), client.get_deployment("taken", "stable"), client.get_traffic("taken"),
              client.get_inventory("security-groups", "sg-default")]
    events = len(client.events("taken"))
    attempts = [
        lambda: client.put_service("taken", service("taken"), create_only=True),
        lambda: client.put_deployment("taken", "stable", deployment("stable"), create_only=True),
        lambda: client.put_inventory("security-groups", "sg-default", {"vpc": "vpc-default"}, create_only=True),
        lambda: client.request("PUT", "/v1/services/taken/traffic", body={"weights": {"stable": 100}},
                               create_only=True),
        lambda: client.put_deployment("taken", "stable", deployment("stable"), create_only=True, dry_run=True),
    ]
    for attempt in attempts:
        with pytest.raises(PlatformError) as caught:
            attempt()
        assert caught.value.status_code == 412 and caught.value.error == "exists"
        assert "already exists" in caught.value.message and "nothing was written" in caught.value.message
        assert caught.value.body["uid"] and caught.value.body["resource_version"]
    after = [client.get_service("taken"), client.get_deployment("taken", "stable"), client.get_traffic("taken"),
             client.get_inventory("security-groups", "sg-default")]
    assert all(_unchanged(b, a) for b, a in zip(before, after))
    assert after[1]["spec"]["replicas"] == 2 and after[1]["spec"]["env"] == [{"name": "MODE", "value": "x"}]
    assert len(client.events("taken")) == events  # a refused write records nothing


def test_if_none_match_other_than_star_or_on_another_write_is_refused(platform: PlatformProcess) -> None:
    with platform.http() as http:
        answer = http.put("/v1/services/etag", json=service("etag"), headers={"If-None-Match": '"3"'})
        assert answer.status_code == 400 and "If-None-Match: *" in answer.json()["message"]
        assert http.get("/v1/services/etag").status_code == 404
        http.put("/v1/services/etag", json=service("etag"))
        answer = http.delete("/v1/services/etag", headers={"If-None-Match": "*"})
        assert answer.status_code == 400 and "with a PUT" in answer.json()["message"]
        assert http.get("/v1/services/etag").status_code == 200  # not deleted


def test_the_openapi_document_states_the_create_only_header(platform: PlatformProcess) -> None:
    with platform.http() as http:
        doc = http.get("/openapi.json").json()
    put = doc["paths"]["/v1/services/{key}/deployments/{dkey}"]["put"]
    assert any(p["name"] == "If-None-Match" for p in put["parameters"]) and "412" in put["responses"]
