"""Instance processes: spawning without a shell, pid + start time identity, adoption, graceful termination."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from inferstack.platform.runtime import InstanceProcess, free_port, process_start_time

from .conftest import is_running

PY = sys.executable
ENV = {"PATH": os.environ.get("PATH", "")}

# Traps SIGTERM, notes when it arrived, and carries on: only SIGKILL ends it.
STUBBORN = """
import pathlib, signal, sys, time
marker = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: marker.write_text(repr(time.time())))
print("up", flush=True)
while True:
    time.sleep(0.01)
"""
# Exits 0 as soon as SIGTERM arrives.
POLITE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("up", flush=True)
while True:
    time.sleep(0.01)
"""


async def wait_for_line(path, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        await asyncio.sleep(0.01)


async def test_spawn_runs_argv_without_a_shell_with_exactly_the_env_given(tmp_path):
    log = tmp_path / "out.log"
    script = "import os, sys; print(sys.argv[1:]); print(sorted(k for k in os.environ if k.startswith('X_'))); " \
             "print(os.getcwd()); print(os.getsid(0) == os.getpid())"
    process = InstanceProcess.spawn([PY, "-c", script, "$HOME; echo pwned", "*"],
                                    env={**ENV, "X_SECRET": "s3cr3t"}, cwd=tmp_path, log_path=log)
    assert await process.wait() == 0
    lines = log.read_text().splitlines()
    assert lines[0] == "['$HOME; echo pwned', '*']"  # literal: no shell expanded anything
    assert lines[1] == "['X_SECRET']"
    assert lines[2] == str(tmp_path)
    assert lines[3] == "True"  # its own session: a platform crash does not take it down
    assert process.returncode == 0


async def test_spawn_records_pid_and_proc_start_time(tmp_path):
    process = InstanceProcess.spawn([PY, "-c", POLITE], env=ENV, log_path=tmp_path / "p.log")
    field_22 = int(Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    assert process.start_time == field_22 == process_start_time(process.pid)
    await process.terminate(5.0)
    assert process_start_time(process.pid) is None  # reaped: no zombie left behind
    with pytest.raises(ValueError):
        InstanceProcess.spawn([], env=ENV)


async def test_sigkill_comes_only_after_the_graceful_period(tmp_path):
    marker, log = tmp_path / "sigterm-at", tmp_path / "stubborn.log"
    process = InstanceProcess.spawn([PY, "-c", STUBBORN, str(marker)], env=ENV, log_path=log)
    await wait_for_line(log, "up")
    started = time.time()
    stopped = await process.terminate(0.6)
    ended = time.time()
    assert (stopped.exit_code, stopped.forced) == (-signal.SIGKILL, True)
    assert marker.exists(), "SIGTERM never reached the instance"
    sigterm_at = float(marker.read_text())
    assert sigterm_at - started < 0.3  # SIGTERM first, at once
    assert ended - started >= 0.6  # the whole graceful period was granted
    assert ended - started < 1.5


async def test_an_instance_that_exits_on_sigterm_is_not_kept_waiting(tmp_path):
    log = tmp_path / "polite.log"
    process = InstanceProcess.spawn([PY, "-c", POLITE], env=ENV, log_path=log)
    await wait_for_line(log, "up")
    started = time.monotonic()
    stopped = await process.terminate(10.0)
    assert (stopped.exit_code, stopped.forced, stopped.leftovers) == (0, False, ())
    assert time.monotonic() - started < 1.0
    assert (await process.terminate(10.0)).exit_code == 0  # terminating twice is harmless


async def test_terminating_kills_what_the_instance_started(tmp_path):
    log = tmp_path / "parent.log"
    script = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', "
              "'import time; time.sleep(60)']); print(c.pid, flush=True); time.sleep(60)")
    process = InstanceProcess.spawn([PY, "-c", script], env=ENV, log_path=log)
    await wait_for_line(log, "\n")
    grandchild = int(log.read_text().split()[0])
    assert is_running(grandchild)
    await process.terminate(0.2)
    deadline = time.monotonic() + 2
    while is_running(grandchild):
        assert time.monotonic() < deadline, "the instance's own child outlived it"
        await asyncio.sleep(0.01)


async def test_adopt_checks_pid_and_start_time(tmp_path):
    process = InstanceProcess.spawn([PY, "-c", POLITE], env=ENV, log_path=tmp_path / "p.log")
    assert InstanceProcess.adopt(process.pid, process.start_time + 1) is None  # pid reused by another process
    adopted = InstanceProcess.adopt(process.pid, process.start_time)
    assert adopted is not None and adopted.is_running()
    # The adopted handle (no Popen) terminates it, sees the exit, and reaps the zombie of our own child.
    await wait_for_line(tmp_path / "p.log", "up")
    assert (await adopted.terminate(5.0)).exit_code == 0
    assert process_start_time(process.pid) is None
    assert InstanceProcess.adopt(process.pid, process.start_time) is None  # gone


async def test_adopted_process_that_is_not_our_child_is_watched_and_terminated(tmp_path):
    marker = tmp_path / "sigterm-at"
    # A short-lived parent starts the instance in its own session and exits: the instance is nobody's child of ours,
    # like an instance that outlived a platform crash.
    launcher = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], "
                "start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)")
    out = tmp_path / "launcher.out"
    assert await InstanceProcess.spawn([PY, "-c", launcher, STUBBORN, str(marker)], env=ENV, log_path=out).wait() == 0
    pid = int(out.read_text())
    try:
        start_time = process_start_time(pid)
        assert start_time is not None
        assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) != os.getpid()  # not ours
        adopted = InstanceProcess.adopt(pid, start_time)
        assert adopted is not None
        await asyncio.sleep(0.3)  # let it install its SIGTERM handler
        started = time.monotonic()
        assert (await adopted.terminate(0.4)).exit_code is None  # not our child: the exit code is not ours to know
        assert time.monotonic() - started >= 0.4
        assert marker.exists() and not is_running(pid)
    finally:
        if is_running(pid):
            os.kill(pid, signal.SIGKILL)


async def test_wait_sees_a_kill_minus_9_at_once(tmp_path):
    process = InstanceProcess.spawn([PY, "-c", POLITE], env=ENV, log_path=tmp_path / "p.log")
    waiter = asyncio.ensure_future(process.wait())
    await asyncio.sleep(0.1)
    assert not waiter.done()
    os.kill(process.pid, signal.SIGKILL)
    assert await asyncio.wait_for(waiter, 1.0) == -signal.SIGKILL
    assert not process.is_running()


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
