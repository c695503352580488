"""Rollout impact: which roles of a changed deployment redeploy, why, and how capacity dips and surges meanwhile.

A change redeploys (its instances are replaced by a rolling update) unless it only moves what the control plane
applies to running instances: the replica count, autoscaling bounds, the rolling update policy itself, the graceful
shutdown period, priority (scheduling order), the display name, `accept_traffic` and the entry role (gateway
routing), and the security group (enforced at the gateway / network, not in the instance). Anything else — image,
model, command, env, compute spec, probes, mounts, ports, queue, subnet, idle resources, NUMA affinity, inference mode
— redeploys: an unknown field redeploys too, because saying "no impact" wrongly is the worse error."""

from __future__ import annotations

from inferstack.spec import DEFAULT_NAME, Deployment, Role

from .model import PlanContext, PropertyChange, RoleImpact

NO_REDEPLOY = frozenset({"name", "replicas", "autoscaling", "rolling_update", "graceful_shutdown_s", "priority",
                         "accept_traffic", "security_group"})
"""Deployment-level (and standard-mode role) fields whose change does not replace instances."""
ROLE_NO_REDEPLOY = frozenset({"replicas", "autoscaling", "rolling_update", "entry"})
"""Fields of a multi-role deployment's role whose change does not replace instances."""


def redeploy_reasons(properties: list[PropertyChange], old_roles: set[str], new_roles: list[str]) -> dict[str, list[str]]:
    """Role name → the property paths that redeploy it (roles that do not redeploy are left out).

    A role added or removed in a multi-role deployment redeploys the other roles: every instance is given the other
    roles' endpoints in its environment. A role that is new has nothing to redeploy (it starts)."""
    shared: list[str] = []
    own: dict[str, list[str]] = {r: [] for r in new_roles}
    mode_changed = False
    for p in properties:
        head = p.parts[0]
        if head == "roles" and len(p.parts) >= 2:
            role = p.parts[1]
            if len(p.parts) == 2:
                for other in new_roles:
                    if other != role:
                        own[other].append(p.path)
            elif p.parts[2] not in ROLE_NO_REDEPLOY and role in own:
                own[role].append(p.path)
        elif head not in NO_REDEPLOY:
            shared.append(p.path)
            mode_changed = mode_changed or head == "inference_mode"
    out = {}
    for role in new_roles:
        if role not in old_roles and not mode_changed:
            continue
        reasons = shared + own[role]
        if reasons:
            out[role] = reasons
    return out


def role_impact(role: Role, reasons: list[str], replicas: int) -> RoleImpact:
    """The rollout of `role` (its new rolling update policy) starting from `replicas` instances."""
    dip, surge = role.rolling_update.bounds(replicas) if replicas > 0 else (0, 0)
    return RoleImpact(role=role.name, reasons=reasons, replicas=replicas, dip=min(dip, replicas), surge=surge)


def current_replicas(context: PlanContext, service: str, deployment: str, role: str,
                     spec_role: Role | None) -> int:
    """The live count when known, else the count the spec starts the role with."""
    live = context.current_replicas.get((service, deployment, role))
    if live is not None:
        return live
    return spec_role.starting_replicas if spec_role is not None else 0


def roles_by_name(deployment: Deployment | None) -> dict[str, Role]:
    return {r.name: r for r in deployment.effective_roles()} if deployment is not None else {}


def impacts(reasons: dict[str, list[str]], old: Deployment | None, new: Deployment, context: PlanContext,
            service: str, deployment: str) -> list[RoleImpact]:
    """A RoleImpact per role of `new` named in `reasons`, in the deployment's role order."""
    old_roles, new_roles = roles_by_name(old), roles_by_name(new)
    out = []
    for name, role in new_roles.items():
        if name in reasons:
            count = current_replicas(context, service, deployment, name, old_roles.get(name, role))
            out.append(role_impact(role, reasons[name], count))
    return out


def full_outage_warning(change_id: str, impact: RoleImpact, role: Role, legacy_default: bool) -> str | None:
    """A warning when the redeploy may take every instance of the role down at once (max unavailable 100 %)."""
    if role.rolling_update.max_unavailable < 100 or impact.replicas == 0:
        return None
    who = f"{DEFAULT_NAME} ({change_id})" if legacy_default else change_id
    return (f"{who} redeploys role '{impact.role}' with max_unavailable 100 %: all {impact.replicas} instance(s) may "
            f"be unavailable at once; lower max_unavailable (or rely on max_surge) before this change")
