"""One instance as a real local process: spawn (never through a shell), adopt after a platform restart, terminate.

A process is identified by its pid *and* its start time (field 22 of ``/proc/<pid>/stat``), so a recycled pid is never
mistaken for the instance that had it. Exits are observed through a pidfd (no polling, no threads) where the kernel
offers one, else by polling ``/proc``; that works alike for our children and for adopted processes.

An instance spawned with a ``ProcessTree`` takes its whole tree with it when it stops (``tree.py``: cgroup, inherited
marker, session): SIGTERM goes to the instance's own process, as Kubernetes sends it to a container's first process;
when that exits — or its graceful period runs out and it is killed — whatever is left of its tree is killed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inferstack.platform.runtime.tree import ProcessTree, forget_child, register_child

log = logging.getLogger("inferstack.runtime")

_POLL_S = 0.05  # fallback exit polling, only where pidfds are unavailable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks since boot) of ``pid``, or None when there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its closing parenthesis; field 3 is then index 0.
    fields = raw[raw.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[2]), int(fields[19])


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` (``/proc/<pid>/stat`` field 22, clock ticks since boot), None when it does not exist."""
    stat = _proc_stat(pid)
    return stat[2] if stat else None


def _is_running_stat(stat: tuple[str, int, int] | None, start_time: int) -> bool:
    return stat is not None and stat[2] == start_time and stat[0] not in ("Z", "X")  # a zombie has exited


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True)
class Termination:
    """How a process ended when it was stopped: its exit code, whether it needed SIGKILL after its graceful period,
    and the other processes of its tree that were still running and had to be killed."""

    exit_code: int | None
    forced: bool
    leftovers: tuple[int, ...] = ()
    grace_s: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.forced and not self.leftovers


class InstanceProcess:
    """A handle on one instance process, spawned here or adopted; safe to wait on and terminate from asyncio."""

    def __init__(self, pid: int, start_time: int, *, popen: subprocess.Popen | None = None,
                 pidfd: int | None = None, owns_group: bool = False, log_path: Path | None = None,
                 tree: ProcessTree | None = None) -> None:
        self.pid = pid
        self.start_time = start_time
        self.log_path = log_path
        self.tree = tree
        self._popen = popen
        self._pidfd = pidfd
        self._owns_group = owns_group  # pid leads its own process group: kill the group, leave no grandchildren
        self._returncode: int | None = None
        self._exited = False
        self._exit_future: asyncio.Future[None] | None = None
        self._reader_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def spawn(cls, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | Path | None = None,
              log_path: Path | None = None, tree: ProcessTree | None = None) -> InstanceProcess:
        """Start ``argv`` (no shell) in a session of its own, so it outlives a crash of the platform.

        stdout and stderr are appended to ``log_path`` (discarded when None). ``env`` is the whole environment (plus
        the tree's marker). With a ``tree`` the process joins it (its cgroup) and stopping it stops the whole tree;
        without one, stopping it kills its process group.
        """
        if not argv:
            raise ValueError("argv is empty")
        full_env = {**env, **tree.env()} if tree is not None else dict(env)
        with open(log_path, "ab") if log_path is not None else contextlib.nullcontext(subprocess.DEVNULL) as out:
            popen = subprocess.Popen(list(argv), env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        register_child(popen.pid)
        # Our own unreaped child: the pid cannot be recycled before we reap it, so these reads are about it.
        start_time = process_start_time(popen.pid)
        if start_time is None:  # /proc unreadable: cannot happen for an unreaped child on Linux
            raise OSError(errno.ESRCH, f"no /proc entry for freshly spawned pid {popen.pid}")
        if tree is not None:
            tree.attach(popen.pid, start_time)
        return cls(popen.pid, start_time, popen=popen, pidfd=_open_pidfd(popen.pid), owns_group=True,
                   log_path=log_path, tree=tree)

    @classmethod
    def adopt(cls, pid: int, start_time: int, *, log_path: Path | None = None,
              tree: ProcessTree | None = None) -> InstanceProcess | None:
        """A handle on the process ``pid`` if it is still the one that started at ``start_time``, else None."""
        pidfd = _open_pidfd(pid)
        # Checked after opening: the pidfd pins whichever process held the pid then, and this proves it is ours.
        stat = _proc_stat(pid)
        if not _is_running_stat(stat, start_time):
            if pidfd is not None:
                os.close(pidfd)
            return None
        if tree is not None:
            tree.set_leader(pid, start_time)
        return cls(pid, start_time, pidfd=pidfd, owns_group=stat[1] == pid, log_path=log_path, tree=tree)

    # ---- state ---------------------------------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        """Exit code once exited (negative: killed by that signal); None while running or when unknowable."""
        self._check_exit()
        return self._returncode

    def is_running(self) -> bool:
        return not self._check_exit()

    def _check_exit(self) -> bool:
        """Whether the process has exited; reaps it when it is our child."""
        if self._exited:
            return True
        if self._popen is not None:
            if self._popen.poll() is None:
                return False
            self._returncode = self._popen.returncode
            forget_child(self.pid)
        elif _is_running_stat(_proc_stat(self.pid), self.start_time):
            return False
        else:
            self._returncode = self._reap_foreign_child()
        self._mark_exited()
        return True

    def _reap_foreign_child(self) -> int | None:
        # An adopted process may still be our child (the platform object that spawned it was dropped, not the
        # platform process): reap it so it leaves no zombie. Not our child → nothing to reap, exit code unknown.
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status) if pid else None

    def _mark_exited(self) -> None:
        self._exited = True
        self._close_pidfd()
        if self._exit_future is not None and not self._exit_future.done():
            self._exit_future.set_result(None)

    def release(self) -> None:
        """Stop watching the process and free its pidfd; the process itself keeps running."""
        self._close_pidfd()
        if self._exit_future is not None and not self._exit_future.done():
            self._exit_future.cancel()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            if self._reader_loop is not None:
                self._reader_loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    # ---- waiting -------------------------------------------------------------------------------------------------

    async def wait(self) -> int | None:
        """Wait for the process to exit; its exit code (None when it was adopted and is not our child)."""
        if self._check_exit():
            return self._returncode
        if self._exit_future is None:
            loop = asyncio.get_running_loop()
            self._exit_future = loop.create_future()
            if self._pidfd is not None:
                self._reader_loop = loop
                loop.add_reader(self._pidfd, self._check_exit)
            else:
                loop.create_task(self._poll_exit())
        await asyncio.shield(self._exit_future)
        return self._returncode

    async def _poll_exit(self) -> None:
        while not self._check_exit():
            await asyncio.sleep(_POLL_S)

    # ---- signals -------------------------------------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Signal the process itself (not its group); a no-op once it has exited."""
        if self._check_exit():
            return
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)  # cannot hit a recycled pid
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the process and everything of its tree (or, without a tree, of the process group it leads).
        Blocks for as long as the tree takes to die (milliseconds); from asyncio prefer ``terminate(0)``."""
        self.send_signal(signal.SIGKILL)
        self._kill_rest()

    def _kill_rest(self) -> tuple[int, ...]:
        """Kill what is left of the tree; the pids killed other than the process itself."""
        if self.tree is not None:
            return tuple(self.tree.kill(spare=self.pid))
        # A process group id stays reserved while any member lives, so this cannot hit a stranger's group.
        if self._owns_group:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return ()

    async def kill_leftovers(self) -> tuple[int, ...]:
        """After the process exited on its own: kill whatever of its tree still runs (as Kubernetes ends a container
        when its first process exits), and free its cgroup. The pids killed."""
        leftovers = await asyncio.to_thread(self._kill_rest)
        if self.tree is not None:
            self.tree.release()
        return leftovers

    async def terminate(self, grace_s: float) -> Termination:
        """SIGTERM, up to ``grace_s`` seconds for it to exit, then SIGKILL; then whatever is left of its tree is
        killed too, so an instance leaves no orphans. The exit code (see ``wait``), whether SIGKILL was needed and
        the other processes killed."""
        forced = False
        if not self._check_exit():
            started = time.monotonic()
            self.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(max(grace_s, 0.0)):  # not wait_for: it can swallow a cancellation on 3.11
                    await self.wait()
                log.debug("pid %d exited %.3fs after SIGTERM", self.pid, time.monotonic() - started)
            except TimeoutError:
                log.info("pid %d still running %.3gs after SIGTERM: SIGKILL", self.pid, grace_s)
                forced = True
                self.send_signal(signal.SIGKILL)
        leftovers = await self.kill_leftovers()
        await self.wait()
        return Termination(self._returncode, forced, leftovers, grace_s)

    def __repr__(self) -> str:
        state = "running" if not self._exited else f"exited({self._returncode})"
        return f"InstanceProcess(pid={self.pid}, start_time={self.start_time}, {state})"
