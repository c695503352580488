"""The release manager's traffic shifts over a real SQLite store and a real routing book, the gateway's totals given
step by step: what is persisted before it is routed, when a window opens, pause, supersede, retry, restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from platform_harness import deployment, service

from inferstack.platform.control import Platform, WriteContext
from inferstack.platform.release_api import retry
from inferstack.platform.releases import ReleaseManager
from inferstack.platform.routing_book import RoutingBook
from inferstack.platform.store import Store

POLICY = {"steps": [10, 50, 100], "bake_time_s": 0.01, "gates": {"max_error_rate": 1, "min_requests": 10}}


class Gateway:
    """Totals per instance as the gateway's `GET /windows` gives them; a test adds requests between ticks."""

    def __init__(self) -> None:
        self.totals: dict[str, list[int]] = {}
        self.pid = 1
        self.while_reading = None  # what happens on the platform while the totals are read

    def serve(self, deployment: str, requests: int, failures: int = 0) -> None:
        t = self.totals.setdefault(deployment, [0, 0])
        t[0] += requests
        t[1] += failures

    async def windows(self, services: list[str]) -> dict[str, Any]:
        if self.while_reading is not None:
            self.while_reading, happen = None, self.while_reading
            happen()
        return {"pid": self.pid, "started": 1, "instances": [
            {"service": "chat", "deployment": d, "instance": f"{d}-1", "requests": r, "failures": f,
             "latency": {"100": r}} for d, (r, f) in self.totals.items()]}


class Harness:
    def __init__(self, tmp_path: Path, on_failure: str = "rollback") -> None:
        self.store = Store.open(tmp_path)
        self.platform = Platform(self.store)
        self.book = RoutingBook(self.store)
        self.gateway = Gateway()
        self.routed: list[str] = []
        self.policy = {**POLICY, "on_failure": on_failure}
        self.write((100, 0))
        self.manager = self.new_manager()
        self.publish()
        self.manager.traffic_changed("chat", ["stable", "canary"], self.book.routed_weights("chat"))

    def new_manager(self, rollouts: dict[str, tuple[str, str]] | None = None) -> ReleaseManager:
        """`rollouts`: where a deployment's rollout is (absent: rolled out), read at each call."""
        outs = rollouts if rollouts is not None else {}
        return ReleaseManager(self.store, windows=self.gateway.windows, routing_changed=self.routed.append,
                              deployment_changed=lambda s, d: None, controllers=lambda s, d: None,
                              rollouts=lambda s, d: outs.get(d, ("done", "")))

    def write(self, weights: tuple[float, float], **policy: Any) -> None:
        self.platform.apply({"services": [{**service("chat"), "deployments": [deployment("stable"),
                                                                               deployment("canary")],
                                           "traffic": {"weights": {"stable": weights[0], "canary": weights[1]},
                                                       "progressive": {**self.policy, **policy}}}]}, WriteContext())

    def publish(self) -> dict[str, Any]:
        """A snapshot built from the store as the reconciler builds it, acknowledged by the gateway."""
        snapshot = self.book.build(len(self.routed) + 1, lambda s, d: {}, {})
        self.book.acknowledge(snapshot["version"])
        if hasattr(self, "manager"):
            self.manager.acknowledged(snapshot)
        return snapshot

    def routed_weights(self) -> dict[str, float]:
        return self.book.routed_weights("chat")

    def traffic(self) -> dict[str, Any]:
        return self.store.get("traffic", "chat", "chat").status

    def shift(self, weights: tuple[float, float], **policy: Any) -> None:
        self.write(weights, **policy)
        self.manager.traffic_changed("chat", ["stable", "canary"], self.routed_weights())

    def step(self, canary: int, failures: int = 0, stable: int = 50) -> None:
        """Route what status says, open the window, then serve requests and judge."""
        self.publish()
        asyncio.run(self.manager.tick())  # the window's start
        self.gateway.serve("canary", canary, failures)
        self.gateway.serve("stable", stable)
        asyncio.run(asyncio.sleep(0.02))  # past the bake time
        asyncio.run(self.manager.tick())


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    h = Harness(tmp_path)
    yield h
    h.store.close()


def test_each_step_is_in_status_before_it_is_routed_and_the_shift_succeeds(harness: Harness):
    harness.shift((0, 100))
    status = harness.traffic()
    assert status["release"]["phase"] == "Progressing" and status["release"]["step"] == 1
    assert status["live_weights"] == {"stable": 90.0, "canary": 10.0}
    assert harness.routed_weights() == {"stable": 100.0, "canary": 0.0}  # not routed yet: status first
    assert harness.publish()["services"][0]["traffic"]["weights"] == {"stable": 90.0, "canary": 10.0}
    for _ in range(3):
        harness.step(canary=20)
    status = harness.traffic()
    assert status["release"]["phase"] == "Succeeded" and status["live_weights"] == {"stable": 0.0, "canary": 100.0}
    assert [h["outcome"] for h in status["release"]["history"]] == ["passed"] * 3


def test_no_window_opens_before_the_gateway_routes_the_step(harness: Harness):
    harness.shift((0, 100))
    asyncio.run(harness.manager.tick())
    harness.gateway.serve("canary", 50, 50)  # failures before the step is routed count for nothing
    asyncio.run(harness.manager.tick())
    assert harness.traffic()["release"]["phase"] == "Progressing"
    harness.step(canary=20, failures=10)
    release = harness.traffic()["release"]
    assert release["phase"] == "RolledBack" and "10 of 20 requests failed" in release["reason"]
    assert harness.traffic()["live_weights"] == {"stable": 100.0, "canary": 0.0}


def test_pause_keeps_the_step_reached_and_a_new_generation_starts_from_it(tmp_path: Path):
    h = Harness(tmp_path, on_failure="pause")
    h.shift((0, 100))
    h.step(canary=20)
    h.step(canary=20, failures=5)  # step 2 fails
    status = h.traffic()
    assert status["release"]["phase"] == "Paused" and status["live_weights"] == {"stable": 50.0, "canary": 50.0}
    h.shift((20, 80))  # a change: a new release from what is live
    release = h.traffic()["release"]
    assert release["phase"] == "Progressing" and release["from"] == {"stable": 50.0, "canary": 50.0}
    assert release["to"] == {"stable": 20.0, "canary": 80.0}
    h.store.close()


def test_a_retry_is_another_attempt_and_the_same_spec_is_not(harness: Harness):
    harness.shift((0, 100))
    harness.step(canary=20, failures=10)
    assert harness.traffic()["release"]["phase"] == "RolledBack"
    harness.manager.traffic_changed("chat", ["stable", "canary"], harness.routed_weights())  # a reconcile
    assert harness.traffic()["release"]["phase"] == "RolledBack"  # nothing retried
    code, _ = retry(harness.platform, "traffic", "chat", "chat")
    assert code == 200
    harness.manager.traffic_changed("chat", ["stable", "canary"], harness.routed_weights())
    release = harness.traffic()["release"]
    assert release["phase"] == "Progressing" and release["attempt"][2] == 1
    assert retry(harness.platform, "traffic", "chat", "chat")[0] == 409  # nothing failed to retry now


def test_a_restarted_manager_resumes_at_the_step_with_a_fresh_window(harness: Harness):
    harness.shift((0, 100))
    harness.step(canary=20)
    assert harness.traffic()["release"]["step"] == 2
    harness.manager = harness.new_manager()  # the platform restarted: nothing in memory
    harness.gateway.serve("canary", 500, 500)  # what happened before the restart is never judged
    asked = len(harness.routed)
    harness.manager.traffic_changed("chat", ["stable", "canary"], harness.routed_weights())
    assert harness.traffic()["release"]["step"] == 2 and len(harness.routed) == asked + 1  # a snapshot is asked
    harness.step(canary=20)
    harness.step(canary=20)
    assert harness.traffic()["release"]["phase"] == "Succeeded"
    reasons = [e["reason"] for e in harness.store.events(service="chat") if e["action"] == "event"]
    assert reasons.count("ReleaseResumed") == 1


def test_removing_the_policy_routes_the_declared_weights_at_once(harness: Harness):
    harness.shift((0, 100))
    harness.platform.apply({"services": [{**service("chat"), "deployments": [deployment("stable"),
                                                                              deployment("canary")],
                                          "traffic": {"weights": {"stable": 0, "canary": 100}}}]}, WriteContext())
    harness.manager.traffic_changed("chat", ["stable", "canary"], harness.routed_weights())
    status = harness.traffic()
    assert status["live_weights"] is None and status["release"]["phase"] == "Superseded"
    assert harness.publish()["services"][0]["traffic"]["weights"] == {"stable": 0.0, "canary": 100.0}


def test_a_gateway_restart_within_a_window_starts_it_again(harness: Harness):
    harness.shift((0, 100))
    harness.gateway.serve("canary", 100)
    harness.publish()
    asyncio.run(harness.manager.tick())  # the window starts at 100 requests of process 1
    harness.gateway.pid, harness.gateway.totals = 2, {}  # another gateway process: its counters start again
    harness.gateway.serve("canary", 30)
    asyncio.run(asyncio.sleep(0.02))
    asyncio.run(harness.manager.tick())  # 30 < 100 is not "30 new requests": the window starts again here
    assert harness.traffic()["release"]["step"] == 1
    harness.gateway.serve("canary", 30)
    asyncio.run(asyncio.sleep(0.02))
    asyncio.run(harness.manager.tick())
    assert harness.traffic()["release"]["step"] == 2


def test_a_change_written_while_the_totals_are_read_is_not_overwritten_by_the_old_release(harness: Harness):
    harness.shift((0, 100))
    harness.publish()
    asyncio.run(harness.manager.tick())  # the window of step 1 is open
    harness.gateway.serve("canary", 20, 20)  # the old release would fail and roll back on these...
    harness.gateway.while_reading = lambda: harness.shift((20, 80))  # ...but a new generation arrives meanwhile
    asyncio.run(asyncio.sleep(0.02))
    asyncio.run(harness.manager.tick())
    release = harness.traffic()["release"]
    assert release["phase"] == "Progressing" and release["to"] == {"stable": 20.0, "canary": 80.0}
    assert release["from"] == {"stable": 90.0, "canary": 10.0} and release["step"] == 1


def test_a_shift_waits_at_its_start_while_the_gaining_deployment_rolls_out_even_across_a_restart(tmp_path: Path):
    h = Harness(tmp_path)
    rollout = {"canary": ("waiting", "0/1 instances of revision b ready, 1 of earlier revisions still serving")}
    h.manager = h.new_manager(rollout)
    h.shift((0, 100))
    status = h.traffic()
    assert status["release"]["phase"] == "Progressing" and status["release"]["step"] == 0
    assert "waiting for the rollout of canary (0/1 instances of revision b ready" in status["release"]["reason"]
    assert status["live_weights"] == {"stable": 100.0, "canary": 0.0}  # the weights stay where they were
    h.publish()
    h.gateway.serve("canary", 50, 50)  # the old revision's failures: no window is open, they count for nothing
    asyncio.run(h.manager.tick())
    assert h.traffic()["release"]["step"] == 0 and h.routed_weights() == {"stable": 100.0, "canary": 0.0}

    # The platform restarts while the rollout goes on: the release is taken up at its start, still waiting.
    h.manager = h.new_manager(rollout)
    h.manager.traffic_changed("chat", ["stable", "canary"], h.routed_weights())
    h.publish()
    asyncio.run(h.manager.tick())
    assert h.traffic()["release"]["step"] == 0

    rollout.clear()  # rolled out: step 1 is routed and judged on the new revision alone
    asyncio.run(h.manager.tick())
    assert h.traffic()["release"]["step"] == 1 and h.traffic()["live_weights"] == {"stable": 90.0, "canary": 10.0}
    for _ in range(3):
        h.step(canary=20)
    assert h.traffic()["release"]["phase"] == "Succeeded"
    reasons = [e["reason"] for e in h.store.events() if e.get("reason", "").startswith("Release")]
    assert reasons[:3] == ["ReleaseStarted", "ReleaseResumed", "ReleaseStep"]
    h.store.close()


def test_a_rollout_that_fails_before_the_shift_began_fails_the_release_and_moves_nothing(tmp_path: Path):
    h = Harness(tmp_path)
    h.manager = h.new_manager({"canary": ("failed", "CrashLoopBackOff: exit code 1")})
    h.shift((0, 100))
    release = h.traffic()["release"]
    assert (release["phase"], release["step"], release["failed_gate"]) == ("RolledBack", 0, "rollout")
    assert release["reason"] == "canary: its rollout failed before the shift began: CrashLoopBackOff: exit code 1"
    assert h.traffic()["live_weights"] == {"stable": 100.0, "canary": 0.0}
    h.store.close()
