"""`inferstack plan NEW --against OLD`: the plan between two stack files, no platform needed (pull-request review)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferstack", *args], check=False, capture_output=True, text=True,
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", "COLUMNS": "120"})


def test_weight_and_replica_change_is_an_in_place_update_with_its_cost(tmp_path):
    new = tmp_path / "new.yaml"
    new.write_text(QUICKSTART.read_text().replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50")
                   .replace("replicas: 2", "replicas: 3"))
    result = cli("plan", str(new), "--against", str(QUICKSTART), "--format", "json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    changes = {c["id"]: c for c in plan["changes"]}
    assert set(changes) == {"chat/stable", "chat/traffic"}
    assert {c["action"] for c in changes.values()} == {"update"}
    assert changes["chat/stable"]["redeploy"] == []
    text = cli("plan", str(new), "--against", str(QUICKSTART)).stdout
    assert "weights[stable]: 90 → 50" in text and "Cost (USD per hour): 0.14 → 0.17" in text


def test_same_file_has_no_changes_and_an_invalid_file_exits_1(tmp_path):
    same = cli("plan", str(QUICKSTART), "--against", str(QUICKSTART), "--format", "json")
    assert same.returncode == 0 and json.loads(same.stdout)["changes"] == []
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text().replace("subnet: subnet-a", "subnet: subnet-b", 1))
    result = cli("plan", str(bad), "--against", str(QUICKSTART))
    assert result.returncode == 1 and "subnet.zone_matches_queue" in result.stderr
