"""`render`: each domain concept becomes the Kubernetes object the mapping promises, valid and stable."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from k8s_checks import problems

from inferstack.spec import Inventory, default_inventory
from inferstack.targets.kubernetes import RenderError, RenderOptions, render, workload_name
from inferstack.targets.kubernetes.names import label_value
from inferstack.targets.kubernetes.units import duration as _duration

PACKAGE = Path(__file__).resolve().parents[2] / "inferstack" / "targets" / "kubernetes"


def dep(name: str, **fields: Any) -> dict[str, Any]:
    d = {"name": name, "image": {"preset": "inferstack/echo"}, "queue": "q-postpaid-a", "compute_spec": "cpu-small",
         "replicas": 1, "rolling_update": {"max_unavailable": 25, "max_surge": 25}, "subnet": "subnet-a",
         "security_group": "sg-default"}
    d.update(fields)
    return d


def service(*deployments: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"services": [{"name": "chat", "resource_group": "rg-default", "vpc": "vpc-default",
                          "deployments": list(deployments), **fields}]}


def with_own_spec(spec: dict[str, Any], deployment: dict[str, Any]) -> dict[str, Any]:
    """A one-deployment stack on a compute spec of its own (and a queue `q-own` offering it)."""
    return {"inventory": {"compute_specs": [spec], "queues": [{
        "name": "q-own", "resource_group": "rg-default", "zone": "zone-a", "billing": "postpaid",
        "capacity": {spec["name"]: 4}}]}, **service({**deployment, "queue": "q-own", "compute_spec": spec["name"]})}


def rendered(stack, **options: Any):
    result = render(stack, RenderOptions(**options))
    minor = int((options.get("gateway_api_version") or stack.kubernetes_options.gateway_api_version).split(".")[1])
    assert problems(result.objects, minor) == []
    return result


def by_kind(result, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in result.objects if o["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


# --- names -----------------------------------------------------------------------------------------------------

def test_long_names_are_hashed_to_63_characters_stably_and_distinctly():
    svc, a, b = "s" * 40, "d" * 39 + "a", "d" * 39 + "b"
    names = {workload_name(svc, a, "prefill"), workload_name(svc, b, "prefill")}
    assert len(names) == 2 and all(len(n) == 63 for n in names)
    assert workload_name(svc, a, "prefill") == workload_name(svc, a, "prefill")
    assert workload_name("chat", "stable") == "chat-stable"


def test_a_key_ending_in_a_dash_still_gives_valid_names_and_label_values(stack_of):
    stack = stack_of(service(dep("v1-", key="v1-"), key="chat-"))
    result = rendered(stack)  # names and label values pass the API server's checks
    (name,) = by_kind(result, "Deployment")
    assert re.fullmatch(r"chat--v1-[0-9a-f]{8}", name)
    assert label_value("v1-") != "v1-" and label_value("v1") == "v1"


def test_two_objects_with_one_name_are_refused_naming_the_clash(stack_of):
    stack = stack_of({"services": [
        {"name": "a-b", "resource_group": "rg-default", "vpc": "vpc-default", "deployments": [dep("c")]},
        {"name": "a", "resource_group": "rg-default", "vpc": "vpc-default", "deployments": [dep("b-c")]}]})
    with pytest.raises(RenderError, match="Deployment 'a-b-c'"):
        render(stack)


def test_objects_come_in_apply_order_with_stable_file_names(stack_of):
    result = rendered(stack_of(service(dep("stable", priority=7))), cluster_bootstrap=True)
    kinds = [o["kind"] for o in result.objects]
    assert kinds == ["PriorityClass", "NetworkPolicy", "Service", "Deployment", "PodDisruptionBudget", "HTTPRoute"]
    assert [name for name, _ in result.files()] == [
        "00-priorityclass-inferstack-priority-7.yaml", "02-networkpolicy-chat-stable.yaml",
        "03-service-chat-stable.yaml", "04-deployment-chat-stable.yaml", "05-poddisruptionbudget-chat-stable.yaml",
        "08-httproute-chat.yaml"]


# --- the workload ----------------------------------------------------------------------------------------------

def test_deployment_carries_replicas_the_local_rolling_update_bounds_command_and_grace_period(stack_of):
    stack = stack_of(service(dep("stable", replicas=3, command=["serve", "--port", "8080"],
                                 rolling_update={"max_unavailable": 12.5, "max_surge": 12.5},
                                 graceful_shutdown_s=7.2)))
    d = by_kind(rendered(stack), "Deployment")["chat-stable"]
    assert d["spec"]["replicas"] == 3
    # 12.5 % of 3: surge up to 1, unavailable down to 0 — the counts the local runtime uses (RollingUpdate.bounds)
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert container(d)["command"] == ["serve", "--port", "8080"]
    # the graceful period after the default 5 s preStop delay: 5 + 7.2, rounded up
    assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 13


def test_grace_period_defaults_to_30_seconds_after_the_prestop_delay(stack_of):
    d = by_kind(rendered(stack_of(service(dep("stable")))), "Deployment")["chat-stable"]
    assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 35
    assert container(d)["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}


def test_bounds_that_round_to_zero_both_leave_one_instance_unavailable(stack_of):
    stack = stack_of(service(dep("stable", rolling_update={"max_unavailable": 0.5, "max_surge": 0})))
    d = by_kind(rendered(stack), "Deployment")["chat-stable"]
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_an_autoscaled_role_rolls_by_whole_percentages_since_its_count_moves(stack_of):
    autoscaling = {"metrics": [{"metric": "cpu", "target": 60, "min": 1, "max": 5}]}
    stack = stack_of(service(dep("stable", replicas=None, autoscaling=autoscaling,
                                 rolling_update={"max_unavailable": 0.5, "max_surge": 12.5})))
    d = by_kind(rendered(stack), "Deployment")["chat-stable"]
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "13%", "maxUnavailable": "0%"}


def test_preset_images_map_to_the_preset_registry_and_custom_images_stay_as_given(stack_of):
    stack = stack_of(service(dep("a"), dep("b", image={"custom": "registry.example.com/t/llm:1.4"}),
                             traffic={"weights": {"a": 50, "b": 50}}))
    result = rendered(stack, preset_registry="registry.local:5000")
    deployments = by_kind(result, "Deployment")
    assert container(deployments["chat-a"])["image"] == "registry.local:5000/inferstack/echo:0.1.0"
    assert container(deployments["chat-b"])["image"] == "registry.example.com/t/llm:1.4"


def test_probes_map_to_kubernetes_probes_rounded_up_to_whole_seconds_with_a_warning(stack_of):
    probes = {"startup": {"http": {"path": "/healthz"}, "period_s": 0.5, "failure_threshold": 30},
              "readiness": {"tcp": {"port": 9000}, "period_s": 2},
              "liveness": {"command": ["check"], "timeout_s": 1.5}}
    result = rendered(stack_of(service(dep("stable", probes=probes, ports={"listen": 8080, "call": [9000]}))))
    c = container(by_kind(result, "Deployment")["chat-stable"])
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["periodSeconds"] == 1 and c["startupProbe"]["failureThreshold"] == 30
    assert c["readinessProbe"]["tcpSocket"] == {"port": 9000}
    assert c["livenessProbe"]["exec"] == {"command": ["check"]} and c["livenessProbe"]["timeoutSeconds"] == 2
    assert any("rounded up to whole seconds" in w for w in result.warnings)


def test_pods_meet_the_restricted_pod_security_standard_with_a_writable_tmp(stack_of):
    d = by_kind(rendered(stack_of(service(dep("stable")))), "Deployment")["chat-stable"]
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(d)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container(d)["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_mounts_become_claims_by_name_and_a_mount_at_tmp_replaces_the_empty_dir(stack_of):
    mounts = [{"source": "models", "path": "/models", "read_only": True}, {"source": "scratch", "path": "/tmp"}]
    d = by_kind(rendered(stack_of(service(dep("stable", mounts=mounts)))), "Deployment")["chat-stable"]
    volumes = d["spec"]["template"]["spec"]["volumes"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in volumes] == ["models", "scratch"]
    assert {m["mountPath"]: m.get("readOnly", False) for m in container(d)["volumeMounts"]} == {
        "/models": True, "/tmp": False}


def test_resources_request_the_compute_spec_including_gpus(stack_of):
    d = by_kind(rendered(stack_of(service(dep("stable", compute_spec="gpu-a10")))), "Deployment")["chat-stable"]
    resources = container(d)["resources"]
    # an instance is the size of its spec: limits = requests (CPU included)
    assert resources["requests"] == resources["limits"] == {"cpu": "8", "memory": "30Gi", "nvidia.com/gpu": "1"}
    tolerations = d["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_node_affinity_requires_the_queue_its_zone_and_billing(stack_of):
    d = by_kind(rendered(stack_of(service(dep("stable", queue="q-prepaid-b", subnet="subnet-b")))),
                "Deployment")["chat-stable"]
    node = d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
    assert {e["key"]: e["values"] for e in terms} == {"topology.kubernetes.io/zone": ["zone-b"],
                                                      "inferstack.io/queue": ["q-prepaid-b"],
                                                      "inferstack.io/billing": ["prepaid"]}
    assert "priorityClassName" not in d["spec"]["template"]["spec"]  # the default priority names no class


def test_idle_capacity_tolerates_the_idle_taint_and_prefers_lending_queues_of_its_zone(stack_of):
    d = by_kind(rendered(stack_of(service(dep("spare", use_idle=True, priority=3)))), "Deployment")["chat-spare"]
    pod = d["spec"]["template"]["spec"]
    assert {"key": "inferstack.io/idle", "operator": "Equal", "value": "true",
            "effect": "NoSchedule"} in pod["tolerations"]
    node = pod["affinity"]["nodeAffinity"]
    required = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
    assert {e["key"]: e["values"] for e in required} == {"topology.kubernetes.io/zone": ["zone-a"],
                                                         "inferstack.io/queue": ["q-postpaid-a", "q-prepaid-a"]}
    preferred = node["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["preference"]["matchExpressions"][0]["values"] == ["q-prepaid-a"]
    assert pod["priorityClassName"] == "inferstack-idle-3"


def test_numa_affinity_is_a_preference_with_guaranteed_qos(stack_of):
    d = by_kind(rendered(stack_of(service(dep("stable", compute_spec="gpu-a10", numa_affinity=True)))),
                "Deployment")["chat-stable"]
    resources = container(d)["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "8", "memory": "30Gi", "nvidia.com/gpu": "1"}
    preferred = d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred == [{"weight": 50, "preference": {"matchExpressions": [
        {"key": "inferstack.io/numa-aligned", "operator": "In", "values": ["true"]}]}}]


def test_numa_past_half_a_machine_is_skipped_with_a_warning(stack_of):
    spec = {"name": "cpu-huge", "cpu": 20, "memory_gib": 64, "machine": {"cpu": 32}}
    stack = stack_of(with_own_spec(spec, dep("big", numa_affinity=True)))
    result = rendered(stack)
    d = by_kind(result, "Deployment")["chat-big"]
    assert container(d)["resources"]["limits"] == {"cpu": "20", "memory": "64Gi"}
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in d["spec"]["template"]["spec"]["affinity"][
        "nodeAffinity"]
    assert any("NUMA affinity skipped" in w and "cpu-huge" in w for w in result.warnings)


def test_numa_rounds_fractional_cpus_up_to_whole_ones_with_a_warning(stack_of):
    spec = {"name": "cpu-frac", "cpu": 2.5, "memory_gib": 4.5, "machine": {"cpu": 32}}
    stack = stack_of(with_own_spec(spec, dep("small", numa_affinity=True)))
    result = rendered(stack)
    resources = container(by_kind(result, "Deployment")["chat-small"])["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "3", "memory": "4608Mi"}
    assert any("rounded up to 3" in w for w in result.warnings)


def test_instances_get_their_identity_port_and_model_in_env_and_user_env_wins(stack_of):
    stack = stack_of(service(dep("stable", model={"registry": "qwen2-7b", "version": "3"},
                                 env=[{"name": "HOST", "value": "::"}, {"name": "A", "value": "1"}])))
    env = env_of(by_kind(rendered(stack), "Deployment")["chat-stable"])
    assert env["PORT"] == "8080" and env["HOST"] == "::" and env["A"] == "1"
    assert env["INFERSTACK_SERVICE"] == "chat" and env["INFERSTACK_DEPLOYMENT"] == "stable"
    assert env["INFERSTACK_MODEL_REGISTRY"] == "qwen2-7b" and env["INFERSTACK_MODEL_VERSION"] == "3"
    assert env["INFERSTACK_INSTANCE"] == {"fieldRef": {"fieldPath": "metadata.name"}}


# --- secrets ---------------------------------------------------------------------------------------------------

def test_secret_values_are_referenced_never_written_and_the_secret_is_named(stack_of):
    stack = stack_of(service(dep("stable", env=[{"name": "TOKEN", "secret": "s3cr3t-value"}])))
    result = rendered(stack)
    assert "s3cr3t-value" not in "".join(text for _, text in result.files())
    assert by_kind(result, "Secret") == {}
    assert env_of(by_kind(result, "Deployment")["chat-stable"])["TOKEN"] == {
        "secretKeyRef": {"name": "chat-stable-env", "key": "TOKEN"}}
    assert any("Secret 'chat-stable-env' (keys: TOKEN)" in w for w in result.warnings)


def test_include_secrets_writes_the_secret_with_string_data(stack_of):
    stack = stack_of(service(dep("stable", env=[{"name": "TOKEN", "secret": "s3cr3t-value"}])))
    secret = by_kind(rendered(stack, include_secrets=True), "Secret")["chat-stable-env"]
    assert secret["stringData"] == {"TOKEN": "s3cr3t-value"} and secret["type"] == "Opaque"


# --- multi-role ------------------------------------------------------------------------------------------------

MULTI = dep("pd", inference_mode="multi_role", compute_spec=None, replicas=None, rolling_update=None,
            env=[{"name": "SHARED", "secret": "one"}],
            roles=[{"name": "prefill", "compute_spec": "cpu-small", "replicas": 2, "rolling_update": {},
                    "env": [{"name": "KEY", "secret": "two"}]},
                   {"name": "decode", "entry": True, "compute_spec": "cpu-small", "replicas": 1,
                    "rolling_update": {}}])
MULTI = {k: v for k, v in MULTI.items() if v is not None}


def test_multi_role_gets_a_deployment_and_headless_service_per_role_and_the_others_endpoints(stack_of):
    result = rendered(stack_of(service(MULTI)), include_secrets=True)
    deployments = by_kind(result, "Deployment")
    assert set(deployments) == {"chat-pd-prefill", "chat-pd-decode"}
    services = by_kind(result, "Service")
    assert services["chat-pd-prefill"]["spec"]["clusterIP"] == "None"
    assert services["chat-pd"]["spec"]["selector"]["inferstack.io/role"] == "decode"
    prefill, decode = env_of(deployments["chat-pd-prefill"]), env_of(deployments["chat-pd-decode"])
    assert decode["INFERSTACK_ROLE_PREFILL_ENDPOINTS"] == "chat-pd-prefill.default.svc:8080"
    assert prefill["INFERSTACK_ROLE_DECODE_ENDPOINTS"] == "chat-pd-decode.default.svc:8080"
    assert "INFERSTACK_ROLE_DECODE_ENDPOINTS" not in decode
    assert prefill["KEY"] == {"secretKeyRef": {"name": "chat-pd-env", "key": "prefill.KEY"}}
    assert decode["SHARED"] == {"secretKeyRef": {"name": "chat-pd-env", "key": "SHARED"}}
    assert by_kind(result, "Secret")["chat-pd-env"]["stringData"] == {"SHARED": "one", "prefill.KEY": "two"}
    labels = {n: d["spec"]["template"]["metadata"]["labels"]["inferstack.io/traffic"] for n, d in deployments.items()}
    assert labels == {"chat-pd-prefill": "off", "chat-pd-decode": "on"}
    route = by_kind(result, "HTTPRoute")["chat"]
    assert {r["name"] for rule in route["spec"]["rules"] for r in rule["backendRefs"]} == {"chat-pd"}


# --- autoscaling, disruption, network --------------------------------------------------------------------------

def test_metric_rules_make_an_hpa_and_the_deployment_leaves_replicas_to_it(stack_of):
    autoscaling = {"metrics": [{"metric": "cpu", "target": 60, "min": 2, "max": 5},
                               {"metric": "qps", "target": 0.5, "min": 1, "max": 4}]}
    result = rendered(stack_of(service(dep("stable", replicas=None, autoscaling=autoscaling))))
    assert "replicas" not in by_kind(result, "Deployment")["chat-stable"]["spec"]
    hpa = by_kind(result, "HorizontalPodAutoscaler")["chat-stable"]
    # locally every rule is clamped to its own bounds and the highest ask wins: never below the largest minimum
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    assert hpa["spec"]["metrics"][1]["pods"]["target"] == {"type": "AverageValue", "averageValue": "500m"}
    assert by_kind(result, "ScaledObject") == {}


def test_schedules_make_one_keda_scaled_object_and_no_hpa(stack_of):
    autoscaling = {"schedules": [{"start": "0 9 * * 1-5", "end": "0 18 * * 1-5", "timezone": "Asia/Shanghai",
                                  "min": 3, "max": 8}],
                   "metrics": [{"metric": "in_flight", "target": 8, "min": 1, "max": 6}]}
    result = rendered(stack_of(service(dep("stable", replicas=None, autoscaling=autoscaling))))
    assert by_kind(result, "HorizontalPodAutoscaler") == {}
    so = by_kind(result, "ScaledObject")["chat-stable"]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 8)
    cron, prom = so["spec"]["triggers"]
    assert cron == {"type": "cron", "metadata": {"timezone": "Asia/Shanghai", "start": "0 9 * * 1-5",
                                                 "end": "0 18 * * 1-5", "desiredReplicas": "3"}}
    assert prom["type"] == "prometheus" and prom["metadata"]["threshold"] == "8"
    assert "inferstack_in_flight_requests" in prom["metadata"]["query"]
    assert any("one maximum for all hours: 8" in w for w in result.warnings)


def test_behind_a_clb_load_balancer_the_network_policy_admits_what_the_security_group_allows(stack_of):
    stack = stack_of({"inventory": {"security_groups": [{"name": "sg-web", "vpc": "vpc-default", "ingress": [
        {"protocol": "tcp", "from_port": 8000, "source": "10.1.2.3/16"},
        {"protocol": "all", "from_port": 8080, "to_port": 8090, "source": "192.168.0.0/24"}]}]},
        **service(dep("stable", security_group="sg-web", ports={"listen": 8080}), network_type="clb",
                  traffic={"strategy": "by_instance_count"})})
    policy = by_kind(rendered(stack), "NetworkPolicy")["chat-stable"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    first, second = policy["spec"]["ingress"]
    assert first == {"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8000}]}
    assert [p["protocol"] for p in second["ports"]] == ["TCP", "UDP", "SCTP"]
    assert second["ports"][0]["endPort"] == 8090


def test_priority_classes_are_rendered_only_with_cluster_bootstrap(stack_of):
    stack = stack_of(service(dep("a", priority=9), dep("b", use_idle=True), traffic={"weights": {"a": 50, "b": 50}}))
    assert by_kind(rendered(stack), "PriorityClass") == {}
    classes = by_kind(rendered(stack, cluster_bootstrap=True), "PriorityClass")
    # 5 (the default) sits at the cluster default 0; idle classes lie below every regular one
    assert {n: (c["value"], c["preemptionPolicy"]) for n, c in classes.items()} == {
        "inferstack-priority-9": (4000, "PreemptLowerPriority"), "inferstack-idle-5": (-9995, "Never")}
    assert "namespace" not in classes["inferstack-priority-9"]["metadata"]


# --- traffic ---------------------------------------------------------------------------------------------------

def test_http_route_orders_direct_calls_then_header_rules_then_the_weighted_split(stack_of):
    traffic = {"weights": {"stable": 66.67, "canary": 33.33, "shadow": 0},
               "header_rules": [{"header": "x-canary", "value": "1", "deployment": "canary"}],
               "mirror": {"deployment": "shadow", "percent": 2.5}, "timeout_s": 90.5}
    stack = stack_of({"kubernetes": {"gateway": {"name": "edge", "namespace": "gateways"},
                                     "gateway_api_version": "v1.4"},
                      **service(dep("stable"), dep("canary"), dep("shadow"), traffic=traffic)})
    route = by_kind(rendered(stack), "HTTPRoute")["chat"]
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge",
                                            "namespace": "gateways"}]
    rules = route["spec"]["rules"]
    assert [r["name"] for r in rules] == ["direct-stable", "direct-canary", "direct-shadow", "header-0", "default"]
    assert rules[0]["matches"][0]["headers"] == [{"type": "Exact", "name": "X-Inferstack-Deployment",
                                                  "value": "stable"}]
    assert rules[3]["backendRefs"] == [{"name": "chat-canary", "port": 8000}]
    assert rules[4]["backendRefs"] == [{"name": "chat-stable", "port": 8000, "weight": 6667},
                                       {"name": "chat-canary", "port": 8000, "weight": 3333}]
    mirror = rules[4]["filters"][1]["requestMirror"]
    assert mirror == {"backendRef": {"name": "chat-shadow", "port": 8000},
                      "fraction": {"numerator": 2500, "denominator": 100000}}
    assert rules[4]["timeouts"] == {"request": "0s"}  # the whole-exchange timeout would cut streams
    assert rules[4]["matches"][0]["path"] == {"type": "PathPrefix", "value": "/chat"}


def test_render_options_override_the_stack_gateway_and_namespace(stack_of):
    result = rendered(stack_of(service(dep("stable"))), namespace="team-a", gateway_name="internal")
    route = by_kind(result, "HTTPRoute")["chat"]
    assert route["metadata"]["namespace"] == "team-a"
    assert route["spec"]["parentRefs"][0]["name"] == "internal" and "namespace" not in route["spec"]["parentRefs"][0]


def test_clb_by_instance_count_is_one_load_balancer_over_pods_that_accept_traffic(stack_of):
    stack = stack_of(service(dep("a"), dep("b", accept_traffic=False), network_type="clb",
                             traffic={"strategy": "by_instance_count"}, ports=[9000]))
    result = rendered(stack)
    assert by_kind(result, "HTTPRoute") == {}
    lb = by_kind(result, "Service")["chat"]
    assert lb["spec"]["type"] == "LoadBalancer"
    assert lb["spec"]["selector"] == {"inferstack.io/service": "chat", "inferstack.io/traffic": "on"}
    labels = {n: d["spec"]["template"]["metadata"]["labels"]["inferstack.io/traffic"]
              for n, d in by_kind(result, "Deployment").items()}
    assert labels == {"chat-a": "on", "chat-b": "off"}


def test_by_instance_count_behind_a_gateway_routes_to_the_per_instance_service(stack_of):
    result = rendered(stack_of(service(dep("a"), dep("b"), traffic={"strategy": "by_instance_count"})))
    assert by_kind(result, "Service")["chat"]["spec"]["type"] == "ClusterIP"
    default = by_kind(result, "HTTPRoute")["chat"]["spec"]["rules"][-1]
    assert default["backendRefs"] == [{"name": "chat", "port": 8000}]


def test_consistent_hash_and_retries_are_warned_not_rendered(stack_of):
    stack = stack_of(service(dep("stable"), traffic={"consistent_hash": {"header": "x-user-id"}, "retries": 2}))
    result = rendered(stack)
    assert any("consistent_hash" in w and "standard-channel" in w for w in result.warnings)
    assert any("retries (2)" in w for w in result.warnings)


def test_a_header_rule_that_is_no_valid_header_match_is_left_out_with_a_warning(stack_of):
    # A header name that is no HTTP token is refused by the spec already (header.name_format); an empty value is
    # valid for the gateway but no HTTPRoute header match.
    stack = stack_of(service(dep("stable"), traffic={"header_rules": [
        {"header": "x-empty", "value": "", "deployment": "stable"}]}))
    result = rendered(stack, gateway_api_version="v1.4")
    assert [r["name"] for r in by_kind(result, "HTTPRoute")["chat"]["spec"]["rules"]] == ["direct-stable", "default"]
    assert sum("left out" in w for w in result.warnings) == 1


def test_an_http_route_keeps_to_16_rules(stack_of):
    keys = [f"d{i}" for i in range(10)]
    rules = [{"header": f"x-h{i}", "value": "1", "deployment": "d0"} for i in range(10)]
    stack = stack_of(service(*(dep(k) for k in keys), traffic={"weights": {"d0": 100}, "header_rules": rules}))
    result = rendered(stack, gateway_api_version="v1.4")
    route_rules = by_kind(result, "HTTPRoute")["chat"]["spec"]["rules"]
    assert len(route_rules) == 16 and route_rules[-1]["name"] == "default"
    assert any("no direct-call rule" in w and "d5" in w for w in result.warnings)


def test_durations_use_the_gateway_api_format():
    assert _duration(60) == "1m"
    assert _duration(0.0001) == "1ms"
    assert _duration(3723.5) == "1h2m3s500ms"


def test_a_service_without_deployments_renders_nothing(stack_of):
    assert rendered(stack_of(service())).objects == []


def test_the_base_inventory_can_be_replaced(stack_of):
    stack = stack_of(service(dep("stable")))
    with pytest.raises(RenderError, match="queue 'q-postpaid-a' is not in the inventory"):
        render(stack, RenderOptions(inventory=Inventory()))
    assert render(stack, RenderOptions(inventory=default_inventory())).objects


# --- purity ----------------------------------------------------------------------------------------------------

def test_render_and_names_import_no_pulumi():
    for module in ("render.py", "names.py", "__init__.py"):
        tree = ast.parse((PACKAGE / module).read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in imported if m.startswith("pulumi")], module


def test_importing_the_kubernetes_target_loads_no_pulumi():
    code = ("import sys, inferstack.targets.kubernetes; "
            "bad = [m for m in sys.modules if m.startswith('pulumi')]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
