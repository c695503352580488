"""`inferstack cost [SERVICE]`: what a service cost so far and costs per hour now, from the platform's meter."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import app, console
from .capacity_view import print_cost
from .output import print_json
from .platform_cmds import DataDir, _client
from .spec_cmds import Format


@app.command()
def cost(
    service: Annotated[str | None, typer.Argument(metavar="SERVICE",
                                                  help="Service key (default: every service).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="text, or json (the meter's report).")] = Format.text,
    deleted: Annotated[bool, typer.Option("--deleted", help="Also the final bills of deleted services (a service "
                                                           "deleted and created again under its key has one bill "
                                                           "per life). JSON: {\"services\": …, \"deleted\": "
                                                           "[…]}.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Cost so far and per hour now: prepaid slots held whatever their use, pay-as-you-go instance-seconds, idle
    instances at the rate of the queue they borrow — per deployment, queue and billing type."""
    with _client(data_dir) as client:
        gone = [b for b in client.costs() if b["deleted"] and service in (None, b["service"])] if deleted else []
        live = [s["metadata"]["key"] for s in client.list_services()]
        if service is None:
            keys = live
        elif service in live or not gone:
            keys = [service]  # (a key neither live nor deleted: the platform's 404 says so)
        else:
            keys = []  # a deleted service: its bills only
        reports = {key: client.cost(key) for key in keys}
    if fmt is Format.json:
        shown = reports[service] if service and keys else reports
        print_json({"services": shown, "deleted": gone} if deleted else shown)
        return
    if not reports and not gone:
        console.print("No services." if not deleted else "No services, and no bills of deleted ones.",
                      highlight=False)
    for key, report in reports.items():
        print_cost(console, key, report)
    for bill in gone:
        print_cost(console, f"{bill['service']} (deleted; uid {bill['uid']})", bill)
