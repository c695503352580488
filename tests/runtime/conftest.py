"""Shared helpers of the runtime tests: async test functions, echo instances, a raw HTTP client, orphan checks."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self

import pytest

from inferstack.platform.runtime import (
    HttpGet,
    InstanceProcess,
    Probe,
    Probes,
    RoleController,
    RoleTemplate,
    free_port,
)
from inferstack.platform.runtime.process import _proc_stat

ECHO_ARGV = (sys.executable, "-m", "inferstack.images.echo")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop (no asyncio plugin needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


def live_children() -> list[int]:
    """Pids of this test process's children that are still running (zombies excluded)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2:].split()
        if int(fields[1]) == me and fields[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def is_running(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


@pytest.fixture(autouse=True)
def no_orphans():
    """Every test must leave no running child process behind."""
    yield
    deadline = time.monotonic() + 3.0
    while (left := live_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"test left running child processes: {left}"


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition",
                     interval: float = 0.01) -> float:
    """Poll ``predicate`` until true; the seconds it took. Fails the test after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


class RawHttp:
    """One HTTP/1.1 connection, under the test's control (keep-alive, timing)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> RawHttp:
        return cls(*await asyncio.open_connection(host, port))

    def send(self, method: str, path: str, payload: dict | None = None) -> None:
        body = json.dumps(payload).encode() if payload is not None else b""
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                          + body)

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def request(self, method: str, path: str, payload: dict | None = None) -> tuple[int, dict[str, str], dict]:
        self.send(method, path, payload)
        status, headers, body = await self.read_response()
        return status, headers, json.loads(body) if body else {}

    def close(self) -> None:
        self.writer.close()


async def http(port: int, method: str, path: str, payload: dict | None = None) -> tuple[int, dict[str, str], dict]:
    """One request on a fresh connection."""
    conn = await RawHttp.connect(port)
    try:
        return await conn.request(method, path, payload)
    finally:
        conn.close()


class EchoInstance:
    def __init__(self, process: InstanceProcess, port: int, log_path: Path) -> None:
        self.process, self.port, self.log_path = process, port, log_path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()


async def _healthy(port: int) -> bool:
    try:
        status, _, _ = await http(port, "GET", "/healthz")
    except OSError:
        return False
    return status == 200


@pytest.fixture
def start_echo(tmp_path: Path) -> Callable[..., Awaitable[EchoInstance]]:
    """``await start_echo(ENV=...)`` → a running echo instance (ready unless ``wait=False``); stopped afterwards."""
    started: list[InstanceProcess] = []

    async def start(wait: bool = True, **env: str) -> EchoInstance:
        port = free_port()
        log_path = tmp_path / f"echo-{len(started)}.log"
        full_env = {"PATH": os.environ.get("PATH", ""), "PORT": str(port), **env}
        process = InstanceProcess.spawn(ECHO_ARGV, env=full_env, log_path=log_path)
        started.append(process)
        instance = EchoInstance(process, port, log_path)
        if wait:
            deadline = time.monotonic() + 10
            while not await _healthy(port):
                assert process.is_running(), f"echo exited: {log_path.read_text()}"
                assert time.monotonic() < deadline, "echo did not become healthy"
                await asyncio.sleep(0.005)
        return instance

    yield start
    for process in started:
        if process.is_running():
            process.kill()
            deadline = time.monotonic() + 2
            while process.returncode is None and time.monotonic() < deadline:
                time.sleep(0.01)


# ---- controllers -----------------------------------------------------------------------------------------------------

FAST_READINESS = Probe(HttpGet("/healthz"), period_s=0.05, timeout_s=0.5, failure_threshold=2)


def echo_template(revision: str, probes: Probes | None = None, graceful_shutdown_s: float = 1.0,
                  **env: str) -> RoleTemplate:
    """The echo image as a role template, with probe periods fit for tests."""
    return RoleTemplate(argv=ECHO_ARGV, revision=revision, env={"INFERSTACK_VERSION": revision, **env},
                        probes=probes or Probes(readiness=FAST_READINESS), graceful_shutdown_s=graceful_shutdown_s)


@contextlib.asynccontextmanager
async def running_controller(tmp_path: Path, prefix: str = "chat-canary-main", **options):
    """A RoleController with test-sized timings; shut down (gracefully) on the way out."""
    options = {"restart_backoff_base_s": 0.1, "restart_backoff_cap_s": 0.4, "progress_deadline_s": 10.0, **options}
    controller = RoleController(prefix, log_dir=tmp_path / "logs", **options)
    try:
        yield controller
    finally:
        await controller.shutdown()


def is_complete(controller: RoleController, revision: str) -> bool:
    status = controller.status()
    return status.revision == revision and status.condition("Progressing").reason == "NewReplicaSetAvailable"


class Sampler:
    """Samples a controller (and the real processes) continuously while a rollout runs."""

    def __init__(self, controller: RoleController) -> None:
        self.controller = controller
        self.samples: list[tuple[int, int, int]] = []  # (ready, total, running child processes)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.wait({self._task})

    async def _run(self) -> None:
        while True:
            status = self.controller.status()
            self.samples.append((status.ready, status.total, len(live_children())))
            await asyncio.sleep(0.003)

    @property
    def min_ready(self) -> int:
        return min(s[0] for s in self.samples)

    @property
    def max_total(self) -> int:
        return max(max(s[1], s[2]) for s in self.samples)
