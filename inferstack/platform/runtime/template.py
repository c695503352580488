"""What one role's instances should look like (``RoleTemplate``) and how to move between revisions (``RollingUpdate``)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inferstack.platform.runtime.probes import Probes
from inferstack.spec import rolling_bounds

INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
"""Variables an instance takes from the platform's own environment (a local process needs a PATH); nothing else leaks."""

_ARGV_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True)
class Mount:
    """A shared directory: ``source`` on this machine (under the platform's data dir), seen by the instance at ``path``.

    Locally there is no mount namespace: the directory is created and handed to the instance through env
    ``INFERSTACK_MOUNTS`` (JSON list of ``{path, source, read_only}``); read-only is advisory.
    """

    source: Path
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class RoleTemplate:
    """How to start one instance of a role. ``revision`` identifies the template: a new one means a rolling update.

    ``argv`` is never run through a shell; ``$(NAME)`` in it expands to the instance's env value (``$$`` is ``$``).
    ``env`` may hold secrets: it is never logged nor shown in reprs. ``secrets`` are those values: ``redact`` masks
    them in text the platform shows (an instance's last log lines in status).
    """

    argv: tuple[str, ...]
    revision: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: str | Path | None = None
    mounts: tuple[Mount, ...] = ()
    listen_port_env: str = "PORT"
    probes: Probes = field(default_factory=Probes)
    graceful_shutdown_s: float = 30.0
    secrets: frozenset[str] = field(default_factory=frozenset, repr=False)

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("argv is empty")
        if self.graceful_shutdown_s < 0:
            raise ValueError("graceful_shutdown_s must be >= 0")

    def instance_env(self, instance_id: str, port: int, inherited: Mapping[str, str]) -> dict[str, str]:
        """The whole environment of one instance: inherited basics, the template's env, then the platform's own."""
        env = dict(inherited)
        env.update(self.env)
        env[self.listen_port_env] = str(port)
        env["INFERSTACK_INSTANCE"] = instance_id
        env["INFERSTACK_REVISION"] = self.revision
        if self.mounts:
            env["INFERSTACK_MOUNTS"] = json.dumps(
                [{"path": m.path, "source": str(m.source), "read_only": m.read_only} for m in self.mounts])
        return env

    def redact(self, text: str) -> str:
        """``text`` with every secret value of at least 4 characters replaced by ``***`` (shorter ones would mask
        ordinary words)."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def instance_argv(self, env: Mapping[str, str]) -> list[str]:
        """``argv`` with ``$(NAME)`` references expanded from ``env`` (Kubernetes rules: unknown names stay as written)."""
        def expand(match: re.Match[str]) -> str:
            name = match.group(1)
            return "$" if name is None else env.get(name, match.group(0))
        return [_ARGV_REFERENCE.sub(expand, arg) for arg in self.argv]

    def prepare_mounts(self) -> None:
        """Create the mounts' source directories (their data outlives the instances)."""
        for mount in self.mounts:
            os.makedirs(mount.source, exist_ok=True)


@dataclass(frozen=True)
class RollingUpdate:
    """Max surge and max unavailable, in percent of the desired replicas (Kubernetes rounding, see ``bounds``)."""

    max_surge_pct: float = 25.0
    max_unavailable_pct: float = 25.0

    def __post_init__(self) -> None:
        for value in (self.max_surge_pct, self.max_unavailable_pct):
            if not 0 <= value <= 100:
                raise ValueError("rolling update percentages must be within 0–100")
        if self.max_surge_pct == 0 and self.max_unavailable_pct == 0:
            raise ValueError("max surge and max unavailable cannot both be 0")

    def bounds(self, replicas: int) -> tuple[int, int]:
        """(max surge, max unavailable) as instance counts: surge rounds up, unavailable down; both 0 → unavailable 1
        (the spec's rounding, one implementation for the plan and the runtime)."""
        unavailable, surge = rolling_bounds(replicas, self.max_unavailable_pct, self.max_surge_pct)
        return surge, unavailable
