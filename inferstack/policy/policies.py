"""Policies built from `inferstack.spec.RULES`: the stack's services, deployments, traffic objects and declared
inventory are put back together from their resources and checked with `inferstack.spec.validate`, all rules at once;
each policy reports the findings of its own rule on the resource the finding's path names.

References outside the stack's inventory and the platform's default inventory are deferred (the platform checks them
on apply), never violations; values not known yet (preview) likewise."""

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

from ..spec import RULES, Finding, Inventory, Severity, default_inventory, validate
from ..spec.validate import parse
from ..targets.local.providers import KIND_OF_TYPE
from ..targets.local.pulumi_glue import (
    DEPLOYMENT,
    SERVICE,
    TRAFFIC,
    covers,
    inventory_kind,
    is_unknown,
    unknown_paths,
    with_unknowns_as_sentinel,
)

STACK_TYPES = frozenset(KIND_OF_TYPE)
"""The resource types the policies read."""


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
    """Every error and warning of the spec over the stack's inferstack resources (objects with `resource_type`,
    `props`, `urn`), each on the resource its path names."""
    picked = [(r.resource_type, plain(r.props), r.urn) for r in resources if r.resource_type in STACK_TYPES]
    if not picked:
        return []
    key = json.dumps(picked, sort_keys=True, default=str)
    return list(_violations(key))


@functools.lru_cache(maxsize=8)
def _violations(key: str) -> tuple[Violation, ...]:
    """One validation per stack state, shared by every rule's policy."""
    resources = json.loads(key)
    services: dict[str, dict[str, Any]] = {}
    urns: dict[str, str] = {}
    deployments: dict[str, list[tuple[dict[str, Any], str]]] = {}
    traffic: dict[str, tuple[dict[str, Any], str]] = {}
    inventory: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for type_, props, urn in resources:
        kind = KIND_OF_TYPE[type_]
        if kind == SERVICE.name:
            services[props.get("key")] = SERVICE.spec(props)
            urns[props.get("key")] = urn
        elif kind == DEPLOYMENT.name:
            deployments.setdefault(props.get("service_key"), []).append((DEPLOYMENT.spec(props), urn))
        elif kind == TRAFFIC.name:
            traffic[props.get("service_key")] = (TRAFFIC.spec(props), urn)
        else:
            inv = inventory_kind(kind.removeprefix("inventory:"))
            inventory.setdefault(inv.inventory_kind or "", []).append((inv.spec(props), urn))
    stack_services, paths = [], {}
    for i, (key_, fields) in enumerate(services.items()):
        deps = deployments.get(key_, [])
        data = {**fields, "deployments": [d for d, _ in deps]}
        paths[f"services[{i}]"] = urns[key_]
        for j, (_, urn) in enumerate(deps):
            paths[f"services[{i}].deployments[{j}]"] = urn
        if key_ in traffic:
            data["traffic"] = traffic[key_][0]
            paths[f"services[{i}].traffic"] = traffic[key_][1]
        stack_services.append(data)
    declared, problems = parse(Inventory, {kind: [o for o, _ in objs] for kind, objs in inventory.items()},
                               "inventory")
    known = default_inventory().merged(declared or Inventory())
    for kind, objs in inventory.items():
        index = {obj.name: i for i, obj in enumerate(getattr(known, kind))}  # paths index the merged inventory
        for obj, urn in objs:
            if obj.get("name") in index:
                paths[f"inventory.{kind}[{index[obj['name']]}]"] = urn
    # A finding about a value not known yet (preview) is a rule that runs later: the providers' check, the platform.
    unknown = [f"services{p}" for p in unknown_paths(stack_services)]
    report = validate(with_unknowns_as_sentinel(stack_services), known, partial_inventory=True, check_inventory=True)
    return tuple(Violation(f.rule, _urn_of(f.path, paths), _message(f)) for f in problems + report.findings
                 if f.severity is not Severity.DEFERRED and not any(covers(u, f.path) for u in unknown))


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
