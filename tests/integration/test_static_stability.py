"""Static stability: the data plane (gateway and instances) serves on while the control plane is dead, and a
platform that starts again re-adopts what runs — one gateway, the same instances — and routing updates resume."""

from __future__ import annotations

import time
from collections import Counter

from embedded_harness import (
    Load,
    PlatformProcess,
    echo_deployment,
    echo_service,
    gateway,
    gateway_pids,
    instance_pids,
    split,
    start_platform,
    wait_ready,
)

DOWN_FOR_S = 10.0


def _blue_green(blue: float, green: float) -> dict:
    return echo_service("web", [echo_deployment("blue", replicas=2), echo_deployment("green")],
                        traffic={"weights": {"blue": blue, "green": green}})


def _wait_split(url: str, headers: dict, want: set[str], timeout: float = 20.0) -> Counter:
    deadline = time.monotonic() + timeout
    while True:
        counts = split(url, headers, 20)
        if set(counts) == want:
            return counts
        assert time.monotonic() < deadline, counts
        time.sleep(0.1)


def _serving_blue(data_dir) -> tuple[PlatformProcess, str, dict]:
    """A platform serving `web` (blue 100 %, green 0 %): the platform, the gateway URL and the caller's headers."""
    platform = start_platform(data_dir)
    client = platform.client()
    client.apply({"services": [_blue_green(100, 0)]})
    wait_ready(client, "web")
    return platform, *gateway(client, "web")


def test_platform_killed_under_load_for_10s_then_restarted_readopts_one_gateway_and_routing_resumes(tmp_path):
    data_dir = tmp_path / "data"
    platform, url, headers = _serving_blue(data_dir)
    try:
        gateway_before = gateway_pids(data_dir)
        instances_before = instance_pids("web", data_dir)
        assert len(gateway_before) == 1 and len(instances_before) == 3

        with Load(url, headers, timeout=5) as load:
            time.sleep(0.5)
            killed_at = time.monotonic()
            platform.kill()  # SIGKILL: no shutdown code runs
            time.sleep(DOWN_FOR_S)
            restarted_at = time.monotonic()
            platform.start()
            client = platform.client()
            wait_ready(client, "web")
            time.sleep(0.5)
        down = load.between(killed_at, restarted_at)
        across_restart = load.between(restarted_at, time.monotonic())
        print(f"\nplatform down {restarted_at - killed_at:.1f} s: requests {dict(down)}; across its restart: "
              f"{dict(across_restart)}; whole run {dict(load.statuses)}")
        assert sum(down.values()) >= 100, down
        assert down[200] >= 0.99 * sum(down.values()), (down, load.errors[:3])
        assert load.failed == 0, (load.statuses, load.errors[:3])  # nothing failed at all, in fact

        # Re-adopted: the very gateway process (no second one), the same instances, the same URL.
        assert gateway_pids(data_dir) == gateway_before
        assert instance_pids("web", data_dir) == instances_before
        assert client.get_service("web")["status"]["gateway_url"] == url
        assert client.request("GET", "/v1/gateway")["gateway"]["pid"] == gateway_before[0]
        events = client.request("GET", "/v1/events", params={"object": "platform/gateway"})["items"]
        assert [e["reason"] for e in events] == ["GatewayStarted", "GatewayAdopted"], events

        # Routing updates resume: a weight change takes effect.
        assert set(split(url, headers, 20)) == {"blue"}
        client.apply({"services": [_blue_green(0, 100)]})
        assert _wait_split(url, headers, {"green"})
        assert instance_pids("web", data_dir) == instances_before  # a weight change restarts nothing
    finally:
        platform.stop()
    assert gateway_pids(data_dir) == [] and instance_pids("web", data_dir) == {}  # a deliberate stop stops the data plane
    assert not (data_dir / "gateway" / "record.json").exists()
