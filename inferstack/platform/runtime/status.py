"""What a role controller reports: its instances (``InstanceRecord``) and its status with conditions (``RoleStatus``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["starting", "running", "backoff", "terminating"]
ConditionType = Literal["Ready", "Progressing", "Degraded"]


@dataclass(frozen=True)
class InstanceRecord:
    """One instance as the platform routes to it and persists it (enough to re-adopt it after a restart).

    ``pid`` and ``start_time`` are None while the instance waits to be restarted (phase ``backoff``).
    """

    id: str
    port: int
    pid: int | None
    start_time: int | None
    revision: str
    host: str = "127.0.0.1"
    ready: bool = False
    phase: Phase = "running"
    restarts: int = 0
    log_path: str | None = None


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: Literal["True", "False"]
    reason: str  # CamelCase, stable: MinimumReplicasAvailable, Complete, RollingUpdate, ProgressDeadlineExceeded, …
    message: str  # for a person: which instance, what happened, where its log is


@dataclass(frozen=True)
class RoleStatus:
    """Counts and conditions of one role. ``updated``: instances of the desired revision."""

    revision: str | None
    replicas: int
    total: int
    ready: int
    updated: int
    updated_ready: int
    conditions: tuple[Condition, ...]

    def condition(self, type_: ConditionType) -> Condition:
        return next(c for c in self.conditions if c.type == type_)
