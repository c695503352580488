"""The platform supervises its gateway: a gateway killed under load is restarted on the same URL, and the restart
shows in `/healthz`, `GET /v1/gateway`, `inferstack status` and the events; one that keeps dying backs off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from embedded_harness import (
    Load,
    PlatformProcess,
    echo_deployment,
    echo_service,
    gateway,
    gateway_pids,
    start_platform,
    wait_ready,
)

from inferstack.targets.local.client import PlatformClient

ROOT = Path(__file__).resolve().parents[2]


def _gateway_pid(data_dir: Path, other_than: int | None = None, timeout: float = 20.0) -> int:
    """The gateway's pid from its record, once it names a process other than `other_than`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = json.loads((data_dir / "gateway" / "record.json").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            pid = None
        if pid is not None and pid != other_than:
            return pid
        time.sleep(0.02)
    raise AssertionError(f"no gateway other than {other_than} recorded after {timeout} s")


def _serving_chat(data_dir: Path, replicas: int = 1) -> tuple[PlatformProcess, PlatformClient, str, dict]:
    """A platform serving `chat`: the platform, a client, the gateway URL and the caller's headers."""
    platform = start_platform(data_dir)
    client = platform.client()
    client.apply({"services": [echo_service("chat", [echo_deployment("main", replicas=replicas)])]})
    wait_ready(client, "chat")
    return platform, client, *gateway(client, "chat")


def _gateway_events(client) -> list[dict]:
    return client.request("GET", "/v1/events", params={"object": "platform/gateway"})["items"]


def test_gateway_killed_under_load_serves_again_on_the_same_url_and_the_restart_is_reported(tmp_path):
    data_dir = tmp_path / "data"
    platform, client, url, headers = _serving_chat(data_dir, replicas=2)
    try:
        first = _gateway_pid(data_dir)
        assert gateway_pids(data_dir) == [first]

        with Load(url, headers, timeout=5) as load:
            time.sleep(0.5)
            killed_at = time.monotonic()
            os.kill(first, signal.SIGKILL)
            healthz_while_down = []
            while load.first_success_after(killed_at + 0.05) is None and time.monotonic() < killed_at + 20:
                answer = httpx.get(f"{platform.url}/healthz", timeout=5)
                healthz_while_down.append((answer.status_code, answer.json()))
                time.sleep(0.02)
            back_at = load.first_success_after(killed_at + 0.05)
            time.sleep(0.5)
        assert back_at is not None, (load.statuses, load.errors[-3:])
        print(f"\ngateway killed under load: serving again after {back_at - killed_at:.2f} s on {url}; "
              f"requests {dict(load.statuses)}")

        second = _gateway_pid(data_dir, other_than=first)
        assert gateway_pids(data_dir) == [second]
        assert client.get_service("chat")["status"]["gateway_url"] == url  # the same URL, not a new port
        assert load.between(back_at, time.monotonic()) and set(load.between(back_at + 0.2, time.monotonic())) == {200}
        # While it was down, /healthz said so (503 with the reason), not green.
        down = [body for status, body in healthz_while_down if status == 503]
        assert down and all(not b["ok"] and b["gateway"]["state"] in ("restarting", "starting") for b in down), \
            healthz_while_down[:3]
        assert "killed by signal 9" in down[0]["gateway"]["reason"]
        assert httpx.get(f"{platform.url}/healthz").json()["gateway"] == {
            "ok": True, "state": "running", "reason": "", "restarts": 1}

        status = client.request("GET", "/v1/gateway")["gateway"]
        assert status["pid"] == second and status["restarts"] == 1
        assert status["last_restart"]["cause"] == f"the gateway (pid {first}) was killed by signal 9 (SIGKILL)"
        restarted = [e for e in _gateway_events(client) if e["reason"] == "GatewayRestarted"]
        assert len(restarted) == 1 and restarted[0]["type"] == "Warning", _gateway_events(client)
        assert f"pid {first}" in restarted[0]["message"] and f"pid {second}" in restarted[0]["message"]

        shown = subprocess.run([sys.executable, "-m", "inferstack", "status", "--data-dir", str(data_dir)],
                               check=False, capture_output=True, text=True, cwd=ROOT, timeout=60,
                               env={**os.environ, "COLUMNS": "200"})
        assert shown.returncode == 0, shown.stderr
        assert f"gateway: running (pid {second})" in shown.stdout and "restarts: 1;" in shown.stdout, shown.stdout
        assert "killed by signal 9" in shown.stdout
    finally:
        platform.stop()
    assert gateway_pids(data_dir) == []  # a deliberate stop stops the gateway


def test_a_gateway_that_keeps_dying_backs_off_and_healthz_is_503_with_the_reason_meanwhile(tmp_path):
    data_dir = tmp_path / "data"
    platform, client, url, headers = _serving_chat(data_dir)
    try:
        first = _gateway_pid(data_dir)
        os.kill(first, signal.SIGKILL)
        second = _gateway_pid(data_dir, other_than=first)
        os.kill(second, signal.SIGKILL)  # dies again right after its restart: the next start waits

        deadline = time.monotonic() + 20
        while True:
            answer = httpx.get(f"{platform.url}/healthz", timeout=5)
            if answer.status_code == 503 and answer.json()["gateway"]["state"] == "backoff":
                break
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.02)
        assert answer.json()["ok"] is False
        assert f"(pid {second}) was killed by signal 9" in answer.json()["gateway"]["reason"]

        third = _gateway_pid(data_dir, other_than=second)
        wait_ready(client, "chat")
        deadline = time.monotonic() + 20
        while httpx.post(f"{url}/v1/predict", json={"input": "x"}, headers=headers).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert gateway_pids(data_dir) == [third]
        reasons = [e["reason"] for e in _gateway_events(client)]
        assert reasons.count("GatewayRestarted") == 2 and "GatewayBackOff" in reasons, reasons
        backoff = next(e for e in _gateway_events(client) if e["reason"] == "GatewayBackOff")
        assert "next start in 1 s" in backoff["message"], backoff
        assert httpx.get(f"{platform.url}/healthz").json()["gateway"]["restarts"] == 2
    finally:
        platform.stop()
    assert gateway_pids(data_dir) == []


def test_gateway_that_died_while_the_platform_was_down_is_restarted_on_its_last_snapshot_and_same_port(tmp_path):
    data_dir = tmp_path / "data"
    platform, client, url, headers = _serving_chat(data_dir)
    try:
        persisted = data_dir / "gateway" / "snapshot.json"
        assert persisted.stat().st_mode & 0o777 == 0o600
        assert json.loads(persisted.read_text())["listeners"] == {"chat/8000": int(url.rsplit(":", 1)[1])}

        platform.kill()
        (old,) = gateway_pids(data_dir)
        os.kill(old, signal.SIGKILL)  # the data plane loses its gateway while nobody supervises it
        time.sleep(0.2)
        assert gateway_pids(data_dir) == []

        platform.start()
        client = platform.client()
        wait_ready(client, "chat")
        assert len(gateway_pids(data_dir)) == 1 and gateway_pids(data_dir) != [old]
        assert client.get_service("chat")["status"]["gateway_url"] == url  # its listener is back on its port
        assert httpx.post(f"{url}/v1/predict", json={"input": "x"}, headers=headers).status_code == 200
        started = _gateway_events(client)[-1]
        assert started["reason"] == "GatewayStarted" and f"pid {old}, had exited" in started["message"], started
    finally:
        platform.stop()
    assert gateway_pids(data_dir) == []
    assert not (data_dir / "gateway" / "snapshot.json").exists()  # a deliberate stop: nothing to resume
