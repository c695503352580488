"""Progressive releases under test: stack files with a policy, the CLI as users run it, and what a release recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from embedded_harness import echo_deployment, echo_service

from inferstack.testing import ROOT

BAD_CANARY = {"name": "ECHO_FAILURE_RATE", "value": "0.2"}  # 500 for 20 % of requests, evenly spread


def shift_stack(key: str, weights: tuple[float, float], policy: dict[str, Any], canary_env: list | None = None,
                **deployment: Any) -> dict[str, Any]:
    """Service `key`: `stable` and `canary` (echo, one instance each) at `weights`, its traffic under `policy`."""
    stable = {**echo_deployment("stable", **deployment), "weight": weights[0]}
    canary = {**echo_deployment("canary", env=[{"name": "INFERSTACK_VERSION", "value": "2"}, *(canary_env or [])],
                                **deployment), "weight": weights[1]}
    return {"services": [echo_service(key, [stable, canary], traffic={"progressive": policy})]}


def write_stack(path: Path, stack: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


def cli(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`inferstack ARGS` as a real process, output piped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERSTACK_")}
    env.update(INFERSTACK_DATA_DIR=str(data_dir), COLUMNS="80")
    return subprocess.run([sys.executable, "-m", "inferstack", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def release_events(client, service: str, obj: str | None = None) -> list[dict[str, Any]]:
    """The service's release events (of one object: `traffic` or a deployment key), in order."""
    events = [e for e in client.events(service) if e.get("action") == "event" and e["reason"].startswith("Release")]
    return [e for e in events if obj is None or e["object"].endswith(f"/{obj}")]


def wait_release(client, service: str, phases: tuple[str, ...], deployment: str | None = None,
                 timeout: float = 20.0) -> dict[str, Any]:
    """The object's release once it reached one of `phases`."""
    deadline = time.monotonic() + timeout
    while True:
        obj = client.get_deployment(service, deployment) if deployment else client.get_traffic(service)
        release = obj["status"].get("release") or {}
        if release.get("phase") in phases and release.get("generation") == obj["metadata"]["generation"]:
            return obj
        if time.monotonic() > deadline:
            raise AssertionError(f"release not {phases} after {timeout}s: {json.dumps(release)[:2000]}")
        time.sleep(0.05)
