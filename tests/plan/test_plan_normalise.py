"""Table-driven: two writings of the same meaning plan no change; a changed secret redeploys and stays masked."""

from __future__ import annotations

import copy
import json

import pytest
from plan_fixtures import (
    INVENTORY,
    NEW_SECRET,
    SECRET,
    add_deployment,
    base,
    changed,
    deployment,
    does,
    drop_deployment_field,
    remove_deployment,
    service,
    set_deployment,
    set_role,
    set_service,
    set_traffic,
    stack,
)

from inferstack.plan import PlanContext, diff, diff_object


def _three_way(weights):
    return does(add_deployment("chat", "shadow"), set_traffic("chat", weights=weights))


def _flat(data):
    """chat as a legacy (flat) service: its one deployment inline."""
    svc = service(data, "chat")
    dep = dict(deployment(data, "chat/stable"))
    del svc["deployments"], svc["traffic"], dep["name"], dep["key"]
    svc.update(dep)


def _as_list_form(data):
    svc = service(data, "chat")
    dep = {k: svc.pop(k) for k in list(svc) if k not in ("name", "key", "resource_group", "vpc")}
    svc["deployments"] = [{"name": "Default", "key": "default", **dep}]


def _clb_by_instance_count(accept):
    def run(data):
        service(data, "chat").update(network_type="clb", traffic={"strategy": "by_instance_count"})
        if accept is not None:
            deployment(data, "chat/canary")["accept_traffic"] = accept
    return run


def _reorder_env(data):
    env = deployment(data, "chat/stable")["env"]
    env.reverse()


def _reorder_deployments(data):
    service(data, "chat")["deployments"].reverse()


def _autoscaled(replicas):
    return set_deployment("chat/canary", replicas=replicas, autoscaling={"metrics": [
        {"metric": "qps", "target": 20, "min": 1, "max": 5}]})


def _weight_sugar(data):
    svc = service(data, "chat")
    for d in svc["deployments"]:
        d["weight"] = svc["traffic"]["weights"][d["key"]]
    del svc["traffic"]


# id, change to the base stack (old), further change on a copy (new): both mean the same
SAME_MEANING = [
    ("weights 33.33/33.33/33.34 are thirds", _three_way({"stable": 33.33, "canary": 33.33, "shadow": 33.34}),
     set_traffic("chat", weights={"stable": 100 / 3, "canary": 100 / 3, "shadow": 100 / 3})),
    ("graceful period omitted is 30", None, set_deployment("chat/stable", graceful_shutdown_s=30)),
    ("3 is 3.0", None, does(set_deployment("chat/stable", replicas=4.0, graceful_shutdown_s=30.0,
                                           rolling_update={"max_unavailable": 25.0, "max_surge": 25.0}),
                            set_traffic("chat", weights={"stable": 90.0, "canary": 10.0}))),
    ("explicit defaults of a deployment", None, set_deployment(
        "chat/stable", priority=5, use_idle=False, numa_affinity=False, ports={"listen": 8080, "call": []},
        probes={}, mounts=[], inference_mode="standard")),
    ("explicit defaults of a service and its traffic", None, does(
        set_service("chat", network_type="public_gateway", ports=[8000]),
        set_traffic("chat", strategy="weighted", timeout_s=60, retries=1, header_rules=[]))),
    ("explicit defaults of a role", None, set_role("gen/pd", "decode", entry=False, env=[],
                                                  rolling_update={"max_unavailable": 25, "max_surge": 25})),
    ("replicas under autoscaling are status", _autoscaled(1), _autoscaled(3)),
    ("accept_traffic omitted is on", _clb_by_instance_count(None), _clb_by_instance_count(True)),
    ("env order", None, _reorder_env),
    ("deployment order", None, _reorder_deployments),
    ("weight on a deployment is traffic.weights", None, _weight_sugar),
    ("a secret unchanged", None, set_deployment("chat/stable", env=[
        {"name": "MODE", "value": "fast"}, {"name": "API_KEY", "secret": SECRET}])),
    ("shared env or a role's own env", set_deployment("gen/pd", env=[{"name": "X", "value": "1"}]),
     does(set_deployment("gen/pd", env=[]), set_role("gen/pd", "prefill", env=[{"name": "X", "value": "1"}]),
          set_role("gen/pd", "decode", env=[{"name": "X", "value": "1"}]))),
    ("flat form switched to the list form keeping default", _flat, _as_list_form),
]


@pytest.mark.parametrize("before, mutation", [row[1:] for row in SAME_MEANING], ids=[row[0] for row in SAME_MEANING])
def test_same_meaning_plans_no_change(before, mutation):
    plan = changed(mutation, before=before)
    assert plan.empty, plan.to_text()
    # (a replicas edit under autoscaling is no change, and is warned about: see the next test)
    assert [w for w in plan.warnings if "is not applied: autoscaling is on" not in w] == [], plan.to_text()


def test_a_replicas_edit_under_autoscaling_is_no_change_but_a_warning_naming_the_field():
    plan = changed(_autoscaled(3), before=_autoscaled(1))
    assert plan.empty
    assert plan.warnings == [("chat/canary: `replicas` 1 → 3 is not applied: autoscaling is on, so `replicas` only "
                             "sets the starting count (the autoscaler owns the live count; turn autoscaling off to "
                             "set it)")]
    assert "! chat/canary: `replicas` 1 → 3 is not applied" in plan.to_text()
    priced = changed(_autoscaled(3), before=_autoscaled(1), context=PlanContext(inventory=INVENTORY))
    assert priced.cost.changed is False and "Cost" not in priced.to_text()  # the autoscaled count stays


def test_weights_that_differ_as_shares_are_a_change():
    plan = changed(set_traffic("chat", weights={"stable": 50, "canary": 25, "shadow": 25}),
                   before=_three_way({"stable": 33.33, "canary": 33.33, "shadow": 33.34}))
    assert [p.path for p in plan.change("chat/traffic").properties] == ["weights[stable]", "weights[canary]",
                                                                         "weights[shadow]"]


def test_a_zero_weight_means_no_entry_until_its_deployment_is_deleted():
    zero = set_traffic("chat", weights={"stable": 100, "canary": 0})
    assert changed(set_traffic("chat", weights={"stable": 100}), before=zero).empty
    plan = changed(does(remove_deployment("chat", "canary"), set_traffic("chat", weights={"stable": 100})),
                   before=zero)
    assert [(p.path, p.old, p.new) for p in plan.change("chat/traffic").properties] == [
        ("weights[canary]", 0, None)]
    assert [c.id for c in plan.changes] == ["chat/traffic", "chat/canary"]


def test_replicas_under_autoscaling_are_ignored_but_autoscaling_bounds_are_compared():
    plan = changed(set_deployment("chat/canary", autoscaling={"metrics": [
        {"metric": "qps", "target": 20, "min": 1, "max": 9}]}), before=_autoscaled(2))
    change = plan.change("chat/canary")
    assert change.paths == ["autoscaling.metrics"]
    assert change.redeploy == []


def test_a_changed_secret_redeploys_and_never_shows_its_value():
    plan = changed(set_deployment("chat/stable", env=[{"name": "MODE", "value": "fast"},
                                                      {"name": "API_KEY", "secret": NEW_SECRET}]))
    change = plan.change("chat/stable")
    assert [(p.path, p.old, p.new) for p in change.properties] == [("env[API_KEY]", "[secret]", "[secret]")]
    assert [r.role for r in change.redeploy] == ["main"]
    shown = [plan.to_text(), json.dumps(plan.to_dict(), ensure_ascii=False), repr(plan), str(change.target)]
    for text in shown:
        assert SECRET not in text and NEW_SECRET not in text
    assert "[secret]" in shown[0] and "[secret]" in shown[1]


def test_a_value_made_secret_is_a_change_shown_masked():
    plan = changed(set_deployment("chat/stable", env=[{"name": "MODE", "secret": "fast"},
                                                      {"name": "API_KEY", "secret": SECRET}]))
    assert [(p.path, p.old, p.new) for p in plan.change("chat/stable").properties] == [
        ("env[MODE]", "fast", "[secret]")]


def test_an_explicit_accept_traffic_left_behind_by_leaving_clb_is_removed_without_redeploy():
    leave_clb = does(set_service("chat", network_type="public_gateway", traffic={"weights": {"stable": 90,
                                                                                             "canary": 10}}),
                     drop_deployment_field("chat/canary", "accept_traffic"))
    plan = changed(leave_clb, before=_clb_by_instance_count(True))
    canary = plan.change("chat/canary")
    assert [(p.path, p.old, p.new) for p in canary.properties] == [("accept_traffic", True, None)]
    assert canary.redeploy == []


def test_stack_target_and_kubernetes_options_are_not_part_of_the_plan():
    old = base()
    new = copy.deepcopy(old)
    new["target"] = "kubernetes"
    new["kubernetes"] = {"namespace": "prod"}
    assert diff(stack(old), stack(new)).empty


def test_diff_object_normalises_like_diff():
    old = stack(base()).services[0]
    new_data = base()
    set_deployment("chat/stable", graceful_shutdown_s=30.0, replicas=4.0)(new_data)
    new = stack(new_data).services[0]
    assert diff_object("deployment", old.deployments[0].to_data(), new.deployments[0].to_data(),
                       PlanContext(), service_key="chat") is None
    thirds = {"strategy": "weighted", "weights": {"a": 33.33, "b": 33.33, "c": 33.34}}
    exact = {"strategy": "weighted", "weights": {"a": 100 / 3, "b": 100 / 3, "c": 100 / 3}}
    assert diff_object("traffic", thirds, exact, deployment_keys=["a", "b", "c"]) is None
