"""A planted secret goes through the whole platform — applied, run by an instance, changed, refused in a bad write,
planned, rendered — and appears on no surface: not in any file of the data dir (raw bytes, the WAL included, while
the platform runs and after it stops), not in any API answer, CLI output, log, event, plan or render. The data dir
is 0700 and every file in it 0600 (directories 0700), including what instances and SQLite create."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from embedded_harness import echo_deployment, echo_service, gateway, start_platform, wait_ready

from inferstack.testing import ROOT


def _stack(secret: str) -> dict:
    dep = echo_deployment("stable", env=[{"name": "API_TOKEN", "secret": secret}, {"name": "MODE", "value": "fast"}])
    return {"services": [echo_service("vault", [{**dep, "weight": 100}])]}


def _files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs]


def _holders(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in _files(root):
        try:
            data = path.read_bytes()
        except OSError:
            continue  # a socket, or a file removed meanwhile
        found += [f"{path.relative_to(root)} holds {n!r}" for n in needles if n in data]
    return found


def _loose_modes(root: Path) -> list[str]:
    loose = [] if stat.S_IMODE(root.stat().st_mode) == 0o700 else [f". is {oct(root.stat().st_mode)}"]
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(d) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                continue
            if st.st_mode & 0o077:
                loose.append(f"{path.relative_to(root)} is {oct(stat.S_IMODE(st.st_mode))}")
    return loose


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "INFERSTACK_DATA_DIR": str(data_dir), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("INFERSTACK_URL", None)
    return subprocess.run([sys.executable, "-m", "inferstack", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120, check=False)


def test_a_planted_secret_is_on_no_surface_and_the_data_dir_is_private(tmp_path: Path) -> None:
    secret = "planted-" + secrets.token_hex(12)
    changed = "changed-" + secrets.token_hex(12)
    needles = [secret.encode(), changed.encode()]
    data_dir = tmp_path / "data"
    platform = start_platform(data_dir)
    seen: list[str] = []  # every text a user or a log could see
    try:
        client = platform.client()
        stack = _stack(secret)
        stack_file = tmp_path / "stack.yaml"
        stack_file.write_text(yaml.safe_dump(stack))
        for args in (("validate", str(stack_file)), ("plan", str(stack_file)), ("apply", str(stack_file)),
                     ("render", str(stack_file))):
            result = _cli(*args, data_dir=data_dir)
            assert result.returncode == 0, (args, result.stdout, result.stderr)
            seen += [result.stdout, result.stderr]
        wait_ready(client, "vault")
        url, headers = gateway(client, "vault")
        answer = httpx.post(f"{url}/v1/predict", json={"input": "x"}, headers=headers, timeout=10)
        assert answer.status_code == 200
        seen.append(answer.text)

        # Change the secret: dry run first (the plan), then for real; then a refused write carrying a secret.
        changed_file = tmp_path / "changed.yaml"
        changed_file.write_text(stack_file.read_text().replace(secret, changed))
        for args in (("plan", str(changed_file)), ("apply", str(changed_file))):
            result = _cli(*args, data_dir=data_dir)
            assert result.returncode == 0, (args, result.stdout, result.stderr)
            seen += [result.stdout, result.stderr]
        with platform.http() as http:
            bad = http.put("/v1/services/vault/deployments/stable", json={
                **echo_deployment("stable"), "replicas": 0, "env": [{"name": "API_TOKEN", "secret": secret},
                                                                    {"name": "X", "secrte": changed}]})
            assert bad.status_code == 422
            seen.append(bad.text)
            broken = http.put("/v1/services/vault/deployments/stable", content=json.dumps({
                **echo_deployment("stable"), "env": [{"name": "A", "secret": secret}]}).replace(
                secret, secret + "\\ud800").encode(), headers={"Content-Type": "application/json"})
            assert broken.status_code == 400
            seen.append(broken.text)
            for path in ("/v1/services", "/v1/services/vault", "/v1/services/vault/deployments",
                         "/v1/services/vault/deployments/stable", "/v1/services/vault/traffic", "/v1/events",
                         "/v1/services/vault/events", "/v1/inventory", "/metrics", "/openapi.json",
                         "/v1/services/vault/deployments/stable/logs"):
                response = http.get(path)
                assert response.status_code == 200, path
                seen.append(response.text)
        for args in (("status", "vault", "--format", "json"), ("events", "vault"), ("logs", "vault", "stable")):
            result = _cli(*args, data_dir=data_dir)
            assert result.returncode == 0, (args, result.stdout, result.stderr)
            seen += [result.stdout, result.stderr]
        # Something to find: the instance really runs with the (changed) secret in its environment.
        wait_ready(client, "vault")
        assert any(changed in Path(f"/proc/{pid}/environ").read_text(errors="replace")
                   for pid in _instance_pids("vault", data_dir))

        assert _holders(data_dir, needles) == [], "while running"
        assert any(p.name.endswith("-wal") for p in _files(data_dir)), "the WAL was looked at"
        assert _loose_modes(data_dir) == []
    finally:
        platform.stop()
    seen.append(platform.proc.stderr.read().decode(errors="replace"))
    assert [text for text in seen if secret in text or changed in text] == []
    assert _holders(data_dir, needles) == [], "after stopping"
    assert _loose_modes(data_dir) == []


def _instance_pids(service: str, data_dir: Path) -> list[int]:
    from embedded_harness import instance_pids

    return list(instance_pids(service, data_dir).values())
