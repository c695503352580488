"""The process and control contract: ready line, admin API, auth, versions, metrics, SIGTERM, supervision."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferstack.platform.gateway import GatewayError, GatewayProcess, SnapshotRejected

from .conftest import BackendHost, GatewayUnderTest, parse_samples, service


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_process_prints_exactly_one_json_ready_line_with_the_requested_admin_port() -> None:
    port = free_port()
    env = dict(os.environ, INFERSTACK_GATEWAY_ADMIN_TOKEN="secret")
    process = subprocess.Popen(
        [sys.executable, "-m", "inferstack.platform.gateway", "--admin-port", str(port)],
        stdout=subprocess.PIPE, env=env,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert json.loads(line) == {"admin_port": port, "pid": process.pid}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert rest == b""


def test_process_without_admin_token_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "INFERSTACK_GATEWAY_ADMIN_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "inferstack.platform.gateway"], env=env, capture_output=True,
                            timeout=20, check=False)
    assert result.returncode == 2
    assert b"INFERSTACK_GATEWAY_ADMIN_TOKEN must be set" in result.stderr


def test_admin_calls_need_the_token_but_healthz_does_not(gateway: GatewayUnderTest) -> None:
    base = gateway.process.admin_url
    assert httpx.get(f"{base}/healthz").status_code == 200
    for method, path in (("GET", "/snapshot"), ("PUT", "/snapshot"), ("GET", "/metrics")):
        assert httpx.request(method, f"{base}{path}").status_code == 401
        wrong = httpx.request(method, f"{base}{path}", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        assert wrong.json() == {"error": "missing or invalid admin token"}


def test_stale_snapshot_version_is_409_and_the_same_version_is_accepted_again(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    document = gateway.snapshot(service("chat", {"main": [backends.start("versioned")]}, weights={"main": 100}))
    accepted = gateway.process.push(document)
    again = gateway.process.push(document)
    stale = dict(document, version=document["version"] - 1)

    with pytest.raises(SnapshotRejected) as raised:
        gateway.process.push(stale)

    assert accepted["version"] == again["version"] == document["version"]
    assert raised.value.status == 409
    assert raised.value.detail["version"] == document["version"]
    assert gateway.process.snapshot() == {"version": document["version"], "listeners": accepted["listeners"],
                                          "pid": gateway.process.pid}


def test_invalid_snapshot_is_400_naming_every_problem(gateway: GatewayUnderTest) -> None:
    document = gateway.snapshot(
        {"key": "chat", "traffic": {"weights": {"a": -1}, "timeout_s": 0}, "listeners": [{"port": 0}]}
    )
    with pytest.raises(SnapshotRejected) as raised:
        gateway.process.push(document)
    assert raised.value.status == 400
    assert sorted(d["path"] for d in raised.value.detail["details"]) == [
        "services.0.listeners.0.port",
        "services.0.traffic.timeout_s",
        "services.0.traffic.weights",
    ]


def test_metrics_are_prometheus_text_with_the_gateway_prefix(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    result = gateway.push(service("chat", {"main": [backends.start("scraped")]}, weights={"main": 100}))
    httpx.get(gateway.url("chat"))

    text = gateway.process.metrics()

    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "inferstack_gateway_requests",
        "inferstack_gateway_errors",
        "inferstack_gateway_request_duration_seconds",
        "inferstack_gateway_in_flight",
        "inferstack_gateway_snapshot_version",
    } <= names
    assert all(name.startswith("inferstack_gateway_") for name in names)
    assert parse_samples(text, "inferstack_gateway_snapshot_version") == [({}, result["version"])]


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(backends: BackendHost) -> None:
    gateway = GatewayUnderTest(GatewayProcess().start())
    gateway.push(service("chat", {"main": [backends.start("draining")]}, weights={"main": 100}))
    port = gateway.port("chat")
    results: list[httpx.Response] = []
    slow = threading.Thread(target=lambda: results.append(httpx.get(f"http://127.0.0.1:{port}/delay?s=0.6", timeout=5)))
    slow.start()
    time.sleep(0.2)

    gateway.process.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    time.sleep(0.1)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/")
    slow.join(5)
    code = asyncio.run(asyncio.wait_for(gateway.process.wait(), 5))

    assert [(r.status_code, r.text) for r in results] == [(200, "draining")]
    assert code == 0
    gateway.process.stop()


def test_start_fails_clearly_when_no_ready_line_comes(tmp_path: Path) -> None:
    silent = tmp_path / "silent-python"
    silent.write_text("#!/bin/sh\nsleep 5\n")
    silent.chmod(silent.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(GatewayError, match="not ready within 0.5 s"):
        GatewayProcess(python=str(silent), startup_timeout=0.5).start()


def test_start_fails_clearly_when_the_process_exits(tmp_path: Path) -> None:
    failing = tmp_path / "failing-python"
    failing.write_text("#!/bin/sh\necho 'cannot start: no uvloop' >&2\nexit 3\n")
    failing.chmod(failing.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(GatewayError, match=r"(?s)exited with status 3.*cannot start: no uvloop"):
        GatewayProcess(python=str(failing)).start()


def test_gateway_exits_when_its_supervisor_dies() -> None:
    supervisor = subprocess.Popen(
        [sys.executable, "-c",
         ("import time; from inferstack.platform.gateway import GatewayProcess\n"
          "g = GatewayProcess().start(); print(g.process.pid, flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE,
    )
    gateway_pid = int(supervisor.stdout.readline())  # type: ignore[union-attr]
    supervisor.kill()
    supervisor.wait()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(gateway_pid, 0)
        except ProcessLookupError:
            break
        try:  # reap it if it became our child's orphan under us (it is re-parented to init otherwise)
            os.waitpid(gateway_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    else:
        os.kill(gateway_pid, signal.SIGKILL)
        pytest.fail("the gateway outlived its supervisor")


def test_async_supervisor_api(backends: BackendHost) -> None:
    backend = backends.start("async-api")

    async def scenario() -> tuple[dict, dict, str, int | None]:
        process = await GatewayProcess().astart()
        try:
            pushed = await process.apush(
                {"version": 3, "services": [service("chat", {"main": [backend]}, weights={"main": 100})]}
            )
            async with httpx.AsyncClient() as client:
                await client.get(f"http://127.0.0.1:{pushed['listeners']['chat/8000']}/")
            current = await process.asnapshot()
            metrics = await process.ametrics()
        finally:
            code = await process.astop()
        return pushed, current, metrics, code

    pushed, current, metrics, code = asyncio.run(scenario())

    assert pushed == current and pushed["version"] == 3
    assert 'inferstack_gateway_requests_total{code="2xx",deployment="main",instance="async-api",service="chat"} 1.0' in metrics
    assert code == 0
