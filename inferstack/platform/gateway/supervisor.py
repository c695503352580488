"""GatewayProcess: how the platform starts, feeds, scrapes and stops the gateway process."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Self

import httpx

TOKEN_ENV = "INFERSTACK_GATEWAY_ADMIN_TOKEN"


class GatewayError(RuntimeError):
    """The gateway process failed to start, died, or answered the admin API with an error."""


class SnapshotRejected(GatewayError):
    """The gateway refused a snapshot: 409 (stale version) or 400 (invalid)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"snapshot rejected ({status}): {detail}")
        self.status = status
        self.detail = detail


class GatewayProcess:
    """A supervised `python -m inferstack.platform.gateway`.

    `start()` spawns it and waits for its ready line; `push()` swaps a snapshot in; `metrics()` scrapes it;
    `stop()` sends SIGTERM (in-flight requests finish) and kills it if it does not exit in time. The async
    variants (`astart`, `apush`, `asnapshot`, `ametrics`, `astop`) are for the platform's asyncio control plane.
    The process also exits if this side disappears (its stdin is a pipe held here).
    """

    def __init__(
        self,
        admin_token: str | None = None,
        admin_port: int = 0,
        python: str = sys.executable,
        startup_timeout: float = 10.0,
        request_timeout: float = 10.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self.requested_admin_port = admin_port
        self.python = python
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.env = env
        self.admin_port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 -- the process's stderr, kept as long as this object

    # -- lifecycle

    @property
    def admin_url(self) -> str:
        if self.admin_port is None:
            raise GatewayError("the gateway is not started")
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def start(self) -> GatewayProcess:
        """Spawn the process and wait for its `{"admin_port": N}` line; GatewayError on failure or timeout."""
        if self.process is not None:
            raise GatewayError("the gateway is already started")
        env = dict(os.environ if self.env is None else self.env)
        env[TOKEN_ENV] = self.admin_token
        command = [self.python, "-m", "inferstack.platform.gateway", "--admin-port", str(self.requested_admin_port),
                   "--exit-on-stdin-eof"]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env
        )
        try:
            line = self._read_ready_line()
            self.admin_port = int(json.loads(line)["admin_port"])
        except Exception as exc:
            self._kill()
            raise GatewayError(f"gateway did not start: {exc}\n--- gateway log ---\n{self.logs()}") from exc
        return self

    def _read_ready_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        deadline = time.monotonic() + self.startup_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no ready line within {self.startup_timeout} s")
                if not selector.select(remaining):
                    continue
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    raise GatewayError(f"the process exited with status {self.process.wait()}")
                buffer += chunk
        return buffer.split(b"\n", 1)[0].decode()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout` for in-flight requests to finish and the process to exit, else SIGKILL."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self._close_pipes()
        self.admin_port = None
        self.process = None
        return process.returncode

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.process is not None:
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self) -> str:
        """What the process wrote to stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- admin API (sync)

    def push(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """PUT /snapshot; returns {"version", "listeners"}. SnapshotRejected on 409/400."""
        response = httpx.put(f"{self.admin_url}/snapshot", json=snapshot, headers=self.headers,
                             timeout=self.request_timeout)
        return self._result(response)

    def snapshot(self) -> dict[str, Any]:
        """GET /snapshot: the version in use and the bound listeners."""
        response = httpx.get(f"{self.admin_url}/snapshot", headers=self.headers, timeout=self.request_timeout)
        return self._result(response)

    def metrics(self) -> str:
        """GET /metrics (Prometheus text)."""
        response = httpx.get(f"{self.admin_url}/metrics", headers=self.headers, timeout=self.request_timeout)
        self._check(response)
        return response.text

    # -- admin API (async)

    async def astart(self) -> GatewayProcess:
        return await asyncio.to_thread(self.start)

    async def astop(self, timeout: float = 10.0) -> int | None:
        return await asyncio.to_thread(self.stop, timeout)

    async def apush(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=self.request_timeout) as client:
            response = await client.put(f"{self.admin_url}/snapshot", json=snapshot, headers=self.headers)
        return self._result(response)

    async def asnapshot(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=self.request_timeout) as client:
            response = await client.get(f"{self.admin_url}/snapshot", headers=self.headers)
        return self._result(response)

    async def ametrics(self) -> str:
        async with httpx.AsyncClient(timeout=self.request_timeout) as client:
            response = await client.get(f"{self.admin_url}/metrics", headers=self.headers)
        self._check(response)
        return response.text

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
