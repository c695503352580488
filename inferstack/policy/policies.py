"""Policies built from `inferstack.spec.RULES`: the stack's services and declared inventory are read from what the
`InferenceService` and `Inventory` components register as their outputs (`spec`, `inventory`), checked with
`inferstack.spec.validate`, all rules at once; each policy reports the findings of its own rule on the resource the
finding's path names (a deployment's own resource where the target has one, else its service's component).

The components are the same on every target, so the same rules run on the local and the kubernetes target: no policy
keys on one target's resource types. The pack also gives the advice plans leave out (`validate(advice=True)`):
`progressive.advised` on a service taking production traffic with more than one deployment (spec/progressive.py). References outside the stack's inventory and the platform's default inventory
are deferred (the platform checks them on apply), never violations; values not known yet (preview) likewise."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi.runtime.rpc import UNKNOWN as WIRE_UNKNOWN
from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
    proxy,
)

from ..components import INVENTORY_TYPE, SERVICE_TYPE
from ..spec import RULES, Finding, Inventory, Severity, default_inventory, validate
from ..spec.validate import parse
from ..targets.local.pulumi_glue import covers, is_unknown, unknown_paths, with_unknowns_as_sentinel

STACK_TYPES = frozenset({SERVICE_TYPE, INVENTORY_TYPE})
"""The resource types the policies read: the components, whatever the target."""


@dataclass(frozen=True)
class Violation:
    rule: str
    urn: str | None
    message: str


_UNKNOWNS = frozenset({proxy.UNKNOWN_BOOLEAN_VALUE, proxy.UNKNOWN_NUMBER_VALUE, proxy.UNKNOWN_STRING_VALUE,
                       proxy.UNKNOWN_ARRAY_VALUE, proxy.UNKNOWN_ASSET_VALUE, proxy.UNKNOWN_ARCHIVE_VALUE,
                       proxy.UNKNOWN_OBJECT_VALUE})


def plain(value: Any) -> Any:
    """Policy props as plain data: the analyzer's proxies bypassed (a value not known at preview must defer its
    rules, not skip every policy of the stack), secrets revealed (findings mask them), unknowns as the spec's
    UNKNOWN sentinel."""
    if isinstance(value, (proxy._DictProxy, proxy._ListProxy)):
        value = value["__target"]
    if isinstance(value, Secret):
        return plain(value.value)
    if (isinstance(value, str) and value in _UNKNOWNS) or is_unknown(value):
        return WIRE_UNKNOWN
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def stack_violations(resources: Sequence[Any]) -> list[Violation]:
    """Every error and warning of the spec over the stack's components (objects with `resource_type`, `props`,
    `urn`), each on the resource its path names."""
    picked = [(r.resource_type, plain(r.props), r.urn) for r in resources if r.resource_type in STACK_TYPES]
    if not picked:
        return []
    key = json.dumps(picked, sort_keys=True, default=str)
    return list(_violations(key))


@functools.lru_cache(maxsize=8)
def _violations(key: str) -> tuple[Violation, ...]:
    """One validation per stack state, shared by every rule's policy."""
    resources = json.loads(key)
    services: list[Any] = []
    paths: dict[str, str] = {}
    declared: dict[str, dict[str, Any]] = {kind: {} for kind in Inventory.KINDS}
    owners: dict[str, str] = {}  # "kind/name" → URN of the resource (or component) that declares it
    for type_, props, urn in resources:
        props = props if isinstance(props, Mapping) else {}
        for kind, objs in _mapping(props.get("inventory")).items():
            for obj in objs if kind in declared and isinstance(objs, list) else []:
                name = obj.get("name") if isinstance(obj, Mapping) else None
                if isinstance(name, str) and name not in declared[kind]:
                    declared[kind][name] = obj
                    owners[f"{kind}/{name}"] = urn
        if type_ == INVENTORY_TYPE:
            owners.update({k: v for k, v in _mapping(props.get("objectUrns")).items() if isinstance(v, str)})
        elif isinstance(props.get("spec"), Mapping):
            i = len(services)
            services.append(props["spec"])
            paths[f"services[{i}]"] = urn
            urns = _mapping(props.get("deploymentUrns"))
            for j, dep in enumerate(props["spec"].get("deployments") or []):
                dkey = dep.get("key") if isinstance(dep, Mapping) else None
                paths[f"services[{i}].deployments[{j}]"] = urns.get(dkey) if isinstance(urns.get(dkey), str) else urn
    declared_inventory, problems = parse(Inventory, {k: list(v.values()) for k, v in declared.items() if v},
                                         "inventory")
    known = default_inventory().merged(declared_inventory or Inventory())
    for kind in Inventory.KINDS:
        for idx, obj in enumerate(getattr(known, kind)):  # paths index the merged inventory
            if f"{kind}/{obj.name}" in owners and obj.name in declared[kind]:
                paths[f"inventory.{kind}[{idx}]"] = owners[f"{kind}/{obj.name}"]
    # A finding about a value not known yet (preview) is a rule that runs later: the providers' check, the platform.
    unknown = [f"services{p}" for p in unknown_paths(services)]
    report = validate(with_unknowns_as_sentinel(services), known, partial_inventory=True, check_inventory=True,
                      advice=True)
    return tuple(Violation(f.rule, _urn_of(f.path, paths), _message(f)) for f in problems + report.findings
                 if f.severity is not Severity.DEFERRED and not any(covers(u, f.path) for u in unknown))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _urn_of(path: str, paths: dict[str, str]) -> str | None:
    """The URN of the most specific resource whose path prefixes `path`."""
    best = None
    for prefix, urn in paths.items():
        if (path == prefix or path.startswith((prefix + ".", prefix + "["))) and \
                (best is None or len(prefix) > len(best[0])):
            best = (prefix, urn)
    return best[1] if best else None


def _message(f: Finding) -> str:
    return f"{f.path}: {f.message} [{f.rule}]" if f.path else f"{f.message} [{f.rule}]"


def policy_for(rule_id: str) -> StackValidationPolicy:
    """The policy of one rule: mandatory for errors, advisory for warnings."""
    rule = RULES[rule_id]

    def check(args: StackValidationArgs, report: ReportViolation) -> None:
        for v in stack_violations(args.resources):
            if v.rule == rule_id:
                report(v.message, v.urn)

    level = EnforcementLevel.ADVISORY if rule.severity is Severity.WARNING else EnforcementLevel.MANDATORY
    return StackValidationPolicy(name=rule_id, description=rule.summary, validate=check, enforcement_level=level)


POLICIES: list[StackValidationPolicy] = [policy_for(rule_id) for rule_id in RULES]
