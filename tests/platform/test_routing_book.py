"""The routing book over a real SQLite store: each service's routing is built on its own; an object that cannot be
built — whatever the reason, planted straight into the database — keeps its last good part and affects no other
service; the gateway's persisted snapshot seeds the last good parts after a platform restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from platform_harness import deployment, service

from inferstack.platform.control import Platform, WriteContext
from inferstack.platform.gateway.snapshot import Snapshot
from inferstack.platform.routing_book import RoutingBook
from inferstack.platform.store import Store

READY = {("chat", "stable"): {"main": [{"id": "chat-stable-main-1", "host": "127.0.0.1", "port": 40001}]},
         ("chat", "canary"): {"main": [{"id": "chat-canary-main-1", "host": "127.0.0.1", "port": 40002}]},
         ("other", "blue"): {"main": [{"id": "other-blue-main-1", "host": "127.0.0.1", "port": 40003}]}}


def ready(svc: str, dep: str) -> dict[str, list[dict[str, Any]]]:
    return READY.get((svc, dep), {})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.open(tmp_path)
    Platform(store).apply({"services": [
        {**service("chat"), "deployments": [deployment("stable"), deployment("canary")],
         "traffic": {"weights": {"stable": 90, "canary": 10}}},
        {**service("other"), "deployments": [deployment("blue")]},
    ]}, WriteContext())
    yield store
    store.close()


def plant(store: Store, kind: str, parent: str, key: str, text: str) -> None:
    """Overwrite a stored spec behind the platform's back, as an older version or an editor on disk would."""
    db = sqlite3.connect(store.path)
    db.execute("UPDATE objects SET spec = ?, generation = generation + 1 WHERE kind = ? AND parent = ? AND key = ?",
               (text, kind, parent, key))
    db.commit()
    db.close()


def entry(snapshot: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((s for s in snapshot["services"] if s["key"] == key), None)


def built(book: RoutingBook, version: int) -> dict[str, Any]:
    snapshot = book.build(version, ready, {})
    Snapshot.model_validate(snapshot)  # whatever is stored, the gateway accepts what the book sends
    book.acknowledge(version)
    return snapshot


@pytest.mark.parametrize(("kind", "parent", "key", "text", "reason"), [
    ("traffic", "chat", "chat", '{"timeout_s": Infinity}', "services/chat/traffic: holds a number that is not finite"),
    ("traffic", "chat", "chat", '{"weights": {"stable": NaN}}', "services/chat/traffic: holds a number that is not"),
    ("traffic", "chat", "chat", '{"timeout_s": 1e400}', "services/chat/traffic: holds a number that is not finite"),
    ("traffic", "chat", "chat", '{"timeout_s": "soon"}', "services/chat/traffic: timeout_s: Input should be"),
    ("traffic", "chat", "chat", '{"weights": ', "services/chat/traffic: the stored object cannot be read"),
    ("traffic", "chat", "chat", '[1, 2]', "services/chat/traffic: "),
    ("service", "", "chat", '{"name": "chat", "ports": [0]', "services/chat: the stored object cannot be read"),
    ("service", "", "chat", ('{"name": "chat", "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000, '
                            '8000]}'), "services/chat: "),
])
def test_a_service_or_traffic_object_that_cannot_be_built_keeps_the_last_good_entry_and_spares_the_others(
        store: Store, kind: str, parent: str, key: str, text: str, reason: str) -> None:
    book = RoutingBook(store)
    good = built(book, 1)
    plant(store, kind, parent, key, text)
    store.write_status("service", "other", {"touched": True})  # any change: the next snapshot is built

    snapshot = built(book, 2)

    assert entry(snapshot, "chat") == entry(good, "chat")  # the whole entry as it last was
    assert entry(snapshot, "other") == entry(good, "other")
    routing = book.service("chat")
    assert routing is not None and not routing.fresh and routing.routed
    assert routing.reason.startswith(reason) and "keeps its last good routing" in routing.reason, routing.reason
    assert book.service("other").fresh


def test_a_deployment_that_cannot_be_built_keeps_its_last_part_with_current_instances(store: Store) -> None:
    book = RoutingBook(store)
    built(book, 1)
    plant(store, "deployment", "chat", "canary", '{"name": "canary", "replicas": ')
    READY[("chat", "canary")]["main"].append({"id": "chat-canary-main-2", "host": "127.0.0.1", "port": 40004})
    try:
        snapshot = built(book, 2)
    finally:
        READY[("chat", "canary")]["main"].pop()

    canary = next(d for d in entry(snapshot, "chat")["deployments"] if d["key"] == "canary")
    assert [i["id"] for i in canary["instances"]] == ["chat-canary-main-1", "chat-canary-main-2"]
    assert "services/chat/deployments/canary: the stored object cannot be read" in book.service("chat").reason
    assert book.service("chat").generations["services/chat/deployments/canary"] == 1  # the part's generation
    assert book.service("other").fresh


def test_a_broken_security_group_fails_only_the_deployments_that_use_it(store: Store) -> None:
    Platform(store).apply({"inventory": {"security_groups": [
        {"name": "sg-private", "vpc": "vpc-default",
         "ingress": [{"protocol": "tcp", "from_port": 1, "to_port": 65535, "source": "127.0.0.0/8"}]}]},
        "services": [{**service("private", network_type="private_gateway"),
                      "deployments": [deployment("main", security_group="sg-private")]}]}, WriteContext())
    book = RoutingBook(store)
    good = built(book, 1)
    plant(store, "security_groups", "", "sg-private", '{"name": "sg-private", "ingress": "everyone"}')

    snapshot = built(book, 2)

    assert entry(snapshot, "private")["allowed_sources"] == entry(good, "private")["allowed_sources"] != []
    assert "security-groups/sg-private cannot be read" in book.service("private").reason
    assert book.service("chat").fresh and book.service("other").fresh


def test_a_new_service_that_cannot_be_built_is_not_routed_and_says_why(store: Store) -> None:
    book = RoutingBook(store)
    plant(store, "traffic", "chat", "chat", '{"timeout_s": -1}')

    snapshot = built(book, 1)

    assert entry(snapshot, "chat") is None and entry(snapshot, "other") is not None
    routing = book.service("chat")
    assert not routing.routed and "has no last good routing" in routing.reason


def test_after_a_restart_the_gateways_persisted_snapshot_is_the_last_good_routing(store: Store) -> None:
    before = built(RoutingBook(store), 1)  # what the gateway had, persisted in its state dir
    plant(store, "traffic", "chat", "chat", '{"timeout_s": Infinity}')
    plant(store, "deployment", "chat", "canary", "not json")

    book = RoutingBook(store)  # a new platform process
    book.seed(before)
    snapshot = built(book, 2)

    chat = entry(snapshot, "chat")
    assert chat["traffic"] == entry(before, "chat")["traffic"]
    assert chat["deployments"] == entry(before, "chat")["deployments"]  # the same instances, still ready
    assert book.service("chat").generations["services/chat/traffic"] == 0  # built by a former process


def test_the_gateway_refusing_one_service_sends_that_service_as_it_last_accepted_it(store: Store) -> None:
    book = RoutingBook(store)
    good = built(book, 1)
    Platform(store).put_traffic("chat", {"weights": {"stable": 50, "canary": 50}}, WriteContext())
    rejected = book.build(2, ready, {})
    index = [s["key"] for s in rejected["services"]].index("chat")

    assert book.rejected({"error": "invalid snapshot",
                          "details": [{"path": f"services.{index}.traffic.weights", "message": "no"}]})
    snapshot = built(book, 3)

    assert entry(snapshot, "chat")["traffic"] == entry(good, "chat")["traffic"]
    assert "the gateway refused its routing: traffic.weights: no" in book.service("chat").reason
    assert book.service("other").fresh
