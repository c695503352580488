"""The store and the in-process seams the reconciler builds on: status writes and the change hook."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from platform_harness import deployment, service

from inferstack.platform.api import create_app
from inferstack.platform.control import Platform
from inferstack.platform.objects import DEPLOYMENT, SERVICE, condition, get_condition, set_condition
from inferstack.platform.store import Store, changed_paths


def test_a_status_write_moves_the_resource_version_but_not_the_generation(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with store.transaction("t") as tx:
        tx.put(SERVICE, "chat", {"name": "chat"}, status={"converted": False})
        tx.put(DEPLOYMENT, "stable", {"name": "stable"}, parent="chat", status={"observed_generation": 0})
    before = store.get(DEPLOYMENT, "stable", "chat")
    ready = condition("Ready", True, "AllReady", "2/2 instances ready", observed_generation=1)
    after = store.write_status(DEPLOYMENT, "stable", {"observed_generation": 1, "conditions": [ready], "roles": {
        "main": {"desired": 2, "ready": 2, "updated": 2, "instances": [
            {"pid": 123, "start_time": 456, "port": 40001, "revision": 1}]}}}, parent="chat")
    assert after is not None
    assert after.generation == before.generation == 1
    assert after.resource_version > before.resource_version
    assert get_condition({"status": after.status}, "Ready")["status"] == "True"
    assert store.write_status(SERVICE, "chat", {"gateway_url": "http://127.0.0.1:1"}, event=None).status == \
        {"converted": False, "gateway_url": "http://127.0.0.1:1"}
    assert [e["action"] for e in store.events(service="chat")] == ["create", "create", "status"]
    unchanged = store.write_status(SERVICE, "chat", {"gateway_url": "http://127.0.0.1:1"})
    assert unchanged.resource_version == store.get(SERVICE, "chat").resource_version


def test_set_condition_keeps_the_transition_time_while_the_status_holds() -> None:
    first = condition("Ready", False, "Pending", at="t1")
    same = set_condition([first], condition("Ready", False, "StillPending", at="t2"))
    assert same[0]["last_transition_time"] == "t1" and same[0]["reason"] == "StillPending"
    flipped = set_condition(same, condition("Ready", True, "AllReady", at="t3"))
    assert flipped[0]["last_transition_time"] == "t3"


def test_changed_paths_name_leaves_never_values() -> None:
    old = {"replicas": 1, "env": [{"name": "K", "secret": "a"}], "ports": {"listen": 8080}}
    new = {"replicas": 2, "env": [{"name": "K", "secret": "b"}], "ports": {"listen": 8080, "call": [9000]}}
    assert changed_paths(old, new) == ["replicas", "env[0].secret", "ports.call"]


def test_subscribers_hear_of_every_committed_change_and_not_of_dry_runs_or_refusals(tmp_path: Path) -> None:
    platform = Platform(Store.open(tmp_path))
    heard: list[str] = []

    async def reconcile(key: str) -> None:
        heard.append(key)

    async def broken(key: str) -> None:
        raise RuntimeError("a controller's bug")

    platform.subscribe(broken)
    platform.subscribe(reconcile)
    async def writes() -> list[int]:
        transport = httpx.ASGITransport(app=create_app(platform, "t0k"))
        async with httpx.AsyncClient(transport=transport, base_url="http://platform",
                                     headers={"Authorization": "Bearer t0k"}) as http:
            return [(await http.put(path, json=body)).status_code for path, body in [
                ("/v1/services/a", service("a")),
                ("/v1/services/a/deployments/x?dry_run=true", deployment("x")),
                ("/v1/services/a/deployments/x", deployment("x", queue="nope")),
                ("/v1/services/a", service("a")),  # no change
                ("/v1/services/a/deployments/x", deployment("x")),
                ("/v1/compute-specs/cpu-small", {"cpu": 1, "memory_gib": 4, "machine": {"cpu": 32}}),
            ]]

    assert asyncio.run(writes()) == [201, 200, 422, 200, 201, 200]
    assert heard == ["a", "a", "a"]
