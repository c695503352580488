"""The conditions of a deployment as the API shows them, from its roles' statuses and what the gateway routes (pure).

Kubernetes Deployment semantics, one deployment = its roles (each role is what Kubernetes calls a Deployment):

| condition | status | reason | when |
|---|---|---|---|
| Available | True | MinimumReplicasAvailable | every role has at least replicas − max unavailable instances ready (so it stays True through a healthy rolling update) |
| Available | False | MinimumReplicasUnavailable | some role has fewer |
| Progressing | True | NewReplicaSetAvailable | every role reached the current generation's revision and count (stays so until the next change) |
| Progressing | True | ReplicaSetUpdated | a rollout or a scale is under way |
| Progressing | False | CrashLoopBackOff | every new instance of a role crash-loops: the rollout stopped at once |
| Progressing | False | ProgressDeadlineExceeded | a role made no progress for the progress deadline |
| Progressing | False | ImageNotRunnable | the image has no local command |
| Degraded | True | (as Progressing) | Progressing is False; or a completed role has crash-looping instances (CrashLoopBackOff) |
| Ready | True | Routed | the current generation is observed, rolled out (NewReplicaSetAvailable), Available, and the gateway has acknowledged a routing snapshot with every ready instance of the entry role |
| Ready | False | the Degraded or Progressing reason, MinimumReplicasUnavailable, or RoutingPending | otherwise |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .objects import condition, set_condition
from .runtime import RoleStatus

IMAGE_NOT_RUNNABLE = "ImageNotRunnable"
_FAILURE_ORDER = ("CrashLoopBackOff", "ProgressDeadlineExceeded")  # the first one found names the problem


@dataclass(frozen=True)
class Routing:
    """What the gateway routes of a deployment: ``routed`` when the last acknowledged snapshot carries every ready
    instance of its entry role (True without a gateway), ``generation`` that snapshot's version, ``pending`` the ready
    instances it does not carry yet."""

    routed: bool
    generation: int | None = None
    pending: tuple[str, ...] = ()


def deployment_conditions(previous: list[dict[str, Any]], *, generation: int, observed: int,
                          roles: Mapping[str, RoleStatus], revisions_current: bool, problem: str | None,
                          routing: Routing, pending: str = "") -> list[dict[str, Any]]:
    """The deployment's conditions (``previous`` keeps transition times where a status did not change).

    ``revisions_current``: every role runs the template of the current generation; ``problem``: why it cannot run at
    all (an image without a local command); ``pending``: instances the capacity scheduler holds back (the roles'
    counts are what it admitted), said in Ready's message."""
    def each(type_: str) -> list[tuple[str, Any]]:
        return [(name, rs.condition(type_)) for name, rs in roles.items()]  # type: ignore[arg-type]

    def joined(items: list[tuple[str, Any]]) -> str:
        return "; ".join(c.message if len(roles) == 1 else f"{name}: {c.message}" for name, c in items)

    available_items = each("Available")
    unavailable = [(n, c) for n, c in available_items if c.status != "True"]
    if problem and not roles:
        available = condition("Available", False, "MinimumReplicasUnavailable", problem, observed)
    elif unavailable or not roles:
        available = condition("Available", False, "MinimumReplicasUnavailable",
                              joined(unavailable) or "no instances yet", observed)
    else:
        available = condition("Available", True, "MinimumReplicasAvailable", joined(available_items), observed)

    progressing_items = each("Progressing")
    stopped = [(n, c) for n, c in progressing_items if c.status == "False"]
    complete = bool(roles) and revisions_current and observed == generation and all(
        c.reason == "NewReplicaSetAvailable" for _, c in progressing_items)
    if problem:
        progressing = condition("Progressing", False, IMAGE_NOT_RUNNABLE, problem, observed)
    elif stopped:
        reason = next((r for r in _FAILURE_ORDER if any(c.reason == r for _, c in stopped)), stopped[0][1].reason)
        progressing = condition("Progressing", False, reason, joined(stopped), observed)
    elif complete:
        progressing = condition("Progressing", True, "NewReplicaSetAvailable", joined(progressing_items), observed)
    else:
        progressing = condition("Progressing", True, "ReplicaSetUpdated",
                                joined(progressing_items) or f"converging to generation {generation}", observed)

    troubled = [(n, c) for n, c in each("Degraded") if c.status == "True"]
    if progressing["status"] == "False":
        degraded = condition("Degraded", True, progressing["reason"], progressing["message"], observed)
    elif troubled:
        degraded = condition("Degraded", True, troubled[0][1].reason, joined(troubled), observed)
    else:
        degraded = condition("Degraded", False, "AsExpected", "", observed)

    counts = ", ".join(f"{n}: {rs.ready}/{rs.replicas} ready" for n, rs in roles.items()) + (
        f"; {pending}" if pending else "")
    if degraded["status"] == "True":
        ready = condition("Ready", False, degraded["reason"], degraded["message"], observed)
    elif progressing["reason"] != "NewReplicaSetAvailable":
        ready = condition("Ready", False, progressing["reason"], progressing["message"], observed)
    elif available["status"] != "True":
        ready = condition("Ready", False, "MinimumReplicasUnavailable", available["message"], observed)
    elif not routing.routed:
        ready = condition("Ready", False, "RoutingPending",
                          f"{counts}; waiting for the gateway to route {', '.join(routing.pending) or 'them'}",
                          observed)
    else:
        where = f" (routing generation {routing.generation})" if routing.generation is not None else ""
        ready = condition("Ready", True, "Routed", f"{counts}, routed by the gateway{where}", observed)

    conditions = list(previous)
    for new in (ready, progressing, degraded, available):  # a new type goes last: Ready stays first
        conditions = set_condition(conditions, new)
    return conditions


def role_summary(rs: RoleStatus) -> dict[str, Any]:
    """A role's counts as the deployment's status lists them (beside its instances)."""
    return {"desired": rs.replicas, "total": rs.total, "ready": rs.ready, "updated": rs.updated,
            "updated_ready": rs.updated_ready, "revision": rs.revision, "restarts": rs.restarts,
            "crash_looping": rs.crash_looping}
