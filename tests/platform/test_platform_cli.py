"""The CLI against a real platform: plan, apply (twice), status, events, delete; serve --detach and stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from platform_harness import ROOT, PlatformProcess
from typer.testing import CliRunner

from inferstack.cli import app
from inferstack.platform.server import process_start_time

QUICKSTART = ROOT / "examples" / "quickstart.yaml"


@pytest.fixture
def run(platform: PlatformProcess, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("INFERSTACK_URL", raising=False)
    monkeypatch.delenv("INFERSTACK_TOKEN", raising=False)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [*args, "--data-dir", str(platform.data_dir)], env={"COLUMNS": "200"})

    return invoke


def test_plan_apply_twice_status_events_delete(run, platform: PlatformProcess) -> None:
    plan = run("plan", str(QUICKSTART))
    assert plan.exit_code == 0, plan.output
    assert "+ create   service    chat" in plan.output and "chat/canary" in plan.output
    with platform.client() as client:
        assert client.list_services() == []

    applied = run("apply", str(QUICKSTART))
    assert applied.exit_code == 0, applied.output
    assert "Applied: 4 write(s)." in applied.output and "create   services/chat/traffic" in applied.output
    with platform.client() as client:
        events = client.events("chat")
    again = run("apply", str(QUICKSTART))
    assert again.exit_code == 0 and "No changes" in again.output
    with platform.client() as client:
        assert client.events("chat") == events

    listing = run("status")
    assert listing.exit_code == 0 and "chat" in listing.output and "stable, canary" in listing.output
    detail = run("status", "chat")
    assert detail.exit_code == 0, detail.output
    for text in ("stable", "canary", "q-prepaid-a", "2/0/0", "0/1", "Pending", "90", "10"):
        assert text in detail.output, text

    log = run("events", "chat")
    assert log.exit_code == 0 and "services/chat/traffic" in log.output

    plan_json = run("plan", str(QUICKSTART), "--format", "json")
    assert plan_json.exit_code == 0 and '"changes": []' in plan_json.output

    deleted = run("delete", "chat")
    assert deleted.exit_code == 0 and "delete   services/chat/traffic" in deleted.output
    missing = run("delete", "chat")
    assert missing.exit_code == 1 and "services/chat does not exist" in missing.output


def test_apply_of_a_file_that_breaks_rules_names_lines_and_rules_and_exits_1(run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text().replace("subnet: subnet-a\n        security_group: sg-default\n        "
                                                  "weight: 10", "subnet: subnet-b\n        security_group: "
                                                  "sg-default\n        weight: 10"))
    result = run("apply", str(bad))
    assert result.exit_code == 1
    assert "subnet.zone_matches_queue" in result.output and f"{bad}:28" in result.output
    unreadable = tmp_path / "broken.yaml"
    unreadable.write_text("services: [\n")
    assert run("apply", str(unreadable)).exit_code == 2


def test_commands_without_a_running_platform_exit_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERSTACK_URL", raising=False)
    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 4 and "no platform is running" in result.output


def test_serve_detach_then_stop_leaves_no_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERSTACK_")}
    cli = [sys.executable, "-c", "from inferstack.cli import app; app()"]
    started = subprocess.run([*cli, "platform", "serve", "--detach", "--data-dir", str(tmp_path)], env=env,
                             capture_output=True, text=True, timeout=30, check=False)
    assert started.returncode == 0, started.stderr
    assert "platform running at http://127.0.0.1:" in started.stdout
    info = json.loads((tmp_path / "platform.json").read_text())
    assert process_start_time(info["pid"]) == info["start_time"]
    stopped = subprocess.run([*cli, "platform", "stop", "--data-dir", str(tmp_path)], env=env, capture_output=True,
                             text=True, timeout=30, check=False)
    assert stopped.returncode == 0 and "stopped the platform" in stopped.stdout
    deadline = time.monotonic() + 5
    while process_start_time(info["pid"]) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process_start_time(info["pid"]) is None
    assert not (tmp_path / "platform.json").exists()
