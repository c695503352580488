"""`inferstack demo`: the main job on the embedded platform, end to end, in one command."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.table import Table

from .app import EXIT_INVALID, app, console
from .platform_cmds import _follow
from .spec_cmds import require_stack

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


def _split(url: str, key: str, requests: int) -> Counter:
    counts: Counter = Counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for i in range(requests):
            answer = http.post("/v1/predict", json={"input": f"request {i}"})
            answer.raise_for_status()
            counts[answer.headers["x-inferstack-deployment"]] += 1
    return counts


def _show(title: str, counts: Counter, weights: dict[str, float]) -> None:
    total = sum(counts.values())
    table = Table(title=title, title_justify="left")
    for col in ("Deployment", "Weight", "Requests", "Observed share"):
        table.add_column(col, justify="right" if col != "Deployment" else "left")
    for key in sorted(set(weights) | set(counts)):
        table.add_row(key, f"{weights.get(key, 0):g}", str(counts[key]), f"{counts[key] / total:.1%}")
    console.print(table)


@app.command()
def demo(
    file: Annotated[Path, typer.Option("--file", help="Stack file to apply.")] = EXAMPLE,
    requests: Annotated[int, typer.Option("--requests", help="Requests to send per split.")] = 1000,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the platform running afterwards.")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data dir (default: a new temp dir).")] = None,
) -> None:
    """Start the embedded platform, apply the quickstart, send requests through the gateway, show the split."""
    from ..platform import server
    from ..targets.local.client import PlatformClient

    stack = require_stack(file, "nothing started")
    root = data_dir or Path(tempfile.mkdtemp(prefix="inferstack-demo-"))
    console.print(f"[bold]1.[/bold] starting the embedded platform (data dir {root})", highlight=False)
    info = server.start_detached(root, runtime=True)
    try:
        with PlatformClient(info["url"], (root / "token").read_text().strip()) as client:
            console.print(f"[bold]2.[/bold] applying {file.name}", highlight=False)
            data = json.loads(json.dumps(stack.data))
            result = client.apply(data)
            console.print(result["plan_text"], highlight=False, markup=False)
            services = [s.key for s in stack.stack.services] if stack.stack else []
            if not _follow(client, services, timeout=120):
                raise typer.Exit(EXIT_INVALID)
            for svc in services:
                url = client.get_service(svc)["status"]["gateway_url"]
                key = client.request("GET", f"/v1/services/{svc}/keys")["key"]
                traffic = client.get_traffic(svc)["spec"]
                console.print(f"[bold]3.[/bold] {requests} requests to service {svc} at {url}", highlight=False)
                _show(f"{svc}: observed split", _split(url, key, requests), traffic.get("weights") or {})
                sample = httpx.post(f"{url}/v1/predict", json={"input": "hello"},
                                    headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
                console.print(f"one answer: {json.dumps(sample)}", highlight=False, markup=False)
                if traffic.get("strategy") == "weighted" and len(traffic.get("weights") or {}) > 1:
                    even = {k: round(100 / len(traffic["weights"]), 2) for k in traffic["weights"]}
                    even[next(iter(even))] += round(100 - sum(even.values()), 2)
                    console.print(f"[bold]4.[/bold] moving the weights to {even} in one traffic write",
                                  highlight=False)
                    client.put_traffic(svc, {**traffic, "weights": even})
                    _follow(client, [svc], timeout=30, quiet=True)
                    _show(f"{svc}: observed split after the change", _split(url, key, requests), even)
            if keep:
                console.print(f"the platform keeps running: INFERSTACK_DATA_DIR={root} inferstack status; stop it "
                              f"with `inferstack platform stop --data-dir {root}`", highlight=False)
    finally:
        if not keep:
            server.stop(root)
            console.print("platform stopped; no instance left running", highlight=False)
