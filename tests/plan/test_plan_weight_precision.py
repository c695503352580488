"""Weights have one documented precision, `WEIGHT_PRECISION` (0.01 percentage points): any change of a share by that
much or more is a change — it reaches the platform (the platform writes what the plan says) and shows in plans,
previews and refreshes; finer differences mean the same split."""

from __future__ import annotations

import pytest
from plan_fixtures import changed, set_traffic

from inferstack.plan import diff_object


def _split(stable: float, canary: float):
    return set_traffic("chat", weights={"stable": stable, "canary": canary})


@pytest.mark.parametrize(("before", "after"), [
    ((100, 0), (99.96, 0.04)),
    ((100, 0), (99.99, 0.01)),
    ((90, 10), (89.99, 10.01)),
    ((50, 50), (50.01, 49.99)),
    ((33.33, 66.67), (33.34, 66.66)),
])
def test_a_change_of_a_share_by_the_precision_or_more_is_a_change(before, after):
    plan = changed(_split(*after), before=_split(*before))
    change = plan.change("chat/traffic")
    assert change is not None and change.action == "update", plan.to_text()
    assert {p.path for p in change.properties} == {"weights[stable]", "weights[canary]"} - (
        {"weights[canary]"} if before[1] == 0 and after[1] == 0 else set())
    assert "weights[canary]: " in plan.to_text()


@pytest.mark.parametrize(("before", "after"), [
    ((100, 0), (99.996, 0.004)),
    ((90, 10), (90.004, 9.996)),
    ((33.33, 66.67), (100 / 3, 200 / 3)),
])
def test_finer_differences_are_the_same_split(before, after):
    assert changed(_split(*after), before=_split(*before)).empty


def test_the_precision_is_documented_in_the_spec():
    from inferstack.spec import WEIGHT_PRECISION, Traffic

    assert WEIGHT_PRECISION == 0.01
    assert "0.01" in Traffic.model_fields["weights"].description


def test_a_weight_shows_as_a_number_in_the_plan_text():
    plan = changed(_split(99.96, 0.04), before=_split(100, 0))
    assert "weights[stable]: 100 → 99.96" in plan.to_text() and "weights[canary]: 0 → 0.04" in plan.to_text()


def test_diff_object_applies_the_same_precision():
    old = {"strategy": "weighted", "weights": {"a": 100, "b": 0}}
    assert diff_object("traffic", {**old, "weights": {"a": 9, "b": 1}}, {**old, "weights": {"a": 90, "b": 10}},
                       deployment_keys=["a", "b"]) is None  # shares, not raw numbers
    assert diff_object("traffic", old, {**old, "weights": {"a": 99.96, "b": 0.04}}, deployment_keys=["a", "b"])
    assert diff_object("traffic", old, {**old, "weights": {"a": 99.999, "b": 0.001}}, deployment_keys=["a", "b"]) \
        is None
