"""The legacy (flat) form: the first added deployment or the first edit of `Default`, whichever comes first, redeploys
`Default` exactly once (the conversion); afterwards `Default` follows the usual update rules."""

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
EDIT_REPLICAS = "first edit of Default"

# id, change before (on the old stack), change, context, does Default redeploy, a reason expected
LEGACY = [
    ("first added deployment converts and redeploys Default", None, _add_canary, None, True,
     "legacy conversion: first added deployment 'canary'"),
    ("first added deployment after switching to the list form", _to_list_form, _add_canary, None, True,
     "legacy conversion: first added deployment 'canary'"),
    ("switching to the list form alone is no change", None, _to_list_form, None, False, None),
    ("a first edit of Default converts it, replicas only included", None,
     lambda d: d["services"][0].update(replicas=5), None, True, "legacy conversion: first edit of Default"),
    ("a first edit of Default in the list form converts it too", _to_list_form,
     set_deployment("chat/default", graceful_shutdown_s=60), None, True, "legacy conversion: first edit of Default"),
    ("once converted, a replicas edit of Default keeps its instances", _add_canary,
     set_deployment("chat/default", replicas=5), CONVERTED, False, None),
    ("once converted, an image edit of Default redeploys it for the image alone", _add_canary,
     set_deployment("chat/default", image={"custom": "registry.example.com/m:2"}), CONVERTED, True, "image.custom"),
    ("a deployment added once converted leaves Default alone", _add_canary,
     does(add_deployment("chat", "shadow"), set_traffic("chat", weights={"default": 80, "canary": 10, "shadow": 10})),
     CONVERTED, False, None),
    ("weights are traffic, not an edit of Default", _add_canary,
     set_traffic("chat", weights={"default": 50, "canary": 50}), CONVERTED, False, None),
]


@pytest.mark.parametrize("before, mutation, context, redeploys, reason", [row[1:] for row in LEGACY],
                         ids=[row[0] for row in LEGACY])
def test_default_redeploys_once_on_conversion_then_follows_the_usual_rules(before, mutation, context, redeploys,
                                                                            reason):
    plan = changed(mutation, before=before, context=context, start=_flat_chat)
    change = plan.change("chat/default", kind="deployment")
    impacts = change.redeploy if change else []
    assert bool(impacts) is redeploys, plan.to_text()
    if reason:
        assert reason in impacts[0].reasons
    converting = reason is not None and reason.startswith("legacy conversion")
    assert (change is not None and change.legacy_conversion is not None) is converting
    assert ("redeploys Default (legacy conversion" in plan.to_text()) is converting
    if converting:
        assert [r.reasons[-1] for r in impacts] == [reason]  # the conversion, named once
        assert (impacts[0].replicas, impacts[0].dip, impacts[0].surge) == (3, 0, 1)


def test_an_added_deployment_and_an_edit_of_default_together_redeploy_default_once():
    plan = changed(does(_add_canary, set_deployment("chat/default", replicas=5)), start=_flat_chat)
    [impact] = plan.change("chat/default").redeploy
    assert impact.reasons == ["legacy conversion: first added deployment 'canary'"]
    assert plan.change("chat/default").legacy_conversion == "first added deployment 'canary'"
    assert plan.to_dict()["changes"][0]["legacy_conversion"] == "first added deployment 'canary'"


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


def test_diff_object_redeploys_default_only_for_the_conversion_it_is_told_of():
    data = _flat_chat()
    _add_canary(data)
    old = deployment(data, "chat/default")
    new = {**old, "graceful_shutdown_s": 60}
    assert diff_object("deployment", old, new, service_key="chat").redeploy == []
    assert diff_object("deployment", old, new, CONVERTED, service_key="chat").redeploy == []
    converting = diff_object("deployment", old, new, service_key="chat", legacy_conversion=EDIT_REPLICAS)
    assert [r.reasons for r in converting.redeploy] == [["legacy conversion: first edit of Default"]]
    alone = diff_object("deployment", old, dict(old), service_key="chat",
                        legacy_conversion="first added deployment 'canary'")
    assert alone is not None and alone.properties == [] and len(alone.redeploy) == 1
