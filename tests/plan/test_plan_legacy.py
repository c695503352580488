"""The legacy (flat) form: converting it redeploys `Default`, and so does any edit of `Default` once converted."""

from __future__ import annotations

import pytest
from plan_fixtures import add_deployment, changed, deployment, does, set_deployment, set_traffic

from inferstack.plan import PlanContext, diff_object


def _flat_chat():
    """A stack whose only service `chat` is written in the flat form (deployment fields inline)."""
    return {"services": [{
        "name": "chat", "resource_group": "rg-default", "vpc": "vpc-default",
        "image": {"preset": "inferstack/echo"}, "queue": "q-postpaid-a", "compute_spec": "cpu-small",
        "replicas": 3, "rolling_update": {"max_unavailable": 25, "max_surge": 25},
        "subnet": "subnet-a", "security_group": "sg-default"}]}


def _to_list_form(data):
    svc = data["services"][0]
    dep = {k: svc.pop(k) for k in list(svc) if k not in ("name", "key", "resource_group", "vpc")}
    svc["deployments"] = [{"name": "Default", "key": "default", **dep}]


def _add_canary(data):
    if "deployments" not in data["services"][0]:
        _to_list_form(data)
    add_deployment("chat", "canary")(data)
    set_traffic("chat", weights={"default": 90, "canary": 10})(data)


CONVERTED = PlanContext(converted={"chat"})

# id, change before (on the old stack), change, context, does Default redeploy, a reason expected
LEGACY = [
    ("first added deployment converts and redeploys Default", None, _add_canary, None, True,
     "conversion: first added deployment 'canary'"),
    ("first added deployment after switching to the list form", _to_list_form, _add_canary, None, True,
     "conversion: first added deployment 'canary'"),
    ("switching to the list form alone is no change", None, _to_list_form, None, False, None),
    ("an edit of Default before conversion follows the usual rules", None,
     lambda d: d["services"][0].update(replicas=5), None, False, None),
    ("any edit of Default once converted redeploys it", _add_canary, set_deployment("chat/default", replicas=5),
     CONVERTED, True, "replicas"),
    ("a deployment added once converted leaves Default alone", _add_canary,
     does(add_deployment("chat", "shadow"), set_traffic("chat", weights={"default": 80, "canary": 10, "shadow": 10})),
     CONVERTED, False, None),
    ("weights are traffic, not an edit of Default", _add_canary,
     set_traffic("chat", weights={"default": 50, "canary": 50}), CONVERTED, False, None),
]


@pytest.mark.parametrize("before, mutation, context, redeploys, reason", [row[1:] for row in LEGACY],
                         ids=[row[0] for row in LEGACY])
def test_default_redeploys_on_conversion_and_on_any_edit_once_converted(before, mutation, context, redeploys, reason):
    plan = changed(mutation, before=before, context=context, start=_flat_chat)
    change = plan.change("chat/default", kind="deployment")
    impacts = change.redeploy if change else []
    assert bool(impacts) is redeploys, plan.to_text()
    if reason:
        assert reason in impacts[0].reasons
        assert (impacts[0].replicas, impacts[0].dip, impacts[0].surge) == (3, 0, 1)


def test_conversion_with_max_unavailable_100_warns_about_default():
    plan = changed(_add_canary, before=lambda d: d["services"][0].update(
        rolling_update={"max_unavailable": 100, "max_surge": 0}), start=_flat_chat)
    [warning] = plan.warnings
    assert "Default" in warning and "100 %" in warning and "3 instance(s)" in warning


def test_conversion_alone_is_an_update_of_default_without_properties():
    plan = changed(_add_canary, start=_flat_chat)
    change = plan.change("chat/default")
    assert (change.action, change.properties) == ("update", [])
    assert [(c.kind, c.id) for c in plan.changes] == [
        ("deployment", "chat/default"), ("deployment", "chat/canary"), ("traffic", "chat/traffic")]


def test_diff_object_redeploys_an_edited_default_of_a_converted_service():
    data = _flat_chat()
    _add_canary(data)
    old = deployment(data, "chat/default")
    new = {**old, "graceful_shutdown_s": 60}
    plain = diff_object("deployment", old, new, service_key="chat")
    assert plain.redeploy == []
    converted = diff_object("deployment", old, new, CONVERTED, service_key="chat")
    assert [r.reasons for r in converted.redeploy] == [["graceful_shutdown_s"]]
