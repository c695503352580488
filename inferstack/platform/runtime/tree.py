"""The whole process tree of one instance: found, killed and cleaned up — including descendants that left its
process group or its session (a ``setsid`` grandchild, a double-forked daemon), and after a platform restart.

Three nets, strongest first; a process caught by any of them belongs to the tree:

- **cgroup v2** (where the machine offers a writable cgroup2 hierarchy): every instance gets its own cgroup,
  ``<our cgroup>/inferstack.<scope>/<id>``, and whatever it forks stays in it, whatever it does with sessions;
  ``cgroup.kill`` ends them all at once. Off with ``INFERSTACK_CGROUPS=0``; per instance it degrades to the nets below
  when the hierarchy is missing, read-only or refuses the move.
- **an inherited marker**: ``INFERSTACK_TREE=<scope>.<id>`` in the instance's environment, inherited by every
  descendant that does not rewrite its environment; found by scanning ``/proc/<pid>/environ``. It survives a platform
  crash, so an adopted instance's tree is found as well as a fresh one's.
- **the instance's session and process group** (the instance leads both): a pid stays reserved while it names a
  session or group with members, so these ids cannot point at a stranger's processes.

Where there is no cgroup, the platform also makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``): orphaned
descendants are re-parented to the platform instead of init, so they stay reachable — and the platform reaps them
(``reap_orphans``), only those it can attribute to an instance, never a child another part of the platform waits for.

Signals go through pidfds after the marker was checked on the very process the pidfd pins, so a recycled pid is never
signalled.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("inferstack.runtime")

TREE_ENV = "INFERSTACK_TREE"
CGROUPS_ENV = "INFERSTACK_CGROUPS"  # "0": never use cgroups (the marker, session and subreaper nets only)
_PR_SET_CHILD_SUBREAPER = 36
_KILL_ROUNDS = 100  # a tree that forks while being killed: scan and kill again, this many times at most
_KILL_PAUSE_S = 0.01

_cgroup_base: Path | None | bool = False  # False: not probed yet; None: no usable cgroup2 hierarchy
_subreaper = False
_seen_orphans: set[tuple[int, int]] = set()  # (pid, start time) of re-parented descendants seen alive
_popen_pids: set[int] = set()  # our direct children someone else waits for (never reaped here)


def scope_of(data_dir: str | os.PathLike[str]) -> str:
    """The marker scope of a data dir: instances of two platforms on one machine never mix."""
    return hashlib.sha256(os.fsencode(os.path.abspath(data_dir))).hexdigest()[:12]


# ---- /proc --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Stat:
    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    start_time: int

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def _stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    return _Stat(pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _marker(pid: int) -> str | None:
    """The ``INFERSTACK_TREE`` value in the process' environment (None: none, or unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    key = TREE_ENV.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(key):
            return item[len(key):].decode(errors="replace")
    return None


def _children_of(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


# ---- cgroup v2 ----------------------------------------------------------------------------------------------------

def _cgroup2_mount() -> Path | None:
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            mount = left.split(" ")[4]
            return Path(mount.encode().decode("unicode_escape"))  # octal escapes (\040 for a space)
    return None


def _own_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def cgroup_base() -> Path | None:
    """Where instance cgroups go (``<cgroup2 mount><our cgroup>``), or None when cgroups are off or unusable."""
    global _cgroup_base
    if os.environ.get(CGROUPS_ENV, "1") == "0":
        return None
    if _cgroup_base is False:
        mount, own = _cgroup2_mount(), _own_cgroup()
        base = mount / own.lstrip("/") if mount is not None and own is not None else None
        _cgroup_base = base if base is not None and os.access(base, os.W_OK) else None
        log.info("instance process trees: %s", f"cgroup v2 under {base}" if _cgroup_base else
                 "no writable cgroup v2 hierarchy; environment marker, session and child subreaper")
    return _cgroup_base or None


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _cgroup_pids(cgroup: Path) -> set[int]:
    found: set[int] = set()
    for directory, _, _ in os.walk(cgroup):
        try:
            with open(os.path.join(directory, "cgroup.procs")) as f:
                found.update(int(p) for p in f.read().split())
        except OSError:
            continue
    return found


def _cgroup_populated(cgroup: Path) -> bool:
    try:
        with open(cgroup / "cgroup.events") as f:
            return any(line.strip() == "populated 1" for line in f)
    except OSError:
        return False


def _remove_cgroup(cgroup: Path) -> None:
    """rmdir the cgroup and its children (deepest first); a cgroup with live members stays."""
    for directory, _, _ in sorted(os.walk(cgroup), key=lambda d: -len(d[0])):
        try:
            os.rmdir(directory)
        except OSError:
            pass


# ---- the subreaper ------------------------------------------------------------------------------------------------

def enable_subreaper() -> bool:
    """Make this process a child subreaper (once); False where the kernel or libc does not offer it."""
    global _subreaper
    if _subreaper:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        _subreaper = False
    if _subreaper:
        log.info("the platform is a child subreaper: orphaned instance descendants stay reachable")
    return _subreaper


def is_subreaper() -> bool:
    """Whether this process made itself a child subreaper (orphans of instances are re-parented to it)."""
    return _subreaper


def register_child(pid: int) -> None:
    """A direct child someone in this process waits for: ``reap_orphans`` never takes its exit status."""
    _popen_pids.add(pid)


def forget_child(pid: int) -> None:
    _popen_pids.discard(pid)


def reap_orphans(leader_sessions: Iterable[int] = ()) -> list[int]:
    """Reap zombie children that are re-parented instance descendants (subreaper mode): those in an instance's session,
    or seen alive earlier with an instance marker. Never a child registered with ``register_child``."""
    if not _subreaper:
        return []
    sessions = set(leader_sessions)
    me = os.getpid()
    reaped = []
    for pid in _children_of(me):
        if pid in _popen_pids:
            continue
        stat = _stat(pid)
        if stat is None:
            continue
        if stat.alive:
            if _marker(pid) is not None:
                _seen_orphans.add((pid, stat.start_time))
            continue
        if stat.sid in sessions or (pid, stat.start_time) in _seen_orphans:
            try:
                os.waitpid(pid, os.WNOHANG)
                reaped.append(pid)
            except ChildProcessError:
                pass
            _seen_orphans.discard((pid, stat.start_time))
    return reaped


# ---- one tree -----------------------------------------------------------------------------------------------------

class ProcessTree:
    """The processes of one instance: its leader (set once spawned or adopted) and every descendant.

    ``marker`` is the ``INFERSTACK_TREE`` value its processes inherit; ``cgroup`` its cgroup (None without one). Both
    are persisted with the instance record, so a restarted platform finds the same tree.
    """

    def __init__(self, marker: str, cgroup: str | None = None) -> None:
        self.marker = marker
        self.cgroup = Path(cgroup) if cgroup else None
        self.leader: int | None = None
        self.leader_start: int | None = None

    @classmethod
    def new(cls, scope: str, *, cgroups: bool = True) -> ProcessTree:
        """A tree for a process about to be spawned: a fresh marker and, where possible, an empty cgroup."""
        ident = uuid.uuid4().hex[:16]
        tree = cls(f"{scope}.{ident}")
        base = cgroup_base() if cgroups else None
        if base is not None:
            path = base / f"inferstack.{scope}" / ident
            for _ in range(2):  # the scope's directory may be removed (empty) between its mkdir and ours
                try:
                    path.mkdir(parents=True)
                    tree.cgroup = path
                    break
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.info("no cgroup for an instance (%s); falling back to the marker and session", exc)
                    break
        if tree.cgroup is None:
            enable_subreaper()
        return tree

    def env(self) -> dict[str, str]:
        return {TREE_ENV: self.marker}

    def set_leader(self, pid: int, start_time: int) -> None:
        """The instance's own process (it leads its session and process group)."""
        self.leader, self.leader_start = pid, start_time

    def _session(self) -> int | None:
        """The leader's pid as a session / group id to match, while it cannot name a stranger's: the leader still
        runs, or no process holds its pid (a pid stays reserved while a session or group of that id has members)."""
        if self.leader is None:
            return None
        stat = _stat(self.leader)
        return self.leader if stat is None or stat.start_time == self.leader_start else None

    def attach(self, pid: int, start_time: int) -> None:
        """The freshly spawned leader: moved into the cgroup with whatever it forked in the meantime."""
        self.set_leader(pid, start_time)
        if self.cgroup is None:
            return
        try:
            # Whatever the leader forked before the move is still its child: move those too (rounds until stable).
            moved: set[int] = set()
            pending = {pid}
            while pending:
                for p in pending:
                    _write(self.cgroup / "cgroup.procs", str(p))
                moved |= pending
                pending = {c for p in moved for c in _children_of(p)} - moved
        except OSError as exc:
            if exc.errno == errno.ESRCH:  # it already exited: nothing to contain
                return
            log.info("cannot move pid %d into %s (%s); falling back to the marker and session", pid, self.cgroup, exc)
            _remove_cgroup(self.cgroup)
            self.cgroup = None
            enable_subreaper()

    # ---- membership --------------------------------------------------------------------------------------------

    def members(self) -> set[int]:
        """Live processes of the tree (the leader included while it runs)."""
        found: set[int] = set()
        if self.cgroup is not None:
            found |= _cgroup_pids(self.cgroup)
        me = os.getpid()
        leader = self._session()
        for pid in _pids():
            if pid == me or pid in found:
                continue
            stat = _stat(pid)
            if stat is None or not stat.alive:
                continue
            if leader is not None and leader in (stat.sid, stat.pgid) or _marker(pid) == self.marker:
                found.add(pid)
        found.discard(me)
        return {p for p in found if (s := _stat(p)) is not None and s.alive}

    # ---- killing -----------------------------------------------------------------------------------------------

    def kill(self, *, spare: int | None = None) -> list[int]:
        """SIGKILL every process of the tree until none is left; the pids killed, ``spare`` (the leader, when the
        caller counts it itself) left out of the list but killed all the same."""
        killed: set[int] = set()
        for _ in range(_KILL_ROUNDS):
            members = self.members()
            if not members:
                break
            killed |= members  # each was alive in the tree a moment ago: whichever net ends it, it was killed
            if _subreaper:  # those re-parented to us die as our zombies: reap them (never a registered child)
                _seen_orphans.update((p, st.start_time) for p in members if (st := _stat(p)) is not None)
            if self.cgroup is not None and (self.cgroup / "cgroup.kill").exists():
                try:
                    _write(self.cgroup / "cgroup.kill", "1")
                except OSError:
                    pass
            for pid in members:
                _signal_member(pid, self, signal.SIGKILL)
            if _subreaper:
                reap_orphans([self.leader] if self.leader else [])
            time.sleep(_KILL_PAUSE_S)
        else:
            log.warning("processes of tree %s survived %d rounds of SIGKILL: %s", self.marker, _KILL_ROUNDS,
                        sorted(self.members()))
        self._wait_empty(killed)
        return sorted(killed - {spare} if spare is not None else killed)

    def _wait_empty(self, killed: set[int]) -> None:
        """Until the killed processes are gone (the cgroup empty; our re-parented zombies reaped), 2 s at most."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if _subreaper:
                reap_orphans([self.leader] if self.leader else [])
                mine = _children_of(os.getpid())
                if any(p in mine and p not in _popen_pids for p in killed):
                    time.sleep(_KILL_PAUSE_S)
                    continue
            if self.cgroup is None or not _cgroup_populated(self.cgroup):
                return
            time.sleep(_KILL_PAUSE_S)

    def release(self) -> None:
        """Remove the (empty) cgroup; a no-op while processes remain in it or without one."""
        if self.cgroup is not None and not _cgroup_populated(self.cgroup):
            _remove_cgroup(self.cgroup)
            try:
                self.cgroup.parent.rmdir()  # the scope's directory, once its last instance is gone
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"ProcessTree({self.marker!r}, cgroup={str(self.cgroup) if self.cgroup else None!r})"


def _signal_member(pid: int, tree: ProcessTree, sig: int) -> bool:
    """Signal ``pid`` if, seen through a pidfd, it still belongs to ``tree`` (never a recycled pid)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        stat = _stat(pid)
        session = tree._session()
        belongs = stat is not None and stat.alive and (
            (session is not None and session in (stat.sid, stat.pgid, pid))
            or _marker(pid) == tree.marker
            or (tree.cgroup is not None and pid in _cgroup_pids(tree.cgroup)))
        if not belongs:
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


# ---- leftovers of a crashed platform -------------------------------------------------------------------------------

def stray_trees(scope: str, keep: Iterable[str]) -> list[ProcessTree]:
    """Trees of ``scope`` that still have processes but belong to no instance in ``keep`` (markers): what a platform
    killed with -9 left behind while it was starting or draining instances. Found by marker and by cgroup."""
    kept = set(keep)
    prefix = f"{scope}."
    trees: dict[str, ProcessTree] = {}
    for pid in _pids():
        marker = _marker(pid)
        if marker and marker.startswith(prefix) and marker not in kept:
            stat = _stat(pid)
            if stat is not None and stat.alive:
                trees.setdefault(marker, ProcessTree(marker))
    base = cgroup_base()
    parent = base / f"inferstack.{scope}" if base is not None else None
    if parent is not None and parent.is_dir():
        for entry in parent.iterdir():
            marker = f"{scope}.{entry.name}"
            if entry.is_dir() and marker not in kept:
                tree = trees.setdefault(marker, ProcessTree(marker))
                tree.cgroup = entry
    return list(trees.values())


def terminate_strays(trees: Iterable[ProcessTree], grace_s: float) -> dict[str, list[int]]:
    """SIGTERM every process of the stray trees, up to ``grace_s`` for them to go, then SIGKILL what is left; empty
    cgroups removed. Blocking: run it in a thread. The pids each tree still had, by marker."""
    trees = list(trees)
    found = {t.marker: sorted(t.members()) for t in trees}
    for tree in trees:
        for pid in found[tree.marker]:
            _signal_member(pid, tree, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(t.members() for t in trees):
        time.sleep(0.05)
    for tree in trees:
        tree.kill()
        tree.release()
    return found


__all__ = ["CGROUPS_ENV", "TREE_ENV", "ProcessTree", "cgroup_base", "enable_subreaper", "forget_child",
           "is_subreaper", "reap_orphans", "register_child", "scope_of", "stray_trees", "terminate_strays"]
