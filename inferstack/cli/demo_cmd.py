"""`inferstack demo`: the main job on the embedded platform, end to end, in one command."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from .app import EXIT_NOT_READY, app, console
from .output import plan_text, print_table, table
from .rollout import follow, say_outcome
from .spec_cmds import require_stack

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


def _split(url: str, key: str, requests: int) -> Counter:
    import httpx

    counts: Counter = Counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for i in range(requests):
            answer = http.post("/v1/predict", json={"input": f"request {i}"})
            answer.raise_for_status()
            counts[answer.headers["x-inferstack-deployment"]] += 1
    return counts


def _predict(url: str, key: str) -> dict:
    import httpx

    return httpx.post(f"{url}/v1/predict", json={"input": "hello"}, headers={"Authorization": f"Bearer {key}"},
                      timeout=10).json()


def _show(title: str, counts: Counter, weights: dict[str, float]) -> None:
    total = sum(counts.values())
    out = table("Deployment", "Weight", "Requests", "Observed share", title=title)
    for column in out.columns[1:]:
        column.justify = "right"
    for key in sorted(set(weights) | set(counts)):
        out.add_row(key, f"{weights.get(key, 0):g}", str(counts[key]), f"{counts[key] / total:.1%}")
    print_table(out)


@app.command()
def demo(
    file: Annotated[Path, typer.Option("--file", metavar="FILE", help="Stack file to apply.")] = EXAMPLE,
    requests: Annotated[int, typer.Option("--requests", metavar="N", help="Requests to send per split.")] = 1000,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the platform (and its data dir) afterwards.")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", metavar="DIR", help="Data dir (default: a new temp "
                                                                                     "dir, removed afterwards "
                                                                                     "unless --keep).")] = None,
) -> None:
    """Run the quickstart end to end on a fresh platform.

    Starts the embedded platform, applies the file, sends requests through the gateway and shows the split; then
    stops the platform and removes the temp data dir it made (unless --keep)."""
    from ..platform import server
    from ..targets.local.client import PlatformClient

    stack = require_stack(file, "nothing started")
    made = data_dir is None  # a temp dir of our own: removed at the end, whatever happened
    root = data_dir or Path(tempfile.mkdtemp(prefix="inferstack-demo-"))
    console.print(f"[bold]1.[/bold] starting the embedded platform (data dir {root})", highlight=False)
    info = server.start_detached(root, runtime=True)
    try:
        with PlatformClient(info["url"], (root / "token").read_text().strip()) as client:
            console.print(f"[bold]2.[/bold] applying {file.name}", highlight=False)
            data = json.loads(json.dumps(stack.data))
            result = client.apply(data)
            console.print(plan_text(result["plan_text"]), soft_wrap=True, end="")
            services = [s.key for s in stack.stack.services] if stack.stack else []
            outcome = follow(client, services, timeout=120)
            if not outcome.ok:
                say_outcome(outcome, services, 120)
                raise typer.Exit(EXIT_NOT_READY)
            for svc in services:
                url = client.get_service(svc)["status"]["gateway_url"]
                key = client.request("GET", f"/v1/services/{svc}/keys")["key"]
                traffic = client.get_traffic(svc)["spec"]
                console.print(f"[bold]3.[/bold] {requests} requests to service {svc} at {url}", highlight=False)
                _show(f"{svc}: observed split", _split(url, key, requests), traffic.get("weights") or {})
                sample = _predict(url, key)
                console.print(f"one answer: {json.dumps(sample)}", highlight=False, markup=False)
                if traffic.get("strategy") == "weighted" and len(traffic.get("weights") or {}) > 1:
                    even = {k: round(100 / len(traffic["weights"]), 2) for k in traffic["weights"]}
                    even[next(iter(even))] += round(100 - sum(even.values()), 2)
                    console.print(f"[bold]4.[/bold] moving the weights to {even} in one traffic write",
                                  highlight=False)
                    client.put_traffic(svc, {**traffic, "weights": even})
                    follow(client, [svc], timeout=30, quiet=True)
                    _show(f"{svc}: observed split after the change", _split(url, key, requests), even)
            if keep:
                console.print(f"the platform keeps running: INFERSTACK_DATA_DIR={root} inferstack status; stop it "
                              f"with `inferstack platform stop --data-dir {root}`", highlight=False)
    finally:
        if not keep:
            server.stop(root)
            if made:
                shutil.rmtree(root, ignore_errors=True)
            console.print("platform stopped; no instance left running" + (f"; removed {root}" if made else ""),
                          highlight=False, markup=False)
