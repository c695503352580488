"""How the Pulumi engine matches a program's resources with the state's, by URN and by aliases — a port of
`generateAliases`, `collapseAliasToUrn` and `inheritedChildAlias` (pkg/resource/deploy/step_generator.go,
pulumi/pulumi at 1b5949891b3cefcb9974752b24a5ecef0acc86c8) and of `resource.NewURN`, fed the raw
`RegisterResourceRequest`s the SDK sends (alias *specs*: the engine, not the SDK, works out a child's aliases from
its parent's).

What it cannot show: that the engine itself behaves so at run time — no engine runs here. It shows that the requests
our components send carry what the engine's algorithm needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ROOT_STACK_TYPE = "pulumi:pulumi:Stack"


def qualified_type(urn: str) -> str:
    return urn.split("::")[2]


def urn_name(urn: str) -> str:
    return urn.split("::", 3)[3]


def new_urn(stack: str, project: str, parent: str, type_: str, name: str) -> str:
    """`resource.NewURN`: the parent's qualified type prefixes the type, unless the parent is the root stack."""
    if parent and qualified_type(parent) != ROOT_STACK_TYPE:
        type_ = f"{qualified_type(parent)}${type_}"
    return f"urn:pulumi:{stack}::{project}::{type_}::{name}"


@dataclass
class Match:
    """One registered resource: its URN, and the old URN the engine would take it for (None: a create)."""

    urn: str
    type: str
    name: str
    old: str | None


def resolve(requests: Iterable[Any], olds: set[str], *, stack: str = "test", project: str = "inferstack") -> list[Match]:
    """Each registered resource (in registration order) with the state's URN it matches, as the engine decides."""
    engine_urn: dict[str, str] = {}  # the mocks' URN of a resource → the engine's
    aliased: dict[str, str] = {}  # sg.aliases: URN → the old URN it matched through an alias
    out: list[Match] = []

    def collapse(name: str, type_: str, parent: str, alias: Any) -> str:
        if alias.urn:
            return alias.urn
        spec = alias.spec
        n, t = spec.name or name, spec.type or type_
        p = engine_urn.get(spec.parentUrn, spec.parentUrn) if spec.parentUrn else parent
        if spec.parentUrn and p in aliased:
            p = aliased[p]
        if spec.noParent or (p and qualified_type(p) == ROOT_STACK_TYPE):
            p = ""
        return new_urn(spec.stack or stack, spec.project or project, p, t, n)

    for request in requests:
        parent = engine_urn.get(request.parent, request.parent) if request.parent else ""
        urn = new_urn(stack, project, parent, request.type, request.name)
        engine_urn[f"urn:pulumi:{stack}::{project}::{_mock_type(request)}::{request.name}"] = urn
        if request.type == ROOT_STACK_TYPE:
            continue
        aliases = [collapse(request.name, request.type, parent, a) for a in request.aliases]
        if parent and parent in aliased:  # multiply out the parent's alias
            parent_alias = aliased[parent]
            aliases.append(_inherited(stack, project, request.type, request.name, urn_name(parent), parent_alias))
            for alias in list(aliases[:len(request.aliases)]):
                aliases.append(_inherited(stack, project, qualified_type(alias).rsplit("$", 1)[-1], urn_name(alias),
                                          urn_name(parent), parent_alias))
        matched = next((u for u in [urn, *aliases] if u in olds), None)
        if matched is not None and matched != urn:
            aliased[urn] = matched
        out.append(Match(urn, request.type, request.name, matched))
    return out


def _inherited(stack: str, project: str, child_type: str, child_name: str, parent_name: str, parent_alias: str) -> str:
    """`inheritedChildAlias`: the child as it was under the parent's old URN (a name prefixed by the parent's name
    takes the old parent's name as prefix)."""
    alias_name = urn_name(parent_alias) + child_name[len(parent_name):] if child_name.startswith(parent_name) \
        else child_name
    return f"urn:pulumi:{stack}::{project}::{qualified_type(parent_alias)}${child_type}::{alias_name}"


def _mock_type(request: Any) -> str:
    """The type in the URN the *mocks* gave the resource: the parent's last type component (the root stack's too)
    before its own — not the engine's rule, hence this map."""
    if request.parent:
        return request.parent.split("::")[2].split("$")[-1] + "$" + request.type
    return request.type


def urns(requests: Iterable[Any], **names: str) -> set[str]:
    """The engine URNs of a program's resources (the state it leaves)."""
    return {m.urn for m in resolve(requests, set(), **names)}
