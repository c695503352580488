"""Benchmark: diff two stacks of 200 services x 4 deployments (the issue's bar: under 1 s).

Prints the diff time and its ratio to a reference measured in the same process: parsing and validating the same two
stacks (`validate_stack` with the default inventory), the work every caller does before planning anyway.
Run: .venv/bin/python bench/plan_bench.py"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from typing import Any

from inferstack.plan import PlanContext, diff
from inferstack.spec import default_inventory, validate_stack

SERVICES = 200
DEPLOYMENTS = 4
RUNS = 5
GOAL_S = 1.0


def _deployment(s: int, d: int) -> dict[str, Any]:
    dep: dict[str, Any] = {
        "name": f"d{d}", "image": {"preset": "inferstack/echo"}, "queue": "q-bench", "subnet": "subnet-a",
        "security_group": "sg-default", "graceful_shutdown_s": 30,
        "env": [{"name": "MODE", "value": f"m{s}"}, {"name": "TOKEN", "secret": f"secret-{s}-{d}"}],
        "mounts": [{"source": "models", "path": "/models", "read_only": True}],
    }
    if d == 3:  # one multi-role deployment per service
        dep["inference_mode"] = "multi_role"
        dep["roles"] = [
            {"name": "prefill", "entry": True, "compute_spec": "cpu-large", "replicas": 2, "rolling_update": {}},
            {"name": "decode", "compute_spec": "cpu-small", "rolling_update": {"max_unavailable": 0, "max_surge": 50},
             "autoscaling": {"metrics": [{"metric": "qps", "target": 50, "min": 2, "max": 8}]}},
        ]
    else:
        dep.update(compute_spec="cpu-small", replicas=2 + d, rolling_update={"max_unavailable": 25, "max_surge": 25},
                   command=["python", "-m", "serve", f"--shard={d}"],
                   probes={"readiness": {"http": {"path": "/healthz"}, "period_s": 2}})
    return dep


def stacks() -> tuple[dict[str, Any], dict[str, Any]]:
    """(old, new): new changes an image in a quarter of the services, weights in another quarter, replicas in
    another, and replaces one deployment by a new one in the last quarter."""
    old: dict[str, Any] = {
        "inventory": {"queues": [{"name": "q-bench", "resource_group": "rg-default", "zone": "zone-a",
                                  "billing": "postpaid", "capacity": {"cpu-small": 100000, "cpu-large": 100000}}]},
        "services": [{"name": f"svc-{s}", "resource_group": "rg-default", "vpc": "vpc-default",
                      "description": f"service {s}",
                      "deployments": [_deployment(s, d) for d in range(DEPLOYMENTS)],
                      "traffic": {"weights": {"d0": 70, "d1": 20, "d2": 10, "d3": 0}}}
                     for s in range(SERVICES)],
    }
    new = copy.deepcopy(old)
    for s, svc in enumerate(new["services"]):
        kind = s % 4
        if kind == 0:
            svc["deployments"][0]["image"] = {"custom": "registry.example.com/llm:2"}
        elif kind == 1:
            svc["traffic"]["weights"] = {"d0": 60, "d1": 30, "d2": 10, "d3": 0}
        elif kind == 2:
            svc["deployments"][1]["replicas"] = 6
        else:
            svc["deployments"][2] = {**svc["deployments"][2], "name": "d4"}
            svc["traffic"]["weights"] = {"d0": 70, "d1": 20, "d4": 10, "d3": 0}
    return old, new


def _median(fn: Any) -> tuple[float, Any]:
    """Median of RUNS timings (a busy machine makes the best run a lucky one, not a typical one)."""
    times, result = [], None
    for _ in range(RUNS):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    inventory = default_inventory()
    old_data, new_data = stacks()

    def parse_both() -> Any:
        loaded = [validate_stack(d, base_inventory=inventory) for d in (old_data, new_data)]
        assert all(x.report.ok for x in loaded), str(loaded[0].report)
        return [x.stack for x in loaded]

    reference, (old, new) = _median(parse_both)
    context = PlanContext(inventory=inventory)
    elapsed, plan = _median(lambda: diff(old, new, context))
    counts = plan.counts()
    print(f"plan bench: {SERVICES} services x {DEPLOYMENTS} deployments, median of {RUNS}")
    print(f"  changes: {len(plan.changes)} ({counts}), roles redeploying: {len(plan.redeploys)}")
    print(f"  reference (parse + validate both stacks): {reference * 1000:8.1f} ms")
    print(f"  diff (changes, rollout impact, cost):     {elapsed * 1000:8.1f} ms")
    print(f"  ratio diff / reference: {elapsed / reference:.2f}x")
    print(f"  goal: under {GOAL_S:.1f} s -> {'met' if elapsed < GOAL_S else 'MISSED'}")
    return 0 if elapsed < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
