"""The data dir is private to the platform's user: the directory is 0700, and every file in it is 0600 (every
directory 0700).

Mechanisms, so that files nobody here thought of are covered too (SQLite's -wal and -shm, logs, the gateway's and
the instances' files):
- `private_umask()` — the platform process runs with umask 077 while it serves; its children (the gateway, the
  instances and their probes) inherit it.
- `secure(root)` — on start: the directory is created 0700 or tightened to it, and group/other bits are removed
  from everything below it (a data dir written by an older platform, or copied in). Symbolic links are not
  followed, so nothing outside the data dir is touched.
- `private_file(path)` — files created by another process than the server (the CLI creates `platform.log` for a
  detached server) are opened with mode 0600 explicitly."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def secure(root: Path) -> Path:
    """Create `root` (0700) or make it and everything below it private to this user. Returns `root`."""
    root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _tighten(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            _tighten(Path(dirpath) / name)
    return root


def _tighten(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # removed meanwhile (an instance's file, a rotated log)
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
        return
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
    except PermissionError:
        pass  # not ours (a file an instance created as another user): left as it is


@contextmanager
def private_umask() -> Iterator[None]:
    """Run a block (the serving platform) with umask 077; the previous umask is restored afterwards."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def private_file(path: Path, mode: str = "ab") -> IO[bytes]:
    """Open `path` for binary writing, created with mode 0600 whatever the umask."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # an existing file created by an older platform
    return os.fdopen(fd, mode)


__all__ = ["DIR_MODE", "FILE_MODE", "PRIVATE_UMASK", "private_file", "private_umask", "secure"]
