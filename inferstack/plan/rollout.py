"""Rollout impact: which roles of a changed deployment redeploy, why, and how capacity dips and surges meanwhile.

A change redeploys (its instances are replaced by a rolling update) unless it only moves what the control plane
applies to running instances. What that is depends on the target:

- **local** (the embedded platform): the replica count, autoscaling bounds, the rolling update policy itself, the
  graceful shutdown period, priority (scheduling order), the display name, `accept_traffic` and the entry role
  (gateway routing), the security group (enforced at the gateway / network, not in the instance), and the
  progressive policy (how the next redeploy is released).
- **kubernetes**: a Deployment replaces its pods whenever the pod template changes. The graceful period
  (`terminationGracePeriodSeconds`), priority (`priorityClassName`), `accept_traffic` and the entry role (the
  `inferstack.io/traffic` pod label) are in the template, so they redeploy there; the replica count, autoscaling, the
  rolling update (the Deployment's strategy and its PodDisruptionBudget), the display name (an annotation of the
  Deployment), the security group (a NetworkPolicy) and the subnet (not rendered) are not. Adding or removing a
  deployment's progressive policy redeploys there: Flagger's Canary takes the Deployment over (its pods get the
  `app` label Flagger selects on, and it runs them as `<name>-primary`) or hands it back.

Anything else — image, model, command, env, compute spec, probes, mounts, ports, queue, idle resources, NUMA
affinity, inference mode — redeploys on both: an unknown field redeploys too, because saying "no impact" wrongly is
the worse error."""

from __future__ import annotations

from inferstack.spec import DEFAULT_NAME, Deployment, Role

from .model import PlanContext, PropertyChange, RoleImpact

NO_REDEPLOY = frozenset({"name", "replicas", "autoscaling", "rolling_update", "graceful_shutdown_s", "priority",
                         "accept_traffic", "security_group", "progressive"})
"""Deployment-level (and standard-mode role) fields whose change does not replace instances (local target)."""
ROLE_NO_REDEPLOY = frozenset({"replicas", "autoscaling", "rolling_update", "entry"})
"""Fields of a multi-role deployment's role whose change does not replace instances (local target)."""
KUBERNETES_NO_REDEPLOY = frozenset({"name", "replicas", "autoscaling", "rolling_update", "security_group", "subnet"})
"""Deployment-level fields whose change leaves the pod template alone (kubernetes target)."""
KUBERNETES_ROLE_NO_REDEPLOY = frozenset({"replicas", "autoscaling", "rolling_update"})
"""Role fields whose change leaves the role's pod template alone (kubernetes target)."""


def no_redeploy(target: str) -> tuple[frozenset[str], frozenset[str]]:
    """(deployment-level, role-level) fields whose change does not replace instances on `target`."""
    if target == "kubernetes":
        return KUBERNETES_NO_REDEPLOY, KUBERNETES_ROLE_NO_REDEPLOY
    return NO_REDEPLOY, ROLE_NO_REDEPLOY


def redeploy_reasons(properties: list[PropertyChange], old_roles: set[str], new_roles: list[str],
                     target: str = "local") -> dict[str, list[str]]:
    """Role name → the property paths that redeploy it on `target` (roles that do not redeploy are left out).

    A role added or removed in a multi-role deployment redeploys the other roles: every instance is given the other
    roles' endpoints in its environment. A role that is new has nothing to redeploy (it starts)."""
    deployment_fields, role_fields = no_redeploy(target)
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
            elif p.parts[2] not in role_fields and role in own:
                own[role].append(p.path)
        elif head not in deployment_fields:
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


def ignored_replicas_warnings(change_id: str, old: Deployment, new: Deployment) -> list[str]:
    """A warning for each role whose `replicas` the new spec changes while autoscaling stays on: with autoscaling the
    count only sets the starting number (the autoscaler owns the live one, in status), so the edit changes nothing —
    the plan says so rather than a silent "No changes"."""
    old_roles = roles_by_name(old)
    out = []
    for name, role in roles_by_name(new).items():
        before = old_roles.get(name)
        if (before is None or role.autoscaling is None or before.autoscaling is None
                or role.replicas is None or role.replicas == before.replicas):
            continue
        field = "replicas" if len(old_roles) == 1 and not new.roles else f"roles[{name}].replicas"
        out.append(f"{change_id}: `{field}` {before.replicas if before.replicas is not None else '(none)'} → "
                   f"{role.replicas} is not applied: autoscaling is on, so `replicas` only sets the starting count "
                   f"(the autoscaler owns the live count; turn autoscaling off to set it)")
    return out
