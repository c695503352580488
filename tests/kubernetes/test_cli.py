"""`inferstack render FILE -o DIR` as a user runs it: one file per object, stable, secrets only when asked for."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import yaml
from k8s_checks import ROOT
from typer.testing import CliRunner

from inferstack.cli import app

EXAMPLE = ROOT / "examples" / "k8s.yaml"
runner = CliRunner()


def test_render_writes_one_file_per_object_named_by_kind_and_name(tmp_path):
    result = runner.invoke(app, ["render", str(EXAMPLE), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "04-deployment-chat-stable.yaml" in files and "08-httproute-chat.yaml" in files
    assert "00-priorityclass-inferstack-priority-7.yaml" in files  # the stack asks for cluster_bootstrap
    assert not [f for f in files if "-secret-" in f]
    doc = yaml.safe_load((tmp_path / "04-deployment-chat-stable.yaml").read_text())
    assert (doc["kind"], doc["metadata"]["name"]) == ("Deployment", "chat-stable")
    assert "warning" in result.stderr and "--include-secrets" in result.stderr


def test_render_twice_gives_the_same_bytes_and_leaves_unchanged_files_alone(tmp_path):
    assert runner.invoke(app, ["render", str(EXAMPLE), "-o", str(tmp_path)]).exit_code == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert runner.invoke(app, ["render", str(EXAMPLE), "-o", str(tmp_path)]).exit_code == 0
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before


def test_secret_values_are_written_only_with_include_secrets_and_readable_by_the_owner_only(tmp_path):
    plain, secret = tmp_path / "plain", tmp_path / "secret"
    assert runner.invoke(app, ["render", str(EXAMPLE), "-o", str(plain)]).exit_code == 0
    assert not any("hf-example-token" in p.read_text() for p in plain.iterdir())
    result = runner.invoke(app, ["render", str(EXAMPLE), "-o", str(secret), "--include-secrets"])
    assert result.exit_code == 0, result.output
    path = secret / "01-secret-chat-stable-env.yaml"
    assert yaml.safe_load(path.read_text())["stringData"] == {"HF_TOKEN": "hf-example-token"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_files_of_objects_that_no_longer_exist_are_removed_and_other_files_kept(tmp_path):
    (tmp_path / "03-service-gone.yaml").write_text("stale\n")
    (tmp_path / "kustomization.yaml").write_text("resources: []\n")
    assert runner.invoke(app, ["render", str(EXAMPLE), "-o", str(tmp_path)]).exit_code == 0
    assert not (tmp_path / "03-service-gone.yaml").exists()
    assert (tmp_path / "kustomization.yaml").read_text() == "resources: []\n"


def test_namespace_and_cluster_bootstrap_flags_override_the_stack(tmp_path):
    result = runner.invoke(app, ["render", str(EXAMPLE), "-o", str(tmp_path), "--namespace", "team-a",
                                 "--no-cluster-bootstrap"])
    assert result.exit_code == 0, result.output
    assert not list(tmp_path.glob("00-priorityclass-*"))
    assert yaml.safe_load((tmp_path / "08-httproute-chat.yaml").read_text())["metadata"]["namespace"] == "team-a"


def test_without_output_dir_all_objects_go_to_stdout_as_one_stream():
    result = runner.invoke(app, ["render", str(ROOT / "examples" / "quickstart.yaml")])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [d["kind"] for d in docs][-1] == "HTTPRoute" and len(docs) == 9


def test_an_invalid_stack_exits_1_with_its_findings_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("subnet: subnet-b", "subnet: subnet-a", 1))
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(bad), "-o", str(out)])
    assert result.exit_code == 1
    assert "subnet.zone_matches_queue" in result.stderr
    assert not out.exists()


def test_an_unreadable_file_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [\n")
    assert runner.invoke(app, ["render", str(bad)]).exit_code == 2
    assert runner.invoke(app, ["render", str(tmp_path / "missing.yaml")]).exit_code == 2


def test_the_console_script_renders(tmp_path):
    exe = ROOT / ".venv" / "bin" / "inferstack"
    command = [str(exe)] if exe.exists() else [sys.executable, "-c", "from inferstack.cli import app; app()"]
    run = subprocess.run([*command, "render", str(EXAMPLE), "-o", str(tmp_path)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert len(list(tmp_path.glob("*.yaml"))) > 30


CLASH = """
services:
  - {name: a-b, resource_group: rg-default, vpc: vpc-default, deployments: [{name: c, image: {preset: inferstack/echo},
     queue: q-postpaid-a, compute_spec: cpu-small, replicas: 1, rolling_update: {}, subnet: subnet-a,
     security_group: sg-default}]}
  - {name: a, resource_group: rg-default, vpc: vpc-default, deployments: [{name: b-c, image: {preset: inferstack/echo},
     queue: q-postpaid-a, compute_spec: cpu-small, replicas: 1, rolling_update: {}, subnet: subnet-a,
     security_group: sg-default}]}
"""


def test_a_name_clash_is_a_validate_finding_of_a_kubernetes_stack_and_refused_by_render(tmp_path):
    local = tmp_path / "local.yaml"
    local.write_text(CLASH)
    assert runner.invoke(app, ["validate", str(local)]).exit_code == 0  # locally the names never meet
    result = runner.invoke(app, ["render", str(local), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "kubernetes.object_name_unique" in result.stderr
    assert "services[1].deployments[0].key" in result.stderr and not (tmp_path / "out").exists()
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("target: kubernetes\n" + CLASH)
    result = runner.invoke(app, ["validate", str(cluster)])
    assert result.exit_code == 1 and "kubernetes.object_name_unique" in result.stdout


def test_validate_finds_two_stacks_claiming_one_path_on_a_shared_gateway(tmp_path):
    stack = "target: kubernetes\nkubernetes: {{namespace: {ns}, gateway: {{name: shared, namespace: gw}}}}\n"
    body = (ROOT / "examples" / "quickstart.yaml").read_text()
    a, b = tmp_path / "team-a.yaml", tmp_path / "team-b.yaml"
    a.write_text(stack.format(ns="team-a") + body)
    b.write_text(stack.format(ns="team-b") + body)
    assert runner.invoke(app, ["validate", str(a)]).exit_code == 0
    result = runner.invoke(app, ["validate", str(a), str(b), "--format", "json"])
    assert result.exit_code == 1
    findings = [f for f in json.loads(result.stdout) if f["rule"] == "kubernetes.route_path_unique"]
    assert [(f["file"], f["path"]) for f in findings] == [(str(b), "services[0].key")]
    b.write_text(stack.format(ns="team-b").replace("}}\n", "}, path_prefix: /team-b}\n") + body)
    assert runner.invoke(app, ["validate", str(a), str(b)]).exit_code == 0


def test_a_namespace_option_that_is_no_namespace_name_is_refused(tmp_path):
    result = runner.invoke(app, ["render", str(EXAMPLE), "-o", str(tmp_path / "out"), "--namespace", "Team A"])
    assert result.exit_code == 1 and "not a Kubernetes namespace name" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_plan_of_a_kubernetes_stack_says_what_replaces_pods_and_what_the_cluster_needs(tmp_path):
    body = (ROOT / "examples" / "quickstart.yaml").read_text()
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text("target: kubernetes\n" + body)
    new.write_text("target: kubernetes\n" + body.replace("replicas: 2\n", "replicas: 2\n        priority: 7\n", 1))
    result = runner.invoke(app, ["plan", str(new), "--against", str(old), "--format", "json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    [stable] = [c for c in plan["changes"] if c["id"] == "chat/stable"]
    assert [r["reasons"] for r in stable["redeploy"]] == [["priority"]]  # a pod-template change in a cluster
    assert any("inferstack-priority-7" in w and "not rendered" in w for w in plan["warnings"])
    old.write_text(body)
    new.write_text(body.replace("replicas: 2\n", "replicas: 2\n        priority: 7\n", 1))
    plan = json.loads(runner.invoke(app, ["plan", str(new), "--against", str(old), "--format", "json"]).stdout)
    assert [c["redeploy"] for c in plan["changes"] if c["id"] == "chat/stable"] == [[]]  # locally: no redeploy
    assert not any(w.startswith("kubernetes:") for w in plan["warnings"])
