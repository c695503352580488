"""The gateway against nginx over the same synthetic backends (issue #18's throughput and CPU goals).

Two fast backends (a raw uvloop responder, 13-byte answers) behind a 90/10 split: wrk through a standalone gateway
process (invocation key checked), then through nginx's weighted keep-alive upstream (`worker_processes 1`, like the
single-process gateway). Rounds alternate gateway and nginx at each concurrency; each round gives one ratio per
measure (req/s, p50, p99, CPU per request of the proxy process from /proc), summarised as median [min..max].
Without nginx the reference is one backend called directly, and the ratios say so.

Goals (README, "Performance"): req/s ≥ 0.9× nginx, CPU per request ≤ 1.2× nginx.

    python bench/gateway_bench.py [--rounds 5] [--duration 4] [--connections 32,128]
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

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

from inferstack.platform.gateway import GatewayProcess

INVOCATION_KEY = "bench-key"
GOALS = {"rps": 0.9, "cpu_us": 1.2}
BACKEND_CODE = r"""
import asyncio, sys, uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world!"

class Responder(asyncio.Protocol):
    # Requests without bodies only (what the load generators send): one answer per blank line.
    def connection_made(self, transport):
        self.transport = transport
        self.tail = b""
    def data_received(self, data):
        data = self.tail + data
        n = data.count(b"\r\n\r\n")
        self.tail = data[data.rfind(b"\r\n\r\n") + 4:] if n else data
        if n:
            self.transport.write(RESPONSE * n)

async def main():
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(Responder, "127.0.0.1", 0, backlog=4096) for _ in range(2)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def snapshot(ports: list[int]) -> dict:
    return {
        "version": 1,
        "services": [{
            "key": "bench",
            "network_type": "public_gateway",
            "listeners": [{"port": 8000}],
            "invocation_key_hashes": [hashlib.sha256(INVOCATION_KEY.encode()).hexdigest()],
            "traffic": {"strategy": "weighted", "weights": {"stable": 90, "canary": 10}},
            "deployments": [
                {"key": "stable", "instances": [{"id": "stable-1", "port": ports[0]}]},
                {"key": "canary", "instances": [{"id": "canary-1", "port": ports[1]}]},
            ],
        }],
    }


def main() -> int:
    args = arguments(__doc__).parse_args()
    levels = [int(c) for c in args.connections.split(",")]

    backend = subprocess.Popen([sys.executable, "-c", BACKEND_CODE], stdout=subprocess.PIPE, text=True)
    try:
        ports = [int(p) for p in backend.stdout.readline().split()]  # type: ignore[union-attr]
        reference_name = "nginx" if HAS_NGINX else f"one backend directly (nginx not found: {INSTALL_HINT})"
        print(f"gateway bench: 2 synthetic backends at 90/10, GET /, {generator_name()}, {args.rounds} rounds x "
              f"{args.duration:g} s, {os.cpu_count()} cores, reference: {reference_name}, load average "
              f"{load_average()}", flush=True)
        keyed = Request("GET", "/", (("Authorization", f"Bearer {INVOCATION_KEY}"),))
        plain = Request("GET", "/")
        comparisons = {c: Comparison(f"synthetic c{c}", [], []) for c in levels}
        with GatewayProcess() as gateway:
            port = gateway.push(snapshot(ports))["listeners"]["bench/8000"]
            gateway_pids = [gateway.process.pid]  # type: ignore[union-attr]
            for round_number in range(1, args.rounds + 1):
                for connections in levels:
                    ours = load(port, args.duration, connections, keyed, gateway_pids)
                    if HAS_NGINX:
                        with nginx([("127.0.0.1", ports[0], 90), ("127.0.0.1", ports[1], 10)]) as reference:
                            theirs = load(reference.port, args.duration, connections, plain, reference.workers)
                    else:
                        theirs = load(ports[0], args.duration, connections, plain)
                    comparisons[connections].ours.append(ours)
                    comparisons[connections].reference.append(theirs)
                    print(f"round {round_number} c{connections}: gateway {describe(ours)} | reference "
                          f"{describe(theirs)}", flush=True)
        print(f"load average after: {load_average()}")
        summaries = []
        for connections, comparison in comparisons.items():
            summaries.append(comparison.summary())
            cpu = comparison.ratios(lambda r: r.cpu_us)
            print(f"c{connections}: gateway / {'nginx' if HAS_NGINX else 'direct'} — req/s "
                  f"{spread(comparison.ratios(lambda r: r.rps))} (goal ≥ {GOALS['rps']}), p99 "
                  f"{spread(comparison.ratios(lambda r: r.p99_ms))}"
                  + (f", CPU/req {spread(cpu)} (goal ≤ {GOALS['cpu_us']})" if cpu else ""))
        write_summary(summaries, args.json)
    finally:
        backend.terminate()
        backend.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
