"""GatewayProcess: one gateway process — started here or re-adopted from its state dir — and its admin API.

A gateway runs in a session of its own with no pipe to whoever started it, so it outlives a crash of the platform
(static stability). It is identified by pid *and* /proc start time (as instances are: `InstanceProcess`), and it is
ready once it has written its record (`statedir.py`) naming its pid. Without a state dir (tests, benchmarks) a
temporary one is used and removed by `stop()`, and the process exits when its creator does (`--exit-with`).

The admin API has sync (`push`, `snapshot`, `metrics`) and async (`apush`, …) variants: tests use the former, the
platform's asyncio control plane the latter. A gateway that cannot be reached raises `GatewayUnavailable`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import httpx

from ..runtime.process import InstanceProcess, process_start_time
from .statedir import StateDir

TOKEN_ENV = "INFERSTACK_GATEWAY_ADMIN_TOKEN"
STOP_TIMEOUT_S = 10.0  # the gateway drains for up to 5 s after SIGTERM


class GatewayError(RuntimeError):
    """The gateway process failed to start, died, or answered the admin API with an error."""


class GatewayUnavailable(GatewayError):
    """The gateway is not running or does not answer its admin API (it may be restarting)."""


class SnapshotRejected(GatewayError):
    """The gateway refused a snapshot: 409 (stale version) or 400 (invalid)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"snapshot rejected ({status}): {detail}")
        self.status = status
        self.detail = detail


def describe_exit(code: int | None) -> str:
    """How a process ended, for a person: `was killed by signal 9 (SIGKILL)`, `exited with code 3`."""
    if code is None:
        return "exited (exit code unknown: not our child)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "?"
        return f"was killed by signal {-code} ({name})"
    return f"exited with code {code}"


class GatewayProcess:
    """A gateway process and its admin API.

    `start()` spawns it (own session, output in the state dir's log) and waits until it serves; `adopt()` takes
    over the one a state dir records; `stop()` sends SIGTERM (in-flight requests finish) and SIGKILL after
    `STOP_TIMEOUT_S`.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        admin_token: str | None = None,
        admin_port: int = 0,
        python: str = sys.executable,
        startup_timeout: float = 10.0,
        request_timeout: float = 10.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self._temporary = state_dir is None
        self.state_dir = StateDir(tempfile.mkdtemp(prefix="inferstack-gateway-") if state_dir is None
                                  else state_dir).ensure()
        self.admin_token = admin_token or self.state_dir.token()
        self.requested_admin_port = admin_port
        self.python = python
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.env = env
        self.admin_port: int | None = None
        self.process: InstanceProcess | None = None

    # -- lifecycle

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def admin_url(self) -> str:
        if self.admin_port is None:
            raise GatewayUnavailable("the gateway is not started")
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def start(self) -> GatewayProcess:
        """Spawn the process and wait until its record names it; GatewayError on failure or timeout."""
        if self.process is not None:
            raise GatewayError("the gateway is already started")
        env = dict(os.environ if self.env is None else self.env)
        env[TOKEN_ENV] = self.admin_token
        command = [self.python, "-m", "inferstack.platform.gateway", "--admin-port", str(self.requested_admin_port),
                   "--state-dir", str(self.state_dir.path)]
        if self._temporary:
            command += ["--exit-with", f"{os.getpid()}:{process_start_time(os.getpid())}"]
        os.close(self.state_dir.open_log())  # created 0600 (rotated when large) before the process appends to it
        try:
            self.process = InstanceProcess.spawn(command, env=env, log_path=self.state_dir.log_path)
        except OSError as exc:
            if self._temporary:
                shutil.rmtree(self.state_dir.path, ignore_errors=True)
            raise GatewayError(f"cannot start {command[0]}: {exc}") from exc
        try:
            self.admin_port = self._wait_ready(self.process)
        except GatewayError as exc:
            self._kill()
            failure = GatewayError(f"gateway did not start: {exc}\n--- gateway log ---\n{self.logs()}")
            self._forget(self.process)
            raise failure from exc
        return self

    def _wait_ready(self, process: InstanceProcess) -> int:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            record = self.state_dir.read_record()
            if record is not None and record["pid"] == process.pid:
                return record["admin_port"]
            if not process.is_running():
                raise GatewayError(f"the process exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise GatewayError(f"not ready within {self.startup_timeout:g} s")
            time.sleep(0.01)

    @classmethod
    def adopt(cls, state_dir: Path | str, **options: Any) -> GatewayProcess | None:
        """The gateway the state dir records, if that process still runs (same pid *and* start time), else None.
        Whether it is really our gateway is for `verify` / `averify` to say (its admin API, with our token)."""
        gateway = cls(state_dir, **options)
        record = gateway.state_dir.read_record()
        if record is None:
            return None
        process = InstanceProcess.adopt(record["pid"], record["start_time"], log_path=gateway.state_dir.log_path)
        if process is None:
            return None
        gateway.process, gateway.admin_port = process, record["admin_port"]
        return gateway

    def verify(self) -> bool:
        """Its admin API answers our token, as this very process."""
        try:
            return self.snapshot().get("pid") == self.pid
        except GatewayError:
            return False

    async def averify(self) -> bool:
        try:
            return (await self.asnapshot()).get("pid") == self.pid
        except GatewayError:
            return False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to `timeout` for in-flight requests to finish and the process to exit, else SIGKILL."""
        process = self.process
        if process is None:
            return None
        if process.is_running():
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while process.is_running() and time.monotonic() < deadline:
                time.sleep(0.01)
        self._kill()
        return self._forget(process)

    async def astop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        process = self.process
        if process is None:
            return None
        await process.terminate(timeout)
        return self._forget(process)

    def _forget(self, process: InstanceProcess) -> int | None:
        self.state_dir.remove_record(process.pid)
        self.admin_port = None
        self.process = None
        if self._temporary:
            shutil.rmtree(self.state_dir.path, ignore_errors=True)
        return process.returncode

    def _kill(self) -> None:
        if self.process is not None and self.process.is_running():
            self.process.kill()
            while self.process.is_running():
                time.sleep(0.005)

    def kill(self) -> None:
        """SIGKILL (a gateway that does not answer); the process is then gone."""
        self._kill()

    def running(self) -> bool:
        return self.process is not None and self.process.is_running()

    async def wait(self) -> int | None:
        """Until the process exits; its exit code (None when it was adopted: not our child)."""
        assert self.process is not None
        return await self.process.wait()

    def logs(self) -> str:
        """The end of what the process wrote to its log."""
        return self.state_dir.log_tail()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- admin API (sync)

    def push(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """PUT /snapshot; returns {"version", "listeners", "pid"}. SnapshotRejected on 409/400."""
        return self._result(self._call("PUT", "/snapshot", json=snapshot))

    def snapshot(self) -> dict[str, Any]:
        """GET /snapshot: the version in use, the bound listeners and the pid."""
        return self._result(self._call("GET", "/snapshot"))

    def metrics(self) -> str:
        """GET /metrics (Prometheus text)."""
        response = self._call("GET", "/metrics")
        self._check(response)
        return response.text

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return httpx.request(method, f"{self.admin_url}{path}", headers=self.headers,
                                 timeout=self.request_timeout, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"the gateway's admin API does not answer: {exc!r}") from exc

    # -- admin API (async)

    async def astart(self) -> GatewayProcess:
        return await asyncio.to_thread(self.start)

    async def apush(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        return self._result(await self._acall("PUT", "/snapshot", json=snapshot))

    async def asnapshot(self) -> dict[str, Any]:
        return self._result(await self._acall("GET", "/snapshot"))

    async def ametrics(self) -> str:
        response = await self._acall("GET", "/metrics")
        self._check(response)
        return response.text

    async def awindows(self, services: list[str]) -> dict[str, Any]:
        """GET /windows: per-instance totals of `services` for progressive releases' gates."""
        return self._result(await self._acall("GET", "/windows", params=[("service", s) for s in services]))

    async def ahealthy(self, timeout: float) -> bool:
        """GET /healthz answers 200 within `timeout` (the liveness check)."""
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                return (await client.get(f"{self.admin_url}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _acall(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            async with httpx.AsyncClient(timeout=self.request_timeout) as client:
                return await client.request(method, f"{self.admin_url}{path}", headers=self.headers, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"the gateway's admin API does not answer: {exc!r}") from exc

    # -- helpers

    def _result(self, response: httpx.Response) -> dict[str, Any]:
        self._check(response)
        return response.json()

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code == 200:
            return
        try:
            detail: Any = response.json()
        except ValueError:
            detail = response.text
        if response.status_code in (400, 409):
            raise SnapshotRejected(response.status_code, detail)
        raise GatewayError(f"gateway admin API answered {response.status_code}: {detail}")
