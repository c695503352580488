"""The capacity scheduler's side in the reconciler: what every role wants, where each instance runs, the grants a
role's controller may start instances on — and a pass that runs the pure `scheduler.schedule` over them and carries
its decision out.

The seam with the reconciler (the only places it calls):
- `demand(...)` when it converges a role, and `replicas(role, want)`: what to hand the role's controller (its count,
  plus the instances it keeps while they migrate);
- `admit(role, instance_id)`: the controller's `admit` hook — an instance starts only on a granted slot, which
  becomes its placement (`Scheduled` event);
- `retire(role, controller, stopped)` when a role leaves the spec (its instances keep their slots until they are
  gone), `restore(...)` for instances re-adopted after a restart (their placement is in status);
- `run()` after every convergence and every change of a role's instances (and once a second, for deadlines):
  preempted, migrated and scaled-down instances are evicted through their controller (withdrawn from routing first,
  then their graceful period), controllers with new grants are woken, events are recorded (`Preempted`,
  `Preempting`, `Migrating`, `Migrated`, `MigratedBreakBeforeMake`, `FailedScheduling`), the deployments whose
  pending or placements changed get their status rewritten, and the meter is told what is used;
- `role_status(role)` / `instance_status(id)`: the status fields (see `README`: `roles[r].pending`, and per instance
  `placement: {queue, compute_spec, borrowed_from, migrating}`).

Nothing starts until every service known at start-up has been converged once (`expect` / `converged`), so a
restarted platform never hands a low-priority role the slots a higher one it has not read yet would take."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from inferstack.plan.prices import Charge, hourly_price, reserved_slots
from inferstack.spec import Deployment, Inventory, Role

from .metering import Line, Meter, Use
from .scheduler import (
    BREAK_BEFORE_MAKE,
    MIGRATED,
    NO_CAPACITY,
    PREEMPTED,
    SCALED_DOWN,
    WAITING_FOR_LENDER,
    Decision,
    Demand,
    Grant,
    Placement,
    Policy,
    QueueInfo,
    RoleKey,
    Waiting,
    label,
    schedule,
)
from .store import Store

log = logging.getLogger("inferstack.scheduler")

DEPLOYMENT = "deployment"
BLOCKED = frozenset({NO_CAPACITY, PREEMPTED, WAITING_FOR_LENDER})  # pending reasons worth a FailedScheduling event
_EVICTION_EVENTS = {PREEMPTED: "Warning", MIGRATED: "Normal", BREAK_BEFORE_MAKE: "Warning"}


@dataclass(frozen=True)
class _Role:
    """What the book keeps of a role's spec: its demand and what it reserves (for the meter)."""

    demand: Demand
    service_uid: str
    reserved: int


class PlacementBook:
    """Demands, placements and grants of every role; one scheduling pass at a time (see the module docstring)."""

    def __init__(self, store: Store, controllers: Mapping[RoleKey, Any], *,
                 on_status: Callable[[str, str], None] | None = None, meter: Meter | None = None,
                 policy: Policy | None = None, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.controllers = controllers
        self.on_status = on_status
        self.meter = meter
        self.policy = policy or Policy()
        self.clock = clock
        self.inventory = Inventory()
        self.roles: dict[RoleKey, _Role] = {}
        self.placements: dict[str, Placement] = {}
        self.grants: dict[RoleKey, list[Grant]] = {}
        self.retiring: dict[RoleKey, Any] = {}  # controllers shutting down: their instances still hold slots
        self.retired_uids: dict[RoleKey, str] = {}  # the service uid their instances are metered under
        self.rolling: dict[RoleKey, bool] = {}
        self.doomed: dict[str, tuple[float, RoleKey | None]] = {}
        self.pending: dict[RoleKey, list[Waiting]] = {}
        self.handed: dict[RoleKey, int] = {}  # the count last handed to each role's controller
        self._expected: set[str] | None = None
        self._gate_until = 0.0

    # --- the reconciler's seam ---------------------------------------------------------------------------------------

    def expect(self, services: Iterable[str], within_s: float = 15.0) -> None:
        """Hold every grant until these services have been converged once (start-up) — at most `within_s`, so a
        service that fails to converge never holds back the others."""
        self._expected = set(services) or None
        self._gate_until = self.clock() + within_s

    def converged(self, service: str) -> None:
        if self._expected is not None:
            self._expected.discard(service)
            if not self._expected:
                self._expected = None

    @property
    def open(self) -> bool:
        if self._expected is not None and self.clock() >= self._gate_until:
            log.warning("scheduling without waiting any longer for service(s) %s to converge",
                        ", ".join(sorted(self._expected)))
            self._expected = None
        return self._expected is None

    def set_inventory(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def demand(self, role_key: RoleKey, deployment: Deployment, role: Role, want: int, *, service_uid: str = "",
               order: str = "") -> None:
        """What a role wants now (its count: replicas, or the autoscaler's)."""
        queues, subnets = self.inventory.index("queues"), self.inventory.index("subnets")
        queue = queues.get(deployment.queue)
        subnet = subnets.get(deployment.subnet)
        zone = subnet.zone if subnet is not None else (queue.zone if queue is not None else "")
        surge = role.rolling_update.bounds(want)[1] if role.rolling_update is not None else 0
        reserved = reserved_slots(role, queue, deployment.use_idle) if queue is not None else 0
        self.roles[role_key] = _Role(Demand(role_key, deployment.queue, role.compute_spec, zone, deployment.priority,
                                            deployment.use_idle, want, surge, order), service_uid, reserved)
        self.retiring.pop(role_key, None)

    def replicas(self, role_key: RoleKey, want: int) -> int:
        """The count for the role's controller: what it wants plus its instances kept while they migrate."""
        count = want + sum(1 for i, p in self.placements.items() if p.role == role_key and i in self.doomed)
        self.handed[role_key] = count
        return count

    def retire(self, role_key: RoleKey, controller: Any, stopped: asyncio.Future | None = None) -> None:
        """The role left the spec: its instances keep their slots until they are gone (then it is forgotten)."""
        role = self.roles.pop(role_key, None)
        if role is not None:
            self.retired_uids[role_key] = role.service_uid
        self.handed.pop(role_key, None)
        self.grants.pop(role_key, None)
        self.pending.pop(role_key, None)
        self.retiring[role_key] = controller
        if stopped is not None:
            stopped.add_done_callback(lambda _: self._forget(role_key, controller))

    def _forget(self, role_key: RoleKey, controller: Any) -> None:
        if self.retiring.get(role_key) is controller:
            del self.retiring[role_key]
            self.retired_uids.pop(role_key, None)
        for instance in [i for i, p in self.placements.items() if p.role == role_key and role_key not in self.roles]:
            del self.placements[instance]
        self.run()

    def restore(self, role_key: RoleKey, instances: Iterable[Mapping[str, Any]], queue: str, spec: str) -> None:
        """Placements of instances re-adopted after a restart, as their status recorded them."""
        for info in instances:
            instance = info.get("id")
            if isinstance(instance, str):
                placed = info.get("placement") if isinstance(info.get("placement"), Mapping) else {}
                self.placements[instance] = Placement(instance, role_key, str(placed.get("queue") or queue),
                                                      str(placed.get("compute_spec") or spec), 0.0,
                                                      bool(info.get("ready")))

    def admit(self, role_key: RoleKey, instance: str) -> bool:
        """The controller's hook: start `instance` only on a slot granted to its role (it becomes the placement)."""
        if instance in self.placements:
            return True
        grants = self.grants.get(role_key)
        if not self.open or not grants:
            return False
        grant = grants[0]
        if grant.count > 1:
            grants[0] = replace(grant, count=grant.count - 1)
        else:
            grants.pop(0)
        self.placements[instance] = Placement(instance, role_key, grant.queue, grant.spec, self.clock())
        where = (f"on idle capacity borrowed from queue '{grant.lender}'" if grant.lender
                 else f"on queue '{grant.queue}'")
        self._event(role_key, "Scheduled", f"{instance} placed {where} (compute spec '{grant.spec}')")
        return True

    # --- status ------------------------------------------------------------------------------------------------------

    def role_status(self, role_key: RoleKey) -> dict[str, Any]:
        """`pending`: instances that cannot run now, with the reason and a message a person can read."""
        return {"pending": [w.to_dict() for w in self.pending.get(role_key, [])]}

    def instance_status(self, instance: str) -> dict[str, Any]:
        """Where an instance runs: `{"placement": {queue, compute_spec, borrowed_from (a lender's queue, or None),
        migrating (it goes once its replacement is ready)}}`; {} when it is not placed."""
        p = self.placements.get(instance)
        if p is None:
            return {}
        role = self.roles.get(p.role)
        own = role.demand.queue if role is not None else p.queue
        return {"placement": {"queue": p.queue, "compute_spec": p.spec,
                              "borrowed_from": p.queue if p.queue != own else None,
                              "migrating": instance in self.doomed}}

    def pending_note(self, role_key: RoleKey) -> str:
        """One line about a role's pending instances, for its conditions' messages ('' when none)."""
        waiting = self.pending.get(role_key) or []
        return "; ".join(f"{w.count} pending: {w.message}" for w in waiting)

    # --- the pass ----------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """One scheduling pass over every role; carries the decision out (see the module docstring)."""
        if not self.open:
            return
        self._sync()
        queues = [QueueInfo.of(q) for q in self.inventory.queues]
        demands = [replace(r.demand, surge=r.demand.surge if self.rolling.get(k) else 0)
                   for k, r in self.roles.items()]
        placements = [replace(p, doomed_since=self.doomed[i][0] if i in self.doomed else None)
                      for i, p in self.placements.items()]
        decision = schedule(queues, demands, placements, self.clock(), self.policy)
        self._carry_out(decision)
        self._meter()

    def _sync(self) -> None:
        """Placements follow the controllers: ready and leaving flags, instances gone, instances never placed."""
        seen: set[str] = set()
        for key, controller in [*self.controllers.items(), *self.retiring.items()]:
            records = controller.instances()
            revision = controller.status().revision
            self.rolling[key] = any(r.revision != revision for r in records if r.phase != "terminating")
            for r in records:
                seen.add(r.id)
                p = self.placements.get(r.id)
                if p is None:  # started before it was placed (e.g. adopted without a recorded placement)
                    role = self.roles.get(key)
                    if role is None:
                        continue
                    p = Placement(r.id, key, role.demand.queue, role.demand.spec, self.clock())
                self.placements[r.id] = replace(p, ready=r.ready, leaving=r.phase == "terminating")
        for instance in [i for i in self.placements if i not in seen]:
            del self.placements[instance]
            self.doomed.pop(instance, None)

    def _carry_out(self, decision: Decision) -> None:
        touched: set[RoleKey] = set()
        for instance, (_, by) in decision.doomed.items():
            p = self.placements[instance]
            if instance not in self.doomed:
                why = f"{label(by)} needs its slot" if by else f"its role may no longer use queue '{p.queue}'"
                self._event(p.role, "Migrating", f"{instance} on queue '{p.queue}' is moving: {why}; a replacement "
                                                 f"is scheduled first and {instance} is withdrawn once it is ready")
                touched.add(p.role)
        self.doomed = dict(decision.doomed)
        grants: dict[RoleKey, list[Grant]] = defaultdict(list)
        for g in decision.grants:
            grants[g.role].append(g)
        self.grants = dict(grants)
        for key, role in self.roles.items():
            controller = self.controllers.get(key)
            handed = self.handed.get(key)
            if controller is not None and handed is not None and self.replicas(key, role.demand.want) != handed:
                controller.scale(self.handed[key])
        for e in decision.evictions:
            controller = self.controllers.get(e.role)
            if controller is None or not controller.evict(e.instance):
                continue
            touched.add(e.role)
            log.info("%s: %s %s", label(e.role), e.reason, e.message)
            if e.reason != SCALED_DOWN:
                self._event(e.role, e.reason, e.message, type=_EVICTION_EVENTS.get(e.reason, "Normal"))
            if e.reason == PREEMPTED and e.by is not None:
                victim = self.roles.get(e.role)
                priority = f" (priority {victim.demand.priority})" if victim else ""
                self._event(e.by, "Preempting", f"preempting {e.instance} of {label(e.role)}{priority} on queue "
                                                f"'{e.queue}' to make room")
        for key in grants:
            controller = self.controllers.get(key)
            if controller is not None:
                controller.wake()
        pending: dict[RoleKey, list[Waiting]] = defaultdict(list)
        for w in decision.pending:
            pending[w.role].append(w)
        for key in set(self.pending) | set(pending):
            before, after = self.pending.get(key, []), pending.get(key, [])
            if before != after:
                touched.add(key)
            blocked = [w for w in after if w.reason in BLOCKED]
            if blocked and blocked != [w for w in before if w.reason in BLOCKED]:
                self._event(key, "FailedScheduling", "; ".join(f"{w.count} instance(s) pending: {w.message}"
                                                              for w in blocked), type="Warning")
        self.pending = {k: v for k, v in pending.items() if k in self.roles}
        if self.on_status is not None:
            for svc, dep in sorted({k[:2] for k in touched}):
                self.on_status(svc, dep)

    def _meter(self) -> None:
        if self.meter is None:
            return
        queues, specs = self.inventory.index("queues"), self.inventory.index("compute_specs")
        running: dict[tuple[RoleKey, str, str], int] = defaultdict(int)
        for p in self.placements.values():
            running[(p.role, p.queue, p.spec)] += 1
        keys = set(running)
        for key, role in self.roles.items():
            if role.reserved:
                keys.add((key, role.demand.queue, role.demand.spec))
        usage: dict[Line, Use] = {}
        for role_key, queue_name, spec_name in keys:
            queue, spec = queues.get(queue_name), specs.get(spec_name)
            role = self.roles.get(role_key)
            uid = role.service_uid if role is not None else self.retired_uids.get(role_key)
            if queue is None or spec is None or uid is None:
                continue
            own = role.demand.queue if role is not None else queue_name
            reserved = role.reserved if role is not None and (queue_name, spec_name) == (own, role.demand.spec) else 0
            charge = Charge(spec_name, queue.billing, reserved, running[(role_key, queue_name, spec_name)])
            line = Line(uid, role_key[0], role_key[1], role_key[2], queue_name, spec_name,
                        queue_name if queue_name != own else "")
            usage[line] = Use(charge, hourly_price(spec, queue.billing))
        try:
            self.meter.observe(usage)
        except Exception:  # the meter must never stop scheduling
            log.exception("metering failed; trying again at the next pass")

    def _event(self, role_key: RoleKey, reason: str, message: str, *, type: str = "Normal") -> None:
        try:
            self.store.record_event(DEPLOYMENT, role_key[1], reason, message, parent=role_key[0], type=type,
                                    request_id="scheduler")
        except Exception:  # an event must never stop scheduling
            log.exception("recording event %s failed", reason)

    def close(self) -> None:
        """The platform stops (its instances are stopped): close the meter's intervals."""
        if self.meter is not None:
            self.meter.close()

    async def tick_forever(self, interval_s: float = 1.0) -> None:
        """A pass every `interval_s` (make-before-break deadlines, the meter's flush)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.run()
            except Exception:
                log.exception("scheduling pass failed; trying again")


__all__ = ["PlacementBook"]
