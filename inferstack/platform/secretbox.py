"""Secret values at rest: sealed with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key kept in
its own file of the data dir (`secrets.key`, mode 0600, created once and never rewritten).

What is sealed: every string under a `secret` key of a stored spec — an env var's secret, a role's env secrets: the
values `objects.public_spec` masks. A sealed value is the string `fernet:<token>`; `open` turns it back. A plain
value (a data dir written before secrets were sealed) reads as it is; the store seals such rows when it opens.

What this protects: the database, its WAL and any copy or backup of them, against anyone who does not also hold the
key file. The data dir is 0700 (`datadir.py`), so other local users read neither. It does not protect against the
platform's own user, who holds the key beside the database, and whose instances get their secrets in their
environment (as they must, to use them)."""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secrets.key"
SEALED = "fernet:"


class SecretBoxError(ValueError):
    """The key file is unreadable, or a sealed value does not open with it (a key from another data dir)."""


class SecretBox:
    """Seals and opens the secret values of specs with the data dir's key."""

    def __init__(self, data_dir: Path | str):
        self.key_path = Path(data_dir) / KEY_FILE
        self._key = _load_or_create_key(self.key_path)
        self._fernet = Fernet(self._key)

    def seal(self, spec: Any) -> Any:
        """`spec` with every plain secret value sealed (a new structure; `spec` is not changed)."""
        return _map_secrets(spec, lambda value: value if value.startswith(SEALED)
                            else SEALED + self._fernet.encrypt(value.encode("utf-8")).decode("ascii"))

    def open(self, spec: Any) -> Any:
        """`spec` with every sealed secret value opened; plain values (older data dirs) stay as they are."""
        return _map_secrets(spec, self._open_one)

    def _open_one(self, value: str) -> str:
        if not value.startswith(SEALED):
            return value
        try:
            return self._fernet.decrypt(value[len(SEALED):].encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError) as exc:
            raise SecretBoxError(f"a stored secret does not open with {self.key_path}: the key file is not the one "
                                 f"it was sealed with") from exc

    def derive(self, purpose: str, value: str) -> str:
        """A keyed digest of `value` for one `purpose` (hex): stable for this data dir, unguessable without its key.
        Used for the per-service upstream token, and for secret values in instance revisions (a revision that hashed
        the secret itself would let anyone who reads status test guesses of it)."""
        message = purpose.encode() + b"\0" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    @staticmethod
    def has_plain(spec: Any) -> bool:
        """Whether `spec` holds a secret value that is not sealed."""
        found = False

        def look(value: str) -> str:
            nonlocal found
            found = found or not value.startswith(SEALED)
            return value

        _map_secrets(spec, look)
        return found


def _map_secrets(data: Any, fn: Any) -> Any:
    if isinstance(data, dict):
        return {k: (fn(v) if k == "secret" and isinstance(v, str) else _map_secrets(v, fn)) for k, v in data.items()}
    if isinstance(data, list):
        return [_map_secrets(v, fn) for v in data]
    return data


def _load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created on first use. Created aside and linked into place, so that two processes starting
    at once agree on one key and no reader ever sees a half-written file."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600, a name of its own
    staged = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(staged, path)
        except FileExistsError:
            pass  # another process won: use its key
    finally:
        staged.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    try:
        Fernet(key)
    except ValueError as exc:
        raise SecretBoxError(f"{path} does not hold a Fernet key (32 url-safe base64-encoded bytes)") from exc
    return key


__all__ = ["KEY_FILE", "SEALED", "SecretBox", "SecretBoxError"]
