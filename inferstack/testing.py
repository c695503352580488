"""Test support for users and for our own suites: a real embedded platform as a subprocess over a temp data dir.

    with PlatformProcess(tmp_path).start() as platform:
        client = platform.client()
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import httpx

from inferstack.platform.store import DB_NAME, dump_database
from inferstack.targets.local.client import PlatformClient

ROOT = Path(__file__).resolve().parents[1]


class PlatformProcess:
    """One `python -m inferstack.platform.server` process over a data dir."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, *, runtime: bool = False):
        """`runtime`: run instances and the gateway too (default: the control plane only)."""
        self.data_dir = data_dir
        self.runtime = runtime
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}

    def start(self, timeout: float = 10.0) -> PlatformProcess:
        info_path = self.data_dir / "platform.json"
        info_path.unlink(missing_ok=True)
        env = {**os.environ, "INFERSTACK_RUNTIME": "1" if self.runtime else "0", **self.env}
        env.pop("INFERSTACK_URL", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "inferstack.platform.server", "serve", "--data-dir",
                                      str(self.data_dir), "--port", "0"], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"platform exited: {self.proc.stderr.read().decode()}")
            if info_path.exists():
                try:
                    self.info = json.loads(info_path.read_text())
                except ValueError:
                    continue
                if self.info.get("pid") == self.proc.pid:
                    return self
            time.sleep(0.005)
        raise RuntimeError("platform did not start")

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def client(self) -> PlatformClient:
        return PlatformClient(self.url, self.token)

    def http(self, token: str | None = "") -> httpx.Client:
        """A raw HTTP client; `token` "" means the real one, None means none."""
        token = self.token if token == "" else token
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def dump(self) -> dict[str, list[tuple]]:
        return dump_database(self.data_dir / DB_NAME)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            self._stop_orphaned_gateway()
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def _stop_orphaned_gateway(self) -> None:
        """A platform killed and not started again leaves its gateway serving, as it should: a test stops it."""
        from inferstack.platform.gateway.process import GatewayProcess

        gateway = GatewayProcess.adopt(self.data_dir / "gateway")
        if gateway is not None:
            gateway.stop()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> PlatformProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs submitted work at once on the calling thread. For `pulumi.runtime.set_mocks` tests: set it as the event
    loop's default executor, since threaded mock RPCs can hang."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side
            future.set_exception(exc)
        return future
