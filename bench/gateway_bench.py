"""Gateway throughput against a reference measured in the same run.

Two fast backends behind a 90/10 split; req/s through the gateway versus nginx (weighted upstream, keep-alive,
`worker_processes 1` like the single-process gateway) when `nginx` is on PATH, else versus one backend directly.
nginx with `worker_processes auto` is measured once more for information. Rounds alternate gateway and reference
(the best of each counts), so that load from elsewhere on the machine hits both alike.
Load: `wrk` when on PATH, else a raw-socket keep-alive generator in separate processes. Bounded to about a minute.

    python bench/gateway_bench.py [--duration 5] [--connections 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from inferstack.platform.gateway import GatewayProcess

INVOCATION_KEY = "bench-key"
BACKEND_CODE = r"""
import asyncio, sys, uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world!"

class Responder(asyncio.Protocol):
    # GET requests without bodies only (what the load generators send): one answer per blank line.
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

NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream backends {{
        server 127.0.0.1:{port_a} weight=90;
        server 127.0.0.1:{port_b} weight=10;
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


# ------------------------------------------------------------------------------------------------ load generators


def wrk(port: int, seconds: float, connections: int, headers: dict[str, str]) -> float:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed responses:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]


def _socket_client(port: int, seconds: float, connections: int, request: bytes, counter: multiprocessing.Value) -> None:
    import selectors

    selector = selectors.DefaultSelector()
    pending = {}
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        sock.send(request)
        pending[sock] = b""
        selector.register(sock, selectors.EVENT_READ)
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(0.1):
            sock = key.fileobj
            data = pending[sock] + sock.recv(65536)
            # Each answer ends with the 13-byte body after its head; count complete answers, send as many.
            while True:
                head_end = data.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                length = int(re.search(rb"(?i)content-length: (\d+)", data[:head_end]).group(1))  # type: ignore
                if len(data) < head_end + 4 + length:
                    break
                if not data.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(data[:200])
                data = data[head_end + 4 + length:]
                done += 1
                sock.send(request)
            pending[sock] = data
    with counter.get_lock():
        counter.value += done


def python_load(port: int, seconds: float, connections: int, headers: dict[str, str]) -> float:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET / HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()
    counter = multiprocessing.Value("q", 0)
    workers = 2
    processes = [
        multiprocessing.Process(target=_socket_client, args=(port, seconds, connections // workers, request, counter))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(seconds + 10)
    return counter.value / seconds


@dataclass
class Measurement:
    rps: float
    cpu_us_per_request: float | None  # CPU time of the proxy's processes per request: steadier than rps on a busy box


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def measure(
    port: int, seconds: float, connections: int, headers: dict[str, str] | None = None, pids: list[int] | None = None
) -> Measurement:
    load = wrk if shutil.which("wrk") else python_load
    load(port, 1, connections, headers or {})  # warm-up: connections, pools, caches
    before = cpu_seconds(pids) if pids else 0.0
    rps = load(port, seconds, connections, headers or {})
    cpu = (cpu_seconds(pids) - before) / (rps * round(seconds)) * 1e6 if pids else None
    return Measurement(rps, cpu)


# ------------------------------------------------------------------------------------------------ contenders


def gateway_rate(ports: list[int], seconds: float, connections: int) -> Measurement:
    with GatewayProcess() as gateway:
        listeners = gateway.push(
            {
                "version": 1,
                "services": [
                    {
                        "key": "bench",
                        "network_type": "public_gateway",
                        "listeners": [{"port": 8000}],
                        "invocation_key_hashes": [hashlib.sha256(INVOCATION_KEY.encode()).hexdigest()],
                        "traffic": {"strategy": "weighted", "weights": {"stable": 90, "canary": 10}},
                        "deployments": [
                            {"key": "stable", "instances": [{"id": "stable-1", "port": ports[0]}]},
                            {"key": "canary", "instances": [{"id": "canary-1", "port": ports[1]}]},
                        ],
                    }
                ],
            }
        )["listeners"]
        return measure(listeners["bench/8000"], seconds, connections, {"Authorization": f"Bearer {INVOCATION_KEY}"},
                       pids=[gateway.process.pid])  # type: ignore[union-attr]


def nginx_rate(ports: list[int], seconds: float, connections: int, workers: str = "1") -> Measurement:
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        listen = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=workers, tmp=tmp, port_a=ports[0], port_b=ports[1], listen=listen))
        process = subprocess.Popen(["nginx", "-c", str(conf), "-p", tmp], stderr=subprocess.PIPE)
        try:
            wait_listening(listen)
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            return measure(listen, seconds, connections, pids=[int(pid) for pid in children])
        finally:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()


def describe(measurement: Measurement) -> str:
    cpu = measurement.cpu_us_per_request
    return f"{measurement.rps:,.0f} req/s" + (f" ({cpu:.1f} us CPU/request)" if cpu is not None else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (after 1 s warm-up)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
    args = parser.parse_args()

    backend = subprocess.Popen([sys.executable, "-c", BACKEND_CODE], stdout=subprocess.PIPE, text=True)
    try:
        ports = [int(p) for p in backend.stdout.readline().split()]  # type: ignore[union-attr]
        has_nginx = shutil.which("nginx") is not None
        reference_name = "nginx (weighted upstream, 1 worker)" if has_nginx else "direct to one backend"
        print(f"load generator: {'wrk -t1' if shutil.which('wrk') else 'python raw sockets'}, "
              f"{args.connections} connections, {args.duration:g} s per run, {args.rounds} rounds, "
              f"{os.cpu_count()} cores", flush=True)
        gateway_runs: list[Measurement] = []
        reference_runs: list[Measurement] = []
        for round_number in range(1, args.rounds + 1):
            gateway_runs.append(gateway_rate(ports, args.duration, args.connections))
            if has_nginx:
                reference_runs.append(nginx_rate(ports, args.duration, args.connections))
            else:
                reference_runs.append(measure(ports[0], args.duration, args.connections))
            print(f"round {round_number}: gateway {describe(gateway_runs[-1])}, "
                  f"reference {describe(reference_runs[-1])}", flush=True)
        gateway = max(gateway_runs, key=lambda m: m.rps)
        reference = max(reference_runs, key=lambda m: m.rps)
        result: dict[str, object] = {
            "gateway_rps": round(gateway.rps),
            "reference": reference_name,
            "reference_rps": round(reference.rps),
            "ratio": round(gateway.rps / reference.rps, 3),
        }
        print(f"gateway (90/10, invocation key checked): {describe(gateway)}")
        print(f"{reference_name}: {describe(reference)}")
        if has_nginx:
            gateway_cpu = min(m.cpu_us_per_request or float("inf") for m in gateway_runs)
            nginx_cpu = min(m.cpu_us_per_request or float("inf") for m in reference_runs)
            result["cpu_ratio"] = round(nginx_cpu / gateway_cpu, 3)
            print(f"CPU per request, nginx / gateway: {nginx_cpu:.1f} / {gateway_cpu:.1f} us "
                  f"= {nginx_cpu / gateway_cpu:.2f}x (steadier than req/s when the machine is shared)")
            all_workers = nginx_rate(ports, args.duration, args.connections, workers="auto")
            result["nginx_auto_workers_rps"] = round(all_workers.rps)
            print(f"(for information: nginx with worker_processes auto: {all_workers.rps:,.0f} req/s, "
                  f"ratio {gateway.rps / all_workers.rps:.2f}x)")
        print(f"ratio: {gateway.rps / reference.rps:.2f}x")
        print(json.dumps(result))
    finally:
        backend.terminate()
        backend.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
