"""The autoscaler on the embedded platform: real instances, real requests through the gateway, counts in status."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest
from embedded_harness import Load, echo_deployment, echo_service, gateway, start_platform, wait_ready

STABILISATION_S = 2.0


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    p = start_platform(tmp_path_factory.mktemp("autoscaler"), INFERSTACK_AUTOSCALE_INTERVAL_S="0.2",
                       INFERSTACK_AUTOSCALE_DOWN_STABILISATION_S=str(STABILISATION_S))
    yield p
    p.stop()


def main_role(client, service: str, deployment: str) -> dict:
    return client.get_deployment(service, deployment)["status"]["roles"]["main"]


def wait_role(client, service: str, deployment: str, until, timeout: float, seen: list[int] | None = None) -> dict:
    """Poll the role's status until `until(role)`; every autoscaled count met on the way goes to `seen`."""
    deadline = time.monotonic() + timeout
    while True:
        role = main_role(client, service, deployment)
        if seen is not None and "autoscaled" in role:
            seen.append(role["autoscaled"])
        if until(role):
            return role
        assert time.monotonic() < deadline, f"not reached after {timeout}s: {role}"
        time.sleep(0.05)


def test_in_flight_load_scales_out_to_max_and_back_to_min_after_the_stabilisation_window(platform):
    client = platform.client()
    spec = echo_deployment("elastic", replicas=1,
                           autoscaling={"metrics": [{"metric": "in_flight", "target": 1, "min": 1, "max": 3}]},
                           env=[{"name": "ECHO_LATENCY_MS", "value": "300"}])
    client.apply({"services": [echo_service("burst", [spec])]})
    wait_ready(client, "burst")
    assert main_role(client, "burst", "elastic")["ready"] == 1
    url, headers = gateway(client, "burst")
    seen: list[int] = []
    with ExitStack() as stack:
        loads = [stack.enter_context(Load(url, headers)) for _ in range(5)]  # ~5 requests in flight all along
        role = wait_role(client, "burst", "elastic", lambda r: r.get("autoscaled") == 3 and r["ready"] == 3,
                         timeout=10, seen=seen)
        time.sleep(1.0)  # still loaded: it stays at max
        role = wait_role(client, "burst", "elastic", lambda r: True, timeout=1, seen=seen)
        assert role["autoscaled"] == 3 and role["ready"] == 3
        stopped = time.monotonic()
    assert sum(sum(load.statuses.values()) for load in loads) > 20
    assert all(load.failed == 0 for load in loads), [load.errors[:3] for load in loads]
    role = wait_role(client, "burst", "elastic", lambda r: r.get("autoscaled") == 1, timeout=10, seen=seen)
    # The load ended within one request (300 ms) of `stopped`; lower counts wait out the whole window after that.
    assert time.monotonic() - stopped >= STABILISATION_S - 0.5
    wait_role(client, "burst", "elastic", lambda r: r["ready"] == 1 and r["total"] == 1, timeout=10)
    assert max(seen) == 3 and seen[-1] == 1
    status = client.get_deployment("burst", "elastic")["status"]
    assert "→ 1: in_flight 0 per instance" in status["autoscaling"]["main"]["reason"]  # via 2 if it drained so
    assert client.get_deployment("burst", "elastic")["spec"]["replicas"] == 1  # the count lives in status only
    events = [e for e in client.events("burst") if e["reason"] == "SuccessfulRescale"]
    assert len(events) >= 2 and all(e["object"] == "services/burst/deployments/elastic" for e in events)
    assert events[0]["message"].startswith("role main: 1 → ") and "→ 1: in_flight 0" in events[-1]["message"]


def test_an_open_schedule_window_fixes_the_count(platform):
    client = platform.client()
    spec = echo_deployment("office", autoscaling={"schedules": [
        {"name": "always", "start": "* * * * *", "end": "0 0 30 2 *", "replicas": 2}]})  # the end never fires
    spec.pop("replicas")
    client.apply({"services": [echo_service("sched", [spec])]})
    role = wait_role(client, "sched", "office", lambda r: r.get("autoscaled") == 2 and r["ready"] == 2, timeout=10)
    assert role["desired"] == 2
    reason = client.get_deployment("sched", "office")["status"]["autoscaling"]["main"]["reason"]
    assert reason.startswith("1 → 2:") and "schedule 'always' open" in reason
