"""Probes: HTTP, TCP and command actions; thresholds; fractional periods; timeouts."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Self

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferstack.platform.runtime import Exec, HttpGet, Probe, ProbeState, ProbeTarget, TcpSocket, check, free_port
from inferstack.platform.runtime.probes import probe_results, until_verdict

from .conftest import live_children


class TinyHttp:
    """A server answering every request with a fixed status, or never answering at all."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.requests: list[bytes] = []

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            if self.status is None:
                await asyncio.sleep(10)
            writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()


def target(port: int, **env: str) -> ProbeTarget:
    return ProbeTarget("127.0.0.1", port, {"PATH": os.environ.get("PATH", ""), **env})


@pytest.mark.parametrize(("status", "ok"), [(200, True), (204, True), (302, True), (399, True), (404, False),
                                            (500, False), (503, False)])
async def test_http_get_passes_on_2xx_and_3xx_only(status, ok):
    async with TinyHttp(status) as server:
        result = await check(HttpGet("/healthz"), target(server.port), timeout_s=1)
    assert result.ok is ok
    assert result.detail == f"HTTP GET /healthz on port {server.port}: {status}"
    assert server.requests[0].startswith(b"GET /healthz HTTP/1.1\r\n")


async def test_http_get_uses_its_own_port_when_given():
    async with TinyHttp(200) as server:
        result = await check(HttpGet("/", port=server.port), target(free_port()), timeout_s=1)
    assert result.ok


async def test_http_get_that_never_answers_times_out_at_a_fraction_of_a_second():
    async with TinyHttp(None) as server:
        started = time.monotonic()
        result = await check(HttpGet("/"), target(server.port), timeout_s=0.15)
    assert not result.ok and "timed out after 0.15s" in result.detail
    assert 0.14 <= time.monotonic() - started < 0.6


async def test_refused_connections_fail_http_and_tcp():
    port = free_port()
    for action in (HttpGet("/"), TcpSocket()):
        result = await check(action, target(port), timeout_s=1)
        assert not result.ok and "refused" in result.detail.lower(), result.detail


async def test_tcp_connect_passes_on_a_listening_port():
    async with TinyHttp(200) as server:
        assert (await check(TcpSocket(), target(server.port), timeout_s=1)).ok
        assert (await check(TcpSocket(port=server.port), target(free_port()), timeout_s=1)).ok


async def test_command_passes_on_exit_zero_and_sees_the_instance_env():
    script = "import os, sys; print('port', os.environ['PORT']); sys.exit(int(os.environ['CODE']))"
    ok = await check(Exec((sys.executable, "-c", script)), target(1234, PORT="1234", CODE="0"), timeout_s=5)
    assert ok.ok and ok.detail.endswith("exit code 0: port 1234")
    failed = await check(Exec((sys.executable, "-c", script)), target(1234, PORT="1234", CODE="3"), timeout_s=5)
    assert not failed.ok and "exit code 3" in failed.detail


async def test_command_runs_without_a_shell_and_reports_a_missing_program():
    result = await check(Exec(("/nonexistent/probe", "; true")), target(1), timeout_s=1)
    assert not result.ok and "No such file" in result.detail


async def test_command_that_overruns_its_timeout_fails_and_is_killed():
    started = time.monotonic()
    result = await check(Exec((sys.executable, "-c", "import time; time.sleep(30)")), target(1), timeout_s=0.3)
    assert not result.ok and "timed out after 0.3s" in result.detail
    assert time.monotonic() - started < 1.5
    assert live_children() == []


async def test_results_come_every_fractional_period_after_the_initial_delay():
    async with TinyHttp(200) as server:
        probe = Probe(TcpSocket(), initial_delay_s=0.2, period_s=0.05)
        started = time.monotonic()
        times = []
        async for _ in probe_results(probe, target(server.port)):
            times.append(time.monotonic() - started)
            if len(times) == 6:
                break
    assert 0.19 <= times[0] < 0.4
    # A fixed schedule, start to start: result k comes k periods after the first (late ones do not shift the rest).
    offsets = [t - times[0] for t in times]
    assert all(k * 0.05 - 0.005 <= offset < k * 0.05 + 0.1 for k, offset in enumerate(offsets)), offsets
    assert offsets[-1] < 5 * 0.05 + 0.1


async def test_startup_probe_fails_after_failure_threshold_failures_in_a_row():
    probe = Probe(TcpSocket(), period_s=0.05, failure_threshold=4)
    started = time.monotonic()
    ok, result = await until_verdict(probe, target(free_port()))
    assert not ok and "refused" in result.detail.lower()
    assert 0.14 <= time.monotonic() - started < 0.8  # 4 results: 3 periods


async def test_startup_probe_passes_once_the_port_opens():
    port = free_port()
    probe = Probe(TcpSocket(), period_s=0.05, failure_threshold=100)
    verdict = asyncio.ensure_future(until_verdict(probe, target(port)))
    await asyncio.sleep(0.3)
    assert not verdict.done()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    ok, _ = await asyncio.wait_for(verdict, 1)
    server.close()
    assert ok


async def test_a_port_that_opens_between_periods_is_seen_passing_long_before_the_next_period():
    # Start-up cadence: the echo preset's first probe runs before it listens; waiting a whole period after that
    # failure made every apply a period slower than the instances' start-up.
    port = free_port()
    probe = Probe(TcpSocket(), period_s=30)
    results = probe_results(probe, target(port))
    first = await anext(results)
    assert not first.ok
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        second = await asyncio.wait_for(anext(results), 10)  # 10 s: generous for a busy machine, a third of a period
    finally:
        server.close()
    assert second.ok


async def test_failures_are_still_reported_once_per_period_while_the_port_stays_closed():
    probe = Probe(TcpSocket(), period_s=0.4, failure_threshold=3)
    results = []

    async def collect() -> None:
        async for result in probe_results(probe, target(free_port())):
            results.append(result)

    task = asyncio.ensure_future(collect())
    await asyncio.sleep(1.0)
    task.cancel()
    # Polled every 25 ms in between, but only the periodic runs count: at 0, 0.4 and 0.8 s (fewer on a busy machine).
    assert 1 <= len(results) <= 3
    assert not any(r.ok for r in results)


async def test_after_the_first_pass_a_probe_runs_on_its_period_only():
    async with TinyHttp(200) as server:
        probe = Probe(HttpGet("/healthz"), period_s=0.5)
        results = []

        async def collect() -> None:
            async for result in probe_results(probe, target(server.port)):
                results.append(result)

        task = asyncio.ensure_future(collect())
        await asyncio.sleep(1.2)
        task.cancel()
    assert 1 <= len(server.requests) <= 3  # at 0, 0.5 and 1.0 s: no polling once it passed
    assert all(r.ok for r in results)


def test_thresholds_count_consecutive_results_only():
    readiness = ProbeState(Probe(TcpSocket(), success_threshold=2, failure_threshold=3), passing=False)
    assert [readiness.record(ok) for ok in (True, False, True, True)] == [False, False, False, True]
    assert readiness.passing is True
    assert [readiness.record(ok) for ok in (False, False, True, False, False, False)] == [False] * 5 + [True]
    assert readiness.passing is False


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 4), st.integers(1, 4))
def test_verdict_flips_exactly_when_a_run_reaches_its_threshold(results, success_threshold, failure_threshold):
    state = ProbeState(Probe(TcpSocket(), success_threshold=success_threshold, failure_threshold=failure_threshold),
                       passing=None)
    verdict, run, last = None, 0, None
    for ok in results:
        run = run + 1 if ok == last else 1
        last = ok
        expected_change = verdict != ok and run >= (success_threshold if ok else failure_threshold)
        if expected_change:
            verdict = ok
        assert state.record(ok) is expected_change
        assert state.passing is verdict


@pytest.mark.parametrize("kwargs", [{"period_s": 0}, {"timeout_s": -1}, {"initial_delay_s": -0.1},
                                    {"success_threshold": 0}, {"failure_threshold": 0}])
def test_invalid_probe_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Probe(TcpSocket(), **kwargs)
