"""The whole embedded platform under test: control plane, reconciler, instances, gateway — real processes."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Self

import httpx

from inferstack.testing import PlatformProcess

FAST = {"INFERSTACK_PROGRESS_DEADLINE_S": "3", "INFERSTACK_RESTART_BACKOFF_S": "0.1"}


def start_platform(data_dir: Path, **env: str) -> PlatformProcess:
    return PlatformProcess(data_dir, env={**FAST, **env}, runtime=True).start()


def echo_deployment(name: str, *, queue: str = "q-postpaid-a", replicas: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": {"preset": "inferstack/echo"}, "queue": queue, "compute_spec": "cpu-small",
            "replicas": replicas, "rolling_update": {"max_unavailable": 25, "max_surge": 25}, "subnet": "subnet-a",
            "security_group": "sg-default", "graceful_shutdown_s": 2,
            "probes": {"readiness": {"http": {"path": "/healthz"}, "period_s": 0.1, "failure_threshold": 1}},
            **extra}


def echo_service(key: str, deployments: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": key, "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000],
            "deployments": deployments, **extra}


def wait_ready(client, service: str, timeout: float = 20.0) -> None:
    """Every deployment and the traffic object observed and Ready, and the gateway URL known."""
    deadline = time.monotonic() + timeout
    while True:
        deps = client.list_deployments(service)
        svc = client.get_service(service)
        ok = bool(svc["status"].get("gateway_url")) and all(
            d["status"].get("observed_generation") == d["metadata"]["generation"]
            and _cond(d, "Ready") == "True" for d in deps)
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout}s: " + "; ".join(
                f"{d['metadata']['key']} gen {d['status'].get('observed_generation')}/{d['metadata']['generation']} "
                f"{[(c['type'], c['status'], c['message']) for c in d['status'].get('conditions', [])]}"
                for d in deps))
        time.sleep(0.1)


def _cond(obj: dict, type_: str) -> str | None:
    return next((c["status"] for c in obj["status"].get("conditions", []) if c["type"] == type_), None)


def gateway(client, service: str) -> tuple[str, dict[str, str]]:
    """(gateway URL, headers with the invocation key)."""
    url = client.get_service(service)["status"]["gateway_url"]
    key = client.request("GET", f"/v1/services/{service}/keys")["key"]
    return url, {"Authorization": f"Bearer {key}"}


def split(url: str, headers: dict[str, str], n: int, **extra_headers: str) -> Counter:
    counts: Counter = Counter()
    with httpx.Client(base_url=url, headers={**headers, **extra_headers}, timeout=10) as http:
        for _ in range(n):
            r = http.post("/v1/predict", json={"input": "x"})
            assert r.status_code == 200, r.text
            counts[r.headers["x-inferstack-deployment"]] += 1
    return counts


class Load:
    """Continuous requests from a background thread (httpx, keep-alive); records every status, the versions that
    answered and, per request, (time it ended, status or "exception", deployment) in `outcomes`."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float = 10):
        self.url, self.headers, self.timeout = url, headers, timeout
        self.statuses: Counter = Counter()
        self.versions: list[str] = []
        self.errors: list[str] = []
        self.outcomes: list[tuple[float, int | str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=self.timeout) as http:
            while not self._stop.is_set():
                try:
                    r = http.post("/v1/predict", json={"input": "x"})
                    self.statuses[r.status_code] += 1
                    self.outcomes.append((time.monotonic(), r.status_code, r.headers.get("x-inferstack-deployment",
                                                                                         "")))
                    if r.status_code == 200:
                        self.versions.append(r.json()["version"])
                    else:
                        self.errors.append(r.text)
                except httpx.HTTPError as exc:
                    self.statuses["exception"] += 1
                    self.outcomes.append((time.monotonic(), "exception", ""))
                    self.errors.append(repr(exc))
                    time.sleep(0.005)  # a refused connection returns at once: do not spin

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    def between(self, start: float, end: float) -> Counter:
        """Outcomes of the requests that ended in [start, end) (monotonic time)."""
        return Counter(status for at, status, _ in list(self.outcomes) if start <= at < end)

    def first_success_after(self, start: float) -> float | None:
        return next((at for at, status, _ in list(self.outcomes) if at >= start and status == 200), None)


def gateway_pids(data_dir: Path) -> list[int]:
    """Live gateway processes of a data dir, found in /proc by their command line (its state dir)."""
    state_dir = str(data_dir / "gateway")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if ") Z " not in stat and b"inferstack.platform.gateway" in argv and state_dir.encode() in argv:
            found.append(int(entry))
    return sorted(found)


def instance_pids(service: str, data_dir: Path) -> dict[str, int]:
    """Live instance processes of a service, found in /proc by their environment: instance id → pid. Only those
    of the platform of `data_dir` (their working directory is under it): other runs of the same test on this machine
    use the same service keys, so a lookup by service alone would mix their processes in."""
    found: dict[str, int] = {}
    for pid in service_pids(service, data_dir):
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
        if "INFERSTACK_INSTANCE" in env:
            found[env["INFERSTACK_INSTANCE"]] = pid
    return found


def service_pids(service: str, data_dir: Path) -> set[int]:
    """Every live process carrying the service's instance environment (an instance and whatever it started)."""
    found: set[int] = set()
    needle = f"INFERSTACK_SERVICE={service}\0".encode()
    root = str(Path(data_dir).resolve()) + os.sep
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if ") Z " in stat or not (raw.startswith(needle) or b"\0" + needle in raw):
            continue
        if (cwd + os.sep).startswith(root):
            found.add(int(entry))
    return found
