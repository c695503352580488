"""What a role controller reports: its instances (``InstanceRecord``), its status with conditions (``RoleStatus``) and
the runtime events it emits (``RuntimeEvent``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

Phase = Literal["starting", "running", "backoff", "terminating"]
ConditionType = Literal["Available", "Progressing", "Degraded"]
EventType = Literal["Normal", "Warning"]

CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
BACK_OFF = "BackOff"


@dataclass(frozen=True)
class InstanceRecord:
    """One instance as the platform routes to it and persists it (enough to re-adopt it after a restart).

    ``pid`` and ``start_time`` are None while the instance waits to be restarted (phase ``backoff``). ``tree`` and
    ``cgroup`` name its process tree (``tree.py``), so a restarted platform still stops all of it.

    Why it is not serving, Kubernetes style: ``reason`` is ``BackOff`` while it waits to be restarted after a failure,
    ``CrashLoopBackOff`` once ``failures`` consecutive starts failed (the controller's ``crash_loop_after``) — kept
    until it is ready again; ``message`` says what ended its last process; ``exit_code`` is that process' exit code
    (negative: killed by that signal; None: unknown, e.g. an adopted process), ``finished_at`` when (ISO 8601 UTC)
    and ``log_tail`` the last lines of its log then (known secret values masked).
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
    tree: str | None = None
    cgroup: str | None = None
    reason: str | None = None
    message: str | None = None
    failures: int = 0
    exit_code: int | None = None
    finished_at: str | None = None
    log_tail: tuple[str, ...] = ()

    @property
    def crash_looping(self) -> bool:
        return self.reason == CRASH_LOOP_BACK_OFF

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what the deployment's status lists)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["log_tail"] = list(self.log_tail)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceRecord:
        """From ``to_dict`` output (unknown keys ignored, so records written by other versions load)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "log_tail" in values:
            values["log_tail"] = tuple(values["log_tail"] or ())
        return cls(**values)


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: Literal["True", "False"]
    reason: str  # CamelCase, stable: MinimumReplicasAvailable, NewReplicaSetAvailable, ReplicaSetUpdated, …
    message: str  # for a person: which instance, what happened, where its log is


@dataclass(frozen=True)
class RoleStatus:
    """Counts and conditions of one role. ``updated``: instances of the desired revision; ``crash_looping``: instances
    in CrashLoopBackOff; ``restarts``: restarts of the live instances, summed; ``complete``: the desired revision
    and count were reached (all updated instances ready, none of an earlier revision) — it stays so until the
    revision or the count changes, as Kubernetes' ``NewReplicaSetAvailable``."""

    revision: str | None
    replicas: int
    total: int
    ready: int
    updated: int
    updated_ready: int
    conditions: tuple[Condition, ...]
    min_available: int = 0
    crash_looping: int = 0
    restarts: int = 0
    complete: bool = False

    def condition(self, type_: ConditionType) -> Condition:
        return next(c for c in self.conditions if c.type == type_)


@dataclass(frozen=True)
class RuntimeEvent:
    """Something that happened to a role or one of its instances, for the platform's event log.

    ``reason`` is CamelCase (``Started``, ``BackOff``, ``Killing`` …); ``message`` is for a person, never carries a
    secret and holds no numbers that change on every repeat (pids, ports, delays), so that repeats aggregate."""

    reason: str
    message: str
    type: EventType = "Normal"
    instance: str | None = None
