"""The progressive release policy in the spec: its fields, finite numbers, its rules, the advice on production
services, and the example."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from test_rules import base_stack, dep, svc

from inferstack.spec import (
    Progressive,
    Service,
    default_inventory,
    json_schema,
    load_file,
    takes_production_traffic,
    validate_stack,
)

ROOT = Path(__file__).resolve().parents[2]


def findings(d: dict, *, advice: bool = False) -> list[tuple[str, str]]:
    return [(f.rule, f.path) for f in validate_stack(d, advice=advice).report.findings]


def test_defaults_are_a_complete_policy():
    p = Progressive()
    assert p.steps == [10.0, 50.0, 100.0] and p.bake_time_s == 60 and p.on_failure == "rollback" and p.retry == 0
    assert p.gates.max_error_rate == 1 and p.gates.min_requests == 20 and p.gates.max_p99_ms is None
    assert p.timeout_s() == 600  # ten bake times unless set


@pytest.mark.parametrize("field,value", [
    (("bake_time_s",), math.nan), (("bake_time_s",), math.inf), (("bake_time_s",), 1e400),
    (("step_timeout_s",), math.nan), (("steps", 0), math.nan), (("steps", 0), -math.inf),
    (("gates", "max_error_rate"), math.nan), (("gates", "max_p99_ms"), math.inf),
    (("gates", "max_p99_ratio"), math.nan), (("gates", "max_p99_ratio"), -1.0),
])
def test_non_finite_numbers_are_refused_naming_the_field(field, value):
    d = base_stack()
    policy: dict = {"steps": [10, 50, 100], "gates": {}}
    target = policy
    for part in field[:-1]:
        target = target[part]
    target[field[-1]] = value
    svc(d)["traffic"]["progressive"] = policy
    path = "services[0].traffic.progressive." + ".".join(f"[{p}]" if isinstance(p, int) else p for p in field)
    path = path.replace(".[", "[")
    found = [f for f in validate_stack(d).report.errors if f.path == path]
    expected = "number.finite" if not math.isfinite(value) else "progressive.gate_range"
    assert [f.rule for f in found] == [expected], findings(d)


def test_a_huge_request_minimum_or_retry_is_refused():
    d = base_stack()
    svc(d)["traffic"]["progressive"] = {"gates": {"min_requests": 10**12}, "retry": 10**12}
    assert ("progressive.gate_range", "services[0].traffic.progressive.gates.min_requests") in findings(d)
    assert ("progressive.retry_range", "services[0].traffic.progressive.retry") in findings(d)


def test_unknown_keys_in_a_policy_are_errors():
    d = base_stack()
    svc(d)["traffic"]["progressive"] = {"bake_time": 5}
    assert ("field.unknown", "services[0].traffic.progressive.bake_time") in findings(d)


def test_a_canary_redeploy_needs_a_step_below_100_but_a_traffic_shift_may_be_one_step():
    d = base_stack()
    dep(d)["progressive"] = {"steps": [100]}
    svc(d)["traffic"]["progressive"] = {"steps": [100]}
    assert findings(d) == [("progressive.steps_increasing", "services[0].deployments[0].progressive.steps")]


def test_every_violation_of_a_policy_is_reported_at_once():
    d = base_stack()
    svc(d)["traffic"]["progressive"] = {"steps": [60, 20], "bake_time_s": 30, "step_timeout_s": 5,
                                        "gates": {"max_error_rate": None}}
    assert sorted(findings(d)) == sorted([
        ("progressive.steps_increasing", "services[0].traffic.progressive.steps"),
        ("progressive.gates_not_empty", "services[0].traffic.progressive.gates"),
        ("progressive.step_timeout_range", "services[0].traffic.progressive.step_timeout_s"),
    ])


# --- production traffic: where the policy pack advises a policy ---------------------------------------------------

def test_a_public_service_with_two_deployments_takes_production_traffic():
    d = base_stack()
    service = Service.model_validate(svc(d))
    assert takes_production_traffic(service)
    assert not takes_production_traffic(service.model_copy(update={"network_type": "private_gateway"}))
    assert not takes_production_traffic(service.model_copy(update={"deployments": service.deployments[:1]}))


def test_the_advice_goes_once_the_weights_or_every_weighted_deployment_are_gated():
    d = base_stack()
    assert ("progressive.advised", "services[0].traffic") in findings(d, advice=True)
    gated = copy.deepcopy(d)
    svc(gated)["traffic"]["progressive"] = {}
    assert "progressive.advised" not in {r for r, _ in findings(gated, advice=True)}
    per_deployment = copy.deepcopy(d)
    dep(per_deployment)["progressive"] = {}
    dep(per_deployment, 1)["progressive"] = {}
    assert "progressive.advised" not in {r for r, _ in findings(per_deployment, advice=True)}
    private = copy.deepcopy(d)
    svc(private)["network_type"] = "private_gateway"
    assert "progressive.advised" not in {r for r, _ in findings(private, advice=True)}


def test_the_advice_is_never_an_error_and_never_in_a_plain_validation():
    report = validate_stack(base_stack(), advice=True).report
    assert report.ok and [f.severity.value for f in report.findings if f.rule == "progressive.advised"] == ["warning"]
    assert validate_stack(base_stack()).report.findings == []


# --- schema and example ---------------------------------------------------------------------------------------------

def test_the_json_schema_describes_the_policy_on_traffic_and_deployments():
    schema = json.dumps(json_schema())
    assert "Progressive" in schema and "bake_time_s" in schema and "max_p99_ratio" in schema and "on_failure" in schema


def test_the_example_is_valid_and_gates_both_kinds_of_change():
    loaded = load_file(ROOT / "examples" / "progressive.yaml", default_inventory())
    assert loaded.report.ok and loaded.report.findings == [], str(loaded.report)
    chat = loaded.stack.services[0]
    assert chat.key == "assistant"  # not the tour's `chat`: applying it leaves the quickstart alone
    assert chat.traffic.progressive.steps == [5, 25, 50, 100]
    assert chat.deployment("stable").progressive.steps == [10, 50, 100]
    assert [f.rule for f in validate_stack(loaded.data, base_inventory=default_inventory(), advice=True).report.findings] == []
