"""The control plane at scale: validate, plan --against and render -o of 10 / 100 / 500 services × 4 deployments.

500 × 4 is the largest stack file the spec accepts (`stack.services_max`, `stack.deployments_max`: 500 services,
2 000 deployments); a 1 000-service file is refused by those rules (exit 1), so larger sizes cannot be measured.

Stacks: N services shaped like the quickstart's `chat` (`examples/quickstart.yaml`), each with 4 deployments (the
quickstart's stable and canary alternately, weights 70/20/10/0, in a queue of the stack's own large enough for all); the
"new" stack changes the replicas of one deployment per service. Each size is timed from the command line (a fresh
`inferstack` process: start-up, imports, parse, validate, work, output — what a user waits for) and in-process (the
library calls alone, after imports). Rounds alternate the commands; the summary is the median and [min..max].
A second `render -o` into the same directory must rewrite no file (unchanged files keep their mtime).
Goal (issue #18): each command under 1.5 s at 1 000 services (written before the limit of 500).

    python bench/control_plane_bench.py [--rounds 5] [--sizes 10,100,500]
"""

from __future__ import annotations

import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from loadgen import arguments, load_average, spread, write_summary

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
DEPLOYMENTS = 4
GOAL_S = 1.5


def stack(services: int, changed: bool) -> dict[str, Any]:
    base = yaml.safe_load(QUICKSTART.read_text())["services"][0]
    out = []
    for s in range(services):
        svc = copy.deepcopy(base)
        svc["name"] = f"svc-{s}"
        svc["description"] = f"service {s} of the control-plane bench"
        deployments = []
        for d in range(DEPLOYMENTS):
            dep = copy.deepcopy(base["deployments"][d % 2])
            dep.update(name=f"d{d}", queue="q-bench", weight=(70, 20, 10, 0)[d])
            if changed and s % DEPLOYMENTS == d:
                dep["replicas"] = 3
            deployments.append(dep)
        svc["deployments"] = deployments
        out.append(svc)
    # A queue of the stack's own, large enough for every replica (the default ones hold a few dozen).
    queue = {"name": "q-bench", "resource_group": "rg-default", "zone": "zone-a", "billing": "postpaid",
             "capacity": {"cpu-small": 100_000}}
    return {"inventory": {"queues": [queue]}, "services": out}


def cli(*args: str) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "inferstack", *args], check=False, capture_output=True, cwd=ROOT)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"inferstack {' '.join(args)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed


def in_process(old: Path, new: Path) -> dict[str, float]:
    """The same three jobs through the library (imports done already), each timed alone."""
    from inferstack.plan import PlanContext, diff
    from inferstack.spec import default_inventory, load_file
    from inferstack.targets.kubernetes import render

    times = {}
    started = time.perf_counter()
    loaded = load_file(new, default_inventory())
    assert loaded.report.ok, str(loaded.report)
    times["validate"] = time.perf_counter() - started
    started = time.perf_counter()
    before, after = load_file(old, default_inventory()).stack, load_file(new, default_inventory()).stack
    diff(before, after, PlanContext(inventory=default_inventory()))
    times["plan"] = time.perf_counter() - started
    started = time.perf_counter()
    stack_ = load_file(new, default_inventory()).stack
    render(stack_).files()
    times["render"] = time.perf_counter() - started
    return times


def rewritten(directory: Path, before: dict[str, int]) -> int:
    return sum(1 for p in directory.iterdir() if before.get(p.name) != p.stat().st_mtime_ns)


def main() -> int:
    parser = arguments(__doc__, gateway=False)
    parser.add_argument("--sizes", default="10,100,500")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    print(f"control-plane bench: N services x {DEPLOYMENTS} deployments (quickstart-shaped), {args.rounds} rounds, "
          f"{os.cpu_count()} cores, load average {load_average()}", flush=True)
    summary = []
    with tempfile.TemporaryDirectory(prefix="control-plane-bench-") as tmp:
        for n in sizes:
            old, new, out = Path(tmp) / f"old{n}.yaml", Path(tmp) / f"new{n}.yaml", Path(tmp) / f"out{n}"
            old.write_text(yaml.safe_dump(stack(n, changed=False), sort_keys=False))
            new.write_text(yaml.safe_dump(stack(n, changed=True), sort_keys=False))
            runs: dict[str, list[float]] = {k: [] for k in ("validate", "plan", "render", "lib_validate", "lib_plan",
                                                            "lib_render")}
            rewrites = []
            for _ in range(args.rounds):
                runs["validate"].append(cli("validate", str(new)))
                runs["plan"].append(cli("plan", str(new), "--against", str(old)))
                runs["render"].append(cli("render", str(new), "-o", str(out)))
                mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
                cli("render", str(new), "-o", str(out))
                rewrites.append(rewritten(out, mtimes))
                for key, seconds in in_process(old, new).items():
                    runs[f"lib_{key}"].append(seconds)
            objects = len(list(out.iterdir()))
            row: dict[str, Any] = {"services": n, "deployments": n * DEPLOYMENTS, "rendered_files": objects,
                                   "render_rewrites_when_unchanged": max(rewrites)}
            for key, values in runs.items():
                row[f"{key}_s"] = round(statistics.median(values), 3)
                row[f"{key}_range_s"] = [round(min(values), 3), round(max(values), 3)]
            summary.append(row)
            print(f"{n:5d} services: CLI validate {spread(runs['validate'])} s, plan --against "
                  f"{spread(runs['plan'])} s, render -o {spread(runs['render'])} s ({objects} files; re-render "
                  f"rewrote {max(rewrites)}) | in-process validate {spread(runs['lib_validate'])} s, plan "
                  f"{spread(runs['lib_plan'])} s, render {spread(runs['lib_render'])} s", flush=True)
    print(f"load average after: {load_average()}; goal: each CLI command under {GOAL_S} s at the largest size")
    write_summary(summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
