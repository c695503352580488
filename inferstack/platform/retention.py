"""Where a deployment's instance logs and work directories live, and how long they stay after it is deleted.

Layout, keyed by the deployment object's uid so that a new object with the same key never sees the old one's files:

    <data dir>/logs/<service>/<deployment>/<uid>/<instance id>.log    stdout + stderr of each instance, all its runs
    <data dir>/work/<service>/<deployment>/<uid>/                    the instances' working directory

When a deployment is deleted (or re-created under the same key), its instances are drained and then ``mark_deleted``
writes a ``.deleted`` file into both directories; ``remove_expired`` removes the directories of every uid that is no
longer a live deployment's once the retention period (``INFERSTACK_LOG_RETENTION_S``, default one day) has passed since
that mark — or, without one (the platform was down when the deployment went), since the newest file in them. Log files
of the layout before uids (``logs/<service>/<deployment>/<instance>.log``) are removed the same way by age unless a live
instance still writes them.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("inferstack.retention")

RETENTION_ENV = "INFERSTACK_LOG_RETENTION_S"
DEFAULT_RETENTION_S = 86400.0
DELETED_MARK = ".deleted"
MAX_TAIL = 10_000


def retention_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """``INFERSTACK_LOG_RETENTION_S`` (seconds, >= 0), else one day. A bad value is an error naming it."""
    raw = environ.get(RETENTION_ENV)
    if raw is None or raw == "":
        return DEFAULT_RETENTION_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{RETENTION_ENV}={raw!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{RETENTION_ENV}={raw!r} must be a finite number of seconds >= 0")
    return value


def log_dir(data_dir: Path, svc: str, dep: str, uid: str) -> Path:
    return data_dir / "logs" / svc / dep / uid


def work_dir(data_dir: Path, svc: str, dep: str, uid: str) -> Path:
    return data_dir / "work" / svc / dep / uid


def mark_deleted(data_dir: Path, svc: str, dep: str, uid: str) -> None:
    """The deployment ``uid`` is gone and its instances stopped: its files' retention period starts now."""
    for directory in (log_dir(data_dir, svc, dep, uid), work_dir(data_dir, svc, dep, uid)):
        if directory.is_dir():
            (directory / DELETED_MARK).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))


def _age_since(directory: Path, now: float) -> float:
    """Seconds since the deletion mark, else since the newest file in the directory."""
    mark = directory / DELETED_MARK
    try:
        return now - mark.stat().st_mtime
    except OSError:
        pass
    newest = directory.stat().st_mtime
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
            except OSError:
                continue
    return now - newest


def remove_expired(data_dir: Path, live_uids: Iterable[str], retention_s: float, *, in_use: Iterable[str] = (),
                   now: float | None = None) -> list[Path]:
    """Remove the log and work directories of deployments that are no longer live (uid not in ``live_uids``) once
    ``retention_s`` has passed; legacy log files too, unless a live instance writes them (``in_use`` paths). Empty
    service/deployment directories go with them. Returns what was removed."""
    live, used = set(live_uids), {os.path.abspath(p) for p in in_use}
    now = time.time() if now is None else now
    removed: list[Path] = []
    for top in ("logs", "work"):
        root = data_dir / top
        if not root.is_dir():
            continue
        for svc_dir in [d for d in root.iterdir() if d.is_dir()]:
            for dep_dir in [d for d in svc_dir.iterdir() if d.is_dir()]:
                for entry in list(dep_dir.iterdir()):
                    try:
                        if entry.is_dir() and entry.name not in live and _age_since(entry, now) >= retention_s:
                            shutil.rmtree(entry, ignore_errors=True)
                            removed.append(entry)
                        elif (top == "logs" and entry.is_file() and entry.suffix == ".log"
                              and os.path.abspath(entry) not in used
                              and now - entry.stat().st_mtime >= retention_s):
                            entry.unlink()
                            removed.append(entry)
                    except OSError as exc:
                        log.warning("cannot remove %s: %s", entry, exc)
                _remove_if_empty(dep_dir)
            _remove_if_empty(svc_dir)
    if removed:
        log.info("removed %d expired log/work item(s) of deleted deployments", len(removed))
    return removed


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def read_logs(data_dir: Path, svc: str, dep: str, uid: str, tail: int,
              instance_paths: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The last ``tail`` lines of each instance log of the deployment object ``uid`` (oldest first), plus the logs its
    live instances write elsewhere (``instance_paths``: adopted instances started before the uid layout)."""
    paths = {p.resolve() for p in log_dir(data_dir, svc, dep, uid).glob("*.log")}
    paths |= {Path(p).resolve() for p in instance_paths if p and Path(p).is_file()}
    out = []
    for path in sorted(paths, key=lambda p: (p.stat().st_mtime, p.name)):
        with path.open("rb") as f:
            lines = f.read().decode(errors="replace").splitlines()[-tail:]
        out.append({"instance": path.stem, "lines": lines})
    return out
