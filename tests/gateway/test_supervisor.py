"""The gateway outlives whoever started it and is kept running: real gateway processes over a real state dir.

`GatewayProcess` with a state dir: resumes its last snapshot on the same ports, survives a SIGKILL of its starter,
is adopted by pid + start time + token. `GatewaySupervisor`: restarts, adoption, never a second gateway, liveness,
a deliberate stop."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from inferstack.platform.gateway import GatewayProcess, GatewaySupervisor
from inferstack.platform.gateway import supervisor as supervision
from inferstack.platform.server import process_start_time  # None once exited (a zombie too)

from .conftest import BackendHost, service


def _get(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_start_time(pid) is None:
            return True
        time.sleep(0.02)
    return False


def test_a_gateway_on_a_state_dir_resumes_its_last_snapshot_on_the_same_port_before_any_push(
        tmp_path: Path, backends: BackendHost) -> None:
    state_dir = tmp_path / "gateway"
    first = GatewayProcess(state_dir).start()
    try:
        pushed = first.push({"version": 7, "services": [service("chat", {"main": [backends.start("kept")]},
                                                               weights={"main": 100})]})
        port = pushed["listeners"]["chat/8000"]
        assert _get(port).text == "kept"
        deadline = time.monotonic() + 10
        while not (state_dir / "snapshot.json").exists():  # persisted off the event loop, right after the swap
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        assert _gone(first.pid)
    finally:
        first.stop()

    second = GatewayProcess(state_dir).start()
    try:
        assert _get(port).text == "kept"  # no push: it serves what it had, where it had it
        assert second.snapshot() == {"version": 7, "listeners": {"chat/8000": port}, "pid": second.pid}
    finally:
        second.stop()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in state_dir.iterdir()} == {
        "token": 0o600, "snapshot.json": 0o600, "gateway.log": 0o600}  # the record goes with a stopped gateway


def test_a_gateway_outlives_a_sigkill_of_its_starter_and_is_adopted_by_pid_start_time_and_token(
        tmp_path: Path, backends: BackendHost) -> None:
    state_dir = tmp_path / "gateway"
    starter = subprocess.Popen(
        [sys.executable, "-c",
         ("import sys, time; from inferstack.platform.gateway import GatewayProcess\n"
         f"g = GatewayProcess({str(state_dir)!r}).start(); print(g.pid, flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE)
    gateway_pid = int(starter.stdout.readline())  # type: ignore[union-attr]
    adopted = GatewayProcess.adopt(state_dir)
    assert adopted is not None and adopted.pid == gateway_pid and adopted.verify()
    port = adopted.push({"version": 1, "services": [service("chat", {"main": [backends.start("alive")]},
                                                             weights={"main": 100})]})["listeners"]["chat/8000"]
    starter.kill()
    starter.wait()
    try:
        time.sleep(1.0)  # a gateway tied to its starter (a pipe, a parent watch) would have left by now
        assert _get(port).text == "alive"
        assert GatewayProcess(state_dir, admin_token="not the token").verify() is False
        impostor = GatewayProcess.adopt(state_dir, admin_token="not the token")
        assert impostor is not None and not impostor.verify()  # the right process, but it must answer our token
    finally:
        adopted.stop()  # SIGTERM: it drains and removes its record
    assert _gone(gateway_pid)
    assert GatewayProcess.adopt(state_dir) is None  # no record, nothing to adopt


class Events(list):
    def __call__(self, reason: str, message: str, type_: str) -> None:
        self.append((reason, type_, message))

    def reasons(self) -> list[str]:
        return [reason for reason, _, _ in self]


async def _until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


def test_the_supervisor_restarts_a_killed_gateway_on_the_same_listener_and_reports_it(
        tmp_path: Path, backends: BackendHost) -> None:
    backend = backends.start("restarted")

    async def scenario() -> None:
        events, restarted = Events(), asyncio.Event()
        supervisor = GatewaySupervisor(tmp_path / "gateway", on_event=events, on_restart=restarted.set)
        await supervisor.start()
        try:
            first = supervisor.process.pid
            result = await supervisor.apush({"version": 1, "services": [service("chat", {"main": [backend]},
                                                                                   weights={"main": 100})]})
            port = result["listeners"]["chat/8000"]
            await _until(lambda: (tmp_path / "gateway" / "snapshot.json").exists())
            os.kill(first, signal.SIGKILL)
            await asyncio.wait_for(restarted.wait(), 20)

            health = supervisor.health()
            assert health["ok"] and health["restarts"] == 1 and health["pid"] != first
            assert health["last_restart"]["cause"] == f"the gateway (pid {first}) was killed by signal 9 (SIGKILL)"
            assert (await asyncio.to_thread(_get, port)).text == "restarted"
            assert events.reasons() == ["GatewayStarted", "GatewayRestarted"]
            assert events[1][1] == "Warning" and "serving its last snapshot on the same listeners" in events[1][2]
            assert 'inferstack_gateway_restarts_total 1' in supervisor.metrics_lines()
        finally:
            await supervisor.stop()
        assert supervisor.health()["state"] == "stopped" and not (tmp_path / "gateway" / "record.json").exists()

    asyncio.run(scenario())


def test_a_new_supervisor_adopts_the_running_gateway_instead_of_starting_a_second(tmp_path: Path) -> None:
    async def scenario() -> None:
        crashed = GatewaySupervisor(tmp_path / "gateway")
        await crashed.start()
        crashed._task.cancel()  # the platform dies: nothing of its shutdown runs
        pid = crashed.process.pid

        events = Events()
        supervisor = GatewaySupervisor(tmp_path / "gateway", on_event=events)
        await supervisor.start()
        try:
            assert supervisor.process.pid == pid and supervisor.health()["ok"]
            assert events.reasons() == ["GatewayAdopted"]
        finally:
            await supervisor.stop()
        assert _gone(pid)

    asyncio.run(scenario())


def test_a_recorded_process_that_does_not_answer_is_killed_before_a_new_gateway_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "ADOPT_PATIENCE_S", 0.5)
    state_dir = tmp_path / "gateway"
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    state_dir.mkdir(mode=0o700)
    (state_dir / "record.json").write_text(
        f'{{"pid": {stuck.pid}, "start_time": {process_start_time(stuck.pid)}, "admin_port": 9}}')

    async def scenario() -> None:
        events = Events()
        supervisor = GatewaySupervisor(state_dir, on_event=events)
        await supervisor.start()
        try:
            assert _gone(stuck.pid)  # it may hold the listeners: it goes first (killed, and reaped here)
            assert supervisor.health()["ok"] and supervisor.process.pid != stuck.pid
            assert events.reasons() == ["GatewayUnresponsive", "GatewayStarted"]
        finally:
            await supervisor.stop()

    asyncio.run(scenario())


def test_a_gateway_that_stops_answering_is_killed_and_restarted(tmp_path: Path) -> None:
    async def scenario() -> None:
        events, restarted = Events(), asyncio.Event()
        supervisor = GatewaySupervisor(tmp_path / "gateway", on_event=events, on_restart=restarted.set,
                                       liveness_period_s=0.2, liveness_timeout_s=0.5, liveness_failures=3)
        await supervisor.start()
        try:
            frozen = supervisor.process.pid
            os.kill(frozen, signal.SIGSTOP)  # alive, but answers nothing
            await asyncio.wait_for(restarted.wait(), 30)
            assert supervisor.process.pid != frozen and _gone(frozen)
            assert events.reasons() == ["GatewayStarted", "GatewayUnresponsive", "GatewayRestarted"]
            assert "did not answer its health check 3 times in a row" in events[1][2]
        finally:
            await supervisor.stop()

    asyncio.run(scenario())


def test_a_gateway_that_cannot_start_is_retried_with_growing_back_off_and_health_says_why(tmp_path: Path) -> None:
    failing = tmp_path / "failing-python"
    failing.write_text("#!/bin/sh\necho 'no uvloop here' >&2\nexit 3\n")
    failing.chmod(0o755)

    async def scenario() -> None:
        events = Events()
        supervisor = GatewaySupervisor(tmp_path / "gateway", on_event=events, python=str(failing),
                                       backoff_base_s=0.1)
        await supervisor.start()  # the platform still comes up; its /healthz says why the gateway does not
        try:
            health = supervisor.health()
            assert not health["ok"] and health["state"] in ("backoff", "restarting")
            assert health["reason"] == "the gateway did not start: the process exited with status 3 (its log ends: " \
                                       "no uvloop here)"
            await _until(lambda: events.reasons().count("GatewayBackOff") >= 2)
            backoffs = [m for r, _, m in events if r == "GatewayBackOff"]
            assert "next start in 0.1 s" in backoffs[0] and "next start in 0.2 s" in backoffs[1], backoffs
            supervisor.options["python"] = sys.executable  # the machine is fixed
            await _until(lambda: supervisor.health()["ok"])
            assert events.reasons()[-1] == "GatewayRestarted"
        finally:
            await supervisor.stop()

    asyncio.run(scenario())
