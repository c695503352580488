"""The gateway on the real platform against nginx over the same replica processes (issue #18's tail goal).

The quickstart (`examples/quickstart.yaml`: service `chat`, `stable` 2 replicas at 90, `canary` 1 replica at 10, the
`inferstack/echo` preset) runs on a real embedded platform; wrk sends `POST /v1/predict` through the platform's
gateway (its own supervised process, invocation key checked), then through nginx whose weighted keep-alive upstream
lists the very same replica processes (the stable's weight split evenly over its replicas, as the gateway spreads a
deployment's share). Rounds alternate gateway and nginx at each concurrency; each round gives one ratio per measure
(p99, p50, req/s, CPU per request), and the summary is their median and [min..max].

Goals (README, "Performance"): p99 ≤ 1.5× nginx at c32 and c128; throughput ≥ 0.9×; CPU per request ≤ 1.2×.
Without nginx there is no reference: the gateway's own numbers are printed, with how to install nginx and wrk.

    python bench/platform_bench.py [--rounds 5] [--duration 4] [--connections 32,128]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from loadgen import (
    HAS_NGINX,
    INSTALL_HINT,
    Comparison,
    Request,
    arguments,
    describe,
    generator_name,
    load,
    load_average,
    nginx,
    spread,
    write_summary,
)

from inferstack.testing import PlatformProcess

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
UPSTREAM_TOKEN_ENV = "INFERSTACK_UPSTREAM_TOKEN"  # set by platforms whose instances answer only the gateway
UPSTREAM_TOKEN_HEADER = "X-Inferstack-Upstream-Token"
GOALS = {"p99_ms": 1.5, "rps": 0.9, "cpu_us": 1.2}  # ours / nginx: p99 and CPU at most, req/s at least


def ready(client: Any, service: str) -> bool:
    svc = client.get_service(service)
    deployments = client.list_deployments(service)
    return bool(svc["status"].get("gateway_url")) and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in d["status"].get("conditions", []))
        for d in deployments)


def wait_ready(client: Any, service: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready(client, service):
        if time.monotonic() > deadline:
            raise RuntimeError(f"service {service} did not become ready")
        time.sleep(0.05)


def replicas(client: Any, service: str) -> list[dict[str, Any]]:
    """Every ready instance: deployment, host, port, pid."""
    found = []
    for deployment in client.list_deployments(service):
        for role in deployment["status"].get("roles", {}).values():
            for instance in role.get("instances", []):
                if instance.get("ready"):
                    found.append({"deployment": deployment["metadata"]["key"], **instance})
    return found


def upstream_headers(pids: list[int]) -> dict[str, str]:
    """The header a replica may require of its callers (the gateway sends it; so must nginx)."""
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            name, _, value = item.partition(b"=")
            if name.decode() == UPSTREAM_TOKEN_ENV and value:
                return {UPSTREAM_TOKEN_HEADER: value.decode()}
    return {}


def nginx_backends(instances: list[dict[str, Any]], weights: dict[str, float]) -> list[tuple[str, int, int]]:
    """(host, port, weight): a deployment's weight split evenly over its replicas (scaled to integers)."""
    per_deployment: dict[str, list[dict[str, Any]]] = {}
    for instance in instances:
        per_deployment.setdefault(instance["deployment"], []).append(instance)
    backends = []
    for key, members in per_deployment.items():
        share = weights.get(key, 0) * 100 / len(members)
        backends += [(m["host"], m["port"], round(share)) for m in members if share > 0]
    return backends


def main() -> int:
    args = arguments(__doc__).parse_args()
    levels = [int(c) for c in args.connections.split(",")]

    with tempfile.TemporaryDirectory(prefix="platform-bench-") as tmp:
        platform = PlatformProcess(Path(tmp) / "data", runtime=True)
        (Path(tmp) / "data").mkdir()
        platform.start()
        try:
            client = platform.client()
            client.apply(yaml.safe_load(QUICKSTART.read_text()))
            wait_ready(client, "chat")
            url = client.get_service("chat")["status"]["gateway_url"]
            key = client.request("GET", "/v1/services/chat/keys")["key"]
            weights = client.get_traffic("chat")["spec"]["weights"]
            instances = replicas(client, "chat")
            gateway_pid = json.loads((Path(tmp) / "data" / "gateway" / "record.json").read_text())["pid"]
            port = int(url.rsplit(":", 1)[1])
            body = json.dumps({"input": "hello, world"}).encode()
            through_gateway = Request("POST", "/v1/predict", (("Content-Type", "application/json"),
                                                              ("Authorization", f"Bearer {key}")), body)
            direct = Request("POST", "/v1/predict", (("Content-Type", "application/json"),), body)
            print(f"platform bench: quickstart (chat: {', '.join(f'{k} {v:g}' for k, v in weights.items())}; "
                  f"{len(instances)} echo replicas), POST /v1/predict, {generator_name()}, "
                  f"{args.rounds} rounds x {args.duration:g} s, {os.cpu_count()} cores, load average "
                  f"{load_average()}", flush=True)
            if not HAS_NGINX:
                print(f"nginx not found: no reference, the gateway's own numbers only ({INSTALL_HINT})")
                for connections in levels:
                    for _ in range(args.rounds):
                        print(f"  c{connections}: gateway {describe(load(port, args.duration, connections, through_gateway, [gateway_pid]))}", flush=True)
                return 0
            backends = nginx_backends(instances, weights)
            comparisons = {c: Comparison(f"real platform c{c}", [], []) for c in levels}
            with nginx(backends, upstream_headers([i["pid"] for i in instances])) as reference:
                for round_number in range(1, args.rounds + 1):
                    for connections in levels:
                        ours = load(port, args.duration, connections, through_gateway, [gateway_pid])
                        theirs = load(reference.port, args.duration, connections, direct, reference.workers)
                        comparisons[connections].ours.append(ours)
                        comparisons[connections].reference.append(theirs)
                        print(f"round {round_number} c{connections}: gateway {describe(ours)} | nginx "
                              f"{describe(theirs)}", flush=True)
            print(f"load average after: {load_average()}")
            summaries = []
            for connections, comparison in comparisons.items():
                summary = comparison.summary()
                summaries.append(summary)
                print(f"c{connections}: gateway / nginx — p99 {spread(comparison.ratios(lambda r: r.p99_ms))} "
                      f"(goal ≤ {GOALS['p99_ms']}), req/s {spread(comparison.ratios(lambda r: r.rps))} "
                      f"(goal ≥ {GOALS['rps']}), CPU/req {spread(comparison.ratios(lambda r: r.cpu_us))} "
                      f"(goal ≤ {GOALS['cpu_us']})")
            write_summary(summaries, args.json)
        finally:
            platform.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
