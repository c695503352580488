"""The CLI as users run it — a real `inferstack` process with its output piped — against a real embedded platform
(control plane, instances and gateway as real processes). A uniquely named module: test dirs share `sys.path`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from inferstack.testing import ROOT, PlatformProcess

FAST = {"INFERSTACK_PROGRESS_DEADLINE_S": "4", "INFERSTACK_RESTART_BACKOFF_S": "0.1"}
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
TIMESTAMPED = r"^\d\d:\d\d:\d\d "


def start_platform(data_dir: Path) -> PlatformProcess:
    return PlatformProcess(data_dir, env=FAST, runtime=True).start()


def cli_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERSTACK_")}
    return {**env, "INFERSTACK_DATA_DIR": str(data_dir), "COLUMNS": "80", "PYTHONUNBUFFERED": "0"}


def run(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`inferstack ARGS` with stdout and stderr piped (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "inferstack", *args], env=cli_env(data_dir), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def invoke(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """`inferstack ARGS` in this process: quicker than `run`, the same exit codes and outputs (not a terminal)."""
    from inferstack.cli import app

    env = {k: None for k in os.environ if k.startswith("INFERSTACK_")} | {"INFERSTACK_DATA_DIR": str(data_dir),
                                                                         "COLUMNS": "80"}
    result = CliRunner().invoke(app, list(args), env=env)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def spawn(data_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "inferstack", *args], env=cli_env(data_dir), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def service_file(tmp_path: Path, key: str, *, env: dict[str, str] | None = None, command: list[str] | None = None,
                 replicas: int = 1) -> Path:
    """A stack file of one service `key` with one echo deployment `main` (its env and command as given)."""
    lines = [
        "services:",
        f"  - name: {key}",
        "    resource_group: rg-default",
        "    vpc: vpc-default",
        "    deployments:",
        "      - name: main",
        "        image: {preset: inferstack/echo}",
        "        queue: q-postpaid-a",
        "        compute_spec: cpu-small",
        f"        replicas: {replicas}",
        "        rolling_update: {max_unavailable: 0, max_surge: 100}",
        "        subnet: subnet-a",
        "        security_group: sg-default",
        "        graceful_shutdown_s: 1",
        "        probes: {readiness: {http: {path: /healthz}, period_s: 0.1}}",
    ]
    if env:
        lines.append("        env:")
        lines.extend(f"          - {{name: {k}, value: \"{v}\"}}" for k, v in env.items())
    if command:
        lines.append(f"        command: {json.dumps(command)}")
    path = tmp_path / f"{key}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_ready(platform: PlatformProcess, service: str, timeout: float = 20) -> dict:
    """The service once every deployment is observed and Ready and the gateway URL is known."""
    deadline = time.monotonic() + timeout
    with platform.client() as client:
        while True:
            svc = client.get_service(service)
            deps = client.list_deployments(service)
            if svc["status"].get("gateway_url") and all(
                    d["status"].get("observed_generation") == d["metadata"]["generation"] and any(
                        c["type"] == "Ready" and c["status"] == "True" for c in d["status"].get("conditions", []))
                    for d in deps):
                return svc
            assert time.monotonic() < deadline, f"{service} not Ready after {timeout}s"
            time.sleep(0.1)
