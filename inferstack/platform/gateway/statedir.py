"""The gateway's state dir: the files through which a gateway process outlives the platform that started it.

    record.json     written by the gateway once it serves: `{"pid", "start_time", "admin_port"}`. A restarted
                    platform re-adopts the gateway by it: the same pid *and* /proc start time (a recycled pid is
                    never taken for it), then its admin API must answer with the token.
    token           the admin API's bearer token; created once by the supervisor, reused by every gateway it starts.
    snapshot.json   the last snapshot the gateway applied, with the ports its listeners are bound to. A gateway
                    started on the dir serves it at once, on the same ports, until the platform pushes a newer one —
                    so a restarted gateway needs no control plane to serve.
    gateway.log     the process's stdout and stderr (rotated once past LOG_ROTATE_BYTES, at a start).

The dir is 0700 and every file 0600: the token guards the admin API, the snapshot holds invocation-key hashes.
Files are replaced atomically (a temp file renamed over them), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

RECORD = "record.json"
TOKEN = "token"
SNAPSHOT = "snapshot.json"
LOG = "gateway.log"
LOG_ROTATE_BYTES = 8 * 1024 * 1024


class StateDir:
    """One gateway's files (see the module docstring). Only the supervisor and its gateway use a given dir."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def ensure(self) -> StateDir:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        return self

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    # --- token ------------------------------------------------------------------------------------------------------

    def token(self) -> str:
        """The admin token: read, or created (0600) when there is none yet or the file is empty."""
        path = self.path / TOKEN
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            token = ""
        if not token:
            token = secrets.token_urlsafe(32)
            self._write(TOKEN, (token + "\n").encode())
        return token

    # --- the running gateway's record ---------------------------------------------------------------------------------

    def write_record(self, pid: int, start_time: int | None, admin_port: int) -> None:
        self._write(RECORD, json.dumps({"pid": pid, "start_time": start_time, "admin_port": admin_port}).encode())

    def read_record(self) -> dict[str, int] | None:
        """The record when it is complete and well-formed, else None."""
        data = self._read_json(RECORD)
        if not isinstance(data, dict):
            return None
        fields = {k: data.get(k) for k in ("pid", "start_time", "admin_port")}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in fields.values()):
            return None
        return fields  # type: ignore[return-value]

    def remove_record(self, pid: int | None = None) -> None:
        """Remove the record (only when it names `pid`, if given: a newer gateway's record stays)."""
        record = self.read_record()
        if pid is None or (record is not None and record["pid"] == pid):
            (self.path / RECORD).unlink(missing_ok=True)

    # --- the last snapshot applied -------------------------------------------------------------------------------------

    def write_snapshot(self, body: bytes, listeners: dict[str, int]) -> None:
        """Persist a snapshot's JSON `body` as applied, with the ports its listeners got (`"svc/port": bound`)."""
        self._write(SNAPSHOT, b'{"listeners":%s,"snapshot":%s}' % (json.dumps(listeners).encode(), body))

    def read_snapshot(self) -> dict[str, Any] | None:
        """The last snapshot applied as a plain dict, listeners pinned to the ports they had; None when absent or
        unreadable. Validating it is the reader's business (the gateway validates it like any pushed snapshot)."""
        data = self._read_json(SNAPSHOT)
        if not isinstance(data, dict) or not isinstance(data.get("snapshot"), dict):
            return None
        snapshot, bound = data["snapshot"], data.get("listeners")
        bound = bound if isinstance(bound, dict) else {}
        for service in snapshot.get("services") or []:
            if not isinstance(service, dict):
                continue
            for listener in service.get("listeners") or []:
                port = bound.get(f"{service.get('key')}/{listener.get('port')}") if isinstance(listener, dict) else None
                if isinstance(port, int) and not listener.get("bind_port"):
                    listener["bind_port"] = port
        return snapshot

    def remove_snapshot(self) -> None:
        (self.path / SNAPSHOT).unlink(missing_ok=True)

    # --- the log -----------------------------------------------------------------------------------------------------

    def open_log(self) -> int:
        """A file descriptor appending to the log (0600), the previous log rotated to `.1` once it is large."""
        try:
            if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.log_path, self.log_path.with_name(LOG + ".1"))
        except FileNotFoundError:
            pass
        return os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # --- helpers -------------------------------------------------------------------------------------------------------

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.path / f".{name}.{os.getpid()}.tmp"
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)
        os.replace(tmp, self.path / name)

    def _read_json(self, name: str) -> Any:
        try:
            return json.loads((self.path / name).read_bytes())
        except (OSError, ValueError):
            return None
