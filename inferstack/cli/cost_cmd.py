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
    data_dir: DataDir = None,
) -> None:
    """Cost so far and per hour now: prepaid slots held whatever their use, pay-as-you-go instance-seconds, idle
    instances at the rate of the queue they borrow — per deployment, queue and billing type."""
    with _client(data_dir) as client:
        keys = [service] if service else [s["metadata"]["key"] for s in client.list_services()]
        reports = {key: client.cost(key) for key in keys}
    if fmt is Format.json:
        print_json(reports[service] if service else reports)
        return
    if not reports:
        console.print("No services.", highlight=False)
    for key, report in reports.items():
        print_cost(console, key, report)
