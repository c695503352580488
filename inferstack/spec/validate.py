"""`validate(services, inventory)`: the one entry point run before anything changes. All findings at once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from . import limits as L
from .capacity import Admitted, capacity_findings
from .findings import SECRET_MASK, Finding, Report, Severity
from .inventory import Inventory
from .progressive import advice_findings, deployment_policy_findings, traffic_policy_findings
from .rules import RULES
from .service import ROLE_FIELDS, Deployment, Probe, Role, Service
from .types import KEY_RE, UNKNOWN, Model

_PYDANTIC_RULES = {
    "missing": "field.required",
    "extra_forbidden": "field.unknown",
    "literal_error": "field.enum",
    "enum": "field.enum",
    "finite_number": "number.finite",
}


def _finding(rule: str, path: str, value: Any, message: str, severity: Severity | None = None) -> Finding:
    assert rule in RULES, rule
    return Finding(rule=rule, path=path, value=value, message=message,
                   severity=severity or RULES[rule].severity)


def _deferred(rule: str, path: str, value: Any, reason: str) -> Finding:
    return _finding(rule, path, value, f"not checked yet: {reason}", Severity.DEFERRED)


def join(base: str, loc: Iterable[Any]) -> str:
    """`services[0]` + ('deployments', 1, 'env') → `services[0].deployments[1].env`."""
    path = base
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def findings_from_error(error: ValidationError, base: str) -> list[Finding]:
    """Pydantic errors as findings: custom errors carry their rule id as type; built-in ones map to field.*."""
    out = []
    for err in error.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        path = join(base, loc)
        kind = err["type"]
        rule = kind if kind in RULES else _PYDANTIC_RULES.get(kind)
        if rule is None:
            rule = "field.type" if kind.endswith(("_type", "_parsing")) or kind.startswith("model_") else \
                "field.invalid"
        value = err.get("input")
        if kind == "missing":
            value = None
        if path.endswith(".secret") or (isinstance(loc[-1:], list) and loc[-1:] == ["secret"]):
            value = SECRET_MASK
        message = err["msg"]
        if kind == "extra_forbidden":
            message = f"unknown key '{loc[-1] if loc else ''}' (a typo? see `inferstack schema`)"
            value = None  # never echoed: a misspelt `secret:` key must not send its value back
        elif kind == "finite_number":
            message = "must be a finite number (not NaN or Infinity)"
        elif rule == "field.type" and isinstance(value, (str, bool)) and value != SECRET_MASK:
            message = f"{message}, not {'a boolean' if isinstance(value, bool) else 'a string'} (types are strict)"
        out.append(_finding(rule, path, _mask(value), message))
    return out


def _mask(value: Any) -> Any:
    """Mask secret values inside raw inputs that end up in findings."""
    if isinstance(value, dict):
        return {k: (SECRET_MASK if k == "secret" else _mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


@dataclass
class Repair:
    """How a service whose deployments have field errors was parsed anyway, so that every other rule still runs.

    A deployment with field errors is kept with each erroneous top-level field replaced: references (queue, subnet,
    security group, compute spec, image, name) by the `UNKNOWN` placeholder, anything else by its default. Only the
    cross-object rules whose inputs are all intact are then reported for it (a zone mismatch is not hidden by a typo
    in `replicas`); rules that need a broken field are deferred, never run on a stand-in value."""

    indexes: list[int]
    """The original index of each deployment the parsed service kept (paths stay the input's)."""
    field_errors: dict[int, set[str]] = field(default_factory=dict)
    """Original deployment index -> its top-level fields that have errors (they were replaced)."""
    dropped: list[int] = field(default_factory=list)
    """Deployments that could not be parsed even so (not an object, or an error on the whole deployment)."""


# Deployment fields whose broken value is replaced by the `UNKNOWN` placeholder (rules on it are then deferred).
_PLACEHOLDERS: dict[str, Any] = {"name": UNKNOWN, "queue": UNKNOWN, "subnet": UNKNOWN, "security_group": UNKNOWN,
                                 "compute_spec": UNKNOWN, "image": {"preset": UNKNOWN}}
# The rules reported for a repaired deployment — cross-object references — each with the field at its path and the
# other fields it reads. Single-field and cross-field rules of a repaired deployment wait until its field errors are
# fixed (the field errors themselves are reported).
_REPAIRED_RULES: dict[str, tuple[str, set[str]]] = {
    "deployment.image_preset_exists": ("image", set()), "deployment.queue_exists": ("queue", set()),
    "deployment.queue_in_resource_group": ("queue", set()), "deployment.subnet_exists": ("subnet", set()),
    "subnet.in_service_vpc": ("subnet", set()), "subnet.zone_matches_queue": ("subnet", {"queue"}),
    "deployment.security_group_exists": ("security_group", set()),
    "security_group.in_service_vpc": ("security_group", set()),
    "security_group.allows_ports": ("security_group", {"ports"}),
    "deployment.compute_spec_exists": ("compute_spec", {"inference_mode", "roles"}),
    "deployment.compute_spec_offered_by_queue": ("compute_spec", {"queue", "inference_mode", "roles"}),
}


def _top_fields(error: ValidationError) -> set[str]:
    """The top-level fields an error of a model's validation is about ("" when it is about the whole object)."""
    return {str(e["loc"][0]) if e["loc"] else "" for e in error.errors(include_url=False)}


def _repaired(raw: dict[str, Any]) -> tuple[dict[str, Any], set[str]] | None:
    """`raw` (a deployment with field errors) with its broken fields replaced, and those fields; None if it cannot be."""
    try:
        Deployment.model_validate({k: v for k, v in raw.items() if k != "weight"})
        return raw, set()
    except ValidationError as exc:
        bad = _top_fields(exc)
    if "" in bad:
        return None
    fixed = {k: v for k, v in raw.items() if k not in bad}
    fixed.update({k: v for k, v in _PLACEHOLDERS.items() if k in bad})
    if "key" in bad or "name" in bad:
        fixed.pop("weight", None)  # no usable key: its weight cannot be placed (the key problem is reported)
    if parse(Deployment, {k: v for k, v in fixed.items() if k != "weight"}, "")[0] is None:
        return None
    return fixed, bad


def parse_service_partially(raw: Any) -> tuple[Service | None, Repair | None]:
    """A service whose deployments have field errors, parsed with those deployments repaired (see `Repair`), so that
    every other rule still runs on the rest (all violations at once). (None, None) when the errors are elsewhere."""
    if not isinstance(raw, dict) or not isinstance(raw.get("deployments"), list):
        return None, None
    repair = Repair(indexes=[])
    kept = []
    for i, dep in enumerate(raw["deployments"]):
        fixed = _repaired(dep) if isinstance(dep, dict) else None
        if fixed is None:
            repair.dropped.append(i)
            continue
        data, bad = fixed
        if bad:
            repair.field_errors[i] = bad
        repair.indexes.append(i)
        kept.append(data)
    if not repair.field_errors and not repair.dropped:
        return None, None  # the errors are in the service's own fields
    service, _ = parse(Service, {**raw, "deployments": kept}, "")
    if service is None:
        return None, None
    for dep, i in zip(service.deployments, repair.indexes):
        if "key" in repair.field_errors.get(i, ()):
            dep.key = None  # not the name's stand-in: the key the input gives is broken
    return service, repair


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def _repaired_findings(found: Iterable[Finding], path: str, bad: set[str]) -> Iterator[Finding]:
    """What may be reported of a repaired deployment (see `Repair`): the cross-object rules whose inputs are intact;
    each one that reads a broken field is deferred (whatever it would say of the stand-in value)."""
    for f in found:
        if f.rule not in _REPAIRED_RULES or any(_under(f.path, f"{path}.{b}") for b in bad):
            continue
        if not _REPAIRED_RULES[f.rule][1] & bad:
            yield f
    for rule, (subject, reads) in _REPAIRED_RULES.items():
        needs = reads & bad
        roles_broken = subject == "compute_spec" and bad & {"inference_mode", "roles"}  # role rules simply wait
        if needs and subject not in bad and not roles_broken:
            yield _deferred(rule, f"{path}.{subject}", None,
                            f"{', '.join(sorted(needs))} of this deployment has errors; checked once fixed")


def parse(model: type[BaseModel], data: Any, path: str) -> tuple[Any, list[Finding]]:
    """Parse `data` into `model`; on failure return (None, findings)."""
    if isinstance(data, model):
        return data, []
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, findings_from_error(exc, path)


# --- inventory -------------------------------------------------------------------------------------------------

def inventory_findings(inv: Inventory, base: str = "inventory", context: Inventory | None = None) -> list[Finding]:
    """The inventory's own rules. References resolve in `context` (e.g. the platform's inventory merged with
    this one) when given, else in `inv` itself."""
    out: list[Finding] = []
    for kind in Inventory.KINDS:
        seen: dict[str, int] = {}
        for i, obj in enumerate(getattr(inv, kind)):
            if obj.name in seen:
                out.append(_finding("inventory.name_unique", f"{base}.{kind}[{i}].name", obj.name,
                                    f"'{obj.name}' is already the name of {kind}[{seen[obj.name]}]"))
            else:
                seen[obj.name] = i
    ref = context or inv
    groups, specs, vpcs = ref.index("resource_groups"), ref.index("compute_specs"), ref.index("vpcs")
    for i, q in enumerate(inv.queues):
        if q.resource_group not in groups:
            out.append(_finding("queue.resource_group_exists", f"{base}.queues[{i}].resource_group", q.resource_group,
                                f"queue '{q.name}' names resource group '{q.resource_group}', which is not in the "
                                f"inventory"))
        group = groups.get(q.resource_group)
        if group is not None and group.billing not in ("mixed", q.billing):
            out.append(_finding("queue.billing_matches_resource_group", f"{base}.queues[{i}].billing", q.billing,
                                f"queue '{q.name}' is {q.billing} but its resource group '{q.resource_group}' is "
                                f"{group.billing}-only; make the queue {group.billing}, or the group's billing "
                                f"'mixed'"))
        for spec in q.capacity:
            if spec not in specs:
                out.append(_finding("queue.capacity_spec_exists", f"{base}.queues[{i}].capacity.{spec}", spec,
                                    f"queue '{q.name}' offers compute spec '{spec}', which is not in the inventory"))
    for kind, rule in (("subnets", "subnet.vpc_exists"), ("security_groups", "security_group.vpc_exists")):
        for i, obj in enumerate(getattr(inv, kind)):
            if obj.vpc not in vpcs:
                out.append(_finding(rule, f"{base}.{kind}[{i}].vpc", obj.vpc,
                                    f"'{obj.name}' names VPC '{obj.vpc}', which is not in the inventory"))
    for i, sg in enumerate(inv.security_groups):
        for j, rule in enumerate(sg.ingress):
            if rule.to_port is not None and rule.to_port < rule.from_port:
                out.append(_finding("security_group.port_range", f"{base}.security_groups[{i}].ingress[{j}].to_port",
                                    rule.to_port, f"to_port {rule.to_port} is below from_port {rule.from_port}"))
    for i, spec in enumerate(inv.compute_specs):
        if spec.cpu > spec.machine.cpu or spec.gpu_count > spec.machine.gpu:
            out.append(_finding("compute_spec.fits_machine", f"{base}.compute_specs[{i}]", spec.name,
                                f"spec '{spec.name}' ({spec.cpu:g} CPU, {spec.gpu_count} GPU) is larger than its "
                                f"machine ({spec.machine.cpu:g} CPU, {spec.machine.gpu} GPU)"))
    return out


# --- services --------------------------------------------------------------------------------------------------

class _Lookup:
    """Resolves references against the inventory, turning missing or unknown values into deferred findings."""

    def __init__(self, inv: Inventory, partial: bool):
        self.inv = inv
        self.partial = partial
        self.by_kind = {kind: inv.index(kind) for kind in Inventory.KINDS}

    def get(self, kind: str, name: str, rule: str, path: str, what: str, out: list[Finding]) -> Any:
        if name == UNKNOWN:
            out.append(_deferred(rule, path, None, f"the {what} is not known until apply (an unresolved output)"))
            return None
        obj = self.by_kind[kind].get(name)
        if obj is None:
            if self.partial:
                out.append(_deferred(rule, path, name, f"{what} '{name}' is not in the given inventory; the platform "
                                                       f"checks it when the change is applied"))
            else:
                out.append(_finding(rule, path, name, f"{what} '{name}' does not exist in the inventory"))
        return obj


def service_findings(services: Sequence[Service], paths: Sequence[str], inv: Inventory,
                     partial: bool = False,
                     deployment_indexes: Sequence[Repair | None] | None = None,
                     admitted: Admitted | None = None) -> list[Finding]:
    """Cross-field and cross-object rules over parsed services.

    `deployment_indexes[i]`: for a service parsed with its deployments that have field errors repaired (see
    `parse_service_partially`), how it was repaired, so that paths stay the input's and no rule runs on a stand-in.
    `admitted`: what the platform admitted before this write; capacity then judges only asks that are new or grew
    (`inferstack.spec.capacity`)."""
    out: list[Finding] = []
    look = _Lookup(inv, partial)
    keys: dict[str, str] = {}
    names: dict[tuple[str, str], str] = {}
    repairs = list(deployment_indexes or [None] * len(services))
    for svc, base, repair in zip(services, paths, repairs):
        if svc.key is None:
            out.append(_finding("service.key_required", base, svc.name,
                                f"name '{svc.name}' is not a valid key ({KEY_RE.pattern}); set `key`"))
        elif svc.key in keys:
            out.append(_finding("service.key_unique", f"{base}.key", svc.key,
                                f"key '{svc.key}' is already used by {keys[svc.key]}"))
        else:
            keys[svc.key] = base
        if (svc.resource_group, svc.name) in names:
            out.append(_finding("service.name_unique_in_resource_group", f"{base}.name", svc.name,
                                f"name '{svc.name}' is already used in resource group '{svc.resource_group}' by "
                                f"{names[(svc.resource_group, svc.name)]}"))
        else:
            names[(svc.resource_group, svc.name)] = base
        out.extend(_one_service(svc, base, look, repair))
    if any(repairs):
        out.append(_deferred("capacity.prepaid_fits", paths[0].split("[")[0], None,
                             "deployments with field errors are not counted yet; capacity is checked again once "
                             "they are fixed"))
    out.extend(capacity_findings(services, paths, inv, admitted=admitted, deployment_indexes=deployment_indexes))
    return out


def _one_service(svc: Service, base: str, look: _Lookup, repair: Repair | None = None) -> Iterator[Finding]:
    out: list[Finding] = []
    look.get("resource_groups", svc.resource_group, "service.resource_group_exists", f"{base}.resource_group",
             "resource group", out)
    look.get("vpcs", svc.vpc, "service.vpc_exists", f"{base}.vpc", "VPC", out)
    yield from out
    yield from _dupes(svc.ports, "service.ports_unique", f"{base}.ports", "call port")
    if repair is not None and repair.dropped:
        yield _deferred("traffic.weights_sum", f"{base}.traffic", None,
                        f"traffic rules run once every deployment of the service parses "
                        f"({', '.join(f'deployments[{i}]' for i in repair.dropped)} cannot be read yet)")
    else:
        yield from _traffic(svc, base, [repair.indexes[j] if repair else j for j in range(len(svc.deployments))])
    dkeys: dict[str, int] = {}
    for j, dep in enumerate(svc.deployments):
        i = repair.indexes[j] if repair is not None else j
        bad = repair.field_errors.get(i, set()) if repair is not None else set()
        path = f"{base}.deployments[{i}]"
        if bad & {"key", "name"}:
            pass  # its key is not known yet: the field error says why
        elif dep.key is None:
            yield _finding("deployment.key_required", path, dep.name,
                           f"name '{dep.name}' is not a valid key ({KEY_RE.pattern}); set `key` on this deployment")
        elif dep.key in dkeys:
            other = next(d for d in svc.deployments if d.key == dep.key)
            hint = " (names may repeat, keys may not: give each deployment its own `key`)" \
                if other.name == dep.name else ""
            yield _finding("deployment.key_unique", f"{path}.key", dep.key,
                           f"key '{dep.key}' is already used by deployments[{dkeys[dep.key]}]{hint}")
        else:
            dkeys[dep.key] = i
        found = _deployment(svc, dep, path, look)
        yield from (_repaired_findings(found, path, bad) if bad else found)


def _dupes(values: Sequence[Any], rule: str, path: str, what: str, offset: int = 0) -> Iterator[Finding]:
    """A finding per repeated value, at its index in the list at `path` (`values[offset:]` is that list)."""
    seen = set()
    for i, v in enumerate(values):
        if v in seen:
            yield _finding(rule, f"{path}[{i - offset}]", v, f"{what} {v} is given twice")
        seen.add(v)


def _traffic(svc: Service, base: str, indexes: Sequence[int]) -> Iterator[Finding]:
    """The traffic object's rules. They name deployments by key: while a deployment has no key (its key problem is
    reported at the deployment), the rules that depend on keys are deferred, never reported as follow-ups."""
    t = svc.traffic
    path = f"{base}.traffic"
    keys = set(svc.deployment_keys())
    if t.strategy != "weighted" and t.weights:
        yield _finding("traffic.weights_only_weighted", f"{path}.weights", dict(t.weights),
                       f"weights are set but strategy is '{t.strategy}'; remove them or use strategy 'weighted'")
    keyless = [i for i, d in zip(indexes, svc.deployments) if d.key is None]
    if keyless:
        yield _deferred("traffic.weights_sum", path, None,
                        f"{', '.join(f'deployments[{i}]' for i in keyless)} has no key yet; weights, header rules "
                        f"and mirroring are checked once every deployment has one")
        return
    if t.strategy == "weighted":
        for k in t.weights:
            if k not in keys:
                yield _finding("traffic.weight_unknown_deployment", f"{path}.weights.{k}", k,
                               f"weight for '{k}', which is not a deployment of service '{svc.key or svc.name}' "
                               f"(deployments: {', '.join(sorted(keys)) or 'none'})")
        total = sum(t.weights.values())
        if svc.deployments and abs(total - 100) > 0.05:
            yield _finding("traffic.weights_sum", f"{path}.weights", dict(t.weights),
                           f"weights sum to {total:g}, not 100")
    for i, rule in enumerate(t.header_rules):
        if rule.deployment not in keys:
            yield _finding("traffic.header_rule_deployment_exists", f"{path}.header_rules[{i}].deployment",
                           rule.deployment, f"header rule routes to '{rule.deployment}', which is not a deployment "
                                            f"of the service")
    if t.mirror and t.mirror.deployment not in keys:
        yield _finding("traffic.mirror_deployment_exists", f"{path}.mirror.deployment", t.mirror.deployment,
                       f"mirror target '{t.mirror.deployment}' is not a deployment of the service")
    yield from traffic_policy_findings(svc, path)


def _deployment(svc: Service, dep: Deployment, path: str, look: _Lookup) -> Iterator[Finding]:
    out: list[Finding] = []
    image_given = [k for k in ("preset", "custom", "url") if getattr(dep.image, k)]
    if len(image_given) != 1:
        out.append(_finding("deployment.image_exactly_one", f"{path}.image", dep.image.to_public(),
                            f"give exactly one of preset, custom or url (got {', '.join(image_given) or 'none'})"))
    elif dep.image.preset:
        look.get("images", dep.image.preset, "deployment.image_preset_exists", f"{path}.image.preset",
                 "preset image", out)
    if dep.model:
        m = dep.model
        if bool(m.registry) == bool(m.path) or (m.path and m.version):
            out.append(_finding("deployment.model_source_exactly_one", f"{path}.model", m.to_public(),
                                "give a registry reference (with optional version) or a path, not both or neither"))
        elif m.path and not any(m.path == mt.path or m.path.startswith(mt.path.rstrip("/") + "/")
                                for mt in dep.mounts):
            out.append(_finding("deployment.model_path_on_mount", f"{path}.model.path", m.path,
                                f"model path '{m.path}' is not under any mount of the deployment "
                                f"({', '.join(mt.path for mt in dep.mounts) or 'no mounts'})"))
    queue = look.get("queues", dep.queue, "deployment.queue_exists", f"{path}.queue", "queue", out)
    if queue is not None and svc.resource_group != UNKNOWN and queue.resource_group != svc.resource_group:
        out.append(_finding("deployment.queue_in_resource_group", f"{path}.queue", dep.queue,
                            f"queue '{dep.queue}' belongs to resource group '{queue.resource_group}', not the "
                            f"service's '{svc.resource_group}'"))
    subnet = look.get("subnets", dep.subnet, "deployment.subnet_exists", f"{path}.subnet", "subnet", out)
    if subnet is not None:
        if svc.vpc != UNKNOWN and subnet.vpc != svc.vpc:
            out.append(_finding("subnet.in_service_vpc", f"{path}.subnet", dep.subnet,
                                f"subnet '{dep.subnet}' is in VPC '{subnet.vpc}', not the service's '{svc.vpc}'"))
        if queue is not None and subnet.zone != queue.zone:
            out.append(_finding("subnet.zone_matches_queue", f"{path}.subnet", dep.subnet,
                                f"subnet '{dep.subnet}' is in zone '{subnet.zone}' but queue '{dep.queue}' is in zone "
                                f"'{queue.zone}'; pick a subnet in '{queue.zone}'"))
    if queue is None and dep.subnet != UNKNOWN and dep.queue == UNKNOWN:
        out.append(_deferred("subnet.zone_matches_queue", f"{path}.subnet", dep.subnet, "the queue is not known"))
    sg = look.get("security_groups", dep.security_group, "deployment.security_group_exists",
                  f"{path}.security_group", "security group", out)
    if sg is not None:
        if svc.vpc != UNKNOWN and sg.vpc != svc.vpc:
            out.append(_finding("security_group.in_service_vpc", f"{path}.security_group", dep.security_group,
                                f"security group '{dep.security_group}' is in VPC '{sg.vpc}', not the service's "
                                f"'{svc.vpc}'"))
        needed = list(dict.fromkeys([*svc.ports, dep.ports.listen, *dep.ports.call]))
        blocked = [p for p in needed if not sg.allows(p)]
        if blocked:
            out.append(_finding("security_group.allows_ports", f"{path}.security_group", dep.security_group,
                                f"security group '{dep.security_group}' allows no TCP ingress on port(s) "
                                f"{', '.join(map(str, blocked))}"))
    yield from out
    yield from _dupes([dep.ports.listen, *dep.ports.call], "deployment.ports_unique", f"{path}.ports.call", "port",
                      offset=1)
    if dep.accept_traffic is not None and not (svc.network_type == "clb"
                                               and svc.traffic.strategy == "by_instance_count"):
        yield _finding("deployment.accept_traffic_scope", f"{path}.accept_traffic", dep.accept_traffic,
                       f"accept_traffic can be set only when network_type is 'clb' and traffic.strategy is "
                       f"'by_instance_count' (here: '{svc.network_type}' and '{svc.traffic.strategy}')")
    yield from _dupes([m.path for m in dep.mounts], "mount.path_unique", f"{path}.mounts", "mount path")
    yield from _env(dep.env, f"{path}.env")
    yield from deployment_policy_findings(dep, path)
    yield from _roles(dep, path, look)


def _roles(dep: Deployment, path: str, look: _Lookup) -> Iterator[Finding]:
    if dep.inference_mode == "standard":
        if dep.roles is not None:
            yield _finding("deployment.roles_match_mode", f"{path}.roles", None,
                           "a standard deployment has its role fields inline; use inference_mode: multi_role for "
                           "roles")
            return
        if dep.compute_spec is None:
            yield _finding("deployment.roles_match_mode", f"{path}.compute_spec", None,
                           "a standard deployment needs compute_spec (multi_role ones give it per role)")
        if dep.rolling_update is None:
            yield _finding("deployment.roles_match_mode", f"{path}.rolling_update", None,
                           "a standard deployment needs rolling_update (multi_role ones give it per role)")
        if dep.compute_spec is None or dep.rolling_update is None:
            return
        roles = [(dep.effective_roles()[0], path, True)]
    else:
        inline = [f for f in ROLE_FIELDS if f != "env" and getattr(dep, f) is not None]
        if inline or not dep.roles or len(dep.roles) < 2:
            what = f"inline role fields ({', '.join(inline)}) are not allowed" if inline else \
                f"{len(dep.roles or [])} role(s) given"
            yield _finding("deployment.roles_match_mode", f"{path}.roles", None,
                           f"a multi_role deployment lists 2 or more roles, each with its own fields; {what}")
        if dep.roles:
            entries = [r.name for r in dep.roles if r.entry]
            if len(entries) != 1:
                yield _finding("role.entry_exactly_one", f"{path}.roles", entries,
                               f"exactly one role sets entry: true (got {len(entries)})")
            yield from _dupes([r.name for r in dep.roles], "role.name_unique", f"{path}.roles", "role name")
        roles = [(r, f"{path}.roles[{i}]", False) for i, r in enumerate(dep.roles or [])]
    for role, rpath, inline_role in roles:
        yield from _role(dep, role, rpath, look, inline_role)


def _role(dep: Deployment, role: Role, path: str, look: _Lookup, inline: bool) -> Iterator[Finding]:
    out: list[Finding] = []
    spec = look.get("compute_specs", role.compute_spec, "deployment.compute_spec_exists", f"{path}.compute_spec",
                    "compute spec", out)
    queue = look.by_kind["queues"].get(dep.queue)
    if spec is not None and queue is not None and role.compute_spec not in queue.capacity:
        out.append(_finding("deployment.compute_spec_offered_by_queue", f"{path}.compute_spec", role.compute_spec,
                            f"queue '{dep.queue}' does not offer compute spec '{role.compute_spec}' (it offers: "
                            f"{', '.join(queue.capacity) or 'nothing'})"))
    if spec is not None and dep.numa_affinity and spec.exceeds_half_machine():
        out.append(_finding("numa.exceeds_half_machine", f"{path}.compute_spec", role.compute_spec,
                            f"NUMA affinity has no policy for '{role.compute_spec}' ({spec.cpu:g} CPU, "
                            f"{spec.gpu_count} GPU) past half its machine ({spec.machine.cpu:g} CPU, "
                            f"{spec.machine.gpu} GPU); it will be ignored"))
    yield from out
    if dep.use_idle and not any(q.lends_idle for q in look.inv.queues) and not look.partial:
        yield _finding("use_idle.no_lender", f"{path.split('.roles')[0]}.use_idle", True,
                       "use_idle is on but no queue of the inventory lends idle resources; instances will wait")
    if role.replicas is None and role.autoscaling is None:
        yield _finding("deployment.replicas_or_autoscaling", f"{path}.replicas", None,
                       "set replicas, or autoscaling (then replicas is optional and only sets the starting count)")
    ru = role.rolling_update
    if ru.max_surge == 0 and ru.max_unavailable == 0:
        yield _finding("rolling_update.not_both_zero", f"{path}.rolling_update", ru.to_public(),
                       "max_unavailable and max_surge are both 0, so no update could ever proceed")
    if role.autoscaling is not None:
        yield from _autoscaling(role, f"{path}.autoscaling")
    if not inline:
        yield from _env(role.env, f"{path}.env")
    yield from _env_size(role.env, f"{path}.env")
    for kind in ("startup", "readiness", "liveness"):
        probe: Probe | None = getattr(role.probes, kind)
        if probe is not None:
            yield from _probe(kind, probe, f"{path}.probes.{kind}")


def _autoscaling(role: Role, path: str) -> Iterator[Finding]:
    a = role.autoscaling
    assert a is not None
    if not a.schedules and not a.metrics:
        yield _finding("autoscaling.not_empty", path, None, "autoscaling needs at least one schedule or metric rule")
    for i, s in enumerate(a.schedules):
        has_bounds = s.min is not None or s.max is not None
        if (s.replicas is None) == (not has_bounds) or (has_bounds and (s.min is None or s.max is None)):
            yield _finding("autoscaling.schedule_count", f"{path}.schedules[{i}]", s.to_public(),
                           "a schedule sets either `replicas`, or both `min` and `max`")
        elif has_bounds and s.min > s.max:
            yield _finding("autoscaling.min_le_max", f"{path}.schedules[{i}].min", s.min,
                           f"min {s.min} is above max {s.max}")
    for i, m in enumerate(a.metrics):
        if m.min > m.max:
            yield _finding("autoscaling.min_le_max", f"{path}.metrics[{i}].min", m.min,
                           f"min {m.min} is above max {m.max}")
    if role.replicas is not None and a.metrics and not (a.floor <= role.replicas <= a.ceiling):
        yield _finding("autoscaling.replicas_outside_bounds", f"{path.rsplit('.', 1)[0]}.replicas", role.replicas,
                       f"starting replicas {role.replicas} lie outside the autoscaling bounds "
                       f"{a.floor}..{a.ceiling}; the autoscaler will move them")


def _env(env: Sequence[Any], path: str) -> Iterator[Finding]:
    seen: set[str] = set()
    for i, e in enumerate(env):
        if (e.value is None) == (e.secret is None):
            yield _finding("env.value_exactly_one", f"{path}[{i}]", e.name,
                           f"env '{e.name}' needs exactly one of value or secret")
        if e.name in seen:
            yield _finding("env.name_unique", f"{path}[{i}].name", e.name, f"env name '{e.name}' is given twice")
        seen.add(e.name)


def _env_size(env: Sequence[Any], path: str) -> Iterator[Finding]:
    """A role's whole environment (the deployment's merged with the role's) fits what a process can be given."""
    size = sum(len(e.name) + 1 + len((e.value or "") if e.secret is None else e.secret.get_secret_value())
               for e in env)
    if size > L.MAX_ENV_TOTAL:
        yield _finding("env.total_size", path, size,
                       f"the environment holds {size} characters (NAME=value over every variable); at most "
                       f"{L.MAX_ENV_TOTAL} can be passed to a process: mount large values as files instead")


def _probe(kind: str, probe: Probe, path: str) -> Iterator[Finding]:
    actions = [a for a in ("http", "tcp", "command") if getattr(probe, a) is not None]
    if len(actions) != 1:
        yield _finding("probe.exactly_one_action", path, actions,
                       f"a {kind} probe has exactly one of http, tcp or command (got {', '.join(actions) or 'none'})")
    if kind in ("startup", "liveness") and probe.success_threshold != 1:
        yield _finding("probe.success_threshold_one", f"{path}.success_threshold", probe.success_threshold,
                       f"a {kind} probe's success_threshold must be 1")


def validate(services: Sequence[Service | Mapping[str, Any]], inventory: Inventory | Mapping[str, Any] | None,
             *, partial_inventory: bool = False, base: str = "services",
             check_inventory: bool = False, admitted: Admitted | None = None, advice: bool = False) -> Report:
    """Validate services against an inventory; every finding at once.

    `partial_inventory`: the inventory given may lack objects that exist elsewhere (e.g. on the platform): a missing
    reference is then deferred, not an error. `check_inventory`: also run the inventory's own rules. `admitted`: what
    the platform admitted before the write (capacity judges only what is new or grew); None judges every ask.
    `advice`: also the advice the policy pack gives (`progressive.advised`), which plans and applies leave out."""
    report = Report()
    inv, inv_findings = parse(Inventory, inventory or {}, "inventory")
    report.extend(inv_findings)
    if inv is None:
        inv = Inventory()
        report.findings.append(_deferred("deployment.queue_exists", base, None,
                                         "the inventory has errors; references are checked once it is fixed"))
        partial_inventory = True
    elif check_inventory:
        report.extend(inventory_findings(inv))
    services, found = count_findings(services, base)
    report.extend(found)
    parsed, paths, indexes, found = parse_services(services, base)
    report.extend(found)
    report.extend(service_findings(parsed, paths, inv, partial_inventory, indexes, admitted))
    if advice:
        report.extend(advice_findings(parsed, paths))
    return report


def count_findings(services: Sequence[Any], base: str = "services") -> tuple[Sequence[Any], list[Finding]]:
    """The counts over a whole stack (or a whole platform): services, and deployments over all services. Counted on
    the raw input, before anything is parsed; past the service limit only the first services are looked at further
    (a refused input must not hold the control plane for long)."""
    out: list[Finding] = []
    if len(services) > L.MAX_SERVICES:
        out.append(_finding("stack.services_max", base, len(services),
                            f"{len(services)} services; a stack file (and a platform) holds at most "
                            f"{L.MAX_SERVICES}"))
        services = services[:L.MAX_SERVICES]
    total = sum(_deployment_count(s) for s in services)
    if total > L.MAX_DEPLOYMENTS:
        out.append(_finding("stack.deployments_max", base, total,
                            f"{total} deployments over all services; a stack file (and a platform) holds at most "
                            f"{L.MAX_DEPLOYMENTS}"))
    return services, out


def _deployment_count(service: Any) -> int:
    if isinstance(service, Service):
        return len(service.deployments)
    if not isinstance(service, Mapping):
        return 0
    deployments = service.get("deployments")
    if isinstance(deployments, list):
        return len(deployments)
    return 1 if any(k in service for k in ("image", "queue", "compute_spec")) else 0  # the flat legacy form


def parse_services(services: Sequence[Any], base: str = "services"
                   ) -> tuple[list[Service], list[str], list[Repair | None], list[Finding]]:
    """Parse services for `service_findings`: field errors as findings; a service whose only field errors are in
    some deployments is kept with those deployments repaired (see `Repair`), so the other rules still run."""
    parsed: list[Service] = []
    paths: list[str] = []
    repairs: list[Repair | None] = []
    findings: list[Finding] = []
    for i, raw in enumerate(services):
        path = f"{base}[{i}]"
        svc, found = parse(Service, raw, path)
        findings.extend(found)
        repair: Repair | None = None
        if svc is None:
            svc, repair = parse_service_partially(raw)
        if svc is not None:
            parsed.append(svc)
            paths.append(path)
            repairs.append(repair)
        else:
            findings.append(_deferred("deployment.queue_exists", path, None,
                                      "cross-object rules of this service run once its field errors are fixed"))
    return parsed, paths, repairs, findings


def require_valid(model: Model | None, report: Report) -> Any:
    """Return the model when the report has no errors, else raise SpecError."""
    from .findings import SpecError

    if model is None or not report.ok:
        raise SpecError(report)
    return model
