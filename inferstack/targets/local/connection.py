"""How the local target's Pulumi providers reach the platform: stack config read in the provider process only.

`inferstack:platformUrl`, `inferstack:platformToken` (secret) or `inferstack:platformDataDir` (else the platform's
default data dir), `inferstack:waitForReady`, `inferstack:readyTimeout` and `inferstack:adopt` reach the providers
through the engine's `Configure` call. They are never part of a resource's inputs, of `__provider` or of the state:
the connection lives in a process-local table keyed by the provider object."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .provider_errors import adopted_paths

DEFAULT_TIMEOUT_S = 600.0
DIFF_TIMEOUT_S = 10.0
"""How long a diff waits for the platform before it compares with the last known state instead."""


@dataclass(frozen=True)
class Connection:
    """How the providers reach the platform, how long they wait, and what they may adopt."""

    url: str | None = None
    token: str | None = None
    data_dir: str | None = None
    wait_for_ready: bool = True
    timeout_s: float = DEFAULT_TIMEOUT_S
    adopt: frozenset[str] = field(default_factory=frozenset)
    """API paths (`services/chat`, `services/chat/deployments/canary`, `queues/q-a`) whose create may take over the
    object when it already exists: updated to the program's spec, then managed by the stack."""

    @classmethod
    def from_config(cls, get: Callable[[str], Any]) -> Connection:
        """From stack config (fully qualified keys). Without a URL the client discovers the platform:
        `$INFERSTACK_URL`/`$INFERSTACK_TOKEN`, else the data dir's `platform.json` and `token`."""
        def value(key: str) -> Any:
            v = get(f"inferstack:{key}")
            return None if v in (None, "") else v

        timeout = value("readyTimeout")
        return cls(url=value("platformUrl"), token=value("platformToken"), data_dir=value("platformDataDir"),
                   wait_for_ready=_as_bool(value("waitForReady"), default=True),
                   timeout_s=float(timeout) if timeout is not None else DEFAULT_TIMEOUT_S,
                   adopt=adopted_paths(value("adopt")))

    def client(self, timeout: float = 30) -> Any:
        """A new client (close it: `with connection.client() as client`)."""
        from .client import PlatformClient

        if self.url:
            return PlatformClient(self.url, self.token or "", timeout=timeout)
        return PlatformClient.discover(self.data_dir, timeout=timeout)

    def __repr__(self) -> str:  # never show the token
        return f"Connection(url={self.url!r}, data_dir={self.data_dir!r}, wait_for_ready={self.wait_for_ready})"


def _as_bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


_CONNECTIONS: weakref.WeakKeyDictionary[Any, Connection] = weakref.WeakKeyDictionary()
"""Provider object → its connection, for this process only (weak: providers are never kept alive by it)."""


def configure(provider: Any, get: Callable[[str], Any]) -> None:
    _CONNECTIONS[provider] = Connection.from_config(get)


def connection_of(provider: Any) -> Connection:
    """The provider's connection; not configured (called outside the engine): environment, then the default data
    dir."""
    conn = _CONNECTIONS.get(provider)
    if conn is None:
        conn = _CONNECTIONS.setdefault(provider, Connection.from_config(lambda _key: None))
    return conn
