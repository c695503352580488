"""What the benchmarks share: load generation with latency percentiles, CPU time from /proc, nginx, and how rounds
are summarised.

Load: `wrk` (`apt-get install -y wrk`) when it is on PATH, else a raw-socket keep-alive generator in two processes
(slower than wrk, so the absolute numbers are lower; it says so). Both report req/s, p50 and p99.

Rounds: a benchmark alternates the project and its reference round after round, so that load from elsewhere on a
shared machine hits both alike; each round gives one ratio, and the summary is the median of those ratios with their
[min..max] — never the best round of each side (on a busy machine that picks two unrelated moments).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HAS_WRK = shutil.which("wrk") is not None
HAS_NGINX = shutil.which("nginx") is not None
INSTALL_HINT = "apt-get install -y nginx wrk"


@dataclass
class Run:
    """One measurement of one contender."""

    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None = None  # CPU time of the proxy's processes per request (/proc utime + stime)


@dataclass
class Request:
    """What the load generator sends on every request."""

    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def raw(self) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", "Host: bench"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.body:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of these processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------ wrk


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk_ms(output: str, label: str) -> float:
    found = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if not found:
        raise RuntimeError(f"no {label} latency in wrk's output:\n{output}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _wrk(port: int, seconds: float, connections: int, request: Request) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(f"wrk.method = {request.method!r}\n")
        if request.body:
            script.write(f"wrk.body = {request.body.decode()!r}\n")
        for name, value in request.headers:
            script.write(f"wrk.headers[{name!r}] = {value!r}\n")
        script.flush()
        command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", script.name,
                   f"http://127.0.0.1:{port}{request.path}"]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed responses:\n{output}")
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        raise RuntimeError(f"socket errors: {socket_errors.group(1)}\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return Run(rps, _wrk_ms(output, "50%"), _wrk_ms(output, "99%"))


# ------------------------------------------------------------------------------------------------ fallback generator


def _socket_client(port: int, seconds: float, connections: int, request: bytes, queue: multiprocessing.Queue) -> None:
    """Keep-alive connections, one request outstanding on each; answers must be 200 with a Content-Length."""
    import selectors

    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}
    sent_at: dict[socket.socket, float] = {}
    latencies: list[float] = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        sock.send(request)
        sent_at[sock] = time.perf_counter()
        pending[sock] = b""
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(0.1):
            sock = key.fileobj  # type: ignore[assignment]
            data = pending[sock] + sock.recv(65536)
            while True:
                head_end = data.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                length = re.search(rb"(?i)content-length: *(\d+)", data[:head_end])
                if not data.startswith(b"HTTP/1.1 200") or length is None:
                    raise RuntimeError(data[:300])
                end = head_end + 4 + int(length.group(1))
                if len(data) < end:
                    break
                data = data[end:]
                now = time.perf_counter()
                latencies.append(now - sent_at[sock])
                sent_at[sock] = now
                sock.send(request)
            pending[sock] = data
    queue.put(latencies)


def _python_load(port: int, seconds: float, connections: int, request: Request) -> Run:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    workers = 2
    processes = [multiprocessing.Process(target=_socket_client, args=(port, seconds, connections // workers,
                                                                      request.raw(), queue)) for _ in range(workers)]
    for process in processes:
        process.start()
    latencies = sorted(x for _ in processes for x in queue.get(timeout=seconds + 30))
    for process in processes:
        process.join(10)
    if not latencies:
        raise RuntimeError("no request completed")
    return Run(len(latencies) / seconds, percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3)


def percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(port: int, seconds: float, connections: int, request: Request, pids: Sequence[int] = (),
         warmup_s: float = 1.0) -> Run:
    """One measurement after a warm-up (connections, pools, caches); CPU per request of `pids` when given."""
    generate = _wrk if HAS_WRK else _python_load
    if warmup_s:
        generate(port, warmup_s, connections, request)
    before = cpu_seconds(pids) if pids else 0.0
    run = generate(port, seconds, connections, request)
    if pids:
        requests = run.rps * (max(1, round(seconds)) if HAS_WRK else seconds)  # wrk runs whole seconds
        run.cpu_us = (cpu_seconds(pids) - before) / requests * 1e6 if requests else None
    return run


def generator_name() -> str:
    return "wrk -t1" if HAS_WRK else f"python raw sockets (wrk not found: {INSTALL_HINT})"


# ------------------------------------------------------------------------------------------------ nginx


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
{servers}
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{headers}
        }}
    }}
}}
"""


@dataclass
class Nginx:
    """A running nginx: its port and worker pids."""

    port: int
    workers: list[int]


@contextmanager
def nginx(backends: Sequence[tuple[str, int, int]], headers: dict[str, str] | None = None,
          workers: str = "1") -> Iterator[Nginx]:
    """nginx with a weighted keep-alive upstream over `backends` ((host, port, weight), weight > 0)."""
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        listen = free_port()
        servers = "\n".join(f"        server {host}:{port} weight={weight};" for host, port, weight in backends)
        extra = "\n".join(f'            proxy_set_header {name} "{value}";' for name, value in (headers or {}).items())
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=workers, tmp=tmp, servers=servers, headers=extra, listen=listen))
        process = subprocess.Popen(["nginx", "-c", str(conf), "-p", tmp], stderr=subprocess.PIPE)
        try:
            wait_listening(listen)
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            yield Nginx(listen, [int(pid) for pid in children])
        finally:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ------------------------------------------------------------------------------------------------ summaries


def spread(values: Sequence[float], digits: int = 2) -> str:
    """`median [min..max]`."""
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}..{max(values):.{digits}f}]"


@dataclass
class Comparison:
    """Per-round results of a contender and its reference, and the per-round ratios."""

    name: str
    ours: list[Run]
    reference: list[Run]

    def ratios(self, measure: Callable[[Run], float | None]) -> list[float]:
        pairs = [(measure(a), measure(b)) for a, b in zip(self.ours, self.reference)]
        return [a / b for a, b in pairs if a is not None and b]

    def summary(self) -> dict[str, object]:
        def med(runs: list[Run], measure: Callable[[Run], float | None]) -> float | None:
            values = [v for v in map(measure, runs) if v is not None]
            return round(statistics.median(values), 2) if values else None

        result: dict[str, object] = {"case": self.name, "rounds": len(self.ours)}
        for label, measure in (("rps", lambda r: r.rps), ("p50_ms", lambda r: r.p50_ms),
                               ("p99_ms", lambda r: r.p99_ms), ("cpu_us", lambda r: r.cpu_us)):
            result[f"ours_{label}"] = med(self.ours, measure)
            result[f"reference_{label}"] = med(self.reference, measure)
            ratios = self.ratios(measure)
            if ratios:
                result[f"{label}_ratio"] = round(statistics.median(ratios), 3)
                result[f"{label}_ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
        return result


def describe(run: Run) -> str:
    cpu = f", {run.cpu_us:.1f} us CPU/req" if run.cpu_us is not None else ""
    return f"{run.rps:8,.0f} req/s, p50 {run.p50_ms:6.2f} ms, p99 {run.p99_ms:6.2f} ms{cpu}"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def arguments(doc: str | None, *, gateway: bool = True) -> argparse.ArgumentParser:
    """The options every bench takes (`--rounds`, `--json`), plus those of the gateway benches (`--duration`,
    `--connections`, parsed into `levels`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    if gateway:
        parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement (after 1 s warm-up)")
        parser.add_argument("--connections", default="32,128")
    return parser


def write_summary(summary: object, path: Path | None) -> None:
    """The summary as one JSON line on stdout, and into `path` when given."""
    print(json.dumps(summary))
    if path is not None:
        path.write_text(json.dumps(summary, indent=2))
