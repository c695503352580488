"""The one price model: what capacity costs per hour. The plan's cost estimate and the platform's meter both charge
through it, so a plan's "cost per hour" and `inferstack cost` never disagree on what a thing costs.

A `Charge` is one role's use of one queue for one compute spec at one moment:

- `reserved`: prepaid slots the role holds whatever their use — admission's count (replicas or autoscaling min, plus
  max surge; `inferstack.spec.capacity.role_ask`), on the role's own prepaid queue only, never for idle resources;
- `running`: its instances placed there (starting, ready or stopping: each holds a slot).

It costs `max(reserved, running)` instances at the spec's price for the billing type of the queue charged
(`price_per_hour.prepaid` or `.postpaid`): held prepaid capacity is paid per period whatever its use, instances above
it (autoscaling past the admitted count, best effort) as they run; pay-as-you-go instances per instance-second.
*decided:* idle-resource instances hold nothing and pay per instance-second at the rate of the queue whose spare
capacity they use — a borrower pays the lender's rate (its billing type's price for the spec), as the lender's own
instances would; on their own queue, that queue's rate."""

from __future__ import annotations

from dataclasses import dataclass

from inferstack.spec import ComputeSpec, Queue, Role
from inferstack.spec.capacity import role_ask

SECONDS_PER_HOUR = 3600.0


def hourly_price(spec: ComputeSpec, billing: str) -> float:
    """Price of one instance-hour of `spec` on a queue of `billing` (`prepaid` | `postpaid`)."""
    return spec.price_per_hour.prepaid if billing == "prepaid" else spec.price_per_hour.postpaid


def reserved_slots(role: Role, queue: Queue, idle: bool) -> int:
    """Prepaid slots a role holds on its own queue whatever their use (0 on pay-as-you-go or with idle resources)."""
    return role_ask(role) if queue.billing == "prepaid" and not idle else 0


@dataclass(frozen=True)
class Charge:
    """One role's use of one queue for one compute spec: slots held and instances running."""

    spec: str
    billing: str  # the billing type of the queue charged: the lender's for borrowed instances
    reserved: int = 0
    running: int = 0

    @property
    def instances(self) -> int:
        """Instances paid for: the held slots, or the running instances when more run."""
        return max(self.reserved, self.running)

    def per_hour(self, spec: ComputeSpec) -> float:
        return self.instances * hourly_price(spec, self.billing)

    def cost(self, spec: ComputeSpec, seconds: float) -> float:
        """What this use costs when it lasts `seconds`."""
        return self.per_hour(spec) * seconds / SECONDS_PER_HOUR


__all__ = ["SECONDS_PER_HOUR", "Charge", "hourly_price", "reserved_slots"]
