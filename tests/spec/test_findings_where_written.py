"""Findings point where the user wrote, say the exact rule, and are not followed by findings that only echo them."""

from __future__ import annotations

import pytest

from inferstack.spec import RollingUpdate, Severity, default_inventory, load_text, validate_stack

SERVICE = """\
services:
  - name: chat
    resource_group: rg-default
    vpc: vpc-default
    ports: [8000]
    deployments:
      - name: {name}
        image: {{preset: inferstack/echo}}
        queue: q-prepaid-a
        compute_spec: cpu-small
        replicas: 2
        rolling_update: {{max_unavailable: 25, max_surge: 25}}
        subnet: subnet-a
        security_group: sg-default
{weight}      - name: canary
        image: {{preset: inferstack/echo}}
        queue: q-postpaid-a
        compute_spec: cpu-small
        replicas: 1
        rolling_update: {{max_unavailable: 0, max_surge: 100}}
        subnet: subnet-a
        security_group: sg-default
        weight: 10
"""


def _load(text: str):
    return load_text(text, "chat.yaml", default_inventory()).report


@pytest.mark.parametrize("weight", ["        weight: 90\n", ""], ids=["with weight", "without weight"])
def test_a_deployment_without_a_usable_key_is_reported_at_the_deployment_and_nowhere_else(weight):
    report = _load(SERVICE.format(name="稳定版", weight=weight))
    assert [(f.rule, f.path, f.line) for f in report.errors] == [
        ("deployment.key_required", "services[0].deployments[0]", 7)]
    (error,) = report.errors
    assert "set `key`" in error.message and error.value == "稳定版"
    assert "^[a-z][a-z0-9-]{0,39}$" in error.message  # the exact pattern
    # No follow-up about weights (a key problem is not a weight problem), and the traffic rules say they wait.
    assert not any(f.path.startswith("services[0].traffic") and f.severity is not Severity.DEFERRED
                   for f in report.findings)
    assert [f.rule for f in report.deferred] == ["traffic.weights_sum"]
    assert "deployments[0] has no key yet" in report.deferred[0].message


def test_with_its_key_set_the_same_deployment_is_valid():
    report = _load(SERVICE.format(name="稳定版\n        key: stable", weight="        weight: 90\n"))
    assert report.findings == []


def test_an_invalid_key_is_reported_once_at_the_key_with_the_exact_pattern():
    report = _load(SERVICE.format(name="stable\n        key: Stable", weight="        weight: 90\n"))
    assert [(f.rule, f.path) for f in report.errors] == [("key.format", "services[0].deployments[0].key")]
    assert "^[a-z][a-z0-9-]{0,39}$" in report.errors[0].message


def test_a_single_deployment_takes_all_traffic_without_a_weight():
    text = SERVICE.split("      - name: canary")[0].format(name="稳定版\n        key: stable", weight="")
    loaded = load_text(text, "solo.yaml", default_inventory())
    assert loaded.report.errors == []
    assert loaded.stack.services[0].traffic.weights == {"stable": 100.0}


@pytest.mark.parametrize("ports,path", [
    ({"listen": 9000, "call": [9000]}, "ports.call[0]"),
    ({"listen": 8080, "call": [9001, 9001]}, "ports.call[1]"),
    ({"listen": 8080, "call": [9001, 9002, 9001]}, "ports.call[2]"),
])
def test_a_repeated_deployment_port_is_reported_at_its_own_index(ports, path):
    data = _stack()
    data["services"][0]["deployments"][0]["ports"] = ports
    report = validate_stack(data).report
    assert [(f.rule, f.path) for f in report.errors] == [("deployment.ports_unique",
                                                          f"services[0].deployments[0].{path}")]


def _stack() -> dict:
    from inferstack.spec import DEFAULT_INVENTORY_DATA

    return {"inventory": DEFAULT_INVENTORY_DATA, "services": [{
        "name": "chat", "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000],
        "deployments": [{"name": "stable", "image": {"preset": "inferstack/echo"}, "queue": "q-prepaid-a",
                         "compute_spec": "cpu-small", "replicas": 2,
                         "rolling_update": {"max_unavailable": 25, "max_surge": 25}, "subnet": "subnet-a",
                         "security_group": "sg-default", "ports": {"listen": 9000}}]}]}


def test_a_field_error_does_not_hide_the_deployments_zone_mismatch():
    data = _stack()
    data["services"][0]["deployments"][0].update(replicas=0, subnet="subnet-b")
    report = validate_stack(data).report
    assert {(f.rule, f.path) for f in report.errors} == {
        ("replicas.min_one", "services[0].deployments[0].replicas"),
        ("subnet.zone_matches_queue", "services[0].deployments[0].subnet")}


def test_a_rule_that_needs_a_broken_field_is_deferred_with_the_reason():
    data = _stack()
    data["services"][0]["deployments"][0].update(queue="bad queue!", subnet="subnet-b")
    report = validate_stack(data).report
    assert [(f.rule, f.path) for f in report.errors] == [("ref.format", "services[0].deployments[0].queue")]
    zone = [f for f in report.deferred if f.rule == "subnet.zone_matches_queue"]
    assert [f.path for f in zone] == ["services[0].deployments[0].subnet"]

    data = _stack()
    data["services"][0]["deployments"][0].update(ports={"listen": "http"}, security_group="sg-loopback")
    report = validate_stack(data).report
    assert [(f.rule, f.path) for f in report.errors] == [("field.type",
                                                          "services[0].deployments[0].ports.listen")]
    (ports,) = [f for f in report.deferred if f.rule == "security_group.allows_ports"]
    assert ports.path == "services[0].deployments[0].security_group" and "ports" in ports.message


def test_the_other_deployments_and_traffic_are_still_checked_beside_a_field_error():
    data = _stack()
    deployments = data["services"][0]["deployments"]
    deployments.append({**deployments[0], "name": "canary", "subnet": "subnet-b"})
    deployments[0]["priority"] = 10
    data["services"][0]["traffic"] = {"weights": {"stable": 50, "canary": 60}}
    report = validate_stack(data).report
    assert {(f.rule, f.path) for f in report.errors} == {
        ("priority.range", "services[0].deployments[0].priority"),
        ("subnet.zone_matches_queue", "services[0].deployments[1].subnet"),
        ("traffic.weights_sum", "services[0].traffic.weights")}


@pytest.mark.parametrize("written,value", [("25%", 25.0), ("0%", 0.0), ("100%", 100.0), ("12.5%", 12.5), (25, 25.0)])
def test_a_percent_string_is_the_percentage(written, value):
    assert RollingUpdate.model_validate({"max_unavailable": written}).max_unavailable == value


@pytest.mark.parametrize("written,rule", [("25", "field.type"), ("25 %", "field.type"), ("-5%", "field.type"),
                                          ("abc%", "field.type"), ("101%", "rolling_update.percent_range")])
def test_other_percent_strings_are_refused_naming_the_accepted_forms(written, rule):
    data = _stack()
    data["services"][0]["deployments"][0]["rolling_update"] = {"max_unavailable": written, "max_surge": 25}
    (error,) = validate_stack(data).report.errors
    assert (error.rule, error.path, error.value) == (rule, ("services[0].deployments[0].rolling_update."
                                                           "max_unavailable"), written)
    if rule == "field.type":
        assert '"25%"' in error.message
