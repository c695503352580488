"""What progressive releases read and steer at the gateway: per-instance windows (`GET /windows`) counting answers,
5xx, failed connections and fine latencies; and a deployment's split by revision (a canary redeploy)."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from inferstack.platform.gateway.routing import NoReadyInstance, ServiceRouter
from inferstack.platform.gateway.snapshot import Service
from inferstack.platform.release_gates import Sample, window

from .conftest import generate_load, run, service


def windows(gateway, *services: str) -> dict:
    response = httpx.get(f"{gateway.process.admin_url}/windows", params=[("service", s) for s in services],
                         headers=gateway.process.headers, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def test_windows_count_answers_5xx_and_latency_of_each_instance(gateway, backends):
    fast, slow = backends.start("w-fast"), backends.start("w-slow", delay=0.2)
    gateway.push(service("w", {"stable": [fast], "canary": [slow]}, weights={"stable": 50, "canary": 50}))
    before = Sample.of(windows(gateway, "w"))
    load = run(generate_load(gateway.port("w"), requests=40, concurrency=8))
    run(generate_load(gateway.port("w"), requests=10, concurrency=2, path="/status?code=503",
                      headers={"X-Inferstack-Deployment": "stable"}))
    answer = windows(gateway, "w")
    sides = window(before, Sample.of(answer), lambda key: key[1])
    served = Counter(r.deployment for r in load.results)
    assert sides["canary"].requests == served["canary"] and sides["canary"].failures == 0
    assert sides["stable"].requests == served["stable"] + 10 and sides["stable"].failures == 10
    assert 200 <= sides["canary"].p99_ms <= 400 and sides["stable"].p99_ms < 100
    assert {row["service"] for row in answer["instances"]} == {"w"} and answer["pid"] == gateway.process.pid
    assert windows(gateway, "nobody")["instances"] == []


def test_a_failed_connection_retried_elsewhere_is_a_failure_of_the_instance_that_refused(gateway, backends,
                                                                                        refused_port):
    good = backends.start("w-good")
    dead = {"id": "w-dead", "host": "127.0.0.1", "port": refused_port}
    gateway.push(service("wr", {"canary": [dead, good]}, weights={"canary": 100}, retries=1))
    before = Sample.of(windows(gateway, "wr"))
    load = run(generate_load(gateway.port("wr"), requests=30, concurrency=1))
    assert load.bad() == []  # every caller was answered by the good instance
    after = Sample.of(windows(gateway, "wr"))
    per_instance = window(before, after, lambda key: key[2])
    assert per_instance["w-dead"].failures == per_instance["w-dead"].requests >= 1
    assert per_instance["w-good"].requests == 30 and per_instance["w-good"].failures == 0


def test_windows_need_the_admin_token(gateway):
    assert httpx.get(f"{gateway.process.admin_url}/windows", timeout=5).status_code == 401


# --- the split by revision -------------------------------------------------------------------------------------------

def _router(revision_weights: dict[str, float], instances: list[tuple[str, str]], hash_header: str | None = None,
            previous: ServiceRouter | None = None) -> ServiceRouter:
    snapshot = service("r", {"api": [{"id": i, "host": "127.0.0.1", "port": 1000 + n, "revision": rev}
                                     for n, (i, rev) in enumerate(instances)]}, weights={"api": 100},
                       consistent_hash=hash_header)
    snapshot["deployments"][0]["revision_weights"] = revision_weights
    return ServiceRouter(Service.model_validate(snapshot), previous)


def test_a_deployment_splits_by_revision_whatever_the_instance_counts():
    router = _router({"old": 90, "new": 10}, [("o1", "old"), ("o2", "old"), ("o3", "old"), ("n1", "new")])
    picks = Counter(router.route(None).id for _ in range(1000))
    assert picks["n1"] == 100 and picks["o1"] + picks["o2"] + picks["o3"] == 900
    assert max(picks[o] for o in ("o1", "o2", "o3")) - min(picks[o] for o in ("o1", "o2", "o3")) <= 1


def test_a_revision_without_instances_takes_nothing_and_direct_calls_use_the_split_too():
    router = _router({"old": 50, "new": 50}, [("o1", "old"), ("o2", "old")])
    assert {router.route(None).id for _ in range(20)} == {"o1", "o2"}
    pinned = _router({"old": 75, "new": 25}, [("o1", "old"), ("n1", "new")])
    picks = Counter(pinned.route({b"x-inferstack-deployment": b"api"}).id for _ in range(400))
    assert picks == {"o1": 300, "n1": 100}


def test_the_split_carries_its_cycle_into_the_next_snapshot_and_a_hash_sticks_within_a_revision():
    first = _router({"old": 50, "new": 50}, [("o1", "old"), ("n1", "new")])
    first.route(None)
    second = _router({"old": 50, "new": 50}, [("o1", "old"), ("n1", "new")], previous=first)
    assert [second.route(None).id for _ in range(4)] in (["n1", "o1", "n1", "o1"], ["o1", "n1", "o1", "n1"])
    hashed = _router({"old": 50, "new": 50}, [("o1", "old"), ("o2", "old"), ("n1", "new"), ("n2", "new")],
                     hash_header="x-user")
    user = {b"x-user": b"alice"}
    chosen = Counter(hashed.route(user).id for _ in range(200))
    old, new = sum(chosen[i] for i in ("o1", "o2")), sum(chosen[i] for i in ("n1", "n2"))
    assert old == new == 100 and len([i for i in chosen if chosen[i]]) == 2  # one instance per revision


def test_a_split_with_no_instance_at_all_still_answers_no_ready_instance():
    router = _router({"old": 50, "new": 50}, [])
    with pytest.raises(NoReadyInstance):
        router.route(None)


def test_negative_or_non_finite_revision_weights_are_refused():
    for weights in ({"new": -1}, {"new": float("nan")}, {"new": float("inf")}):
        snapshot = service("r", {"api": []})
        snapshot["deployments"][0]["revision_weights"] = weights
        with pytest.raises(ValueError):
            Service.model_validate(snapshot)
