"""The conditions of one role, Kubernetes Deployment semantics (pure: a function of what the controller sees).

- ``Available``: at least ``replicas - max unavailable`` instances are ready (``MinimumReplicasAvailable`` /
  ``MinimumReplicasUnavailable``) — so it stays True through a healthy rolling update.
- ``Progressing``: ``NewReplicaSetAvailable`` (True) once the desired revision and count are reached — and it stays so
  until either changes, as in Kubernetes; ``ReplicaSetUpdated`` (True) while a rollout or a scale moves on;
  ``CrashLoopBackOff`` (False) as soon as every instance of the new revision crash-loops; ``ProgressDeadlineExceeded``
  (False) when nothing moved for the progress deadline.
- ``Degraded`` (not a Kubernetes condition; kept for callers that wait): True exactly when ``Progressing`` is False, or
  when a completed rollout has instances that crash-loop since (reason ``CrashLoopBackOff``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inferstack.platform.runtime.status import CRASH_LOOP_BACK_OFF, Condition, RoleStatus
from inferstack.platform.runtime.template import RollingUpdate


@dataclass(frozen=True)
class InstanceView:
    """What the conditions need of one instance."""

    id: str
    ordinal: int
    revision: str
    ready: bool
    terminating: bool
    crash_looping: bool
    restarts: int
    problem: str | None  # what ended its last process or why it is not ready, while it is not ready
    last_line: str | None = None  # its log's last line at its last failure


def reached(revision: str | None, replicas: int, instances: Sequence[InstanceView]) -> bool:
    """The desired revision and count are there: exactly ``replicas`` instances, all of it, all ready."""
    return revision is not None and len(instances) == replicas and all(
        i.ready and i.revision == revision and not i.terminating for i in instances)


def role_status(*, revision: str | None, replicas: int, strategy: RollingUpdate, instances: Sequence[InstanceView],
                complete: bool, deadline_passed: bool, progress_deadline_s: float) -> RoleStatus:
    """Counts and conditions. ``complete``: the controller saw ``reached`` for this revision and count (sticky)."""
    live = [i for i in instances if not i.terminating]
    ready = sum(i.ready for i in live)
    restarts = sum(i.restarts for i in live)
    looping = [i for i in live if i.crash_looping]
    if revision is None:
        conditions = tuple(Condition(t, "False", "NotConfigured", "no template set yet")  # type: ignore[arg-type]
                           for t in ("Available", "Progressing", "Degraded"))
        return RoleStatus(None, replicas, len(instances), ready, 0, 0, conditions, 0, len(looping), restarts)
    new = [i for i in live if i.revision == revision]
    old = len(live) - len(new)
    updated_ready = sum(i.ready for i in new)
    _, unavailable = strategy.bounds(replicas)
    min_available = max(replicas - unavailable, 0)
    counts = f"{ready}/{replicas} instances ready"
    available = (
        Condition("Available", "True", "MinimumReplicasAvailable", f"{counts} (at least {min_available} required)")
        if ready >= min_available else
        Condition("Available", "False", "MinimumReplicasUnavailable", f"{counts}, at least {min_available} required"))
    progress = f"{updated_ready}/{replicas} instances of revision {revision} ready"
    serving = f", {old} of earlier revisions still serving" if old else ""
    if complete:
        progressing = Condition("Progressing", "True", "NewReplicaSetAvailable", f"revision {revision} rolled out: "
                                                                                 f"{progress}")
        if looping:
            degraded = Condition("Degraded", "True", CRASH_LOOP_BACK_OFF,
                                 f"{len(looping)} of {replicas} instances crash-looping: {_worst(looping)}")
        else:
            degraded = Condition("Degraded", "False", "AsExpected", progress)
    elif new and all(i.crash_looping for i in new):
        message = (f"rollout stopped: every new instance of revision {revision} is crash-looping ({len(new)})"
                   f"{serving}: {_worst(new)}")
        progressing = Condition("Progressing", "False", CRASH_LOOP_BACK_OFF, message)
        degraded = Condition("Degraded", "True", CRASH_LOOP_BACK_OFF, message)
    elif deadline_passed:
        message = f"no progress for {progress_deadline_s:g}s ({progress}{serving})"
        troubled = [i for i in new if not i.ready and i.problem] or [i for i in live if not i.ready and i.problem]
        if troubled:
            message = f"{_worst(troubled)}; {message}"
        progressing = Condition("Progressing", "False", "ProgressDeadlineExceeded", message)
        degraded = Condition("Degraded", "True", "ProgressDeadlineExceeded", message)
    else:
        detail = progress + (f", {old} of earlier revisions left" if old else "")
        if looping:
            detail += f"; {len(looping)} crash-looping: {_worst(looping)}"
        progressing = Condition("Progressing", "True", "ReplicaSetUpdated", detail)
        degraded = Condition("Degraded", "False", "AsExpected", detail)
    return RoleStatus(revision, replicas, len(instances), ready, len(new), updated_ready,
                      (available, progressing, degraded), min_available, len(looping), restarts, complete)


def _worst(instances: Sequence[InstanceView]) -> str:
    """The newest instance's problem (a crash says more than "connection refused" from the next process' probe), with
    its log's last line."""
    troubled = [i for i in instances if i.problem] or list(instances)
    newest = max(troubled, key=lambda i: i.ordinal)
    text = newest.problem or f"instance {newest.id} is not ready"
    return text + (f"; last log line: {newest.last_line}" if newest.last_line else "")
