"""What a change means on the kubernetes target beyond which pods it replaces (rollout.py): the steps Kubernetes
needs done by hand, and where a cluster behaves unlike the embedded platform. Pure; appended to the changes'
warnings, so `inferstack plan --against` and the JSON plan both carry them.

- **Autoscaling turned on.** The rendered Deployment leaves `replicas` to the autoscaler. Applied as is, a
  client-side `kubectl apply` removes the field it applied before, and the Deployment drops to 1 replica until the
  HPA acts; under server-side apply the field manager that owned it lets go and the same happens. The plan names the
  hand-over (Kubernetes' "Migrating Deployments to horizontal autoscaling"); the Pulumi component needs none.
- **Autoscaling turned off, or HPA → KEDA → HPA.** `kubectl apply` deletes nothing: an HPA left behind keeps
  scaling. HPA → KEDA needs nothing (the ScaledObject adopts the HPA); KEDA → HPA needs the ScaledObject deleted first,
  since KEDA's HPA (of the same name) belongs to it.
- **A weighted `use_idle` deployment** may lose every pod to preemption: the Gateway then answers 503 for its share,
  where locally the other deployments take it."""

from __future__ import annotations

from inferstack.spec import Role, Service, StackFile
from inferstack.spec.kubernetes import autoscaled, is_multi_role, workload_name

from .model import Change


def _scaler(role: Role | None) -> str | None:
    """`HorizontalPodAutoscaler`, `ScaledObject` or None: what owns the role's count in a cluster."""
    if role is None or not autoscaled(role.autoscaling):
        return None
    assert role.autoscaling is not None
    return "ScaledObject" if role.autoscaling.schedules else "HorizontalPodAutoscaler"


def _services(stack: StackFile) -> dict[str, Service]:
    return {s.key: s for s in stack.services if s.key}


def kubernetes_warnings(changes: list[Change], old: StackFile, new: StackFile) -> None:
    """Append to `changes` what the kubernetes target needs said about them."""
    namespace = new.kubernetes_options.namespace
    before, after = _services(old), _services(new)
    for change in changes:
        svc = after.get(change.service or "")
        if svc is None:
            continue
        if change.kind == "deployment" and change.action == "update":
            old_svc = before.get(svc.key or "")
            old_dep = old_svc.deployment(change.key) if old_svc else None
            new_dep = svc.deployment(change.key)
            if old_dep is None or new_dep is None:
                continue
            old_roles = {r.name: r for r in old_dep.effective_roles()}
            multi = is_multi_role(new_dep)
            for role in new_dep.effective_roles():
                name = workload_name(svc.key or "", new_dep.key or "", role.name if multi else None)
                change.warnings += _autoscaler_steps(change.id, name, namespace, old_roles.get(role.name), role)
        if change.kind in ("traffic", "deployment") and change.action in ("create", "update"):
            t = svc.traffic
            idle = [d.key for d in svc.deployments if d.use_idle and t.strategy == "weighted"
                    and t.weights.get(d.key or "", 0) > 0 and (change.kind == "traffic" or d.key == change.key)]
            if idle:
                change.warnings.append(
                    f"{change.id}: weighted deployment(s) {', '.join(map(str, idle))} use idle resources: when "
                    f"preemption takes all their pods, the Gateway answers 503 for their share (locally the other "
                    f"deployments take it)")


def _autoscaler_steps(change_id: str, name: str, namespace: str, old: Role | None, new: Role) -> list[str]:
    was, now = _scaler(old), _scaler(new)
    where = f"{change_id}: Deployment {namespace}/{name}"
    if was == now:
        return []
    if was is None and now is not None:
        return [(f"{where} hands its replica count to the {now}: before applying, remove spec.replicas from what "
                f"last applied it (client-side: `kubectl apply edit-last-applied deployment/{name} -n {namespace}`; "
                f"server-side: hand the field over as in Kubernetes' 'Transferring ownership'), or the apply resets "
                f"it to 1 replica until the autoscaler acts (the Pulumi component keeps the count)")]
    if was is not None and now is None:
        return [(f"{where} gets a fixed replica count: delete {was} {namespace}/{name} (`kubectl apply` does not), or "
                f"it keeps scaling the Deployment")]
    if was == "ScaledObject":
        return [(f"{where} moves from KEDA to an HPA: first `kubectl delete scaledobject {name} -n {namespace}` (KEDA's "
                f"HPA '{name}' belongs to it and goes with it), then apply")]
    return []  # HPA → KEDA: the ScaledObject adopts the HPA (scaledobject.keda.sh/transfer-hpa-ownership)
