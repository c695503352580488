"""What a plan says about progressive releases: how a change will be released, what a failed release left live, and
what a cluster cannot do."""

from __future__ import annotations

from plan_fixtures import changed, does, set_deployment, set_traffic

from inferstack.plan import PlanContext

POLICY = {"steps": [10, 50, 100], "bake_time_s": 30, "gates": {"max_error_rate": 1, "max_p99_ms": 500}}
ROLLED_BACK = {
    "kind": "traffic", "phase": "RolledBack", "generation": 2, "steps": [10.0, 50.0, 100.0], "step": 1,
    "from": {"stable": 90.0, "canary": 10.0}, "to": {"stable": 0.0, "canary": 100.0},
    "weights": {"stable": 90.0, "canary": 10.0}, "reason": "canary: error rate 20 % > 1 % (4 of 20 requests failed)",
    "live_weights": {"stable": 90.0, "canary": 10.0},
}


def with_policy(data):
    set_traffic("chat", progressive=POLICY)(data)


def test_a_weight_change_under_a_policy_says_how_it_shifts():
    plan = changed(set_traffic("chat", weights={"stable": 0, "canary": 100}), before=with_policy)
    traffic = plan.change("chat/traffic", kind="traffic")
    assert traffic.release is not None
    assert "from the declared weights stable 90, canary 10 to stable 0, canary 100" in traffic.release
    assert "steps of 10, 50, 100 %" in traffic.release and "error rate ≤ 1 %" in traffic.release
    assert "p99 ≤ 500 ms" in traffic.release and "rolls back" in traffic.release
    assert f"progressive: {traffic.release}" in plan.to_text()
    assert plan.to_dict()["changes"][-1]["release"] == traffic.release


def test_a_change_that_moves_no_weight_is_not_a_release():
    plan = changed(set_traffic("chat", timeout_s=30), before=with_policy)
    assert plan.change("chat/traffic", kind="traffic").release is None


def test_a_failed_release_is_said_on_an_empty_plan_with_the_gate_and_that_the_same_spec_does_not_retry_it():
    target = does(with_policy, set_traffic("chat", weights={"stable": 0, "canary": 100}))
    plan = changed(lambda d: None, before=target,
                   context=PlanContext(releases={"chat/traffic": {**ROLLED_BACK, "generation": 2}}))
    assert plan.empty
    text = plan.to_text()
    assert "No changes." in text
    assert "chat/traffic: the release of generation 2 rolled back at step 1 of 3 (10 %): canary: error rate 20 % > " \
           "1 % (4 of 20 requests failed)" in text
    assert "live weights stable 90, canary 10, declared stable 0, canary 100" in text
    assert "applying the same spec does not retry it" in text and "--retry-release" in text


def test_a_change_after_a_failed_release_starts_from_what_is_live():
    target = does(with_policy, set_traffic("chat", weights={"stable": 0, "canary": 100}))
    plan = changed(set_traffic("chat", weights={"stable": 50, "canary": 50}), before=target,
                   context=PlanContext(releases={"chat/traffic": ROLLED_BACK}))
    traffic = plan.change("chat/traffic", kind="traffic")
    assert "from the live weights stable 90, canary 10 to stable 50, canary 50" in traffic.release
    assert any("this change starts a new release from what is live" in w for w in plan.warnings)


def test_a_redeploy_under_a_deployment_policy_says_it_runs_as_a_canary():
    plan = changed(set_deployment("chat/stable", image={"custom": "registry/llm:2"}),
                   before=set_deployment("chat/stable", progressive={"steps": [5, 25, 100], "bake_time_s": 60}))
    change = plan.change("chat/stable", kind="deployment")
    assert change.redeploy and "redeploys as a canary: new-revision instances take 5, 25 % of its requests" in \
        change.release


def test_adding_a_policy_redeploys_nothing_locally_but_replaces_pods_on_kubernetes():
    add = set_deployment("chat/stable", progressive={})
    local = changed(add).change("chat/stable", kind="deployment")
    assert local.action == "update" and local.redeploy == [] and local.release is None
    cluster = changed(add, context=PlanContext(target="kubernetes")).change("chat/stable", kind="deployment")
    assert [r.role for r in cluster.redeploy] == ["main"]


def test_on_kubernetes_a_traffic_shift_between_deployments_is_warned():
    plan = changed(set_traffic("chat", weights={"stable": 0, "canary": 100}), before=with_policy,
                   context=PlanContext(target="kubernetes"))
    assert any("traffic.progressive" in w and "no Flagger equivalent" in w for w in plan.warnings)
    assert plan.change("chat/traffic", kind="traffic").release is None  # the cluster applies the weights at once
    local = changed(set_traffic("chat", weights={"stable": 0, "canary": 100}), before=with_policy)
    assert not any("Flagger" in w for w in local.warnings)
