"""Startup, readiness and liveness probes with Kubernetes semantics, on asyncio.

A probe is an action (HTTP GET, TCP connect or a command) plus timing and thresholds; all durations accept fractions
of a second. ``check`` runs an action once; ``probe_results`` runs it on the probe's schedule; ``ProbeState`` turns
consecutive results into a passing/failing verdict the way the kubelet does.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inferstack.images import UPSTREAM_TOKEN_ENV, UPSTREAM_TOKEN_HEADER
from inferstack.platform.runtime.process import InstanceProcess


@dataclass(frozen=True)
class HttpGet:
    """Passes on an HTTP status from 200 to 399. Sends the instance's upstream token (env
    ``INFERSTACK_UPSTREAM_TOKEN``) as the gateway does, so an instance that answers only the gateway is probed too."""

    path: str = "/"
    port: int | None = None  # None: the instance's listen port


@dataclass(frozen=True)
class TcpSocket:
    """Passes when a TCP connection is accepted."""

    port: int | None = None  # None: the instance's listen port


@dataclass(frozen=True)
class Exec:
    """Passes when the command exits 0 within the timeout; run without a shell, with the instance's env and cwd."""

    argv: tuple[str, ...]


ProbeAction = HttpGet | TcpSocket | Exec


@dataclass(frozen=True)
class Probe:
    """An action, when and how often to run it, and how many results in a row decide."""

    action: ProbeAction
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    def __post_init__(self) -> None:
        if self.initial_delay_s < 0 or self.period_s <= 0 or self.timeout_s <= 0:
            raise ValueError("probe timings: initial_delay_s must be >= 0, period_s and timeout_s > 0")
        if self.success_threshold < 1 or self.failure_threshold < 1:
            raise ValueError("probe thresholds must be >= 1")


@dataclass(frozen=True)
class Probes:
    """An instance's probes. Readiness and liveness run only once start-up has succeeded."""

    startup: Probe | None = None
    readiness: Probe | None = None  # None: DEFAULT_READINESS
    liveness: Probe | None = None


DEFAULT_READINESS = Probe(TcpSocket(), period_s=0.5, timeout_s=1.0, failure_threshold=3)
"""Readiness when none is given: a TCP connect to the listen port."""


@dataclass(frozen=True)
class ProbeTarget:
    """Where a probe is aimed: the instance's host and listen port, and the env and cwd commands run with."""

    host: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    cwd: str | Path | None = None


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # e.g. "HTTP GET /healthz on port 4312: 503"


def describe(action: ProbeAction, target: ProbeTarget) -> str:
    """The action in words, for events and status messages."""
    if isinstance(action, HttpGet):
        return f"HTTP GET {action.path} on port {action.port or target.port}"
    if isinstance(action, TcpSocket):
        return f"TCP connect to port {action.port or target.port}"
    return f"command {action.argv[0]!r}" if action.argv else "empty command"


async def check(action: ProbeAction, target: ProbeTarget, timeout_s: float) -> ProbeResult:
    """Run ``action`` once against ``target``; a timeout counts as a failure."""
    what = describe(action, target)
    if isinstance(action, Exec):
        return await _check_exec(action, target, timeout_s, what)
    try:
        async with asyncio.timeout(timeout_s):
            port = action.port or target.port
            reader, writer = await asyncio.open_connection(target.host, port)
            try:
                if isinstance(action, TcpSocket):
                    return ProbeResult(True, f"{what}: connected")
                token = target.env.get(UPSTREAM_TOKEN_ENV)
                proof = f"{UPSTREAM_TOKEN_HEADER}: {token}\r\n" if token else ""
                writer.write(f"GET {action.path} HTTP/1.1\r\nHost: {target.host}:{port}\r\n{proof}"
                             "User-Agent: inferstack-probe\r\nConnection: close\r\n\r\n".encode())
                status_line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return ProbeResult(False, f"{what}: timed out after {timeout_s:g}s")
    except OSError as exc:
        return ProbeResult(False, f"{what}: {_os_error(exc)}")
    try:
        status = int(status_line.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return ProbeResult(False, f"{what}: not an HTTP answer")
    return ProbeResult(200 <= status < 400, f"{what}: {status}")


async def _check_exec(action: Exec, target: ProbeTarget, timeout_s: float, what: str) -> ProbeResult:
    with tempfile.NamedTemporaryFile(prefix="inferstack-probe-") as output:
        try:
            process = InstanceProcess.spawn(action.argv, env=target.env, cwd=target.cwd, log_path=Path(output.name))
        except OSError as exc:
            return ProbeResult(False, f"{what}: {_os_error(exc)}")
        try:
            async with asyncio.timeout(timeout_s):
                code = await process.wait()
        except TimeoutError:
            return ProbeResult(False, f"{what}: timed out after {timeout_s:g}s")
        finally:
            if process.is_running():  # timed out or cancelled: the command and what it started go
                process.kill()
                await process.wait()
        tail = output.read()[-200:].decode(errors="replace").strip()
    detail = f"{what}: exit code {code}" + (f": {tail}" if tail else "")
    return ProbeResult(code == 0, detail)


def _os_error(exc: OSError) -> str:
    # asyncio's connect errors read "Connect call failed (...)"; the errno's own words are what a person wants.
    return os.strerror(exc.errno) if exc.errno else str(exc)


STARTUP_POLL_S = 0.025
"""Until a network probe first passes, it is also tried this often between its periodic runs (see probe_results)."""


async def probe_results(probe: Probe, target: ProbeTarget, *, skip_initial_delay: bool = False
                        ) -> AsyncIterator[ProbeResult]:
    """The probe's results, forever: first after ``initial_delay_s``, then one every ``period_s`` (start to start).

    Start-up cadence: until an HTTP or TCP probe first passes, it is also tried every ``STARTUP_POLL_S`` between two
    periodic runs, and the first pass is reported at once — an instance that starts listening 10 ms after a failed
    probe is seen ready then, not a whole period later. Only that pass comes early: failures are still reported
    once per period (so thresholds keep their meaning, e.g. a startup probe still allows
    ``failure_threshold × period_s``), and after the first pass the probe runs on its period alone. Commands (Exec)
    are not polled: each run starts a process."""
    loop = asyncio.get_running_loop()
    if probe.initial_delay_s and not skip_initial_delay:
        await asyncio.sleep(probe.initial_delay_s)
    poll = not isinstance(probe.action, Exec)
    next_at = loop.time()
    while True:
        result = await check(probe.action, target, probe.timeout_s)
        poll = poll and not result.ok
        yield result
        next_at = max(next_at + probe.period_s, loop.time())
        while poll and loop.time() + STARTUP_POLL_S < next_at:
            await asyncio.sleep(STARTUP_POLL_S)
            early = await check(probe.action, target, min(probe.timeout_s, max(next_at - loop.time(), 0.001)))
            if early.ok:
                poll = False
                yield early
                next_at = loop.time() + probe.period_s
        await asyncio.sleep(max(next_at - loop.time(), 0))


class ProbeState:
    """Consecutive results against thresholds: ``passing`` turns True after ``success_threshold`` successes in a row
    and False after ``failure_threshold`` failures in a row; None until the first verdict when started undecided."""

    def __init__(self, probe: Probe, passing: bool | None) -> None:
        self.probe = probe
        self.passing = passing
        self.in_a_row = 0  # length of the current run of equal results
        self._last_ok: bool | None = None

    def record(self, ok: bool) -> bool:
        """Count one result; True when it changed the verdict."""
        self.in_a_row = self.in_a_row + 1 if ok == self._last_ok else 1
        self._last_ok = ok
        threshold = self.probe.success_threshold if ok else self.probe.failure_threshold
        if self.passing != ok and self.in_a_row >= threshold:
            self.passing = ok
            return True
        return False


async def until_verdict(probe: Probe, target: ProbeTarget) -> tuple[bool, ProbeResult]:
    """Run a startup probe until it decides: (True, last result) or (False, last result)."""
    state = ProbeState(probe, passing=None)
    async for result in probe_results(probe, target):
        if state.record(result.ok):
            return bool(state.passing), result
    raise AssertionError("unreachable")
