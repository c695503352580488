"""Cost per hour of services and deployments, before and after a change, charged by the one price model
(`prices.py`, shared with the platform's meter).

A role on a prepaid queue pays for the capacity it holds — what admission reserves: its replicas (or autoscaling
starting count) plus its max surge — or for its running instances when more run. A role on a pay-as-you-go queue
pays for the instances it runs: the live count when known (an autoscaled count stays where the autoscaler has it,
within the new bounds), else the count the spec starts it with. A deployment using idle resources holds nothing and
pays for its running instances at the rate of the queue whose spare capacity they use; the plan cannot know where
they will be placed and estimates them on their own queue (where the scheduler places them first).

Amounts are in the compute specs' `price_per_hour.currency` (`Cost.currency`); when the specs a plan prices use more
than one currency, nothing is summed across them: every amount is unknown and `Cost.currencies` names them."""

from __future__ import annotations

from inferstack.spec import Deployment, Inventory, Role, Service, StackFile

from .model import Cost, CostLine, PlanContext, sum_or_none
from .normalise import key_of_deployment, key_of_service
from .prices import Charge, reserved_slots


class PriceBook:
    """Queues and compute specs by name, from the stack's inventory over the context's."""

    def __init__(self, stack: StackFile, context: PlanContext) -> None:
        inventory: Inventory = context.inventory.merged(stack.inventory) if context.inventory else stack.inventory
        self.queues = inventory.index("queues")
        self.specs = inventory.index("compute_specs")
        self.currencies: set[str] = set()
        """The currencies of the prices used so far."""

    def deployment(self, dep: Deployment | None, service: str, context: PlanContext, after: bool,
                   before: Deployment | None = None) -> float | None:
        """Cost per hour of `dep` (0 when absent, None when its queue or a compute spec is unknown). `before`: the
        deployment as it was, when pricing the new side (an autoscaled count does not follow a `replicas` edit)."""
        old_roles = {r.name: r for r in before.effective_roles()} if before is not None else {}
        if dep is None:
            return 0.0
        queue = self.queues.get(dep.queue)
        if queue is None:
            return None
        total = 0.0
        for role in dep.effective_roles():
            spec = self.specs.get(role.compute_spec)
            if spec is None:
                return None
            self.currencies.add(spec.price_per_hour.currency)
            live = context.current_replicas.get((service, key_of_deployment(dep), role.name))
            charge = Charge(spec.name, queue.billing, reserved_slots(role, queue, dep.use_idle),
                            _running(role, live, after, old_roles.get(role.name)))
            total += charge.per_hour(spec)
        return round(total, 6)


def _running(role: Role, live: int | None, after: bool, old: Role | None = None) -> int:
    if role.autoscaling is not None:
        if live is None and old is not None and old.autoscaling is not None:
            live = old.starting_replicas  # where the autoscaler started it; `replicas` edits do not move it
        if live is None:
            return role.starting_replicas
        return max(role.autoscaling.floor, min(live, role.autoscaling.ceiling))
    if after or live is None:
        return role.replicas or 1
    return live


def plan_cost(old: StackFile, new: StackFile, context: PlanContext) -> Cost:
    """A line per deployment and per service of either side, services in the new stack's order, deleted ones last."""
    before, after = PriceBook(old, context), PriceBook(new, context)
    old_services = {key_of_service(s): s for s in old.services}
    new_services = {key_of_service(s): s for s in new.services}
    cost = Cost()
    for key in [*new_services, *(k for k in old_services if k not in new_services)]:
        cost.lines.extend(_service_lines(key, old_services.get(key), new_services.get(key), before, after, context))
    cost.currencies = sorted(before.currencies | after.currencies)
    if len(cost.currencies) > 1:  # amounts in different currencies are never added up
        for line in cost.lines:
            line.before = line.after = None
    return cost


def _service_lines(key: str, old: Service | None, new: Service | None, before: PriceBook, after: PriceBook,
                   context: PlanContext) -> list[CostLine]:
    old_deps = {key_of_deployment(d): d for d in old.deployments} if old else {}
    new_deps = {key_of_deployment(d): d for d in new.deployments} if new else {}
    lines = [CostLine(key, dkey, before.deployment(old_deps.get(dkey), key, context, after=False),
                      after.deployment(new_deps.get(dkey), key, context, after=True, before=old_deps.get(dkey)))
             for dkey in [*new_deps, *(k for k in old_deps if k not in new_deps)]]
    total = CostLine(key, None, sum_or_none(ln.before for ln in lines), sum_or_none(ln.after for ln in lines))
    return [total, *lines]

