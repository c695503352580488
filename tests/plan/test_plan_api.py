"""The public surface: renderings, `diff_object` (per-object diffs for Pulumi providers) agreeing with `diff`,
`apply_plan`, and the package's purity."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from plan_fixtures import INVENTORY, NEW_SECRET, SECRET, base, changed, does, set_deployment, set_traffic, stack
from pydantic import ValidationError

from inferstack.plan import INVENTORY_ORDER, PlanContext, apply_plan, diff, diff_object
from inferstack.plan.diff import INVENTORY_MODELS
from inferstack.spec import Inventory

PLAN = Path(__file__).resolve().parents[2] / "inferstack" / "plan"
IO_CALLS = {"open", "urlopen", "socket", "connect", "system", "Popen", "run", "read_text", "write_text", "print"}


def _example_plan():
    return changed(does(set_deployment("chat/stable", image={"custom": "registry.example.com/llm:2"},
                                       env=[{"name": "API_KEY", "secret": NEW_SECRET}]),
                        set_traffic("chat", weights={"stable": 80, "canary": 20})),
                   context=PlanContext(inventory=INVENTORY))


def test_text_rendering_shows_actions_paths_redeploys_cost_and_masks_secrets():
    text = _example_plan().to_text()
    assert text.startswith("Plan: 0 to create, 2 to update, 0 to replace, 0 to delete; 1 role(s) redeploy.")
    for expected in ("~ update   deployment chat/stable", 'image.custom: (none) → "registry.example.com/llm:2"',
                     'env[API_KEY]: "[secret]" → "[secret]"', 'env[MODE]: "fast" → (none)',
                     "redeploys role main (", "4 instance(s), up to 1 unavailable and 1 extra at once",
                     "weights[stable]: 90 → 80", "Cost (USD per hour): 1.20, unchanged"):
        assert expected in text, text
    assert SECRET not in text and NEW_SECRET not in text


def test_json_rendering_is_json_able_and_carries_everything_the_text_does():
    data = json.loads(json.dumps(_example_plan().to_dict()))
    assert data["empty"] is False
    assert data["summary"] == {"create": 0, "update": 2, "replace": 0, "delete": 0, "redeploys": 1}
    stable = data["changes"][0]
    assert (stable["kind"], stable["id"], stable["action"], stable["service"], stable["key"]) == (
        "deployment", "chat/stable", "update", "chat", "stable")
    assert {"path": "env[API_KEY]", "old": "[secret]", "new": "[secret]"} in stable["properties"]
    assert stable["redeploy"][0] == {"role": "main", "reasons": stable["redeploy"][0]["reasons"], "replicas": 4,
                                     "dip": 1, "surge": 1}
    assert stable["new"]["env"] == [{"name": "API_KEY", "secret": "[secret]"}]
    assert data["cost"]["lines"][0] == {"service": "chat", "deployment": None, "before": 0.2, "after": 0.2,
                                        "delta": 0.0}
    assert SECRET not in json.dumps(data) and NEW_SECRET not in json.dumps(data)


def test_an_empty_plan_says_so():
    plan = diff(stack(base()), stack(base()))
    assert plan.empty and plan.changes == [] and plan.to_dict()["empty"] is True
    assert plan.to_text().startswith("No changes.")


def test_diff_object_agrees_with_diff_for_every_changed_object():
    old_data = base()
    plan = _example_plan()
    new = apply_plan(stack(old_data), plan)
    old = stack(old_data)
    for change in plan.changes:
        svc_old = next(s for s in old.services if s.key == change.service)
        svc_new = next(s for s in new.services if s.key == change.service)
        if change.kind == "deployment":
            one = diff_object("deployment", svc_old.deployment(change.key).to_data(),
                              svc_new.deployment(change.key).to_data(), service_key=change.service)
        else:
            one = diff_object("traffic", svc_old.traffic.to_data(), svc_new.traffic.to_data(),
                              deployment_keys=svc_new.deployment_keys(), service_key=change.service)
        assert (one.id, one.action, one.paths, one.redeploy) == (change.id, change.action, change.paths,
                                                                 change.redeploy)


# id, kind, old, new, action (None: no change), replace_paths
SVC = {"name": "chat", "resource_group": "rg-default", "vpc": "vpc-default"}
QUEUE = {"name": "q", "resource_group": "rg-default", "zone": "zone-a", "billing": "postpaid",
         "capacity": {"cpu-small": 4}}
DEP = stack(base()).services[0].deployments[1].to_data()
OBJECTS = [
    ("service unchanged, deployments and traffic ignored", "service", SVC,
     {**SVC, "deployments": [DEP], "traffic": {"weights": {"canary": 100}}, "legacy_form": True}, None, []),
    ("service explicit defaults", "service", SVC, {**SVC, "key": "chat", "network_type": "public_gateway",
                                                  "ports": [8000.0]}, None, []),
    ("service vpc", "service", SVC, {**SVC, "vpc": "vpc-two"}, "replace", ["vpc"]),
    ("service key", "service", SVC, {**SVC, "key": "chat2"}, "replace", ["key"]),
    ("service created", "service", None, SVC, "create", []),
    ("service deleted", "service", SVC, None, "delete", []),
    ("deployment key", "deployment", DEP, {**DEP, "key": "canary2"}, "replace", ["key"]),
    ("deployment name", "deployment", DEP, {**DEP, "name": "金丝雀"}, "update", []),
    ("traffic weights as shares", "traffic", {"weights": {"a": 1, "b": 1}}, {"weights": {"a": 50, "b": 50}},
     None, []),
    ("traffic timeout", "traffic", {"weights": {"a": 100}}, {"weights": {"a": 100}, "timeout_s": 5}, "update", []),
    ("inventory queue capacity", "inventory:queues", QUEUE, {**QUEUE, "capacity": {"cpu-small": 8}}, "update", []),
    ("inventory queue name", "inventory:queues", QUEUE, {**QUEUE, "name": "q2"}, "replace", ["name"]),
    ("inventory ingress to_port omitted is from_port", "inventory:security_groups",
     {"name": "sg", "vpc": "v", "ingress": [{"from_port": 80, "source": "0.0.0.0/0"}]},
     {"name": "sg", "vpc": "v", "ingress": [{"from_port": 80, "to_port": 80, "source": "0.0.0.0/0"}]}, None, []),
]


@pytest.mark.parametrize("kind, old, new, action, replace_paths", [row[1:] for row in OBJECTS],
                         ids=[row[0] for row in OBJECTS])
def test_diff_object_decides_per_object(kind, old, new, action, replace_paths):
    change = diff_object(kind, old, new)
    assert (change.action if change else None) == action
    if change:
        assert change.replace_paths == replace_paths


def test_every_inventory_kind_has_a_creation_rank_and_a_model():
    assert set(INVENTORY_ORDER) == set(Inventory.KINDS) == set(INVENTORY_MODELS)


def test_diff_object_rejects_unknown_kinds_and_invalid_data():
    with pytest.raises(ValueError, match="unknown object kind"):
        diff_object("inventory:planets", {}, {})
    with pytest.raises(ValidationError):
        diff_object("deployment", DEP, {**DEP, "replicas": 0})


def test_diff_object_redeploys_a_changed_secret_without_showing_it():
    old = {**DEP, "env": [{"name": "TOKEN", "secret": SECRET}]}
    new = {**DEP, "env": [{"name": "TOKEN", "secret": NEW_SECRET}]}
    change = diff_object("deployment", old, new, service_key="chat")
    assert [r.role for r in change.redeploy] == ["main"]
    assert SECRET not in json.dumps(change.to_dict()) and NEW_SECRET not in repr(change)


def test_apply_plan_of_a_create_from_nothing_gives_the_stack():
    new = stack(base())
    assert diff(apply_plan(None, diff(None, new)), new).empty


# --- purity ----------------------------------------------------------------------------------------------------

def _violations(path: Path) -> list[str]:
    """Imports of anything of ours but the spec (or of pulumi), and calls that do I/O, in one module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            ["." * node.level + (node.module or "")] if isinstance(node, ast.ImportFrom) else []
        out += [f"{path.name} imports {n}" for n in names
                if n.startswith(("..", "pulumi")) or (n.startswith("inferstack") and not n.startswith("inferstack.spec"))]
        if isinstance(node, ast.Call):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if called in IO_CALLS:
                out.append(f"{path.name}:{node.lineno} calls {called}")
    return out


def test_plan_imports_only_the_spec_and_does_no_io():
    assert [v for path in sorted(PLAN.glob("*.py")) for v in _violations(path)] == []


def test_importing_plan_loads_no_pulumi_platform_or_targets():
    code = ("import sys, inferstack.plan; bad = [m for m in sys.modules if m.startswith(('pulumi', "
            "'inferstack.platform', 'inferstack.targets', 'inferstack.cli', 'httpx'))]; print(bad); "
            "sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
