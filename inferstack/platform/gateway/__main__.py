"""`python -m inferstack.platform.gateway`: the gateway process (env INFERSTACK_GATEWAY_ADMIN_TOKEN required).

With `--state-dir` (how the platform runs it) the process serves the dir's last snapshot at once, persists every
snapshot it applies, and writes its record (pid, start time, admin port) once it serves — it needs nobody to keep
serving, and outlives the platform that started it. With `--exit-with PID:START_TIME` (tests, benchmarks) it leaves
when that process is gone, and removes its (temporary) state dir when it exits."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys

import uvloop
from pydantic import ValidationError

from ..server import process_start_time
from . import proxy
from .admin import AdminServer
from .server import Gateway
from .snapshot import Snapshot
from .statedir import StateDir

TOKEN_ENV = "INFERSTACK_GATEWAY_ADMIN_TOKEN"
HEAD_TIMEOUT_ENV = "INFERSTACK_GATEWAY_HEAD_TIMEOUT_S"  # a request head must arrive within (default 30 s)
DRAIN_GRACE_S = 5.0
PARENT_POLL_S = 0.5

log = logging.getLogger("inferstack.gateway")


class SnapshotWriter:
    """Persists the latest applied snapshot off the event loop; a burst of pushes writes the last one only."""

    def __init__(self, state_dir: StateDir) -> None:
        self.state_dir = state_dir
        self._latest: tuple[bytes, dict[str, int]] | None = None
        self._task: asyncio.Task[None] | None = None

    def __call__(self, body: bytes, listeners: dict[str, int]) -> None:
        self._latest = (body, dict(listeners))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._latest is not None:
            body, listeners = self._latest
            self._latest = None
            try:
                await asyncio.to_thread(self.state_dir.write_snapshot, body, listeners)
            except OSError as exc:
                log.warning("cannot persist the snapshot in %s: %s", self.state_dir.path, exc)

    async def flushed(self) -> None:
        if self._task is not None:
            await self._task


async def resume(gateway: Gateway, state_dir: StateDir) -> None:
    """Serve the state dir's last snapshot (same listener ports) before anyone pushes one. A snapshot that cannot
    be read or applied is set aside (`snapshot.json.bad`) and the gateway starts empty."""
    data = state_dir.read_snapshot()
    if data is None:
        return
    try:
        result = await gateway.apply(Snapshot.model_validate(data))
    except (ValidationError, OSError) as exc:
        log.warning("not resuming the persisted snapshot: %s", exc)
        os.replace(state_dir.path / "snapshot.json", state_dir.path / "snapshot.json.bad")
        return
    log.info("resumed snapshot %d from %s: listeners %s", result["version"], state_dir.path, result["listeners"])


def _watch_parent(loop: asyncio.AbstractEventLoop, pid: int, start_time: int, stop: asyncio.Event) -> None:
    if process_start_time(pid) != start_time:
        log.info("process %d is gone: leaving", pid)
        stop.set()
        return
    loop.call_later(PARENT_POLL_S, _watch_parent, loop, pid, start_time, stop)


async def serve(token: str, admin_port: int, state_dir: StateDir | None = None,
                parent: tuple[int, int] | None = None) -> None:
    loop = asyncio.get_running_loop()
    gateway = Gateway(loop)
    gateway.start()
    writer = SnapshotWriter(state_dir) if state_dir is not None else None
    if state_dir is not None:
        await resume(gateway, state_dir)
    admin = AdminServer(gateway, token, on_applied=writer)
    port = await admin.start(admin_port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if parent is not None:
        _watch_parent(loop, *parent, stop)
    if state_dir is not None:
        state_dir.write_record(os.getpid(), process_start_time(os.getpid()), port)
    sys.stdout.write(json.dumps({"admin_port": port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    await stop.wait()
    await admin.close()
    await gateway.drain(DRAIN_GRACE_S)
    if writer is not None:
        await writer.flushed()
    if state_dir is not None:
        state_dir.remove_record(os.getpid())
        if parent is not None:  # a temporary gateway: its dir is its creator's, who is gone or stopping it
            shutil.rmtree(state_dir.path, ignore_errors=True)


def _parent(value: str) -> tuple[int, int]:
    pid, _, start = value.partition(":")
    return int(pid), int(start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferstack.platform.gateway", description=__doc__)
    parser.add_argument("--admin-port", type=int, default=0, help="admin API port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--state-dir", default=None, help="resume from, persist to and record the process in this "
                                                          "dir (see statedir.py)")
    parser.add_argument("--exit-with", type=_parent, default=None, metavar="PID:START_TIME",
                        help="exit when this process (pid and /proc start time) is gone")
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"{TOKEN_ENV} must be set", file=sys.stderr)
        return 2
    raw = os.environ.get(HEAD_TIMEOUT_ENV)
    if raw is not None:
        try:
            head_timeout = float(raw)
        except ValueError:
            head_timeout = float("nan")
        if not 0.1 <= head_timeout <= 3600:
            print(f"{HEAD_TIMEOUT_ENV}={raw[:50]!r}: seconds from 0.1 to 3600", file=sys.stderr)
            return 2
        proxy.HEAD_TIMEOUT_S = head_timeout
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s gateway %(levelname)s %(message)s")
    state_dir = StateDir(args.state_dir).ensure() if args.state_dir else None
    uvloop.run(serve(token, args.admin_port, state_dir, args.exit_with))
    return 0


if __name__ == "__main__":
    sys.exit(main())
