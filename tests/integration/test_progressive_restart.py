"""A release survives a platform killed with SIGKILL: the gateway keeps the step's whole weight set while the
platform is down (never a half-written one), the release resumes at the step it reached with that step's window
started again, a failed release stays failed, and a held canary keeps its old revision startable."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

from embedded_harness import Load, gateway, instance_pids, start_platform, wait_ready
from release_harness import BAD_CANARY, release_events, shift_stack, wait_release

POLICY = {"steps": [10, 50, 100], "bake_time_s": 1.2, "gates": {"max_error_rate": 1, "min_requests": 10}}
STEP_SETS = [{"stable": 100, "canary": 0}, {"stable": 90, "canary": 10}, {"stable": 50, "canary": 50},
             {"stable": 0, "canary": 100}]


class RoutedWeights(threading.Thread):
    """Reads the weights the gateway routes for a service (its persisted snapshot, rewritten at every swap)."""

    def __init__(self, data_dir, service: str) -> None:
        super().__init__(daemon=True)
        self.path, self.service = data_dir / "gateway" / "snapshot.json", service
        self.seen: list[dict[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                snapshot = json.loads(self.path.read_text())
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            snapshot = snapshot.get("snapshot", snapshot)
            for entry in snapshot.get("services") or []:
                if entry.get("key") == self.service:
                    weights = {k: float(v) for k, v in entry["traffic"]["weights"].items()}
                    if not self.seen or self.seen[-1] != weights:
                        self.seen.append(weights)
            time.sleep(0.01)


def shares(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values()) or 1
    return {k: round(100 * weights.get(k, 0) / total, 2) for k in ("stable", "canary")}


def test_a_shift_resumes_at_its_step_after_a_kill_and_the_gateway_only_ever_routes_whole_steps(tmp_path):
    platform = start_platform(tmp_path)
    watch = RoutedWeights(tmp_path, "resume")
    try:
        client = platform.client()
        client.apply(shift_stack("resume", (100, 0), POLICY))
        wait_ready(client, "resume")
        url, headers = gateway(client, "resume")
        watch.start()
        with Load(url, headers) as load:
            client.apply(shift_stack("resume", (0, 100), POLICY))
            deadline = time.monotonic() + 20
            # Step 2 is in status before it is routed: kill once the gateway routes it too (its persisted snapshot).
            while (client.get_traffic("resume")["status"].get("release") or {}).get("step") != 2 or \
                    not watch.seen or shares(watch.seen[-1]) != shares(STEP_SETS[2]):
                assert time.monotonic() < deadline, "the shift never reached step 2"
                time.sleep(0.02)
            platform.kill()
            killed = time.monotonic()
            time.sleep(1.0)
            down = Counter(dep for at, status, dep in load.outcomes if at > killed + 0.1 and status == 200)
            platform = start_platform(tmp_path)
            restarted = time.monotonic()
            traffic = wait_release(platform.client(), "resume", ("Succeeded",), timeout=30)
            finished = time.monotonic()
        assert load.failed == 0, load.errors[:3]
        reasons = [e["reason"] for e in release_events(platform.client(), "resume")]
    finally:
        watch.stop.set()
        platform.stop()

    # While the platform was down the gateway kept step 2's weights (50/50), whole.
    assert down["stable"] and down["canary"] and abs(down["stable"] - down["canary"]) <= 0.3 * sum(down.values())
    assert all(shares(w) in [shares(s) for s in STEP_SETS] for w in watch.seen), watch.seen
    assert [shares(w) for w in watch.seen][-1] == {"stable": 0.0, "canary": 100.0}

    release = traffic["status"]["release"]
    assert [(h["step"], h["outcome"]) for h in release["history"]] == [(1, "passed"), (2, "passed"), (3, "passed")]
    assert "ReleaseResumed" in reasons and reasons.count("ReleaseStep") == 3  # step 2 was not entered twice
    assert finished - restarted >= 2 * POLICY["bake_time_s"]  # step 2 baked again in full, then step 3


def test_a_rolled_back_shift_stays_rolled_back_across_a_kill(tmp_path):
    platform = start_platform(tmp_path)
    try:
        client = platform.client()
        client.apply(shift_stack("settled", (100, 0), {**POLICY, "bake_time_s": 0.3}, [BAD_CANARY]))
        wait_ready(client, "settled")
        url, headers = gateway(client, "settled")
        with Load(url, headers):
            client.apply(shift_stack("settled", (0, 100), {**POLICY, "bake_time_s": 0.3}, [BAD_CANARY]))
            wait_release(client, "settled", ("RolledBack",))
        events = len(release_events(client, "settled"))
        platform.kill()
        platform = start_platform(tmp_path)
        client = platform.client()
        wait_ready(client, "settled")
        time.sleep(1.0)
        traffic = client.get_traffic("settled")
        assert traffic["status"]["release"]["phase"] == "RolledBack"
        assert traffic["status"]["live_weights"] == {"stable": 100, "canary": 0}
        assert len(release_events(client, "settled")) == events  # nothing resumed, nothing started
    finally:
        platform.stop()


def test_a_paused_canary_keeps_its_old_revision_startable_after_a_kill(tmp_path):
    from embedded_harness import echo_deployment, echo_service

    def stack(version: str, **env: str) -> dict:
        dep = echo_deployment("api", replicas=2, progressive={
            "steps": [25, 100], "bake_time_s": 0.3, "on_failure": "pause",
            "gates": {"max_p99_ms": 100, "min_requests": 5}},
            env=[{"name": "INFERSTACK_VERSION", "value": version}, *({"name": k, "value": v} for k, v in env.items())])
        dep["rolling_update"] = {"max_unavailable": 0, "max_surge": 50}
        return {"services": [echo_service("held", [dep])]}

    platform = start_platform(tmp_path)
    try:
        client = platform.client()
        client.apply(stack("1"))
        wait_ready(client, "held")
        url, headers = gateway(client, "held")
        loads = [Load(url, headers) for _ in range(3)]
        for load in loads:
            load.__enter__()
        try:
            client.apply(stack("2", ECHO_LATENCY_MS="250"))
            paused = wait_release(client, "held", ("Paused",), deployment="api")
        finally:
            for load in loads:
                load.__exit__(None, None, None)
        old_revision = paused["status"]["release"]["stable_revision"]
        pids = instance_pids("held", tmp_path)
        assert len(pids) == 3  # two old, one canary, held
        platform.kill()
        platform = start_platform(tmp_path)
        client = platform.client()
        time.sleep(1.5)
        assert instance_pids("held", tmp_path) == pids  # re-adopted, none restarted, the canary still held
        dep = client.get_deployment("held", "api")
        assert dep["status"]["release"]["phase"] == "Paused"
        old = [i for i in dep["status"]["roles"]["main"]["instances"] if i["revision"] == old_revision]
        os.kill(old[0]["pid"], signal.SIGKILL)  # the old revision must come back as itself (its kept spec)
        deadline = time.monotonic() + 20
        while True:
            dep = client.get_deployment("held", "api")
            revisions = Counter(i["revision"] for i in dep["status"]["roles"]["main"]["instances"] if i["ready"])
            if revisions[old_revision] == 2:
                break
            assert time.monotonic() < deadline, revisions
            time.sleep(0.1)
        with Load(url, headers) as load:
            time.sleep(0.5)
        assert load.failed == 0 and "1" in load.versions
    finally:
        platform.stop()
