"""A plan as plain text (the CLI) and as JSON-able data (the API). Secrets are already masked in the plan.

The text never cuts a value (a review must see every change whole), shows an absent weight as 0 (a deployment a
weighted service does not name takes no traffic), gives cost with its unit, and prints no section with nothing in it.
Each object's line starts with its action's symbol (`+ create`, `~ update`, `± replace`, `- delete`), which the CLI
colours on a terminal."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from inferstack.spec import STANDARD_ROLE

from .legacy import REASON as LEGACY_REASON

if TYPE_CHECKING:
    from .model import Change, Cost, CostLine, Plan

SYMBOLS = {"create": "+", "update": "~", "replace": "±", "delete": "-"}


def plan_dict(plan: Plan) -> dict[str, Any]:
    return {
        "empty": plan.empty,
        "summary": {**plan.counts(), "redeploys": len(plan.redeploys)},
        "changes": [c.to_dict() for c in plan.changes],
        "warnings": list(plan.warnings),
        "cost": plan.cost.to_dict(),
        "preemptions": [p.to_dict() for p in plan.preemptions],
    }


def plan_text(plan: Plan) -> str:
    lines: list[str] = []
    if plan.empty:
        lines.append("No changes.")
    else:
        counts = plan.counts()
        lines.append(f"Plan: {counts['create']} to create, {counts['update']} to update, {counts['replace']} to "
                     f"replace, {counts['delete']} to delete; {len(plan.redeploys)} role(s) redeploy.")
        lines.append("")
        for change in plan.changes:
            lines.extend(_change_lines(change))
    if plan.preemptions:
        lines.extend(["", "Capacity:"])
        lines.extend(f"  ! {p.to_text()}" for p in plan.preemptions)
    lines.extend(_cost_lines(plan, plan.empty))
    if plan.warnings:
        lines.append("")
        lines.append("Warnings:")
        lines.extend(f"  ! {w}" for w in plan.warnings)
    return "\n".join(lines) + "\n"


def _change_lines(change: Change) -> list[str]:
    head = f"{SYMBOLS[change.action]} {change.action:<8} {change.kind:<10} {change.id}"
    if change.replace_paths:
        head += f"  (replaced: {', '.join(change.replace_paths)} cannot change in place)"
    out = [head]
    if change.kind == "deployment" and change.action == "create" and change.new:
        out.append(f"      {_deployment_summary(change.new)}")
    weights = change.kind == "traffic"
    out.extend(f"      {p.path}: {_value(p.old, weights and p.path.startswith('weights['))} → "
               f"{_value(p.new, weights and p.path.startswith('weights['))}" for p in change.properties)
    if change.legacy_conversion:
        out.append(f"      redeploys Default ({LEGACY_REASON}: {change.legacy_conversion}); later edits follow the "
                   f"usual rules")
    for r in change.redeploy:
        out.append(f"      redeploys role {r.role} ({', '.join(r.reasons)}): {r.replicas} instance(s), up to {r.dip} "
                   f"unavailable and {r.surge} extra at once")
    if change.release:
        out.append(f"      progressive: {change.release}")
    if change.action in ("update", "replace") and not change.redeploy and change.kind == "deployment":
        out.append("      no redeploy: running instances are kept")
    return out


def _deployment_summary(data: dict[str, Any]) -> str:
    """`on q-prepaid-a: main cpu-small × 2` from a deployment's public data."""
    roles = data.get("roles") or [{**data, "name": STANDARD_ROLE}]
    parts = [f"{r['name']} {r.get('compute_spec')} × {r.get('replicas', 'autoscaled')}" for r in roles]
    return f"on {data.get('queue')}: {', '.join(parts)}"


def _value(value: Any, weight: bool = False) -> str:
    """A property value in full (JSON). An absent weight is 0: that is what it means for a weighted service."""
    if value is None:
        return "0" if weight else "(none)"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _cost_lines(plan: Plan, empty: bool) -> list[str]:
    """Cost per hour: nothing for an empty plan whose cost does not move; one line when a plan leaves it unchanged;
    else the total and each service and deployment whose cost moves."""
    cost = plan.cost
    if not cost.lines or (empty and not cost.changed):
        return []
    if len(cost.currencies) > 1:
        return ["", f"Cost per hour: not added up: the prices are in {' and '.join(cost.currencies)}"]
    unit = f"{cost.currency or 'price units'} per hour"
    if cost.delta is None:
        return ["", f"Cost ({unit}): unknown (some queues or compute specs are not in the inventory given)"]
    if not cost.changed:
        return ["", f"Cost ({unit}): {_money(cost.after)}, unchanged"]
    out = ["", f"Cost ({unit}): {_span(cost)}"]
    for line in cost.lines:
        if line.before == line.after:
            continue
        if line.deployment is None:
            out.append(f"  {line.service:<24} {_span(line)}")
        else:
            out.append(f"    {line.deployment:<22} {_span(line)}")
    return out


def _span(line: CostLine | Cost) -> str:
    return f"{_money(line.before)} → {_money(line.after)} ({_delta(line.delta)})"


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


def _delta(value: float | None) -> str:
    return "unknown" if value is None else f"{value:+.2f}"
