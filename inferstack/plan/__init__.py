"""The plan: what a change to a stack means — ordered changes per object, update vs replace, rollout impact, cost.

The one place that decides it, so the CLI's `plan`, the platform's dry runs and the Pulumi providers' diffs agree.
Pure: imports only `inferstack.spec`, no I/O, no globals."""

from .apply import apply_plan
from .capacity import Preemption
from .diff import INVENTORY_ORDER, REPLACE_FIELDS, diff, diff_object
from .model import Change, Cost, CostLine, LiveInstance, Plan, PlanContext, PropertyChange, RoleImpact
from .rollout import NO_REDEPLOY, ROLE_NO_REDEPLOY

__all__ = [
    "INVENTORY_ORDER", "NO_REDEPLOY", "REPLACE_FIELDS", "ROLE_NO_REDEPLOY", "Change", "Cost", "CostLine",
    "LiveInstance", "Plan", "PlanContext", "Preemption", "PropertyChange", "RoleImpact", "apply_plan", "diff",
    "diff_object",
]
