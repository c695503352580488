"""The store and the in-process seams the reconciler builds on: status writes and the change hook."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest
from platform_harness import deployment, service

from inferstack.platform.api import create_app
from inferstack.platform.control import Platform
from inferstack.platform.objects import DEPLOYMENT, SERVICE, condition, get_condition, set_condition
from inferstack.platform.store import PLATFORM, Store, changed_paths


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


def test_runtime_events_share_the_log_with_spec_changes_and_name_object_reason_and_message(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with store.transaction("t") as tx:
        tx.put(SERVICE, "chat", {"name": "chat"})
        dep = tx.put(DEPLOYMENT, "stable", {"name": "stable"}, parent="chat")
    revision = store.revision()
    started = store.record_event(DEPLOYMENT, "stable", "Started", "instance stable-1 started (pid 42)", parent="chat")
    crashed = store.record_event(DEPLOYMENT, "stable", "BackOff", "exited with code 3", parent="chat",
                                 type="Warning")
    gateway = store.record_event(PLATFORM, "gateway", "GatewayRestarted", "restart 1 after exit code -9")
    assert store.revision() == revision  # an event changes no object
    assert (started["object"], started["action"], started["reason"], started["type"], started["uid"],
            started["generation"]) == ("services/chat/deployments/stable", "event", "Started", "Normal", dep.uid, 1)
    assert crashed["type"] == "Warning" and crashed["message"] == "exited with code 3"
    assert gateway["object"] == "platform/gateway" and gateway["uid"] == ""
    assert [e["action"] for e in store.events(service="chat")] == ["create", "create", "event", "event"]
    assert [e["reason"] for e in store.events(object="platform/gateway")] == ["GatewayRestarted"]
    with pytest.raises(ValueError, match="CamelCase"):
        store.record_event(PLATFORM, "gateway", "not camel", "x")
    with pytest.raises(ValueError, match="event type"):
        store.record_event(PLATFORM, "gateway", "Started", "x", type="Error")


def test_a_version_1_store_is_migrated_in_place_and_keeps_its_events(tmp_path: Path) -> None:
    db = tmp_path / "platform.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE objects (kind TEXT NOT NULL, parent TEXT NOT NULL DEFAULT '', key TEXT NOT NULL,
            uid TEXT NOT NULL UNIQUE, generation INTEGER NOT NULL, resource_version INTEGER NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL,
            PRIMARY KEY (kind, parent, key));
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, object TEXT NOT NULL,
            service TEXT NOT NULL, uid TEXT NOT NULL, action TEXT NOT NULL, request_id TEXT NOT NULL,
            generation INTEGER NOT NULL, resource_version INTEGER NOT NULL, changes TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1'), ('revision', '1');
        INSERT INTO objects VALUES ('service', '', 'chat', 'u1', 1, 1, 't', 't', '{"name":"chat"}', '{}');
        INSERT INTO events (time, object, service, uid, action, request_id, generation, resource_version, changes)
            VALUES ('t', 'services/chat', 'chat', 'u1', 'create', 'r1', 1, 1, '["name"]');
    """)
    conn.commit()
    conn.close()
    store = Store.open(tmp_path)
    (old,) = store.events()
    assert (old["action"], old["changes"], old["type"], old["reason"], old["message"]) == \
        ("create", ["name"], "Normal", "", "")
    store.record_event(SERVICE, "chat", "Routed", "snapshot 7 is live")
    store.close()
    reopened = Store.open(tmp_path)  # the current version now: opens without migrating again
    assert [e["action"] for e in reopened.events()] == ["create", "event"]
    assert [e["count"] for e in reopened.events()] == [1, 1]


def test_identical_runtime_events_aggregate_into_one_row_that_moves_to_the_end_with_a_count(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with store.transaction("t") as tx:
        tx.put(SERVICE, "chat", {"name": "chat"})
        tx.put(DEPLOYMENT, "stable", {"name": "stable"}, parent="chat")
    first = store.record_event(DEPLOYMENT, "stable", "BackOff", "instance 1 exited with code 3", parent="chat",
                               type="Warning")
    store.record_event(DEPLOYMENT, "stable", "Started", "restarted instance 1", parent="chat")
    again = store.record_event(DEPLOYMENT, "stable", "BackOff", "instance 1 exited with code 3", parent="chat",
                               type="Warning")
    other = store.record_event(DEPLOYMENT, "stable", "BackOff", "instance 1 exited with code 4", parent="chat",
                               type="Warning")
    events = [e for e in store.events(service="chat") if e["action"] == "event"]
    assert [(e["reason"], e["count"]) for e in events] == [("Started", 1), ("BackOff", 2), ("BackOff", 1)]
    assert again["seq"] > first["seq"] and again["count"] == 2  # a follower polling with `since` sees it again
    assert again["first_time"] == first["time"] <= again["time"]
    assert other["count"] == 1  # another message is another event
    assert store.events(since=again["seq"] - 1)[0]["count"] == 2
    assert store.last_seq() == other["seq"]
    # A re-created object with the same key (another uid) starts its own count.
    with store.transaction("t") as tx:
        tx.delete(DEPLOYMENT, "stable", "chat")
        tx.put(DEPLOYMENT, "stable", {"name": "stable"}, parent="chat")
    fresh = store.record_event(DEPLOYMENT, "stable", "BackOff", "instance 1 exited with code 3", parent="chat",
                               type="Warning")
    assert fresh["count"] == 1


def test_a_version_2_store_is_migrated_to_count_events(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.record_event(PLATFORM, "gateway", "GatewayRestarted", "restarted")
    store.close()
    conn = sqlite3.connect(tmp_path / "platform.db")
    conn.executescript("DROP INDEX events_by_reason; ALTER TABLE events DROP COLUMN count; "
                       "ALTER TABLE events DROP COLUMN first_time; UPDATE meta SET value = '2' "
                       "WHERE key = 'schema_version';")
    conn.commit()
    conn.close()
    store = Store.open(tmp_path)
    assert store.record_event(PLATFORM, "gateway", "GatewayRestarted", "restarted")["count"] == 2
