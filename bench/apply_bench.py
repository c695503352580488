"""`inferstack apply` of the quickstart against the start-up time of its replicas (issue #18's apply goal).

Each round: (1) the reference — the quickstart's three echo replicas spawned at once as plain processes, timed from
spawn until each first answers 200 on /healthz; the slowest counts; (2) on a fresh embedded platform (its start is
not timed), `inferstack apply examples/quickstart.yaml` from the command line, timed until it exits with everything
Ready (the CLI waits), and the same apply through the API from this process (no CLI start-up), timed until every
deployment reports Ready; (3) the same file applied again: the writes it made (must be 0).
The summary is the median and [min..max] of the per-round ratios apply / slowest replica start. Goal: ≤ 1.2.

    python bench/apply_bench.py [--rounds 5]
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from loadgen import arguments, free_port, load_average, spread, write_summary
from platform_bench import ready

from inferstack.testing import PlatformProcess

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
GOAL = 1.2


def healthz_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def slowest_replica_start(replicas: int = 3) -> float:
    """Seconds from spawning `replicas` echo processes at once until the last of them answers 200 on /healthz."""
    ports = [free_port() for _ in range(replicas)]
    started = time.monotonic()
    processes = [subprocess.Popen([sys.executable, "-m", "inferstack.images.echo", "--port", str(port)],
                                  stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
                 for port in ports]
    try:
        pending = set(ports)
        ready_at = {}
        while pending:
            for port in list(pending):
                if healthz_ok(port):
                    ready_at[port] = time.monotonic() - started
                    pending.discard(port)
            if time.monotonic() - started > 30:
                raise RuntimeError("echo replicas did not start")
            time.sleep(0.002)
        return max(ready_at.values())
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferstack", *args], check=False, capture_output=True, text=True,
                          env=env, cwd=ROOT)


def apply_round(tmp: Path) -> dict[str, float]:
    """CLI apply, API apply and the no-change re-apply, each on a fresh platform where it needs one."""
    result: dict[str, float] = {}
    data = tmp / "cli"
    data.mkdir()
    with PlatformProcess(data, runtime=True).start() as platform:
        env = {**os.environ, "INFERSTACK_DATA_DIR": str(data)}
        env.pop("INFERSTACK_URL", None)
        started = time.monotonic()
        done = cli("apply", str(QUICKSTART), env=env)
        result["cli_apply_s"] = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"apply exited {done.returncode}: {done.stdout}{done.stderr}")
        again = cli("apply", str(QUICKSTART), "--format", "json", env=env)
        result["no_change_writes"] = json.loads(again.stdout)["writes"]
        started = time.monotonic()
        cli("--version", env=env)
        result["cli_startup_s"] = time.monotonic() - started
    data = tmp / "api"
    data.mkdir()
    with PlatformProcess(data, runtime=True).start() as platform:
        client = platform.client()
        stack = yaml.safe_load(QUICKSTART.read_text())
        started = time.monotonic()
        client.apply(stack)
        while not ready(client, "chat"):
            if time.monotonic() - started > 60:
                raise RuntimeError("the quickstart did not become ready")
            time.sleep(0.005)
        result["api_apply_s"] = time.monotonic() - started
    return result


def main() -> int:
    parser = arguments(__doc__, gateway=False)
    args = parser.parse_args()
    print(f"apply bench: examples/quickstart.yaml (3 echo replicas), {args.rounds} rounds, {os.cpu_count()} cores, "
          f"load average {load_average()}", flush=True)
    rows = []
    for round_number in range(1, args.rounds + 1):
        reference = slowest_replica_start()
        with tempfile.TemporaryDirectory(prefix="apply-bench-") as tmp:
            row = {"slowest_replica_start_s": reference, **apply_round(Path(tmp))}
        rows.append(row)
        print(f"round {round_number}: slowest replica start→ready {reference:.3f} s | CLI apply {row['cli_apply_s']:.3f} s"
              f" (CLI start-up alone {row['cli_startup_s']:.3f} s) | API apply {row['api_apply_s']:.3f} s | "
              f"no-change re-apply: {row['no_change_writes']:.0f} writes", flush=True)
    cli_ratios = [r["cli_apply_s"] / r["slowest_replica_start_s"] for r in rows]
    api_ratios = [r["api_apply_s"] / r["slowest_replica_start_s"] for r in rows]
    summary = {
        "rounds": len(rows),
        "slowest_replica_start_s": round(statistics.median(r["slowest_replica_start_s"] for r in rows), 3),
        "cli_apply_s": round(statistics.median(r["cli_apply_s"] for r in rows), 3),
        "api_apply_s": round(statistics.median(r["api_apply_s"] for r in rows), 3),
        "cli_startup_s": round(statistics.median(r["cli_startup_s"] for r in rows), 3),
        "cli_ratio": round(statistics.median(cli_ratios), 3),
        "cli_ratio_range": [round(min(cli_ratios), 3), round(max(cli_ratios), 3)],
        "api_ratio": round(statistics.median(api_ratios), 3),
        "api_ratio_range": [round(min(api_ratios), 3), round(max(api_ratios), 3)],
        "no_change_writes": max(r["no_change_writes"] for r in rows),
    }
    print(f"load average after: {load_average()}")
    print(f"CLI apply / slowest replica start: {spread(cli_ratios)} (goal ≤ {GOAL}); API apply / slowest replica "
          f"start: {spread(api_ratios)}; no-change re-apply writes: {summary['no_change_writes']}")
    write_summary(summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
