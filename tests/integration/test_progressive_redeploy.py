"""Acceptance: a redeploy under a deployment's progressive policy, on real processes with a load generator — a new
revision whose instances are slow (p99 over the gate) takes a step share of the deployment's requests beside the old
one, is rolled back and torn down, and the old revision never stops serving; a healthy one is promoted and the rolling
update goes on."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from embedded_harness import Load, echo_deployment, echo_service, gateway, instance_pids, start_platform, wait_ready
from release_harness import cli, release_events, wait_release, write_stack

POLICY = {"steps": [25, 100], "bake_time_s": 0.5,
          "gates": {"max_error_rate": 1, "max_p99_ms": 150, "min_requests": 10}}


def api(version: str, **env: str) -> dict:
    deployment = echo_deployment("api", replicas=2, progressive=POLICY,
                                 env=[{"name": "INFERSTACK_VERSION", "value": version},
                                      *({"name": k, "value": v} for k, v in env.items())])
    deployment["rolling_update"] = {"max_unavailable": 0, "max_surge": 50}
    return {"services": [echo_service("redeploy", [deployment])]}


class PidWatch(threading.Thread):
    """Samples the service's live instance processes (from /proc) every 50 ms while a release runs."""

    def __init__(self, data_dir) -> None:
        super().__init__(daemon=True)
        self.data_dir, self.samples, self.stop = data_dir, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(instance_pids("redeploy", self.data_dir))
            time.sleep(0.05)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    p = start_platform(tmp_path_factory.mktemp("progressive-redeploy"))
    client = p.client()
    client.apply(api("1"))
    wait_ready(client, "redeploy")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def route(platform):
    return gateway(platform.client(), "redeploy")


def test_a_slow_new_revision_is_rolled_back_and_the_old_one_never_stops_serving(platform, route, tmp_path):
    client = platform.client()
    before = {i["id"]: i["pid"] for i in client.get_deployment("redeploy", "api")["status"]["roles"]["main"]
              ["instances"]}
    slow = write_stack(tmp_path / "slow.yaml", api("2", ECHO_LATENCY_MS="300"))
    loads = [Load(*route) for _ in range(4)]  # a slow canary holds a client 300 ms: several keep requests coming
    for load in loads:
        load.__enter__()
    watch = PidWatch(platform.data_dir)
    watch.start()
    try:
        applied = cli(platform.data_dir, "apply", str(slow), "--timeout", "40")
        time.sleep(1.0)
    finally:
        watch.stop.set()
        watch.join()
        for load in loads:
            load.__exit__(None, None, None)

    assert applied.returncode == 3, applied.stdout + applied.stderr
    assert "ReleaseRolledBack" in applied.stderr and "p99" in applied.stderr and "> 150 ms" in applied.stderr
    dep = wait_release(client, "redeploy", ("RolledBack",), deployment="api")
    release = dep["status"]["release"]
    assert release["failed_gate"] == "max_p99_ms" and release["step"] == 1 and release["share"] == 0
    canary = next(r for r in release["readings"] if r["side"].startswith("revision "))
    assert canary["p99_ms"] > 150 and canary["requests"] >= 10

    # The new revision is torn down; the old instances are the very same processes, and they served throughout.
    time.sleep(0.5)
    after = {i["id"]: i["pid"] for i in dep["status"]["roles"]["main"]["instances"] if i["phase"] != "terminating"}
    assert after == before
    assert instance_pids("redeploy", platform.data_dir) == before
    assert len(watch.samples) >= 10 and all(set(before.items()) <= set(seen.items()) for seen in watch.samples)
    assert max(len(seen) for seen in watch.samples) == 3  # the canary ran beside them, within the surge (1)
    outcomes = [o for load in loads for o in load.outcomes]
    assert sum(load.failed for load in loads) == 0, [e for load in loads for e in load.errors][:3]
    versions = Counter(v for load in loads for v in load.versions)
    assert versions["1"] > 0 and 0 < versions["2"] < versions["1"]  # the canary took its step share, no more
    assert outcomes and all(load.versions[-1] == "1" for load in loads)  # after the rollback, the old revision

    conditions = {c["type"]: c for c in dep["status"]["conditions"]}
    assert conditions["Degraded"]["reason"] == "ReleaseRolledBack" and "p99" in conditions["Degraded"]["message"]
    assert conditions["Available"]["status"] == "True"
    assert [e["reason"] for e in release_events(client, "redeploy", "api")] == [
        "ReleaseStarted", "ReleaseStep", "ReleaseRolledBack"]


def test_reapplying_keeps_the_old_revision_and_a_healthy_revision_is_promoted(platform, route, tmp_path):
    client = platform.client()
    slow = write_stack(tmp_path / "slow.yaml", api("2", ECHO_LATENCY_MS="300"))
    pids = instance_pids("redeploy", platform.data_dir)
    again = cli(platform.data_dir, "apply", str(slow), "--timeout", "10")
    assert again.returncode == 3 and "does not retry it" in again.stderr
    assert instance_pids("redeploy", platform.data_dir) == pids  # no canary started again

    healthy = write_stack(tmp_path / "healthy.yaml", api("3"))
    loads = [Load(*route) for _ in range(2)]
    for load in loads:
        load.__enter__()
    try:
        applied = cli(platform.data_dir, "apply", str(healthy), "--timeout", "40")
        time.sleep(0.3)
    finally:
        for load in loads:
            load.__exit__(None, None, None)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    dep = client.get_deployment("redeploy", "api")
    assert dep["status"]["release"]["phase"] == "Succeeded"
    instances = dep["status"]["roles"]["main"]["instances"]
    assert len(instances) == 2 and all(i["ready"] and i["revision"] == dep["status"]["release"]["revision"]
                                       for i in instances)
    assert sum(load.failed for load in loads) == 0
    assert all(load.versions[-1] == "3" for load in loads)
    reasons = [e["reason"] for e in release_events(client, "redeploy", "api")]
    assert reasons[-3:] == ["ReleaseStarted", "ReleaseStep", "ReleasePromoted"]
