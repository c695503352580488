"""The plan of a stack with `target: kubernetes`: what replaces pods in a cluster (any pod-template change), the
steps Kubernetes needs by hand, and the local target's answers left as they were."""

from __future__ import annotations

import pytest
from plan_fixtures import (
    assert_redeploys,
    base,
    changed,
    does,
    drop_deployment_field,
    set_deployment,
    set_role,
    set_traffic,
    stack,
)
from test_plan_diff import REDEPLOY, _without_nones

from inferstack.plan import PlanContext
from inferstack.targets.kubernetes import RenderOptions, render


def kubernetes_base():
    data = base()
    data["target"] = "kubernetes"
    data["kubernetes"] = {"namespace": "inference"}
    return data


# What differs from the local table (test_plan_diff.REDEPLOY): these replace pods in a cluster, and the subnet does not.
KUBERNETES_REDEPLOY = {
    "graceful period": {"main": "graceful_shutdown_s"},
    "priority": {"main": "priority"},
    "entry role switch": {"prefill": "roles[prefill].entry", "decode": "roles[decode].entry"},
}


@pytest.mark.parametrize("mutation, change_id, roles", [row[1:] for row in REDEPLOY], ids=[row[0] for row in REDEPLOY])
def test_which_changes_replace_pods_in_kubernetes(mutation, change_id, roles):
    name = next(row[0] for row in REDEPLOY if row[1] is mutation)
    expected = KUBERNETES_REDEPLOY.get(name, roles)
    assert_redeploys(changed(_without_nones(mutation), start=kubernetes_base), change_id, expected)


def test_accept_traffic_replaces_pods_in_kubernetes_only():
    def clb(data):
        svc = data["services"][0]
        svc["network_type"] = "clb"
        svc["traffic"] = {"strategy": "by_instance_count"}

    for start, redeploys in ((base, False), (kubernetes_base, True)):
        plan = changed(set_deployment("chat/canary", accept_traffic=False), before=clb, start=start)
        assert bool(plan.change("chat/canary", kind="deployment").redeploy) is redeploys


def test_the_subnet_is_not_rendered_so_it_replaces_no_pod_in_kubernetes():
    move = _without_nones(set_deployment("chat/canary", queue="q-postpaid-b", subnet="subnet-b"))
    local, cluster = changed(move), changed(move, start=kubernetes_base)
    # the queue moves the pods either way; only locally is the subnet a reason too
    assert "subnet" in local.change("chat/canary").redeploy[0].reasons
    assert cluster.change("chat/canary").redeploy[0].reasons == ["queue"]


def test_the_redeploy_matches_a_changed_pod_template_in_the_rendered_objects():
    """The plan's kubernetes answer is what `render` changes: a pod template changes exactly when the plan says the
    role redeploys."""
    for name, mutation, change_id, _ in REDEPLOY:
        old_data = kubernetes_base()
        new_data = kubernetes_base()
        _without_nones(mutation)(new_data)
        old, new = stack(old_data), stack(new_data)
        plan = changed(_without_nones(mutation), start=kubernetes_base)
        before = {o["metadata"]["name"]: o for o in render(old, RenderOptions()).objects if o["kind"] == "Deployment"}
        after = {o["metadata"]["name"]: o for o in render(new, RenderOptions()).objects if o["kind"] == "Deployment"}
        change = plan.change(change_id, kind="deployment")
        redeployed = {r.role for r in change.redeploy}
        svc, dep = change_id.split("/")
        for deployment_name, obj in after.items():
            role = obj["spec"]["template"]["metadata"]["labels"]["inferstack.io/role"]
            if not deployment_name.startswith(f"{svc}-{dep}") or deployment_name not in before:
                continue
            template_changed = obj["spec"]["template"] != before[deployment_name]["spec"]["template"]
            assert template_changed == (role in redeployed), (name, deployment_name)


def test_the_local_target_keeps_its_answers_whatever_the_file_says():
    plan = changed(set_deployment("chat/stable", priority=9), start=kubernetes_base,
                   context=PlanContext(target="local"))
    assert plan.change("chat/stable").redeploy == []
    assert plan.warnings == []


# --- the steps Kubernetes needs by hand ---------------------------------------------------------------------------

METRICS = {"metrics": [{"metric": "cpu", "target": 60, "min": 2, "max": 6}]}
SCHEDULE = {"schedules": [{"start": "0 9 * * *", "end": "0 18 * * *", "replicas": 5}]}


def test_turning_autoscaling_on_names_the_replica_hand_over():
    plan = changed(does(drop_deployment_field("chat/stable", "replicas"),
                        set_deployment("chat/stable", autoscaling=METRICS)), start=kubernetes_base)
    [warning] = plan.change("chat/stable").warnings
    assert "kubectl apply edit-last-applied deployment/chat-stable -n inference" in warning
    assert "resets it to 1 replica" in warning and "HorizontalPodAutoscaler" in warning
    assert plan.change("chat/stable").redeploy == []  # still no pod replaced
    local = changed(does(drop_deployment_field("chat/stable", "replicas"),
                         set_deployment("chat/stable", autoscaling=METRICS)))
    assert local.warnings == []


def test_turning_autoscaling_off_names_the_autoscaler_to_delete():
    plan = changed(does(set_deployment("chat/stable", replicas=3), drop_deployment_field("chat/stable", "autoscaling")),
                   before=set_deployment("chat/stable", autoscaling=METRICS), start=kubernetes_base)
    assert any("delete HorizontalPodAutoscaler inference/chat-stable" in w for w in plan.warnings)


def test_kedas_hpa_goes_with_its_scaled_object_and_an_hpa_is_adopted():
    to_hpa = changed(set_deployment("chat/stable", autoscaling=METRICS),
                     before=set_deployment("chat/stable", autoscaling={**METRICS, **SCHEDULE}), start=kubernetes_base)
    assert any("kubectl delete scaledobject chat-stable -n inference" in w for w in to_hpa.warnings)
    to_keda = changed(set_deployment("chat/stable", autoscaling={**METRICS, **SCHEDULE}),
                      before=set_deployment("chat/stable", autoscaling=METRICS), start=kubernetes_base)
    assert to_keda.warnings == []  # the ScaledObject adopts the HPA (transfer-hpa-ownership)


def test_a_role_of_a_multi_role_deployment_is_named_with_its_role():
    plan = changed(does(set_role("gen/pd", "decode", replicas=None, autoscaling=METRICS)), start=kubernetes_base)
    assert any("deployment/gen-pd-decode" in w for w in plan.warnings)


def test_weight_moved_to_an_idle_deployment_warns_of_503_shares():
    plan = changed(set_traffic("chat", weights={"stable": 50, "canary": 50}),
                   before=set_deployment("chat/canary", use_idle=True), start=kubernetes_base)
    assert any("canary use idle resources" in w and "503" in w for w in plan.change("chat/traffic").warnings)
