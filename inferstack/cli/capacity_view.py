"""How capacity reads on a terminal or in a pipe: where a service's instances run and why some wait (`inferstack
status`), and what they cost (`inferstack cost`). Rendering only: the platform's status and meter say everything.
Messages from the platform are printed as written, never read as markup (`output.py`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.text import Text

from .output import print_table, table


def print_placements(console: Console, deployments: list[dict[str, Any]]) -> None:
    """Per role: instances per queue (borrowed and migrating ones said so), then each pending reason."""
    out: list[Text] = []
    for dep in deployments:
        key = dep["metadata"]["key"]
        for role, info in (dep.get("status", {}).get("roles") or {}).items():
            name = key if role == "main" else f"{key}/{role}"
            where: Counter[str] = Counter()
            for inst in info.get("instances") or []:
                placed = inst.get("placement") or {}
                if inst.get("phase") == "terminating" or not placed.get("queue"):
                    continue
                spot = (f"borrowed from {placed['borrowed_from']}" if placed.get("borrowed_from")
                        else f"on {placed['queue']}")
                where[spot + (" (migrating)" if placed.get("migrating") else "")] += 1
            if where:
                out.append(Text(f"  {name}: " + ", ".join(f"{n} {spot}" for spot, n in where.items())))
            for w in info.get("pending") or []:
                line = Text(f"  {name}: ")
                line.append(f"{w['count']} pending ({w['reason']})", style="yellow")
                line.append(f" {w['message']}")
                out.append(line)
    if out:
        console.print(Text("placement:"), soft_wrap=True)
        for line in out:
            console.print(line, soft_wrap=True)


def print_cost(console: Console, service: str, report: dict[str, Any]) -> None:
    """One table per service: a line per deployment, role, queue and spec; then the totals."""
    rows = table("Deployment", "Queue", "Billing", "Spec", "Instance-s", "Reserved slot-s", "Cost", "Now /h",
                 title=f"Cost of {service}")
    for ln in report["lines"]:
        name = ln["deployment"] if ln["role"] == "main" else f"{ln['deployment']}/{ln['role']}"
        queue = f"{ln['queue']} (borrowed)" if ln.get("borrowed_from") else ln["queue"]
        rows.add_row(name, queue, ln["billing"], ln["compute_spec"], f"{ln['instance_seconds']:g}",
                     f"{ln['reserved_slot_seconds']:g}", f"{ln['cost']:.4f}", f"{ln['per_hour_now']:.4f}")
    if report["lines"]:
        print_table(rows)
    parts = ", ".join(f"{kind} {value:.4f}" for kind, value in report["by_billing"].items())
    console.print(Text(f"{service}: cost so far {report['cost']:.4f}" + (f" ({parts})" if parts else "")
                       + f"; per hour now {report['per_hour']:.4f}"), soft_wrap=True)
