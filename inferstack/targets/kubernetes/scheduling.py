"""Where pods may run and who goes first: node affinity (queue, zone, billing, GPU type, NUMA), tolerations, and the
PriorityClasses of priority and idle resources.

- **Placement.** Node labels the cluster provides: `inferstack.io/queue`, `topology.kubernetes.io/zone`,
  `inferstack.io/billing` (`prepaid` | `postpaid`), `inferstack.io/gpu-type` (GPU specs), `inferstack.io/numa-aligned`.
  Nodes of idle (preemptible) capacity carry the taint `inferstack.io/idle=true:NoSchedule`. A regular deployment
  *requires* its queue, zone and billing; a `use_idle` one requires its zone and one of its own queue or the queues
  lending idle capacity in that zone, prefers the lenders, and tolerates the idle taint. GPU specs tolerate
  `nvidia.com/gpu:NoSchedule`.
- **NUMA** is a *preference* (domain.md): a preferred affinity to `inferstack.io/numa-aligned=true`, which the cluster
  must put only on nodes whose topology manager policy is `best-effort` (with the static CPU manager). On nodes with
  `restricted` or `single-numa-node` the kubelet *rejects* a pod it cannot align — a hard failure, not a preference.
  Past half the machine's CPUs or GPUs there is no NUMA policy: a warning, rendered as without NUMA.
- **Priority.** The default priority (5) names no PriorityClass: its pods get the cluster's default priority, and a
  stack that uses only the default needs nothing cluster-wide. Another priority p names `inferstack-priority-<p>`
  (value 1000 × (p − 5): −4000 … 4000, so 5 sits where the cluster default is); `use_idle` deployments name
  `inferstack-idle-<p>` (value p − 10000, below every regular class, `preemptionPolicy: Never`), so they are the
  first to go. The classes are cluster-wide: rendered with `cluster_bootstrap`, else named in a warning (the API
  server rejects pods whose PriorityClass does not exist)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...spec import ComputeSpec, Deployment, Queue, StackFile
from .context import LABEL_PREFIX, Context

IDLE_TAINT_KEY = "inferstack.io/idle"
NUMA_LABEL = "inferstack.io/numa-aligned"
DEFAULT_PRIORITY = 5
IDLE_PRIORITY_BASE = -10000


def affinity(dep: Deployment, queue: Queue, spec: ComputeSpec, numa: bool, ctx: Context) -> dict[str, Any]:
    def expr(key: str, values: Iterable[str]) -> dict[str, Any]:
        return {"key": key, "operator": "In", "values": list(values)}

    required = [expr("topology.kubernetes.io/zone", [queue.zone])]
    preferred: list[dict[str, Any]] = []
    if dep.use_idle:
        lenders = sorted(q.name for q in ctx.inventory.queues if q.lends_idle and q.zone == queue.zone)
        required.append(expr(f"{LABEL_PREFIX}queue", sorted({queue.name, *lenders})))
        if lenders:
            preferred.append({"weight": 100, "preference": {"matchExpressions": [expr(f"{LABEL_PREFIX}queue",
                                                                                      lenders)]}})
    else:
        required += [expr(f"{LABEL_PREFIX}queue", [queue.name]), expr(f"{LABEL_PREFIX}billing", [queue.billing])]
    if spec.gpu_count and spec.gpu_type:
        required.append(expr(f"{LABEL_PREFIX}gpu-type", [spec.gpu_type]))
    if numa:
        preferred.append({"weight": 50, "preference": {"matchExpressions": [expr(NUMA_LABEL, ["true"])]}})
    node: dict[str, Any] = {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": required}]}}
    if preferred:
        node["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return {"nodeAffinity": node}


def tolerations(dep: Deployment, spec: ComputeSpec) -> list[dict[str, Any]]:
    out = []
    if dep.use_idle:
        out.append({"key": IDLE_TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"})
    if spec.gpu_count:
        out.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    return out


def numa_fits(spec: ComputeSpec, ctx: Context, where: str) -> bool:
    if spec.exceeds_half_machine():
        ctx.warn(where, f"NUMA affinity skipped: '{spec.name}' ({spec.cpu:g} CPU, {spec.gpu_count} GPU) exceeds half "
                        f"its machine ({spec.machine.cpu:g} CPU, {spec.machine.gpu} GPU)")
        return False
    return True


def priority_class_name(idle: bool, priority: int) -> str | None:
    """The PriorityClass a deployment's pods name; None for the default priority (the cluster's default)."""
    if idle:
        return f"inferstack-idle-{priority}"
    return None if priority == DEFAULT_PRIORITY else f"inferstack-priority-{priority}"


def priority_class(idle: bool, priority: int) -> dict[str, Any]:
    name = priority_class_name(idle, priority)
    meta = {"name": name, "labels": {"app.kubernetes.io/managed-by": "inferstack"}}
    if idle:
        return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": meta,
                "value": IDLE_PRIORITY_BASE + priority, "globalDefault": False, "preemptionPolicy": "Never",
                "description": f"inferstack idle capacity, priority {priority}: preempted first, never preempts"}
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": meta,
            "value": 1000 * (priority - DEFAULT_PRIORITY), "globalDefault": False,
            "preemptionPolicy": "PreemptLowerPriority",
            "description": f"inferstack deployment priority {priority} (1-9; higher preempts lower; 5 is the "
                           f"cluster default)"}


def used_priority_classes(deployments: Iterable[Deployment]) -> list[str]:
    """The PriorityClass names `deployments` need, sorted (the default priority needs none)."""
    return sorted({n for d in deployments if (n := priority_class_name(d.use_idle, d.priority)) is not None})


def priority_class_objects(stack: StackFile) -> list[dict[str, Any]]:
    """The cluster-wide PriorityClasses the stack's deployments use, by name."""
    used = {(dep.use_idle, dep.priority) for svc in stack.services for dep in svc.deployments
            if priority_class_name(dep.use_idle, dep.priority) is not None}
    return sorted((priority_class(idle, priority) for idle, priority in used), key=lambda o: o["metadata"]["name"])
