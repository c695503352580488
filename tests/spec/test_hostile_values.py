"""Hostile values in a spec, whatever the source (YAML, JSON, Pulumi): every numeric field refuses NaN, ±Infinity
and overflow with `number.finite` at its path; integer fields refuse strings and booleans but take integral floats
(how the Pulumi engine sends numbers); the JSON Schema states the single-field rules."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from test_rules import base_stack

from inferstack.spec import json_schema, load_text, validate_stack


def _rich_stack() -> dict[str, Any]:
    """The base stack with every kind of numeric field present."""
    d = base_stack()
    s = d["services"][0]
    s["traffic"].update(timeout_s=30, retries=1, mirror={"deployment": "canary", "percent": 5})
    dep = s["deployments"][1]
    dep.update(graceful_shutdown_s=10, priority=5, ports={"listen": 8080, "call": [8001]},
               probes={"readiness": {"tcp": {}, "initial_delay_s": 1, "period_s": 2, "timeout_s": 1,
                                     "success_threshold": 1, "failure_threshold": 3}},
               autoscaling={"metrics": [{"metric": "qps", "target": 5, "min": 1, "max": 3}],
                            "schedules": [{"start": "0 9 * * *", "end": "0 18 * * *", "min": 1, "max": 2}]})
    d["inventory"]["compute_specs"][0]["price_per_hour"] = {"prepaid": 0.5, "postpaid": 1}
    d["inventory"]["security_groups"][0]["ingress"][0]["to_port"] = 9000
    return d


def _numeric_leaves(data: Any, path: str = "") -> Iterator[tuple[str, list[Any]]]:
    """(path, key) of every number in `data` that is not a boolean."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        sub = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield sub, key
        else:
            yield from _numeric_leaves(value, sub)


def _set(data: dict, path: str, value: Any) -> None:
    parts: list[Any] = []
    for piece in path.replace("[", ".[").split("."):
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    target = data
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value


LEAVES = [p for p, _ in _numeric_leaves(_rich_stack())]


def test_the_rich_stack_is_valid_and_has_many_numeric_fields() -> None:
    assert validate_stack(_rich_stack()).report.errors == []
    assert len(LEAVES) >= 30


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("path", LEAVES)
def test_every_numeric_field_refuses_non_finite_numbers_at_its_path(path: str, value: float) -> None:
    d = _rich_stack()
    _set(d, path, value)
    found = [(f.rule, f.path) for f in validate_stack(d).report.errors]
    assert ("number.finite", path) in found, found


def test_yaml_nan_and_infinity_get_their_line() -> None:
    text = ("services:\n  - name: chat\n    resource_group: rg-1\n    vpc: vpc-1\n"
            "    traffic: {timeout_s: .inf, retries: .nan}\n")
    findings = {f.path: f for f in load_text(text).report.errors}
    assert findings["services[0].traffic.timeout_s"].rule == "number.finite"
    assert findings["services[0].traffic.retries"].rule == "number.finite"
    assert findings["services[0].traffic.timeout_s"].line == 5
    assert "finite" in findings["services[0].traffic.timeout_s"].message


@pytest.mark.parametrize("value", ["2", True, "true", [2]])
def test_integer_fields_refuse_strings_and_booleans(value: Any) -> None:
    for path in ("services[0].deployments[0].replicas", "services[0].deployments[1].priority",
                 "services[0].ports[0]", "inventory.queues[0].capacity.small"):
        d = _rich_stack()
        _set(d, path, value)
        found = [(f.rule, f.path) for f in validate_stack(d).report.errors]
        assert ("field.type", path) in found, (path, found)


def test_integral_floats_are_integers_everywhere_pulumi_sends_them() -> None:
    d = _rich_stack()
    for path in LEAVES:
        value = _get(d, path)
        if isinstance(value, int):
            _set(d, path, float(value))
    assert validate_stack(d).report.errors == []


def test_flags_refuse_numbers_and_strings() -> None:
    d = _rich_stack()
    d["services"][0]["deployments"][0]["use_idle"] = 1
    d["inventory"]["queues"][0]["lends_idle"] = "yes"
    found = {(f.rule, f.path) for f in validate_stack(d).report.errors}
    assert {("field.type", "services[0].deployments[0].use_idle"),
            ("field.type", "inventory.queues[0].lends_idle")} <= found


def _get(data: Any, path: str) -> Any:
    for piece in path.replace("[", ".[").split("."):
        data = data[int(piece[1:-1])] if piece.startswith("[") else data[piece]
    return data


def test_the_schema_states_the_single_field_rules() -> None:
    defs = json_schema()["$defs"]
    role = defs["Role"]["properties"]
    assert role["replicas"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 1000}
    env = defs["EnvVar"]["properties"]
    assert env["value"]["anyOf"][0]["maxLength"] == 16384 and env["value"]["anyOf"][0]["pattern"] == "^[^\\x00]*$"
    assert defs["Mount"]["properties"]["source"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
    weights = defs["Traffic"]["properties"]["weights"]
    assert weights["propertyNames"]["pattern"] == "^[a-z][a-z0-9-]{0,39}$" and "patternProperties" not in weights
    assert defs["Traffic"]["properties"]["timeout_s"]["maximum"] == 86400
    assert "Asia/Shanghai" in defs["Schedule"]["properties"]["timezone"]["enum"]
    assert defs["Service"]["properties"]["deployments"]["maxItems"] == 64


def _values_the_schema_allows(schema: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    if "enum" in schema:
        return st.sampled_from(schema["enum"]() if callable(schema["enum"]) else schema["enum"])
    if "pattern" in schema:
        low, high = schema.get("minLength", 0), schema.get("maxLength", 10_000)
        return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda v: low <= len(v) <= high)
    if "maxLength" in schema:
        return st.text(max_size=schema["maxLength"])
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum")):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1e12))
        high = schema.get("maximum", 1e12)
        values = st.floats(low, high, allow_nan=False, allow_infinity=False)
        return values.filter(lambda v: "exclusiveMinimum" not in schema or v > schema["exclusiveMinimum"])
    return None


def test_every_field_rule_holds_for_every_value_its_schema_allows() -> None:
    """What makes a schema-valid body a valid one: each rule's schema keywords imply the rule (sampled)."""
    import inferstack.spec.kubernetes  # noqa: F401 -- its field rules register too
    from inferstack.spec.types import CHECKS

    checked = 0
    for rule_check in CHECKS:
        values = _values_the_schema_allows(rule_check.schema)
        if values is None or rule_check.rule in ("autoscaling.cron_format", "cidr.format"):  # parsed further
            continue
        if "maxItems" in rule_check.schema or "maxProperties" in rule_check.schema:
            continue  # counts of lists: stated exactly by maxItems

        _holds(rule_check, values)
        checked += 1
    assert checked >= 40


def _holds(rule_check: Any, values: st.SearchStrategy[Any]) -> None:
    integers = any(isinstance(rule_check.schema.get(k), int) for k in ("minimum", "maximum"))

    @settings(max_examples=30, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(value=values)
    def holds(value: Any) -> None:
        if isinstance(value, float) and integers and value.is_integer():
            value = int(value)
        try:
            ok = rule_check.ok(value)
        except AttributeError:  # a secret's rule reads a SecretStr
            ok = rule_check.ok(SecretStr(value))
        assert ok, (rule_check.rule, rule_check.schema, value)

    holds()
