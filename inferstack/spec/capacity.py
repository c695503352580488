"""Admission (domain.md, Capacity): what each deployment asks of its queue, and whether a write can be admitted.

An *ask* is a deployment's claim on one queue's capacity for one compute spec: over its roles of that spec, the
replicas (or autoscaling min) plus the max surge (Kubernetes rounding), at the deployment's priority. Every queue's
capacity holds, prepaid and pay-as-you-go alike (for pay-as-you-go it is a quota):

- `capacity.prepaid_fits` / `capacity.postpaid_quota_fits`: an ask is refused only when it cannot fit even after
  preempting every lower-priority instance of the queue — when it plus every other ask of equal or higher priority on
  the same queue and spec exceed the capacity. Lower-priority asks never refuse it: their instances are preempted at
  run time (the plan names them) and wait as Pending until capacity frees.
- `capacity.idle_fits`: an idle-resource (`use_idle`) deployment holds no capacity — it runs on spare capacity and is
  the first to go — but it cannot ask for more than it could ever get: its own queue's capacity for the spec plus
  that of every lending queue in its subnet's zone.

Only asks that are new or grew are judged when the platform says what it admitted before the write (`Admitted`): a
deployment is never refused for a change that asks no more of its queue (an env edit, a no-change apply) because a
higher-priority deployment arrived after it. An ask grows when it is new, moves to another queue or spec, counts more
instances, lowers its priority or stops using idle resources; every ask on a queue whose capacity for its spec shrank
(or, for idle asks, whose reachable capacity shrank) is judged again. Without `Admitted` (a stack file on its own,
`inferstack validate`) every ask is judged."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .findings import Finding
from .inventory import Inventory, Queue
from .rules import RULES
from .service import Deployment, Role, Service
from .types import UNKNOWN

AskKey = tuple[str, str, str]  # (service key, deployment key, compute spec)


def role_ask(role: Role | Deployment) -> int:
    """Instances admission counts for a role (or a standard deployment's inline one): its replicas (or autoscaling
    min) plus its max surge."""
    if role.replicas is not None:
        replicas = role.replicas
    else:
        replicas = role.autoscaling.floor if role.autoscaling else 1  # as Role.starting_replicas
    assert role.rolling_update is not None
    return replicas + role.rolling_update.bounds(replicas)[1]


@dataclass(frozen=True)
class Ask:
    """One deployment's claim on one (queue, compute spec)."""

    key: AskKey
    queue: str
    spec: str
    count: int
    priority: int
    idle: bool
    zone: str | None
    path: str  # the deployment's path in the input (`services[0].deployments[1]`)

    @property
    def label(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"


def deployment_asks(svc: Service, dep: Deployment, path: str, inv: Inventory,
                    indexes: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None) -> list[Ask]:
    """The asks of one deployment, one per compute spec its roles use (none when its queue is not known).
    `indexes`: the inventory's queues and subnets by name, when the caller has them already."""
    queues, subnets = indexes or (inv.index("queues"), inv.index("subnets"))
    queue = queues.get(dep.queue)
    if queue is None or dep.queue == UNKNOWN:
        return []
    subnet = subnets.get(dep.subnet)
    zone = subnet.zone if subnet is not None else queue.zone
    counts: dict[str, int] = defaultdict(int)
    # A standard deployment's one role without building it (`effective_roles` copies models: admission runs over
    # every deployment on every write).
    multi = dep.inference_mode == "multi_role" or bool(dep.roles)
    roles: Sequence[Role | Deployment] = (dep.roles or []) if multi else [dep]
    for role in roles:
        if role.compute_spec is None or role.compute_spec == UNKNOWN or role.rolling_update is None:
            continue
        counts[role.compute_spec] += role_ask(role)
    svc_key, dep_key = svc.key or svc.name, dep.key or dep.name
    return [Ask((svc_key, dep_key, spec), dep.queue, spec, count, dep.priority, dep.use_idle, zone, path)
            for spec, count in counts.items()]


def asks(services: Sequence[Service], paths: Sequence[str], inv: Inventory,
         deployment_indexes: Sequence[Any] | None = None) -> list[Ask]:
    """Every deployment's asks, in input order. `deployment_indexes[i]`: how service i's deployments with field
    errors were repaired (`validate.Repair`, as in `service_findings`): paths keep the input's indexes, and a
    repaired deployment asks nothing yet — its stand-in values are not what it will ask (checked once fixed)."""
    out: list[Ask] = []
    repairs = list(deployment_indexes or [None] * len(services))
    by_name = (inv.index("queues"), inv.index("subnets"))
    for svc, base, repair in zip(services, paths, repairs):
        for i, dep in enumerate(svc.deployments):
            j = repair.indexes[i] if repair is not None else i
            if repair is not None and repair.field_errors.get(j):
                continue
            out.extend(deployment_asks(svc, dep, f"{base}.deployments[{j}]", inv, by_name))
    return out


def reachable(ask: Ask, inv: Inventory) -> dict[str, int]:
    """For an idle ask: capacity of its spec per queue it may ever run on — its own, then lenders of its zone."""
    out = {}
    for q in inv.queues:
        if ask.spec not in q.capacity:
            continue
        if q.name == ask.queue or (q.lends_idle and q.zone == ask.zone):
            out[q.name] = q.capacity[ask.spec]
    return out


@dataclass(frozen=True)
class Admitted:
    """What the platform admitted before a write: the asks, and the capacity each was judged against."""

    asks: Mapping[AskKey, Ask] = field(default_factory=dict)
    capacity: Mapping[tuple[str, str], int] = field(default_factory=dict)
    reach: Mapping[AskKey, int] = field(default_factory=dict)

    @classmethod
    def of(cls, services: Sequence[Service], inv: Inventory) -> Admitted:
        found = asks(services, [f"services[{i}]" for i in range(len(services))], inv)
        capacity = {(q.name, spec): n for q in inv.queues for spec, n in q.capacity.items()}
        reach = {a.key: sum(reachable(a, inv).values()) for a in found if a.idle}
        return cls({a.key: a for a in found}, capacity, reach)

    def judges(self, ask: Ask, inv: Inventory) -> bool:
        """Whether `ask` is new or grew since admission (see the module's docstring)."""
        before = self.asks.get(ask.key)
        if before is None or before.queue != ask.queue or before.idle != ask.idle:
            return True
        if ask.count > before.count or ask.priority < before.priority:
            return True
        if ask.idle:
            return sum(reachable(ask, inv).values()) < self.reach.get(ask.key, 0)
        queue = inv.index("queues").get(ask.queue)
        now = queue.capacity.get(ask.spec, 0) if queue is not None else 0
        return now < self.capacity.get((ask.queue, ask.spec), 0)


def capacity_findings(services: Sequence[Service], paths: Sequence[str], inv: Inventory, *,
                      admitted: Admitted | None = None,
                      deployment_indexes: Sequence[Any] | None = None) -> list[Finding]:
    """Admission with priority over every queue and spec; one finding per refused ask (see the module docstring).
    Linear in the asks after a sort: what each priority holds is summed once per queue and spec."""
    found = asks(services, paths, inv, deployment_indexes)
    queues = inv.index("queues")
    by_slot: dict[tuple[str, str], list[Ask]] = defaultdict(list)
    for ask in found:
        if not ask.idle:
            by_slot[(ask.queue, ask.spec)].append(ask)
    at_or_above: dict[tuple[str, str], tuple[list[Ask], dict[int, int], dict[int, int]]] = {}
    for slot, slot_asks in by_slot.items():
        ranked = sorted(slot_asks, key=lambda a: -a.priority)  # stable: input order within a priority
        total: dict[int, int] = {}
        number: dict[int, int] = {}
        running = 0
        for i, a in enumerate(ranked):
            running += a.count
            total[a.priority] = running
            number[a.priority] = i + 1
        at_or_above[slot] = (ranked, total, number)
    out: list[Finding] = []
    for ask in found:
        if admitted is not None and not admitted.judges(ask, inv):
            continue
        if ask.idle:
            out.extend(_idle_finding(ask, inv))
            continue
        queue = queues[ask.queue]
        capacity = queue.capacity.get(ask.spec)
        if capacity is None:
            continue  # the spec is not offered: deployment.compute_spec_offered_by_queue says so
        ranked, total, number = at_or_above[(ask.queue, ask.spec)]
        held = total[ask.priority] - ask.count
        if ask.count + held > capacity:
            shown = [a for a in ranked[:4] if a is not ask and a.priority >= ask.priority][:3]
            out.append(_over_capacity(ask, queue, capacity, shown, number[ask.priority] - 1, held))
    return out


def _over_capacity(ask: Ask, queue: Queue, capacity: int, shown: list[Ask], holders: int, held: int) -> Finding:
    free = max(capacity - held, 0)
    listed = ", ".join(f"{a.label} (priority {a.priority}): {a.count}" for a in shown)
    more = f" and {holders - len(shown)} more" if holders > len(shown) else ""
    by = f": {listed}{more}" if holders else ""
    if queue.billing == "prepaid":
        rule, what = "capacity.prepaid_fits", f"prepaid queue '{queue.name}' cannot admit this"
    else:
        rule = "capacity.postpaid_quota_fits"
        what = (f"pay-as-you-go queue '{queue.name}' has a quota of {capacity} instance(s) of '{ask.spec}' and "
                f"cannot admit this")
    message = (f"{what}: compute spec '{ask.spec}' needs {ask.count} instance(s) (replicas or autoscaling min, plus "
               f"max surge) but {free} are free even after preempting every lower-priority instance ({capacity} in "
               f"the queue, {held} held by deployments of priority {ask.priority} or higher{by})")
    return Finding(rule, f"{ask.path}.queue", ask.queue, message, RULES[rule].severity)


def _idle_finding(ask: Ask, inv: Inventory) -> Iterator[Finding]:
    where = reachable(ask, inv)
    total = sum(where.values())
    if ask.count <= total:
        return
    listed = ", ".join(f"'{q}': {n}" for q, n in where.items()) or "none"
    rule = "capacity.idle_fits"
    yield Finding(rule, f"{ask.path}.use_idle", True,
                  f"idle-resource deployment {ask.label} asks for {ask.count} instance(s) of '{ask.spec}' (replicas "
                  f"or autoscaling min, plus max surge) but at most {total} could ever run: its queue '{ask.queue}' "
                  f"and the lending queues of zone '{ask.zone}' hold {listed}", RULES[rule].severity)


__all__ = ["Admitted", "Ask", "asks", "capacity_findings", "deployment_asks", "reachable", "role_ask"]
