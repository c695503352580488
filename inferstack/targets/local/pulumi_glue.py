"""What the local target's Pulumi providers share, kept apart from the providers so it can be tested without Pulumi:
resource properties ↔ spec data, per-object rules as check failures, plan changes as diff answers (against the live
object when the platform answers), values not known yet, and the weight shift before a deployment leaves.

One resource kind per platform object: `service` (service fields only), `deployment` (one deployment, no weight),
`traffic` (the service's traffic object) and `inventory:<kind>` (one inventory object). Properties are the spec's own
field names (snake_case) at the top level, so a replace names the exact property, plus a few identity properties."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ...plan import REPLACE_FIELDS
from ...plan.release import FAILED_PHASES, RETRY_HINT, release_state_text
from ...spec import (
    SECRET_MASK,
    UNKNOWN,
    Deployment,
    Finding,
    Inventory,
    Service,
    Severity,
    Traffic,
    inventory_findings,
    service_findings,
)
from ...spec.validate import findings_from_error

PROVIDER_KEY = "__provider"
# Outputs computed by the platform; never inputs, never compared.
OUTPUT_PROPS = ("uid", "gateway_url", "status")

# Inventory kinds: field of `Inventory` → path segment of the platform's API.
INVENTORY_KINDS: dict[str, str] = {
    "vpcs": "vpcs",
    "resource_groups": "resource-groups",
    "queues": "queues",
    "compute_specs": "compute-specs",
    "subnets": "subnets",
    "security_groups": "security-groups",
    "images": "images",
}

# Rules the provider cannot check from one object's inputs: the platform checks them on create/update (422).
_PLATFORM_RULES: dict[str, tuple[str, ...]] = {
    "service": ("service.resource_group_exists", "service.vpc_exists", "service.name_unique_in_resource_group"),
    "deployment": (
        "deployment.image_preset_exists", "deployment.queue_exists", "deployment.queue_in_resource_group",
        "deployment.compute_spec_exists", "deployment.compute_spec_offered_by_queue", "deployment.subnet_exists",
        "subnet.in_service_vpc", "subnet.zone_matches_queue", "deployment.security_group_exists",
        "security_group.in_service_vpc", "security_group.allows_ports", "deployment.accept_traffic_scope",
        "capacity.prepaid_fits", "capacity.postpaid_quota_fits", "capacity.idle_fits", "numa.exceeds_half_machine",
        "use_idle.no_lender",
    ),
    "traffic": (),
    "inventory": ("queue.resource_group_exists", "queue.capacity_spec_exists", "queue.billing_matches_resource_group",
                  "subnet.vpc_exists", "security_group.vpc_exists", "inventory.name_unique"),
}


@dataclass(frozen=True)
class ObjectKind:
    """One kind of platform object managed as a Pulumi resource."""

    name: str                   # "service" | "deployment" | "traffic" | "inventory:<field of Inventory>"
    model: type[BaseModel]      # the spec model of the object's data
    identity: tuple[str, ...]   # properties naming the object on the platform: a change replaces it
    extra: tuple[str, ...] = ()  # non-spec inputs that diff (e.g. the deployments a traffic object is over)
    hints: tuple[str, ...] = ()  # non-spec inputs that never diff by themselves (read by the provider's own rules)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.model.model_fields)

    @property
    def inventory_kind(self) -> str | None:
        return self.name.split(":", 1)[1] if self.name.startswith("inventory:") else None

    @property
    def family(self) -> str:
        return "inventory" if self.inventory_kind else self.name

    def spec(self, props: Mapping[str, Any]) -> dict[str, Any]:
        """The object's spec data out of resource properties (inputs or outputs): spec fields only, no nulls."""
        spec = {k: props[k] for k in self.fields if k in props and props[k] is not None}
        if self.name == "service":
            spec.pop("deployments", None)
            spec.pop("traffic", None)
        return spec


SERVICE = ObjectKind("service", Service, identity=("key",))
DEPLOYMENT = ObjectKind("deployment", Deployment, identity=("service_key", "key"), hints=("service_deployment_keys",))
TRAFFIC = ObjectKind("traffic", Traffic, identity=("service_key",),
                     extra=("deployment_keys", "deployment_uids", "deployment_ids"))


def inventory_kind(kind: str) -> ObjectKind:
    """The ObjectKind of one inventory kind (`queues`, `resource_groups`, ...)."""
    if kind not in INVENTORY_KINDS:
        raise ValueError(f"unknown inventory kind {kind!r} (one of {', '.join(INVENTORY_KINDS)})")
    model = Inventory.model_fields[kind].annotation.__args__[0]  # list[Model] → Model
    return ObjectKind(f"inventory:{kind}", model, identity=("kind", "name"))


# --- values not known yet -----------------------------------------------------------------------------------------

def is_unknown(value: Any) -> bool:
    """A value the engine does not know yet (preview): `pulumi.output.Unknown` or the wire sentinel."""
    from pulumi.output import Unknown
    from pulumi.runtime.rpc import UNKNOWN as WIRE_UNKNOWN

    return isinstance(value, Unknown) or (isinstance(value, str) and value == WIRE_UNKNOWN)


def unknown_paths(value: Any, path: str = "") -> list[str]:
    """Paths (`env[1].value`) of every unknown value inside `value`."""
    if is_unknown(value):
        return [path]
    out: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            out += unknown_paths(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out += unknown_paths(v, f"{path}[{i}]")
    return out


def map_leaves(value: Any, fn: Callable[[Any], Any]) -> Any:
    """A copy of nested dicts and lists with `fn` applied to every other value."""
    if isinstance(value, Mapping):
        return {k: map_leaves(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [map_leaves(v, fn) for v in value]
    return fn(value)


def with_unknowns_as_sentinel(value: Any) -> Any:
    """A copy where unknown values are the spec's UNKNOWN sentinel (rules needing them are then deferred)."""
    return map_leaves(value, lambda v: UNKNOWN if is_unknown(v) else v)


def top_level(path: str) -> str:
    """`roles[0].env[1].value` → `roles`."""
    for i, ch in enumerate(path):
        if ch in ".[":
            return path[:i]
    return path


# --- check: per-object rules ----------------------------------------------------------------------------------------

def object_findings(kind: ObjectKind, props: Mapping[str, Any]) -> list[Finding]:
    """The spec's rules that one object's inputs decide, with paths relative to the object; rules that need other
    objects (the platform's inventory, the service) come back as deferred findings naming the rule."""
    unknown = unknown_paths({k: v for k, v in props.items() if k != PROVIDER_KEY})
    props = with_unknowns_as_sentinel({k: v for k, v in props.items() if k != PROVIDER_KEY})
    spec = kind.spec(props)
    if kind.family == "inventory":
        found = _inventory_object_findings(kind, spec)
    else:
        found = {"service": _service_findings, "deployment": _deployment_findings,
                 "traffic": _traffic_findings}[kind.name](props, spec)
    out: list[Finding] = []
    for f in found:
        # An error about a value that is not known yet is not an error: it is a rule that runs later.
        if f.severity is Severity.ERROR and any(covers(u, f.path) for u in unknown):
            f = Finding(f.rule, f.path, None, f"not checked yet: {f.path} is not known until apply",
                        Severity.DEFERRED)
        if f.severity is Severity.DEFERRED and any(g.rule == f.rule and g.path == f.path for g in out):
            continue
        out.append(f)
    done = {f.rule for f in out}
    for rule in _PLATFORM_RULES[kind.family]:
        if rule not in done:
            out.append(Finding(rule, "", None, "needs the platform's inventory and the other objects of the "
                                               "service; the platform checks it on create and update",
                               Severity.DEFERRED))
    return out


def covers(unknown: str, path: str) -> bool:
    """Whether a finding at `path` is about the value at `unknown` (the same place, inside it, or holding it)."""
    return path == unknown or path.startswith((unknown + ".", unknown + "[")) or \
        unknown.startswith((path + ".", path + "["))


def _parse_errors(model: type[BaseModel], data: Mapping[str, Any]) -> tuple[Any, list[Finding]]:
    from pydantic import ValidationError

    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, findings_from_error(exc, "")


def _relative(findings: list[Finding], prefix: str) -> list[Finding]:
    """Findings under `prefix` with the prefix removed from their paths; others dropped."""
    out = []
    for f in findings:
        if f.path == prefix or f.path.startswith(prefix + ".") or f.path.startswith(prefix + "["):
            rest = f.path[len(prefix):].lstrip(".")
            out.append(Finding(f.rule, rest, f.value, f.message, f.severity))
    return out


def _stand_in_service(service_key: Any, deployments: list[Deployment], traffic: Traffic | None = None) -> Service:
    """A service around one object whose references are unknown, so that its cross-object rules come out deferred."""
    key = service_key if isinstance(service_key, str) and service_key else UNKNOWN
    if traffic is None:
        traffic = Traffic(weights={d.key: 100.0 / len(deployments) for d in deployments if d.key})
    return Service(name=key, key=key, resource_group=UNKNOWN, vpc=UNKNOWN, ports=[], deployments=deployments,
                   traffic=traffic)


def _stand_in_deployment(key: str) -> Deployment:
    """A deployment known only by its key (the traffic object's view of the service)."""
    return Deployment(name=key, key=key, image={"preset": UNKNOWN}, queue=UNKNOWN, compute_spec=UNKNOWN, replicas=1,
                      rolling_update={}, subnet=UNKNOWN, security_group=UNKNOWN)


def _service_findings(props: Mapping[str, Any], spec: dict[str, Any]) -> list[Finding]:
    svc, errors = _parse_errors(Service, spec)
    if svc is None:
        return errors
    found = service_findings([svc], ["s"], Inventory(), partial=True)
    return [f for f in _relative(found, "s") if not f.path.startswith(("traffic", "deployments"))]


def _deployment_findings(props: Mapping[str, Any], spec: dict[str, Any]) -> list[Finding]:
    dep, errors = _parse_errors(Deployment, spec)
    if dep is None:
        return errors
    found = service_findings([_stand_in_service(props.get("service_key"), [dep])], ["s"], Inventory(),
                             partial=True)
    out = []
    for f in _relative(found, "s.deployments[0]"):
        if f.rule == "deployment.accept_traffic_scope":
            f = Finding(f.rule, f.path, f.value, "not checked yet: needs the service's network type and traffic "
                                                 "strategy; the platform checks it", Severity.DEFERRED)
        out.append(f)
    return out


def _traffic_findings(props: Mapping[str, Any], spec: dict[str, Any]) -> list[Finding]:
    traffic, errors = _parse_errors(Traffic, spec)
    if traffic is None:
        return errors
    keys = props.get("deployment_keys")
    if not isinstance(keys, list) or any(not isinstance(k, str) or k == UNKNOWN for k in keys):
        return [Finding("traffic.weight_unknown_deployment", "weights", None,
                        "not checked yet: the deployment keys are not known until apply", Severity.DEFERRED)]
    svc = _stand_in_service(props.get("service_key"), [_stand_in_deployment(k) for k in keys], traffic)
    return _relative(service_findings([svc], ["s"], Inventory(), partial=True), "s.traffic")


def _inventory_object_findings(kind: ObjectKind, spec: dict[str, Any]) -> list[Finding]:
    obj, errors = _parse_errors(kind.model, spec)
    if obj is None:
        return errors
    inv_kind = kind.inventory_kind
    assert inv_kind is not None
    found = _relative(inventory_findings(Inventory(**{inv_kind: [obj]})), f"inventory.{inv_kind}[0]")
    return [f for f in found if f.rule not in _PLATFORM_RULES["inventory"]]


def check_failure_reason(finding: Finding) -> str:
    """The text of a check failure: the rule in plain words and its id (never a secret value)."""
    return f"{finding.message} [{finding.rule}]"


# --- diff ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiffAnswer:
    """What the provider tells the engine: changed or not, which properties replace, whether to delete first."""

    changes: bool
    replaces: tuple[str, ...] = ()
    stables: tuple[str, ...] = ()
    delete_before_replace: bool = False


def diff_answer(kind: ObjectKind, olds: Mapping[str, Any], news: Mapping[str, Any],
                diff_object: Callable[..., Any]) -> DiffAnswer:
    """Diff old outputs against new checked inputs through the plan's `diff_object`.

    Identity properties replace when they change or are not known yet (that is how the engine asks the dependents
    of a resource replaced delete-first whether they must go too). Everything else is the plan's call: `replaces`
    exactly where it says replace; None from the plan (equal after normalisation) is no change at all. Values not
    known yet (preview) are changes; they replace only where the plan would replace on any change of them."""
    stables = tuple(p for p in kind.identity if p in news and not is_unknown(news[p]) and news.get(p) == olds.get(p))
    replaces = [p for p in kind.identity if p in news and (is_unknown(news[p]) or news[p] != olds.get(p))]
    changed_extra = [p for p in kind.extra if _extra_changed(p, olds.get(p), news.get(p))]
    unknown = [top_level(p) for p in unknown_paths(kind.spec(news))]
    try:
        change = _plan_change(kind, olds, news, diff_object)
    except ValueError:  # pydantic's ValidationError: a value not known yet does not parse (e.g. a number)
        if not unknown:
            raise
        change = None
    fields = set(kind.fields)
    if change is not None:
        for path in change.replace_paths or ():
            top = top_level(str(path))
            if top in fields and top not in replaces:
                replaces.append(top)
    replace_on_change = set(REPLACE_FIELDS.get(kind.family, ()))
    replaces += [p for p in dict.fromkeys(unknown) if p in replace_on_change and p not in replaces]
    changes = bool(replaces) or change is not None or bool(changed_extra) or bool(unknown)
    return DiffAnswer(changes=changes, replaces=tuple(replaces), stables=stables,
                      delete_before_replace=bool(replaces))


def _plan_change(kind: ObjectKind, olds: Mapping[str, Any], news: Mapping[str, Any],
                 diff_object: Callable[..., Any]) -> Any:
    kwargs: dict[str, Any] = {}
    if kind.name in ("deployment", "traffic"):
        service = news.get("service_key") if not is_unknown(news.get("service_key")) else olds.get("service_key")
        kwargs["service_key"] = service if isinstance(service, str) else None
    if kind.name == "traffic":
        keys = news.get("deployment_keys")
        kwargs["deployment_keys"] = list(keys) if isinstance(keys, list) and not unknown_paths(keys) else None
    return diff_object(kind.name, kind.spec(olds), kind.spec(with_unknowns_as_sentinel(news)), **kwargs)


def _extra_changed(prop: str, old: Any, new: Any) -> bool:
    """Whether the deployments a traffic object spans changed: their keys, uids or ids.

    A uid not known yet is not a change by itself: a preview does not know the uid of a deployment being updated
    (dynamic providers have no provider-side preview), and that update keeps it. Its id tells the cases apart: the
    engine keeps the id of a resource it updates, while a deployment created or replaced has no id yet — a replace
    moves its weight away and back, so the traffic object is written again, and the preview must say so."""
    if prop == "deployment_ids":
        if not isinstance(old, Mapping):
            return False  # state from before ids were inputs: nothing to compare with
        return bool(unknown_paths(new)) or old != new
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return set(old) != set(new) or any(
            not is_unknown(new[k]) and not is_unknown(old[k]) and new[k] != old[k] for k in new)
    if unknown_paths(new):
        return True
    if isinstance(old, list) and isinstance(new, list):
        return sorted(map(str, old)) != sorted(map(str, new))
    return (old or None) != (new or None)


# --- live state: what diff compares with, what refresh reads back ------------------------------------------------

def live_spec(kind: ObjectKind, old: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The live object's spec as properties, normalised through the model (defaults filled). Secret values the
    platform masks keep their old value: a secret changed behind our back cannot be seen, only a secret the program
    changed (it differs from the old one)."""
    return kind.spec(kind.model.model_validate(_unmask(dict(live), kind.spec(old))).to_data())


def live_base(kind: ObjectKind, old: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """Old outputs with every spec property taken from the live object: what `diff` compares the program's inputs
    with when the platform answers, so that a change made behind Pulumi's back or left by a failed update shows in
    the preview and is undone by `up`. Status-owned values (autoscaled counts, generations) live in status, never in
    the spec, and the plan drops replicas under autoscaling: they never count as drift."""
    return {**{k: v for k, v in old.items() if k not in kind.fields}, **live_spec(kind, old, live)}


def live_props(kind: ObjectKind, old: Mapping[str, Any], live: Mapping[str, Any],
               diff_object: Callable[..., Any]) -> dict[str, Any]:
    """Old outputs with the top-level properties the platform changed behind our back replaced by the live values
    (what refresh records). Unchanged properties keep their old shape, so a refresh without drift shows nothing."""
    current = live_spec(kind, old, live)
    change = _plan_change(kind, old, {**{k: v for k, v in old.items() if k not in kind.fields}, **current},
                          diff_object)
    out = dict(old)
    if change is None:
        return out
    fields = set(kind.fields)
    for top in {top_level(str(p.path)) for p in change.properties} & fields:
        if top in current:
            out[top] = current[top]
        else:
            out.pop(top, None)
    return out


def _unmask(live: Any, old: Any) -> Any:
    """Live data with masked secrets (`[secret]`) replaced by the old value at the same place."""
    if live == SECRET_MASK and isinstance(old, str):
        return old
    if isinstance(live, dict):
        return {k: _unmask(v, old.get(k) if isinstance(old, dict) else None) for k, v in live.items()}
    if isinstance(live, list):
        olds = old if isinstance(old, list) else []
        by_name = {o.get("name"): o for o in olds if isinstance(o, dict) and "name" in o}
        return [_unmask(v, by_name.get(v.get("name")) if isinstance(v, dict) and "name" in v
                        else (olds[i] if i < len(olds) else None)) for i, v in enumerate(live)]
    return live


# --- traffic away from a deployment -------------------------------------------------------------------------------

def weights_without(weights: Mapping[str, float], key: str, others: list[str]) -> dict[str, float]:
    """Weights with `key` gone and its share spread over the others in proportion (evenly when they all have 0),
    summing to exactly 100 at two decimals. Deployments left at 0 are not named (absent is 0, and naming one that a
    parallel delete just removed would be refused). No other deployment: no weights at all."""
    rest = [k for k in others if k != key]
    if not rest:
        return {}
    base = {k: max(float(weights.get(k, 0.0)), 0.0) for k in rest}
    total = sum(base.values())
    shares = {k: (v / total if total > 0 else 1 / len(rest)) for k, v in base.items()}
    out = {k: round(100 * s, 2) for k, s in shares.items() if s > 0}
    biggest = max(out, key=lambda k: (out[k], k))
    out[biggest] = round(out[biggest] + 100 - sum(out.values()), 2)
    return out


# --- progressive releases -----------------------------------------------------------------------------------------

def live_release_note(path: str, live: Mapping[str, Any]) -> str | None:
    """What a preview says of the live object's progressive release of its current generation: one that rolled back
    or paused leaves what is live different from what is declared (and the diff shows nothing to do), one under way
    is still moving it."""
    status = live.get("status") or {}
    release = status.get("release")
    if not isinstance(release, Mapping) or release.get("generation") != (live.get("metadata") or {}).get("generation"):
        return None
    state = {**release, "live_weights": status.get("live_weights")}
    text = release_state_text(path.removeprefix("services/").replace("/deployments/", "/"), state)
    if text is None:
        return None
    if release.get("phase") in FAILED_PHASES:
        text += f"; {RETRY_HINT.replace('run `inferstack apply --retry-release`', 'retry it through the API')}"
    return text
