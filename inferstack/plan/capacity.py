"""Which running instances a change will preempt (domain.md, Capacity: "the plan names the instances it will
preempt"). Pure: the same rules as the platform's scheduler, at steady state.

Per queue and compute spec, owners (deployments without idle resources) are fitted into the capacity highest
priority first; within one priority the instances already running keep their slots (equal priority never preempts),
then new ones fill what is left. An owner running more instances than it fits after the change loses the difference:
its newest instances are preempted and wait as Pending. Idle-resource instances on the queue (their own, or borrowed)
fit only into what owners leave, and the overflow migrates. Counts are the steady ones: replicas, or for autoscaled
roles the live count within the new bounds (surge is transient and not forecast).

What runs now comes from `PlanContext.instances` (the platform's placements); without it (`inferstack plan NEW
--against OLD`) the old stack fitted by the same rules stands for what runs, so the forecast names deployments and
counts but no instance ids, and cannot see idle instances."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inferstack.spec import Inventory, Role, Service, StackFile

from .model import LiveInstance, PlanContext
from .normalise import key_of_deployment, key_of_service

RoleKey = tuple[str, str, str]
Slot = tuple[str, str]


@dataclass
class Preemption:
    """Instances of one role a change takes capacity from."""

    service: str
    deployment: str
    role: str
    queue: str
    spec: str
    priority: int
    count: int
    instances: list[str] = field(default_factory=list)
    """The instances expected to go, newest first (empty when what runs is not known)."""
    by: list[str] = field(default_factory=list)
    """The deployments that take the capacity (`service/deployment (priority N)`)."""
    migrates: bool = False
    """Idle-resource instances: a replacement is scheduled elsewhere first where capacity allows."""

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "deployment": self.deployment, "role": self.role, "queue": self.queue,
                "compute_spec": self.spec, "priority": self.priority, "count": self.count,
                "instances": list(self.instances), "by": list(self.by), "migrates": self.migrates}

    def to_text(self) -> str:
        what = "migrates" if self.migrates else "preempts"
        ids = f": {', '.join(self.instances)}" if self.instances else ""
        after = ("a replacement is scheduled elsewhere first" if self.migrates
                 else "they wait as Pending until capacity frees")
        return (f"{what} {self.count} instance(s) of {self.service}/{self.deployment}"
                + ("" if self.role == "main" else f" role {self.role}")
                + f" (priority {self.priority}) on queue '{self.queue}' for '{self.spec}'{ids}"
                + (f", for {', '.join(self.by)}" if self.by else "") + f"; {after}")


@dataclass(frozen=True)
class _Use:
    key: RoleKey
    queue: str
    spec: str
    priority: int
    idle: bool
    want: int
    order: int


def steady_count(role: Role, live: int | None) -> int:
    """Instances a role runs at steady state: its replicas, or the live count within its autoscaling bounds."""
    if role.autoscaling is not None:
        count = live if live is not None else role.starting_replicas
        return max(role.autoscaling.floor, min(count, role.autoscaling.ceiling))
    return role.replicas or 1


def _uses(services: Sequence[Service], context: PlanContext) -> dict[RoleKey, _Use]:
    out: dict[RoleKey, _Use] = {}
    for svc in services:
        skey = key_of_service(svc)
        for dep in svc.deployments:
            dkey = key_of_deployment(dep)
            for role in dep.effective_roles():
                if role.compute_spec is None:
                    continue
                key = (skey, dkey, role.name)
                want = steady_count(role, context.current_replicas.get(key))
                out[key] = _Use(key, dep.queue, role.compute_spec, dep.priority, dep.use_idle, want, len(out))
    return out


def _fit(owners: list[_Use], capacity: int, running: dict[RoleKey, int]) -> dict[RoleKey, int]:
    """Owners' instances that fit: highest priority first; within a priority, running instances keep their slots."""
    fitted: dict[RoleKey, int] = {}
    free = capacity
    for priority in sorted({u.priority for u in owners}, reverse=True):
        group = sorted((u for u in owners if u.priority == priority), key=lambda u: u.order)
        for u in group:
            fitted[u.key] = min(running.get(u.key, 0), u.want, free)
            free -= fitted[u.key]
        for u in group:
            more = min(u.want - fitted[u.key], free)
            fitted[u.key] += more
            free -= more
    return fitted


def _by_slot(uses: dict[RoleKey, _Use]) -> dict[Slot, list[_Use]]:
    out: dict[Slot, list[_Use]] = defaultdict(list)
    for u in uses.values():
        if not u.idle:
            out[(u.queue, u.spec)].append(u)
    return out


def instance_ordinal(instance: str) -> int:
    """Instance ids end with an increasing number (`chat-stable-main-3`): the higher, the newer."""
    match = re.search(r"(\d+)$", instance)
    return int(match.group(1)) if match else 0


def _newest_first(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda i: (instance_ordinal(i), i), reverse=True)


def preemptions(old: StackFile, new: StackFile, context: PlanContext) -> list[Preemption]:
    """The instances the change from `old` to `new` (beside `context.others`) will preempt or migrate."""
    inventory: Inventory = context.inventory.merged(new.inventory) if context.inventory else new.inventory
    old_inventory = context.inventory.merged(old.inventory) if context.inventory else old.inventory
    before = _uses([*old.services, *context.others], context)
    after = _uses([*new.services, *context.others], context)
    live: dict[RoleKey, list[LiveInstance]] = context.instances
    running: dict[Slot, dict[RoleKey, int]] = defaultdict(dict)
    if live:
        for key, instances in live.items():
            use = before.get(key)
            for inst in instances:
                spec = inst.spec or (use.spec if use else "")
                running[(inst.queue, spec)][key] = running[(inst.queue, spec)].get(key, 0) + 1
    else:  # what runs is what the old stack fits
        for slot, owners in _by_slot(before).items():
            queue = old_inventory.index("queues").get(slot[0])
            running[slot] = _fit(owners, queue.capacity.get(slot[1], 0), {}) if queue is not None else {}
    out: list[Preemption] = []
    queues = inventory.index("queues")
    for slot, owners in _by_slot(after).items():
        queue = queues.get(slot[0])
        if queue is None:
            continue
        capacity = queue.capacity.get(slot[1], 0)
        now = running.get(slot, {})
        fitted = _fit(owners, capacity, now)
        gainers = [u for u in owners if fitted[u.key] > now.get(u.key, 0)]
        for u in owners:
            lost = min(now.get(u.key, 0), u.want) - fitted[u.key]
            if lost <= 0:
                continue
            by = [f"{g.key[0]}/{g.key[1]} (priority {g.priority})" for g in gainers if g.priority > u.priority]
            ids = _newest_first([i.id for i in live.get(u.key, []) if i.queue == slot[0]])[:lost]
            out.append(Preemption(u.key[0], u.key[1], u.key[2], slot[0], slot[1], u.priority, lost, ids, by))
        if live:
            out.extend(_idle_overflow(slot, capacity - sum(fitted.values()), after, live, gainers))
    return out


def _idle_overflow(slot: Slot, spare: int, after: dict[RoleKey, _Use], live: dict[RoleKey, list[LiveInstance]],
                   gainers: list[_Use]) -> list[Preemption]:
    """Idle-resource instances on `slot` beyond the spare capacity owners leave: the lowest priority and newest
    migrate first."""
    idle = [(after[key], inst) for key, instances in live.items() if key in after and after[key].idle
            for inst in instances if inst.queue == slot[0] and (inst.spec or after[key].spec) == slot[1]]
    overflow = len(idle) - max(spare, 0)
    if overflow <= 0 or not gainers:
        return []
    idle.sort(key=lambda ui: (ui[0].priority, -instance_ordinal(ui[1].id)))
    going: dict[RoleKey, list[str]] = defaultdict(list)
    for use, inst in idle[:overflow]:
        going[use.key].append(inst.id)
    by = [f"{g.key[0]}/{g.key[1]} (priority {g.priority})" for g in gainers]
    return [Preemption(key[0], key[1], key[2], slot[0], slot[1], after[key].priority, len(ids), ids, by,
                       migrates=True) for key, ids in going.items()]


__all__ = ["Preemption", "instance_ordinal", "preemptions", "steady_count"]
