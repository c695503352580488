"""`diff(old, new)`: what a change to a stack means — ordered changes per object, update vs replace, rollout impact,
cost. `diff_object` is the same decision for one object (a Pulumi dynamic provider's `diff`). Pure.

Convergence order (one pass): inventory creates and updates (referenced kinds first); whole services that go away
(their deployments, then the service: this frees names and prepaid capacity); then per service in the new stack's
order: the service, its created / updated deployments, its traffic (so new deployments exist before they get weight),
its deleted deployments (after traffic has moved away from them); inventory deletions last (nothing uses them then)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from inferstack.spec import (
    DEFAULT_KEY,
    ComputeSpec,
    Deployment,
    Inventory,
    Model,
    PresetImage,
    Queue,
    ResourceGroup,
    SecurityGroup,
    Service,
    StackFile,
    Subnet,
    Traffic,
    Vpc,
)

from .capacity import preemptions
from .cost import plan_cost
from .kubernetes import kubernetes_warnings
from .legacy import conversion_trigger, legacy_shape
from .legacy import reason as legacy_reason
from .model import Change, Kind, Plan, PlanContext, PropertyChange, RoleImpact
from .normalise import (
    SERVICE_FIELDS,
    Keyed,
    Share,
    deployment_data,
    inventory_data,
    key_of_deployment,
    key_of_service,
    public,
    service_data,
    service_public,
    traffic_data,
)
from .release import kubernetes_release_warnings, live_release_warnings, redeploy_release, traffic_release
from .rollout import full_outage_warning, ignored_replicas_warnings, impacts, redeploy_reasons, roles_by_name

INVENTORY_ORDER = ("vpcs", "resource_groups", "compute_specs", "images", "queues", "subnets", "security_groups")
"""Inventory kinds in the order they are created: a kind comes after the kinds it references."""
INVENTORY_MODELS: dict[str, type[Model]] = {
    "vpcs": Vpc, "resource_groups": ResourceGroup, "compute_specs": ComputeSpec, "images": PresetImage,
    "queues": Queue, "subnets": Subnet, "security_groups": SecurityGroup,
}

REPLACE_FIELDS: dict[str, tuple[str, ...]] = {
    "inventory": ("name",), "service": ("key", "vpc", "resource_group"), "deployment": ("key",), "traffic": (),
}
"""The only properties whose change the platform cannot apply in place; everything else is an update."""

_MISSING: Any = object()


# --- comparing normalised data -----------------------------------------------------------------------------------

def compare(old: dict[str, Any], new: dict[str, Any]) -> list[PropertyChange]:
    """The changed leaves of two normalised objects, in field order. Maps recurse; lists compare whole."""
    out: list[PropertyChange] = []
    _walk(old, new, (), "", out)
    return out


def _walk(old: dict[str, Any], new: dict[str, Any], parts: tuple[str, ...], path: str,
          out: list[PropertyChange]) -> None:
    keyed = isinstance(old, Keyed) or isinstance(new, Keyed)
    for k in [*old, *(k for k in new if k not in old)]:
        o, n = old.get(k, _MISSING), new.get(k, _MISSING)
        if _absent(o) and _absent(n) or (o is not _MISSING and n is not _MISSING and o == n):
            continue
        if isinstance(o, Share) and n is _MISSING and o == 0 or isinstance(n, Share) and o is _MISSING and n == 0:
            continue  # a share below the weight precision is no share
        sub = f"{path}[{k}]" if keyed else (f"{path}.{k}" if path else k)
        if isinstance(o, dict) and isinstance(n, dict):
            _walk(o, n, (*parts, k), sub, out)
        else:
            out.append(PropertyChange(sub, None if o is _MISSING else public(o),
                                      None if n is _MISSING else public(n), (*parts, k)))


def _absent(value: Any) -> bool:
    """Omitted, or an empty map or list, which means the same (`env: []`, `probes: {}`, `mounts: []`)."""
    return value is _MISSING or value == {} or value == []


@dataclass
class Side:
    """One side of an object: its model and its normalised data."""

    model: Model
    data: dict[str, Any]


def object_change(kind: Kind, id: str, key: str, service: str | None, old: Side | None, new: Side | None,
                  shown: Callable[[Any], dict[str, Any]]) -> Change | None:
    """The change from `old` to `new` (None = absent), or None when they mean the same."""
    properties = compare(old.data, new.data) if old is not None and new is not None else []
    if (old is None and new is None) or (old is not None and new is not None and not properties):
        return None
    replace = [p.path for p in properties if p.parts[0] in REPLACE_FIELDS[kind]]
    action = "create" if old is None else "delete" if new is None else "replace" if replace else "update"
    return Change(kind=kind, id=id, key=key, service=service, action=action, properties=properties,
                  replace_paths=replace, old=shown(old.model) if old else None,
                  new=shown(new.model) if new else None, target=new)


def _public(model: Model) -> dict[str, Any]:
    return model.to_public()


def _service_side(svc: Service | None) -> Side | None:
    return Side(svc, service_data(svc)) if svc is not None else None


def _deployment_side(dep: Deployment | None, accept_traffic_settable: bool = True) -> Side | None:
    return Side(dep, deployment_data(dep, accept_traffic_settable)) if dep is not None else None


def _accept_traffic_settable(svc: Service) -> bool:
    return svc.network_type == "clb" and svc.traffic.strategy == "by_instance_count"


def _traffic_side(traffic: Traffic | None, keys: Iterable[str]) -> Side | None:
    return Side(traffic, traffic_data(traffic, keys)) if traffic is not None else None


# --- the legacy (flat) form ------------------------------------------------------------------------------------

def _pending_conversion(old: Service | None, new: Service, context: PlanContext) -> bool:
    """Whether `old` is a legacy service not converted yet (the offline plan, without a context, assumes so)."""
    if old is None or key_of_service(new) in context.converted:
        return False
    return legacy_shape(old.legacy_form, [(key_of_deployment(d), d.name) for d in old.deployments])


# --- deployments -----------------------------------------------------------------------------------------------

def _with_rollout(change: Change | None, old: Deployment, new: Deployment, context: PlanContext, svc: str,
                  legacy_trigger: str | None = None) -> Change | None:
    """Attach the redeploying roles to an update of `old` into `new` (creating the change when only the legacy
    conversion redeploys `Default`), with a warning for each role that may go fully down."""
    dkey = key_of_deployment(new)
    if change is None and not legacy_trigger:
        return None
    properties = change.properties if change else []
    old_roles, new_roles = roles_by_name(old), roles_by_name(new)
    reasons = redeploy_reasons(properties, set(old_roles), list(new_roles), context.target or "local")
    if legacy_trigger:
        for role in new_roles:
            if role in old_roles:
                reasons[role] = list(dict.fromkeys([*reasons.get(role, []), legacy_reason(legacy_trigger)]))
    if not reasons:
        return change
    if change is None:
        change = Change(kind="deployment", id=f"{svc}/{dkey}", key=dkey, service=svc, action="update",
                        old=new.to_public(), new=new.to_public(), target=_deployment_side(new))
    change.legacy_conversion = legacy_trigger
    change.redeploy = impacts(reasons, old, new, context, svc, dkey)
    for impact in change.redeploy:
        warning = full_outage_warning(change.id, impact, new_roles[impact.role], legacy_trigger is not None)
        if warning:
            change.warnings.append(warning)
    return change


def _recreated(old: Deployment, new: Deployment, svc: str, forced_by: list[str], context: PlanContext,
               settable: bool) -> Change:
    """A deployment of a replaced service: deleted with it and created again, so every instance stops."""
    dkey = key_of_deployment(new)
    old_roles = roles_by_name(old)
    redeploy = []
    for name in roles_by_name(new):
        live = context.current_replicas.get((svc, dkey, name))
        count = live if live is not None else (old_roles[name].starting_replicas if name in old_roles else 0)
        redeploy.append(RoleImpact(name, list(forced_by), count, count, 0))
    return Change(kind="deployment", id=f"{svc}/{dkey}", key=dkey, service=svc, action="replace",
                  properties=compare(deployment_data(old, settable), deployment_data(new, settable)),
                  replace_paths=list(forced_by), redeploy=redeploy, old=old.to_public(), new=new.to_public(),
                  target=_deployment_side(new, settable))


def _deleted(svc: str, dep: Deployment) -> Change:
    dkey = key_of_deployment(dep)
    return Change(kind="deployment", id=f"{svc}/{dkey}", key=dkey, service=svc, action="delete",
                  old=dep.to_public())


# --- services --------------------------------------------------------------------------------------------------

def _service_changes(old: Service | None, new: Service, context: PlanContext) -> list[Change]:
    """The service, its created / updated deployments, its traffic, its deleted deployments."""
    key = key_of_service(new)
    head = object_change("service", key, key, None, _service_side(old), _service_side(new), service_public)
    forced_by = [f"service.{p}" for p in head.replace_paths] if head and head.action == "replace" else []
    if head and forced_by:
        head.warnings.append(f"service {key} is replaced ({', '.join(head.replace_paths)} changes): its "
                             f"deployments are deleted and created again, and it serves nothing in between")
    pending = _pending_conversion(old, new, context)
    settable = _accept_traffic_settable(new)  # both sides compared as the deployment must be under the new service
    old_deps = {key_of_deployment(d): d for d in old.deployments} if old else {}
    changes = [head] if head else []
    for dep in new.deployments:
        dkey = key_of_deployment(dep)
        before = old_deps.get(dkey)
        if before is not None and forced_by:
            changes.append(_recreated(before, dep, key, forced_by, context, settable))
            continue
        change = object_change("deployment", f"{key}/{dkey}", dkey, key, _deployment_side(before, settable),
                               _deployment_side(dep, settable), _public)
        if before is not None:
            trigger = conversion_trigger(list(old_deps), new.deployment_keys(), change is not None) \
                if pending and dkey == DEFAULT_KEY else None
            change = _with_rollout(change, before, dep, context, key, trigger)
        if change:
            redeploy_release(change, dep)
            changes.append(change)
    keys = new.deployment_keys()  # both sides normalised over the deployments as they will be
    new_traffic = _traffic_side(new.traffic, keys)
    traffic = object_change("traffic", f"{key}/traffic", "traffic", key,
                            _traffic_side(old.traffic, keys) if old else None, new_traffic, _public)
    if forced_by and old is not None:  # the traffic object goes with the service and is written again
        traffic = Change(kind="traffic", id=f"{key}/traffic", key="traffic", service=key, action="replace",
                         properties=traffic.properties if traffic else [], replace_paths=list(forced_by),
                         old=old.traffic.to_public(), new=new.traffic.to_public(), target=new_traffic)
    if traffic:
        live = (context.releases.get(f"{key}/traffic") or {}).get("live_weights")
        if context.target != "kubernetes":  # a cluster applies weights at once (warned: plan/release.py)
            traffic_release(traffic, new, live if isinstance(live, dict) else None)
        changes.append(traffic)
    kept = set(new.deployment_keys())
    changes.extend(_deleted(key, d) for k, d in old_deps.items() if k not in kept)
    return changes


def _removed_service(svc: Service) -> list[Change]:
    key = key_of_service(svc)
    return [*(_deleted(key, d) for d in svc.deployments),
            Change(kind="service", id=key, key=key, action="delete", old=service_public(svc))]


# --- inventory -------------------------------------------------------------------------------------------------

def _inventory_side(kind: str, obj: Model | None) -> Side | None:
    return Side(obj, inventory_data(kind, obj)) if obj is not None else None


def _inventory_changes(old: Inventory, new: Inventory) -> tuple[list[Change], list[Change]]:
    """(creates and updates in dependency order, deletions in reverse order)."""
    early: list[Change] = []
    late: list[Change] = []
    for kind in INVENTORY_ORDER:
        before = old.index(kind)
        for name, obj in new.index(kind).items():
            change = object_change("inventory", f"{kind}/{name}", name, None,
                                   _inventory_side(kind, before.get(name)), _inventory_side(kind, obj), _public)
            if change:
                early.append(change)
    for kind in reversed(INVENTORY_ORDER):
        after = new.index(kind)
        late.extend(Change(kind="inventory", id=f"{kind}/{name}", key=name, action="delete", old=obj.to_public())
                    for name, obj in old.index(kind).items() if name not in after)
    return early, late


# --- entry points ----------------------------------------------------------------------------------------------

def diff(old: StackFile | None, new: StackFile | None, context: PlanContext | None = None) -> Plan:
    """What changing `old` (None: nothing yet) into `new` means, in convergence order. Services of `old` missing from
    `new` are deleted; so are inventory objects `old` declares and `new` does not. The stacks' `target` and
    `kubernetes` options are not compared (they choose where a stack converges, not what it holds); the target
    (`context.target`, else `new`'s) decides what replaces instances, and on `kubernetes` the plan also says what
    Kubernetes needs done by hand (plan/kubernetes.py)."""
    old = old or StackFile()
    new = new or StackFile()
    context = replace(context or PlanContext(), target=(context.target if context else None) or new.target)
    early, late = _inventory_changes(old.inventory, new.inventory)
    changes = list(early)
    new_services = {key_of_service(s): s for s in new.services}
    old_services = {key_of_service(s): s for s in old.services}
    for key, svc in old_services.items():
        if key not in new_services:
            changes.extend(_removed_service(svc))
    for key, svc in new_services.items():
        changes.extend(_service_changes(old_services.get(key), svc, context))
    changes.extend(late)
    if context.target == "kubernetes":
        kubernetes_warnings(changes, old, new)
        kubernetes_release_warnings(changes, new_services)
    warnings = [w for c in changes for w in c.warnings]
    warnings += live_release_warnings(context, list(new_services.values()), changes)
    for key, svc in new_services.items():
        before = old_services.get(key)
        old_deps = {key_of_deployment(d): d for d in before.deployments} if before else {}
        for dep in svc.deployments:
            dkey = key_of_deployment(dep)
            if dkey in old_deps:
                warnings.extend(ignored_replicas_warnings(f"{key}/{dkey}", old_deps[dkey], dep))
    # Preemption is forecast by the embedded platform's scheduler rules; on a cluster its own scheduler decides.
    forecast = preemptions(old, new, context) if changes and context.target != "kubernetes" else []
    return Plan(changes=changes, warnings=warnings, cost=plan_cost(old, new, context), preemptions=forecast)


def diff_object(kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None,
                context: PlanContext | None = None, *, deployment_keys: Iterable[str] | None = None,
                service_key: str | None = None, legacy_conversion: str | None = None) -> Change | None:
    """The change of one object given as plain data (`Model.to_data()`), or None when nothing changes.

    `kind`: `service` (its own fields; `deployments`, `traffic` and `legacy_form` are ignored), `deployment`,
    `traffic` (weights normalised over `deployment_keys`) or `inventory:<kind>` (e.g. `inventory:queues`).
    `service_key`: the service a deployment or traffic object belongs to (ids, live replicas).
    `legacy_conversion`: for `Default` of a legacy service this change converts, why (`legacy.conversion_trigger`):
    it then redeploys once whatever changed.
    Raises pydantic's ValidationError when the data is not a valid object."""
    context = context or PlanContext()
    if kind == "service":
        os_, ns = (_service_side(Service.model_validate({k: v for k, v in d.items() if k in SERVICE_FIELDS}))
                   if d is not None else None for d in (old, new))
        key = key_of_service((ns or os_).model)  # type: ignore[union-attr, arg-type]
        return object_change("service", key, key, None, os_, ns, service_public)
    if kind == "deployment":
        od, nd = (Deployment.model_validate(d) if d is not None else None for d in (old, new))
        key = key_of_deployment(nd or od)  # type: ignore[arg-type]
        cid = f"{service_key}/{key}" if service_key else key
        change = object_change("deployment", cid, key, service_key, _deployment_side(od), _deployment_side(nd),
                               _public)
        if od is None or nd is None or (change is not None and change.action == "replace"):
            return change
        return _with_rollout(change, od, nd, context, service_key or "", legacy_conversion)
    if kind == "traffic":
        ot, nt = (Traffic.model_validate(d) if d is not None else None for d in (old, new))
        keys = list(deployment_keys) if deployment_keys is not None else \
            list(dict.fromkeys([*(ot.weights if ot else {}), *(nt.weights if nt else {})]))
        cid = f"{service_key}/traffic" if service_key else "traffic"
        return object_change("traffic", cid, "traffic", service_key, _traffic_side(ot, keys), _traffic_side(nt, keys),
                             _public)
    inv_kind = kind.removeprefix("inventory:")
    if kind.startswith("inventory:") and inv_kind in INVENTORY_MODELS:
        model = INVENTORY_MODELS[inv_kind]
        oi, ni = (model.model_validate(d) if d is not None else None for d in (old, new))
        name = (ni or oi).name  # type: ignore[union-attr]
        return object_change("inventory", f"{inv_kind}/{name}", name, None, _inventory_side(inv_kind, oi),
                             _inventory_side(inv_kind, ni), _public)
    raise ValueError(f"unknown object kind {kind!r}: use service, deployment, traffic or inventory:<kind> "
                     f"({', '.join(INVENTORY_ORDER)})")
