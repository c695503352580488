"""`inferstack validate` and `inferstack schema` as a user runs them: a real subprocess, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferstack", *args], check=False, capture_output=True, text=True, cwd=ROOT)


def test_every_example_validates_with_exit_0():
    assert len(EXAMPLES) >= 8
    result = cli("validate", *map(str, EXAMPLES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": valid") == len(EXAMPLES)


def test_invalid_file_exits_1_and_json_lists_findings(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (ROOT / "examples" / "quickstart.yaml").read_text().replace("subnet: subnet-a\n        security_group: "
                                                                       "sg-default\n        weight: 10",
                                                                       "subnet: subnet-b\n        security_group: "
                                                                       "sg-default\n        weight: 10")
    bad.write_text(text)
    result = cli("validate", "--format", "json", str(bad))
    assert result.returncode == 1, result.stdout + result.stderr
    findings = json.loads(result.stdout)
    (f,) = findings
    assert set(f) >= {"rule", "path", "value", "message", "severity"}
    assert f["rule"] == "subnet.zone_matches_queue"
    assert f["path"] == "services[0].deployments[1].subnet"
    assert f["value"] == "subnet-b"
    assert f["line"] == text.splitlines().index("        subnet: subnet-b") + 1


def test_text_output_names_field_value_and_rule(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "examples" / "quickstart.yaml").read_text().replace("replicas: 2", "replicas: 0"))
    result = cli("validate", str(bad))
    assert result.returncode == 1
    assert "services[0].deployments[0].replicas" in result.stdout
    assert "replicas.min_one" in result.stdout and "value: 0" in result.stdout


def test_unreadable_yaml_exits_2_with_line_and_column(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("services:\n  - name: chat\n    ports: [8000\n")
    result = cli("validate", str(bad))
    assert result.returncode == 2
    assert "broken.yaml:4:1" in result.stderr or "broken.yaml:3" in result.stderr, result.stderr


def test_duplicate_yaml_keys_are_unreadable_not_silently_merged(tmp_path):
    bad = tmp_path / "dup.yaml"
    bad.write_text("services: []\nservices: []\n")
    result = cli("validate", str(bad))
    assert result.returncode == 2 and "duplicate key 'services'" in result.stderr


def test_missing_file_exits_2(tmp_path):
    assert cli("validate", str(tmp_path / "nope.yaml")).returncode == 2


def test_schema_accepts_every_example_and_rejects_typos():
    result = cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], f"{path.name}: {[e.message for e in errors]}"
    typo = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    typo["services"][0]["deployments"][0]["replica"] = 2
    assert list(validator.iter_errors(typo))
