"""The capacity scheduler: one pure decision over queues, what every role wants and where instances run now —
which new instances may start where (grants), which running ones must go (evictions), and why the rest wait.

No I/O, no clock of its own (`now` is an argument), no memory between calls beyond what the caller hands back
(`Placement.doomed_since`): the same input gives the same decision, so it is tested on its own with a fake clock.
The reconciler wraps it (`placement.py`).

The rules (domain.md, Capacity):

- A slot is one instance of a compute spec in a queue; a queue holds `capacity[spec]` of them, prepaid and
  pay-as-you-go alike (a quota). Every placement holds its slot until its process is gone — a stopping instance too.
- An owner (a role without `use_idle`) runs only on its own queue. When the queue is short it takes, in order: a
  free slot; a slot that frees when an instance already stopping is gone; else it *preempts*: idle-resource
  instances on that queue first (any priority: they use spare capacity only), then instances of strictly
  lower-priority owners — lowest priority first, then the newest. Equal priority never preempts.
- An idle-resource role (`use_idle`) never preempts: it takes a free slot of its own queue, else of a lending queue
  (`lends_idle`) in its subnet's zone offering its spec (the one with the most spare slots). Its instances are the
  first to go anywhere.
- A preempted owner instance is evicted at once (withdrawn from routing, then its graceful period) and its role waits
  as Pending. A preempted idle instance *migrates*: it is kept ("doomed") while a replacement is placed elsewhere and
  becomes ready, and withdrawn once the role's ready instances reach its count without it (make-before-break); when
  no replacement can be placed, or the replacement is not ready within `Policy.make_before_break_s`, it is withdrawn
  at once (break-before-make, said in the eviction's reason). An instance on a queue its role may no longer use (the
  deployment moved, the lender stopped lending) migrates the same way but is never forced out by a deadline.
- "Newest" is the latest placed; among instances placed at once, the highest instance number.
- A role with more instances than it wants (scaled down) loses the not-ready first, then borrowed ones, then the
  newest. A queue whose capacity shrank below what runs on it loses the excess (first-to-go instances, then the
  lowest priority, then the newest), which waits as Pending. Instances of a role the scheduler has no demand for (being deleted, or not reconciled yet) keep their slots
  and are never touched.
- Roles are served highest priority first, then in `Demand.order` (older deployments first); owners before idle
  roles, so spare capacity is what owners leave."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from inferstack.plan.capacity import instance_ordinal
from inferstack.spec import Queue

RoleKey = tuple[str, str, str]  # (service key, deployment key, role name)
Slot = tuple[str, str]  # (queue, compute spec)

# Eviction reasons (CamelCase, also the event reasons).
PREEMPTED = "Preempted"
MIGRATED = "Migrated"
BREAK_BEFORE_MAKE = "MigratedBreakBeforeMake"
SCALED_DOWN = "ScaledDown"
# Pending reasons.
NO_CAPACITY = "NoCapacity"
PREEMPTING = "Preempting"
AWAITING_MIGRATION = "AwaitingMigration"
WAITING_FOR_LENDER = "WaitingForLender"


def label(role: RoleKey) -> str:
    """`service/deployment` (with `/role` for the roles of a multi-role deployment)."""
    return "/".join(role[:2]) + ("" if role[2] == "main" else f"/{role[2]}")


@dataclass(frozen=True)
class QueueInfo:
    """What the scheduler needs of a queue."""

    name: str
    zone: str
    billing: str
    lends_idle: bool
    capacity: Mapping[str, int]

    @classmethod
    def of(cls, queue: Queue) -> QueueInfo:
        return cls(queue.name, queue.zone, queue.billing, queue.lends_idle, dict(queue.capacity))


@dataclass(frozen=True)
class Demand:
    """What one role wants now."""

    role: RoleKey
    queue: str
    spec: str
    zone: str  # its subnet's zone: lenders must be in it
    priority: int
    idle: bool
    want: int  # instances it should run: replicas, or the autoscaler's count
    surge: int = 0  # extra slots it may use right now (a rolling update in progress)
    order: int = 0  # among equal priorities, lower first (older deployments)


@dataclass(frozen=True)
class Placement:
    """One instance where it runs. `doomed_since`: when the scheduler first decided it must migrate (handed back by
    the caller, for the make-before-break deadline)."""

    instance: str
    role: RoleKey
    queue: str
    spec: str
    since: float
    ready: bool = False
    leaving: bool = False
    doomed_since: float | None = None


@dataclass(frozen=True)
class Policy:
    make_before_break_s: float = 60.0
    """How long a preempted idle instance may wait for its replacement to become ready."""


@dataclass(frozen=True)
class Grant:
    """`count` slots a role may start instances on; `lender` when it borrows a lending queue's spare capacity."""

    role: RoleKey
    queue: str
    spec: str
    lender: str | None = None
    count: int = 1


@dataclass(frozen=True)
class Eviction:
    """An instance to withdraw and stop now, and why."""

    instance: str
    role: RoleKey
    queue: str
    reason: str  # Preempted | Migrated | MigratedBreakBeforeMake | ScaledDown
    message: str
    by: RoleKey | None = None


@dataclass(frozen=True)
class Waiting:
    """`count` instances of a role that cannot run now, and why."""

    role: RoleKey
    count: int
    reason: str  # NoCapacity | Preempted | Preempting | AwaitingMigration | WaitingForLender
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"count": self.count, "reason": self.reason, "message": self.message}


@dataclass
class Decision:
    """The scheduler's answer. `doomed`: instances kept only until their replacement is ready, with the time they
    were first doomed and the role that needs their slot."""

    grants: list[Grant] = field(default_factory=list)
    evictions: list[Eviction] = field(default_factory=list)
    pending: list[Waiting] = field(default_factory=list)
    doomed: dict[str, tuple[float, RoleKey | None]] = field(default_factory=dict)

    def grants_of(self, role: RoleKey) -> list[Grant]:
        return [g for g in self.grants if g.role == role]

    def granted(self, role: RoleKey) -> int:
        return sum(g.count for g in self.grants if g.role == role)

    def pending_of(self, role: RoleKey) -> list[Waiting]:
        return [w for w in self.pending if w.role == role]


def schedule(queues: Iterable[QueueInfo], demands: Iterable[Demand], placements: Iterable[Placement], now: float,
             policy: Policy = Policy()) -> Decision:
    """Grants, evictions and pending reasons for every role (see the module docstring for the rules)."""
    return _Pass(queues, demands, placements, now, policy).run()


class _Pass:
    def __init__(self, queues: Iterable[QueueInfo], demands: Iterable[Demand], placements: Iterable[Placement],
                 now: float, policy: Policy):
        self.queues = {q.name: q for q in queues}
        self.demands = {d.role: d for d in demands}
        self.placements = list(placements)
        self.now, self.policy = now, policy
        self.occupied: Counter[Slot] = Counter((p.queue, p.spec) for p in self.placements)
        self.stopping: Counter[Slot] = Counter((p.queue, p.spec) for p in self.placements if p.leaving)
        self.live: dict[RoleKey, list[Placement]] = defaultdict(list)
        for p in self.placements:
            if not p.leaving:
                self.live[p.role].append(p)
        self.gone: set[str] = set()  # evicted this pass
        self.taking: Counter[tuple[Slot, RoleKey]] = Counter()  # slots granted or claimed (preempting) this pass
        self.doomed: dict[str, tuple[float, RoleKey | None]] = {}
        self.decision = Decision()
        self.waiting: Counter[tuple[RoleKey, str, str]] = Counter()

    # --- helpers -------------------------------------------------------------------------------------------------

    def capacity(self, slot: Slot) -> int:
        queue = self.queues.get(slot[0])
        return queue.capacity.get(slot[1], 0) if queue is not None else 0

    def free(self, slot: Slot) -> int:
        return self.capacity(slot) - self.occupied[slot]

    def may_use(self, demand: Demand, queue: str) -> bool:
        """Whether the role may have an instance on `queue` (its own, or, with idle resources, a lender)."""
        if queue == demand.queue:
            return True
        q = self.queues.get(queue)
        return demand.idle and q is not None and q.lends_idle and q.zone == demand.zone and demand.spec in q.capacity

    def misplaced(self, p: Placement) -> bool:
        """On a queue its role may not use any more. (A placement of another spec belongs to an earlier revision:
        the rolling update replaces it.)"""
        d = self.demands.get(p.role)
        return d is not None and p.spec == d.spec and not self.may_use(d, p.queue)

    def first_to_go(self, p: Placement) -> bool:
        """Idle-resource instances, and instances on a queue their role may no longer use."""
        d = self.demands.get(p.role)
        return d is not None and (d.idle or self.misplaced(p))

    def kept(self, role: RoleKey) -> list[Placement]:
        return [p for p in self.live[role] if p.instance not in self.gone]

    def evict(self, p: Placement, reason: str, message: str, by: RoleKey | None = None) -> None:
        self.gone.add(p.instance)
        self.doomed.pop(p.instance, None)
        self.decision.evictions.append(Eviction(p.instance, p.role, p.queue, reason, message, by))

    def grant(self, demand: Demand, queue: str, count: int) -> None:
        self.occupied[(queue, demand.spec)] += count
        self.taking[((queue, demand.spec), demand.role)] += count
        lender = None if queue == demand.queue else queue
        self.decision.grants.append(Grant(demand.role, queue, demand.spec, lender, count))

    def wait(self, role: RoleKey, reason: str, message: str, count: int = 1) -> None:
        if count > 0:
            self.waiting[(role, reason, message)] += count

    def ordered(self, idle: bool) -> list[Demand]:
        return sorted((d for d in self.demands.values() if d.idle == idle),
                      key=lambda d: (-d.priority, d.order, d.role))

    # --- the pass ------------------------------------------------------------------------------------------------

    def run(self) -> Decision:
        for demand in self.demands.values():
            self.scale_down(demand)
        self.trim()
        for demand in self.ordered(idle=False):
            self.place_owner(demand)
        for demand in self.ordered(idle=True):
            self.place_idle(demand)
        for demand in self.demands.values():
            self.migrate(demand)
        self.decision.doomed = self.doomed
        self.decision.pending = [Waiting(role, n, reason, message)
                                 for (role, reason, message), n in self.waiting.items()]
        return self.decision

    def staying(self, demand: Demand) -> list[Placement]:
        """The role's instances that count towards what it wants: neither leaving, evicted, doomed nor misplaced."""
        return [p for p in self.kept(demand.role) if p.instance not in self.doomed and not self.misplaced(p)]

    def scale_down(self, demand: Demand) -> None:
        # Instances migrating since an earlier pass are on their way out: their replacements are not surplus.
        staying = [p for p in self.staying(demand) if p.doomed_since is None]
        surplus = len(staying) - (demand.want + demand.surge)
        order = sorted(staying, key=lambda p: (p.ready, p.queue == demand.queue, -p.since,
                                               -instance_ordinal(p.instance)))
        for p in order[:max(surplus, 0)]:
            self.evict(p, SCALED_DOWN, f"{demand.role[1]} wants {demand.want} instance(s): {p.instance} goes")

    def trim(self) -> None:
        """Evict what runs beyond a queue's capacity (it shrank, or a lender stopped lending)."""
        on_slot: dict[Slot, list[Placement]] = defaultdict(list)
        for p in self.placements:
            if not p.leaving and p.instance not in self.gone:
                on_slot[(p.queue, p.spec)].append(p)
        for slot, placed in on_slot.items():
            capacity = self.capacity(slot)
            excess = len(placed) - capacity
            owned = [p for p in placed if p.role in self.demands]
            order = sorted(owned, key=lambda p: (0 if self.first_to_go(p) else 1, self.demands[p.role].priority,
                                                 -p.since, -instance_ordinal(p.instance), p.instance))
            for p in order[:max(excess, 0)]:
                self.evict(p, PREEMPTED, f"{p.instance} withdrawn: queue '{slot[0]}' holds {capacity} of "
                                         f"'{slot[1]}' now and {len(placed)} ran there; it waits as Pending")

    def place_owner(self, demand: Demand) -> None:
        slot = (demand.queue, demand.spec)
        need = demand.want + demand.surge - len(self.staying(demand))
        if need > 0 and self.free(slot) > 0:  # in bulk: a count may be large, slots are counted, not listed
            granted = min(need, self.free(slot))
            self.grant(demand, demand.queue, granted)
            need -= granted
        while need > 0:
            need -= 1
            if self.stopping[slot] > 0:
                self.stopping[slot] -= 1
                self.taking[(slot, demand.role)] += 1
                self.wait(demand.role, PREEMPTING, f"waiting for instance(s) stopping on queue '{slot[0]}' to be "
                                                   f"gone (their graceful period)")
            elif (victim := self.victim(slot, demand)) is not None:
                self.preempt(victim, demand)
            else:
                self.no_capacity(demand, need + 1)
                break

    def victim(self, slot: Slot, demand: Demand) -> Placement | None:
        """Who goes for `demand` on `slot`: idle-resource (and misplaced) instances first — those already migrating
        before others — then lower-priority owners; lowest priority, then the newest."""
        candidates = []
        for p in self.placements:
            if (p.queue, p.spec) != slot or p.leaving or p.instance in self.gone or p.instance in self.doomed:
                continue
            owner = self.demands.get(p.role)
            if owner is None or p.role == demand.role:
                continue
            first = self.first_to_go(p)
            if first or owner.priority < demand.priority:
                candidates.append((0 if first else 1, p.doomed_since is None, owner.priority, -p.since,
                                   -instance_ordinal(p.instance), p.instance, p))
        return min(candidates)[-1] if candidates else None

    def preempt(self, victim: Placement, demand: Demand) -> None:
        owner = self.demands[victim.role]
        self.taking[((victim.queue, victim.spec), demand.role)] += 1
        by = f"{label(demand.role)} (priority {demand.priority})"
        if self.first_to_go(victim):
            self.doomed[victim.instance] = (victim.doomed_since if victim.doomed_since is not None else self.now,
                                            demand.role)
            self.wait(demand.role, AWAITING_MIGRATION,
                      f"waiting for idle-resource instance(s) on queue '{victim.queue}' to migrate elsewhere "
                      f"(a replacement first, where capacity allows)")
        else:
            self.evict(victim, PREEMPTED, f"{victim.instance} (priority {owner.priority}) preempted on queue "
                                          f"'{victim.queue}' by {by}; it waits as Pending until capacity frees",
                       by=demand.role)
            self.wait(demand.role, PREEMPTING, f"preempting lower-priority instance(s) on queue '{victim.queue}': "
                                               f"waiting for them to stop (their graceful period)")

    def no_capacity(self, demand: Demand, count: int) -> None:
        slot = (demand.queue, demand.spec)
        holders: Counter[RoleKey] = Counter(p.role for p in self.placements
                                            if (p.queue, p.spec) == slot and p.instance not in self.gone
                                            and p.instance not in self.doomed)
        for (taken, role), n in self.taking.items():
            if taken == slot:
                holders[role] += n
        held = ", ".join(f"{label(r)} (priority {self.demands[r].priority if r in self.demands else '?'}): {n}"
                         for r, n in sorted(holders.items(), key=lambda i: (-i[1], i[0])))
        queue = self.queues.get(demand.queue)
        kind = "quota" if queue is not None and queue.billing == "postpaid" else "capacity"
        where = (f"no {kind} left in queue '{demand.queue}' for spec '{demand.spec}' ({self.capacity(slot)} "
                 f"slot(s){': ' + held if held else ''})")
        higher = [r for r in holders if r in self.demands and self.demands[r].priority > demand.priority
                  and not self.demands[r].idle]
        if higher:
            top = max(higher, key=lambda r: (self.demands[r].priority, r))
            self.wait(demand.role, PREEMPTED, f"preempted by {label(top)} (priority {self.demands[top].priority}): "
                                              f"{where}", count)
        else:
            self.wait(demand.role, NO_CAPACITY, where, count)

    def place_idle(self, demand: Demand) -> None:
        need = demand.want + demand.surge - len(self.staying(demand))
        while need > 0:
            queue = self.lender_for(demand)
            if queue is None:
                self.wait(demand.role, WAITING_FOR_LENDER,
                          f"waiting for a lender: no spare capacity for spec '{demand.spec}' in queue "
                          f"'{demand.queue}' nor in a lending queue of zone '{demand.zone}'", need)
                break
            granted = min(need, self.free((queue, demand.spec)))
            self.grant(demand, queue, granted)
            need -= granted

    def lender_for(self, demand: Demand) -> str | None:
        """The role's own queue when it has a free slot, else the lender of its zone with the most spare slots."""
        if self.free((demand.queue, demand.spec)) > 0:
            return demand.queue
        lenders = sorted((-self.free((q.name, demand.spec)), q.name) for q in self.queues.values()
                         if q.name != demand.queue and self.may_use(demand, q.name))
        return next((name for minus_free, name in lenders if minus_free < 0), None)

    def migrate(self, demand: Demand) -> None:
        """Withdraw doomed and misplaced instances once the role keeps its count of ready instances without them;
        at once when no replacement could be placed (break-before-make) or the deadline passed."""
        going = [p for p in self.kept(demand.role) if p.instance in self.doomed or self.misplaced(p)]
        if not going:
            return
        staying = self.staying(demand)
        placed = len(staying) + self.decision.granted(demand.role)
        unreplaced = max(0, demand.want - placed)
        ready = sum(p.ready for p in staying)
        contested = sorted((p for p in going if p.instance in self.doomed),
                           key=lambda p: (p.ready, self.doomed[p.instance][0]))
        for p in going:
            if not p.ready:
                self.evict(p, MIGRATED, f"{p.instance} on queue '{p.queue}' was not ready: withdrawn at once",
                           by=self.doomed.get(p.instance, (0, None))[1])
        for p in [c for c in contested if c.ready]:
            since, by = self.doomed[p.instance]
            why = None
            if unreplaced > 0:
                unreplaced -= 1
                why = "no capacity for a replacement elsewhere"
            elif self.now - since > self.policy.make_before_break_s:
                why = f"its replacement was not ready within {self.policy.make_before_break_s:g} s"
            if why:
                self.evict(p, BREAK_BEFORE_MAKE, f"{p.instance} withdrawn from queue '{p.queue}' before a "
                                                 f"replacement was ready: {why}", by=by)
        rest = [p for p in going if p.instance not in self.gone]
        extra = ready + len(rest) - demand.want  # ready instances beyond the count: these may go now
        for p in sorted(rest, key=lambda p: (p.instance not in self.doomed, self.doomed.get(p.instance, (0,))[0])):
            if extra <= 0:
                break
            extra -= 1
            self.evict(p, MIGRATED, f"{p.instance} withdrawn from queue '{p.queue}': its replacement is ready",
                       by=self.doomed.get(p.instance, (0, None))[1])
        for p in rest:
            if p.instance not in self.gone and p.instance not in self.doomed:
                self.doomed[p.instance] = (p.doomed_since if p.doomed_since is not None else self.now, None)


__all__ = [
    "AWAITING_MIGRATION", "BREAK_BEFORE_MAKE", "MIGRATED", "NO_CAPACITY", "PREEMPTED", "PREEMPTING", "SCALED_DOWN",
    "WAITING_FOR_LENDER", "Decision", "Demand", "Eviction", "Grant", "Placement", "Policy", "QueueInfo", "RoleKey",
    "Waiting", "label", "schedule",
]
