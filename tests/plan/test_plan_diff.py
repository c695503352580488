"""Table-driven: what each class of property change means — update vs replace, redeploy vs not, and the rollout
figures of a redeploy."""

from __future__ import annotations

import pytest
from plan_fixtures import (
    add_deployment,
    assert_redeploys,
    changed,
    deployment,
    does,
    remove_deployment,
    service,
    set_deployment,
    set_role,
    set_service,
    set_traffic,
)

from inferstack.plan import PlanContext


def _move_chat_to_vpc_two(data):
    service(data, "chat")["vpc"] = "vpc-two"
    for d in service(data, "chat")["deployments"]:
        d.update(subnet="subnet-two", security_group="sg-two")


def _move_chat_to_rg_two(data):
    service(data, "chat")["resource_group"] = "rg-two"
    for d in service(data, "chat")["deployments"]:
        d.update(queue="q-two")


def _inventory(kind, name, **fields):
    def run(data):
        next(o for o in data["inventory"][kind] if o["name"] == name).update(fields)
    return run


# id, mutation, change (kind, id), action, replace_paths
UPDATE_OR_REPLACE = [
    ("service description", set_service("chat", description="now with canary"), ("service", "chat"), "update", []),
    ("service name (key kept)", set_service("chat", name="聊天"), ("service", "chat"), "update", []),
    ("service network type", set_service("chat", network_type="private_gateway"), ("service", "chat"), "update", []),
    ("service call ports", set_service("chat", ports=[8000, 8443]), ("service", "chat"), "update", []),
    ("service vpc", _move_chat_to_vpc_two, ("service", "chat"), "replace", ["vpc"]),
    ("service resource group", _move_chat_to_rg_two, ("service", "chat"), "replace", ["resource_group"]),
    ("deployment of a service whose vpc changes", _move_chat_to_vpc_two, ("deployment", "chat/stable"), "replace",
     ["service.vpc"]),
    ("traffic of a service whose vpc changes", _move_chat_to_vpc_two, ("traffic", "chat/traffic"), "replace",
     ["service.vpc"]),
    ("deployment name", set_deployment("chat/stable", name="稳定版"), ("deployment", "chat/stable"), "update", []),
    ("deployment queue and subnet", set_deployment("chat/canary", queue="q-postpaid-b", subnet="subnet-b"),
     ("deployment", "chat/canary"), "update", []),
    ("deployment image", set_deployment("chat/stable", image={"custom": "registry.example.com/llm:2"}),
     ("deployment", "chat/stable"), "update", []),
    ("traffic weights", set_traffic("chat", weights={"stable": 50, "canary": 50}), ("traffic", "chat/traffic"),
     "update", []),
    ("traffic header rule", set_traffic("chat", header_rules=[{"header": "x-canary", "value": "1",
                                                              "deployment": "canary"}]),
     ("traffic", "chat/traffic"), "update", []),
    ("inventory queue capacity", _inventory("queues", "q-two", capacity={"cpu-small": 64}),
     ("inventory", "queues/q-two"), "update", []),
    ("inventory security group rules", _inventory("security_groups", "sg-two", ingress=[]),
     ("inventory", "security_groups/sg-two"), "update", []),
]


@pytest.mark.parametrize("mutation, target, action, replace_paths",
                         [row[1:] for row in UPDATE_OR_REPLACE], ids=[row[0] for row in UPDATE_OR_REPLACE])
def test_only_identity_vpc_and_resource_group_force_a_replace(mutation, target, action, replace_paths):
    plan = changed(mutation)
    change = plan.change(target[1], kind=target[0])
    assert change is not None, plan.to_text()
    assert change.action == action
    assert change.replace_paths == replace_paths


def test_a_replaced_service_takes_every_instance_of_its_deployments_down_and_says_so():
    plan = changed(_move_chat_to_vpc_two)
    stable = plan.change("chat/stable", kind="deployment")
    assert [(r.role, r.replicas, r.dip, r.surge) for r in stable.redeploy] == [("main", 4, 4, 0)]
    assert any("chat is replaced" in w for w in plan.warnings)


# id, mutation, change id, roles that redeploy ({} = the change does not redeploy), a reason expected per role
REDEPLOY = [
    ("image", set_deployment("chat/stable", image={"custom": "registry.example.com/llm:2"}), "chat/stable",
     {"main": "image.custom"}),
    ("command", set_deployment("chat/stable", command=["serve", "--fast"]), "chat/stable", {"main": "command"}),
    ("env value", set_deployment("chat/stable", env=[{"name": "MODE", "value": "slow"}, {"name": "API_KEY",
                                                                                         "secret": "hunter2-very-secret"}]),
     "chat/stable", {"main": "env[MODE]"}),
    ("env added", set_deployment("chat/canary", env=[{"name": "NEW", "value": "1"}]), "chat/canary",
     {"main": "env[NEW]"}),
    ("compute spec", set_deployment("chat/canary", compute_spec="cpu-large"), "chat/canary",
     {"main": "compute_spec"}),
    ("probes", set_deployment("chat/stable", probes={"readiness": {"http": {"path": "/ready"}}}), "chat/stable",
     {"main": "probes.readiness"}),
    ("mounts", set_deployment("chat/stable", mounts=[{"source": "models", "path": "/models"}]), "chat/stable",
     {"main": "mounts[/models]"}),
    ("model", set_deployment("chat/stable", model={"registry": "qwen2-7b", "version": "3"}), "chat/stable",
     {"main": "model"}),
    ("listen port", set_deployment("chat/stable", ports={"listen": 9000}), "chat/stable", {"main": "ports.listen"}),
    ("queue", set_deployment("chat/canary", queue="q-postpaid-b", subnet="subnet-b"), "chat/canary",
     {"main": "queue"}),
    ("idle resources", set_deployment("chat/canary", use_idle=True), "chat/canary", {"main": "use_idle"}),
    ("NUMA affinity", set_deployment("chat/canary", numa_affinity=True), "chat/canary", {"main": "numa_affinity"}),
    ("replicas", set_deployment("chat/stable", replicas=6), "chat/stable", {}),
    ("autoscaling added", set_deployment("chat/canary", autoscaling={"metrics": [
        {"metric": "qps", "target": 20, "min": 1, "max": 5}]}), "chat/canary", {}),
    ("graceful period", set_deployment("chat/stable", graceful_shutdown_s=120), "chat/stable", {}),
    ("rolling update policy", set_deployment("chat/stable", rolling_update={"max_unavailable": 0, "max_surge": 50}),
     "chat/stable", {}),
    ("priority", set_deployment("chat/stable", priority=9), "chat/stable", {}),
    ("security group", set_deployment("chat/stable", security_group="sg-loopback"), "chat/stable", {}),
    ("display name", set_deployment("chat/stable", name="稳定版"), "chat/stable", {}),
    ("role command: that role only", set_role("gen/pd", "prefill", command=["prefill", "--fast"]), "gen/pd",
     {"prefill": "roles[prefill].command"}),
    ("role compute spec: that role only", set_role("gen/pd", "decode", compute_spec="cpu-large"), "gen/pd",
     {"decode": "roles[decode].compute_spec"}),
    ("deployment image: every role", set_deployment("gen/pd", image={"url": "https://images.example.com/pd:2"}),
     "gen/pd", {"prefill": "image.url", "decode": "image.url"}),
    ("shared env: every role", set_deployment("gen/pd", env=[{"name": "SHARED", "value": "1"}]), "gen/pd",
     {"prefill": "roles[prefill].env[SHARED]", "decode": "roles[decode].env[SHARED]"}),
    ("role replicas", set_role("gen/pd", "decode", replicas=8), "gen/pd", {}),
    ("entry role switch", does(set_role("gen/pd", "prefill", entry=False), set_role("gen/pd", "decode", entry=True)),
     "gen/pd", {}),
    ("role added: the others get its endpoints", lambda d: deployment(d, "gen/pd")["roles"].append(
        {"name": "encode", "compute_spec": "cpu-small", "replicas": 1, "rolling_update": {}}), "gen/pd",
     {"prefill": "roles[encode]", "decode": "roles[encode]"}),
    ("standard to multi-role", set_deployment(
        "chat/canary", inference_mode="multi_role", compute_spec=None, replicas=None, rolling_update=None, roles=[
            {"name": "prefill", "entry": True, "compute_spec": "cpu-small", "replicas": 1, "rolling_update": {}},
            {"name": "decode", "compute_spec": "cpu-small", "replicas": 1, "rolling_update": {}}]),
     "chat/canary", {"prefill": "inference_mode", "decode": "inference_mode"}),
]


def _without_nones(mutation):
    def run(data):
        mutation(data)
        for svc in data["services"]:
            for d in svc["deployments"]:
                for k in [k for k, v in d.items() if v is None]:
                    del d[k]
    return run


@pytest.mark.parametrize("mutation, change_id, roles", [row[1:] for row in REDEPLOY], ids=[row[0] for row in REDEPLOY])
def test_which_changes_redeploy_which_roles(mutation, change_id, roles):
    assert_redeploys(changed(_without_nones(mutation)), change_id, roles)


def test_a_role_removed_and_another_added_redeploys_the_role_that_stays():
    def swap(data):
        roles = deployment(data, "gen/pd")["roles"]
        roles[1] = {"name": "encode", "compute_spec": "cpu-small", "replicas": 1, "rolling_update": {}}

    change = changed(swap).change("gen/pd", kind="deployment")
    assert [(r.role, sorted(r.reasons)) for r in change.redeploy] == [("prefill", ["roles[decode]", "roles[encode]"])]


def test_weights_change_only_the_traffic_object():
    plan = changed(set_traffic("chat", weights={"stable": 50, "canary": 50}))
    assert [(c.kind, c.id) for c in plan.changes] == [("traffic", "chat/traffic")]
    assert [(p.path, p.old, p.new) for p in plan.changes[0].properties] == [
        ("weights[stable]", 90, 50), ("weights[canary]", 10, 50)]
    assert plan.redeploys == []


def test_a_redeploy_dips_and_surges_by_the_rolling_update_at_the_spec_count():
    plan = changed(set_deployment("chat/stable", command=["serve"]))
    [impact] = plan.change("chat/stable").redeploy
    assert (impact.role, impact.replicas, impact.dip, impact.surge) == ("main", 4, 1, 1)


def test_a_redeploy_dips_and_surges_at_the_live_count_when_known():
    context = PlanContext(current_replicas={("chat", "stable", "main"): 10})
    plan = changed(set_deployment("chat/stable", command=["serve"]), context=context)
    [impact] = plan.change("chat/stable").redeploy
    assert (impact.replicas, impact.dip, impact.surge) == (10, 2, 3)  # 25 %: unavailable rounds down, surge up


def test_a_redeploy_uses_the_new_rolling_update_policy():
    plan = changed(set_deployment("chat/stable", command=["serve"], rolling_update={"max_unavailable": 0,
                                                                                  "max_surge": 100}))
    [impact] = plan.change("chat/stable").redeploy
    assert (impact.dip, impact.surge) == (0, 4)


def test_multi_role_impacts_use_each_roles_own_policy_and_count():
    plan = changed(set_deployment("gen/pd", image={"url": "https://images.example.com/pd:2"}))
    impacts = {r.role: (r.replicas, r.dip, r.surge) for r in plan.change("gen/pd").redeploy}
    assert impacts == {"prefill": (2, 1, 0), "decode": (4, 1, 1)}


def test_a_full_outage_rollout_is_warned_about():
    plan = changed(set_deployment("chat/stable", command=["serve"], rolling_update={"max_unavailable": 100,
                                                                                  "max_surge": 0}))
    assert any("chat/stable" in w and "100 %" in w for w in plan.warnings)
    assert plan.change("chat/stable").warnings == plan.warnings


def test_creates_and_deletes_carry_public_data_and_no_properties():
    plan = changed(does(add_deployment("chat", "shadow"), remove_deployment("chat", "canary"),
                        set_traffic("chat", weights={"stable": 100})))
    created, deleted = plan.change("chat/shadow"), plan.change("chat/canary")
    assert (created.action, created.old, created.new["queue"], created.properties) == (
        "create", None, "q-postpaid-a", [])
    assert (deleted.action, deleted.new, deleted.old["name"]) == ("delete", None, "canary")
