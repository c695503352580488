"""Invocation keys of services: created by the platform, shown once, stored hashed (sha256) in the data dir."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

KEYS_FILE = "invocation-keys.json"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class InvocationKeys:
    """One key per service. The plaintext is kept only until it has been shown once (`reveal`)."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / KEYS_FILE
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def ensure(self, service: str) -> None:
        """Create a key for a service that has none (the plaintext waits to be shown once)."""
        with self._lock:
            data = self._load()
            if service not in data:
                key = "isk_" + secrets.token_urlsafe(24)
                data[service] = {"hash": key_hash(key), "pending": key}
                self._save(data)

    def rotate(self, service: str) -> str:
        """A new key replaces the old one at once; the new plaintext is returned (and not kept)."""
        with self._lock:
            data = self._load()
            key = "isk_" + secrets.token_urlsafe(24)
            data[service] = {"hash": key_hash(key), "pending": None}
            self._save(data)
            return key

    def reveal(self, service: str) -> str | None:
        """The plaintext, the first time only; None when it was shown already (rotate to get a new one)."""
        with self._lock:
            data = self._load()
            entry = data.get(service)
            if entry is None or entry.get("pending") is None:
                return None
            key = entry["pending"]
            entry["pending"] = None
            self._save(data)
            return key

    def hashes(self) -> dict[str, list[str]]:
        """Every service's key hashes, read once (the routing snapshot needs them all)."""
        return {service: [entry["hash"]] for service, entry in self._load().items()}

    def forget(self, service: str) -> None:
        with self._lock:
            data = self._load()
            if data.pop(service, None) is not None:
                self._save(data)
