"""What a plan is made of: changes per object, their properties, rollout impact and cost. Plain data, JSON-able."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from inferstack.spec import Inventory, Service

from .render import plan_dict, plan_text

Kind = Literal["inventory", "service", "deployment", "traffic"]
Action = Literal["create", "update", "replace", "delete"]
ACTIONS: tuple[str, ...] = ("create", "update", "replace", "delete")


@dataclass(frozen=True)
class LiveInstance:
    """One running instance and where it is placed (the platform's status)."""

    id: str
    queue: str
    spec: str = ""
    """Its compute spec ("" = its role's)."""


@dataclass
class PlanContext:
    """Live facts the spec does not hold. Every field is optional."""

    inventory: Inventory | None = None
    """The full inventory (prices, queues) when the stacks' own inventory is partial; the stacks' objects win."""
    current_replicas: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(service key, deployment key, role name) -> live instance count."""
    converted: set[str] = field(default_factory=set)
    """Keys of legacy (flat) services the platform has already converted: their `Default` follows the usual rules.
    A service in the legacy shape not named here is not converted yet (see `inferstack.plan.legacy`)."""
    target: Literal["local", "kubernetes"] | None = None
    """Where the change converges, which decides what replaces instances (rollout.py); None: the new stack's
    `target`. The embedded platform plans for `local` whatever a stack file says."""
    others: list[Service] = field(default_factory=list)
    """Services the stacks do not hold that share their queues (the platform's others), for capacity."""
    instances: dict[tuple[str, str, str], list[LiveInstance]] = field(default_factory=dict)
    """(service key, deployment key, role name) -> its running instances and their placements, oldest first."""
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`<service>/traffic` or `<service>/<deployment>` -> the live progressive release of that object (its status'
    `release`, plus `live_weights` for traffic): what the plan says is live where it differs from the declared."""


@dataclass
class PropertyChange:
    """One changed property: its path (`image.preset`, `env[API_KEY]`, `roles[decode].replicas`), old → new.

    Values are public (secrets shown as `[secret]`); None means absent."""

    path: str
    old: Any
    new: Any
    parts: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """The path as keys into the object's normalised data (for `apply_plan`)."""

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new}


@dataclass
class RoleImpact:
    """A role whose instances are replaced by a rolling update, and how capacity moves meanwhile."""

    role: str
    reasons: list[str]
    """The property paths (or events, e.g. the legacy conversion) that make it redeploy."""
    replicas: int
    """Instances at the start of the rollout (live count when known, else the spec's)."""
    dip: int
    """Instances that may be unavailable at once (max unavailable, rounded down)."""
    surge: int
    """Instances above `replicas` at once (max surge, rounded up)."""

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "reasons": list(self.reasons), "replicas": self.replicas, "dip": self.dip,
                "surge": self.surge}


@dataclass
class Change:
    """What happens to one object: its action, the properties that change, and the roles that redeploy."""

    kind: Kind
    id: str
    """`queues/q-a` (inventory), `chat` (service), `chat/canary` (deployment), `chat/traffic` (traffic)."""
    action: Action
    properties: list[PropertyChange] = field(default_factory=list)
    replace_paths: list[str] = field(default_factory=list)
    """The property paths that force a replace (empty unless action is `replace`)."""
    redeploy: list[RoleImpact] = field(default_factory=list)
    old: dict[str, Any] | None = None
    """Public data before (secrets masked); None when created."""
    new: dict[str, Any] | None = None
    """Public data after (secrets masked); None when deleted."""
    service: str | None = None
    """Key of the service the object belongs to (None for inventory objects)."""
    key: str = ""
    """The object's own identity: inventory name, service key or deployment key (`traffic` for traffic)."""
    warnings: list[str] = field(default_factory=list)
    """What a person should know before applying this change (also in `Plan.warnings`)."""
    legacy_conversion: str | None = None
    """For `Default` of a legacy service this change converts: why (`first added deployment 'canary'`, `first edit
    of Default`). It redeploys once, whatever changed; the platform records the service as converted."""
    release: str | None = None
    """How the change is released when a progressive policy gates it (a traffic shift in steps, a canary redeploy)."""
    target: Any = field(default=None, repr=False, compare=False)
    """The desired object (model and normalised data) for `apply_plan`. Never rendered: it may hold secrets."""

    def property_at(self, path: str) -> PropertyChange | None:
        """The change of the property at `path`, or None."""
        return next((p for p in self.properties if p.path == path), None)

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.properties]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "id": self.id, "action": self.action, "service": self.service, "key": self.key,
            "properties": [p.to_dict() for p in self.properties],
            "replace_paths": list(self.replace_paths),
            "redeploy": [r.to_dict() for r in self.redeploy],
            "old": self.old, "new": self.new, "warnings": list(self.warnings),
            "legacy_conversion": self.legacy_conversion, "release": self.release,
        }


@dataclass
class CostLine:
    """Cost per hour of one deployment (or, with `deployment` None, one service) before and after the change.

    0 for an object that does not exist on that side; None when a price or queue is not in the inventory."""

    service: str
    deployment: str | None
    before: float | None
    after: float | None

    @property
    def delta(self) -> float | None:
        return difference(self.before, self.after)

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "deployment": self.deployment, "before": self.before, "after": self.after,
                "delta": self.delta}


@dataclass
class Cost:
    """Cost per hour of every service and deployment the plan touches or keeps, before and after."""

    lines: list[CostLine] = field(default_factory=list)
    currencies: list[str] = field(default_factory=list)
    """The currencies of the prices used (one, normally; none when nothing was priced)."""

    @property
    def currency(self) -> str | None:
        """The currency of every amount, or None when several (amounts are then unknown) or none were used."""
        return self.currencies[0] if len(self.currencies) == 1 else None

    @property
    def changed(self) -> bool:
        """True when some known amount moves."""
        return any(line.before is not None and line.after is not None and line.before != line.after
                   for line in self.lines)

    @property
    def before(self) -> float | None:
        return sum_or_none(line.before for line in self.services)

    @property
    def after(self) -> float | None:
        return sum_or_none(line.after for line in self.services)

    @property
    def delta(self) -> float | None:
        return difference(self.before, self.after)

    @property
    def services(self) -> list[CostLine]:
        return [line for line in self.lines if line.deployment is None]

    def service(self, key: str) -> CostLine | None:
        return next((ln for ln in self.lines if ln.service == key and ln.deployment is None), None)

    def deployment(self, service: str, key: str) -> CostLine | None:
        return next((ln for ln in self.lines if ln.service == service and ln.deployment == key), None)

    def to_dict(self) -> dict[str, Any]:
        return {"currency": self.currency, "currencies": list(self.currencies), "before": self.before,
                "after": self.after, "delta": self.delta, "lines": [line.to_dict() for line in self.lines]}


def difference(before: float | None, after: float | None) -> float | None:
    """after - before rounded to 6 places, or None when either is unknown."""
    return None if before is None or after is None else round(after - before, 6)


def sum_or_none(values: Any) -> float | None:
    """The sum rounded to 6 places, or None when any value is unknown."""
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return round(total, 6)


@dataclass
class Plan:
    """What a change to a stack means, in convergence order. Pure data: rendering lives in `render`."""

    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)
    preemptions: list[Any] = field(default_factory=list)
    """Running instances the change takes capacity from (`capacity.Preemption`)."""

    @property
    def empty(self) -> bool:
        """No change at all: applying it performs zero writes."""
        return not self.changes

    def change(self, id: str, kind: str | None = None) -> Change | None:
        """The change of the object `id` (of `kind`, when ids of two kinds could collide), or None."""
        return next((c for c in self.changes if c.id == id and (kind is None or c.kind == kind)), None)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(ACTIONS, 0)
        for c in self.changes:
            out[c.action] += 1
        return out

    @property
    def redeploys(self) -> list[tuple[str, RoleImpact]]:
        """(change id, role impact) of every role that redeploys."""
        return [(c.id, r) for c in self.changes for r in c.redeploy]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as the API returns it."""
        return plan_dict(self)

    def to_text(self) -> str:
        """Plain text, as the CLI prints it."""
        return plan_text(self)
