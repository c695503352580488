"""Helpers of the capacity integration tests: queues in zone-b (where the default inventory lends nothing),
deployments on them, polling, and what a deployment's status says about placements."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedded_harness import echo_deployment
from typer.testing import CliRunner

from inferstack.cli import app
from inferstack.targets.local.client import PlatformClient

NO_SURGE = {"max_unavailable": 25, "max_surge": 0}


def queue(name: str, capacity: int, *, billing: str = "prepaid", lends: bool = False) -> dict[str, Any]:
    """A queue in zone-b, where the default inventory lends nothing (q-prepaid-a lends in zone-a)."""
    return {"name": name, "resource_group": "rg-default", "zone": "zone-b", "billing": billing,
            "capacity": {"cpu-small": capacity}, "lends_idle": lends}


def deployment(name: str, queue: str, replicas: int, **extra: Any) -> dict[str, Any]:
    return echo_deployment(name, queue=queue, replicas=replicas, subnet="subnet-b", rolling_update=NO_SURGE,
                           **extra)


def until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout}s")
        time.sleep(0.1)


def role(client: PlatformClient, svc: str, dep: str) -> dict[str, Any]:
    return client.get_deployment(svc, dep)["status"].get("roles", {}).get("main", {})


def live(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The instances not stopping, each with its placement's fields at the top (`queue`, `borrowed_from`, …)."""
    return [{**i, **i["placement"]} for i in info.get("instances", []) if i.get("phase") != "terminating"]


def reasons(client: PlatformClient, svc: str) -> list[tuple[str, str]]:
    return [(e["object"].rsplit("/", 1)[-1], e["reason"]) for e in client.events(svc) if e["action"] == "event"]


def cli(data_dir: Path, *args: str) -> str:
    """`inferstack ARGS --data-dir DATA_DIR` in-process (the data dir's platform, never $INFERSTACK_URL's)."""
    result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)],
                                env={"COLUMNS": "200", "INFERSTACK_URL": "", "INFERSTACK_TOKEN": ""})
    assert result.exit_code == 0, result.output
    return result.output
