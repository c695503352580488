"""What the rendered objects *do* in a cluster, judged by the semantics of the API server and the controllers that act
on them (NetworkPolicy, PodDisruptionBudget, the deployment controller, KEDA, the Gateway API), against what the
embedded platform does locally: one section per point of issue #19, and #16's scanner findings."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
from k8s_checks import (
    EXAMPLES,
    Source,
    ingress_allowed,
    pdb_allowed_disruptions,
    problems,
    rolling_max_unavailable,
)
from test_render import dep

from inferstack.images import PRESET_IMAGES
from inferstack.platform.autoscaler import AutoscalerSettings
from inferstack.spec import default_inventory, load_file, rolling_bounds
from inferstack.targets.kubernetes import RenderOptions, render
from inferstack.targets.kubernetes.autoscaling import DOWN_STABILISATION_S

GATEWAY_POD = {"gateway.networking.k8s.io/gateway-name": "inferstack"}


def stack_data(*deployments: dict[str, Any], kubernetes: dict[str, Any] | None = None,
               inventory: dict[str, Any] | None = None, **service: Any) -> dict[str, Any]:
    return {"target": "kubernetes", "inventory": inventory or {}, "kubernetes": kubernetes or {},
            "services": [{"name": "chat", "resource_group": "rg-default", "vpc": "vpc-default",
                          "deployments": list(deployments), **service}]}


def rendered(stack_of, data: dict[str, Any], **options: Any):
    stack = stack_of(data)
    result = render(stack, RenderOptions(**options))
    minor = int(stack.kubernetes_options.gateway_api_version.split(".")[1])
    assert problems(result.objects, minor) == []
    return result


def of_kind(result, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in result.objects if o["kind"] == kind}


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def example(name: str):
    loaded = load_file(Path(__file__).resolve().parents[2] / "examples" / f"{name}.yaml", default_inventory())
    assert loaded.stack is not None and loaded.report.ok, str(loaded.report)
    return loaded.stack, render(loaded.stack)


# --- 1. the security group does not lock the Gateway out ----------------------------------------------------------

def test_the_multi_role_example_is_reachable_through_the_gateway_by_network_policy_semantics():
    _, result = example("multi-role")  # sg-loopback: 127.0.0.1/32, a private service
    deployments = of_kind(result, "Deployment")
    decode, prefill = deployments["llm-pd-split-decode"], deployments["llm-pd-split-prefill"]
    gateway = Source.pod("default", GATEWAY_POD)
    # the Gateway's data plane reaches the entry role on its listen port ...
    assert ingress_allowed(result.objects, "default", pod_labels(decode), 8080, gateway)
    # ... the roles reach each other ...
    assert ingress_allowed(result.objects, "default", pod_labels(prefill), 8080,
                           Source.pod("default", pod_labels(decode)))
    # ... and nothing else does: not another pod of the namespace, not the security group's CIDR directly
    assert not ingress_allowed(result.objects, "default", pod_labels(decode), 8080, Source.pod("default", {"a": "b"}))
    assert not ingress_allowed(result.objects, "default", pod_labels(decode), 8080, Source("127.0.0.1"))


def test_the_network_policy_admits_the_configured_gateway_data_plane_on_the_listen_port_only(stack_of):
    plane = {"namespace": "envoy-gateway-system",
             "pod_labels": {"gateway.envoyproxy.io/owning-gateway-name": "edge"}}
    data = stack_data(dep("stable", ports={"listen": 9000}),
                      kubernetes={"namespace": "inference", "gateway": {"name": "edge", "namespace": "gateways",
                                                                        "data_plane": plane}})
    result = rendered(stack_of, data)
    labels = pod_labels(of_kind(result, "Deployment")["chat-stable"])
    envoy = Source.pod("envoy-gateway-system", plane["pod_labels"])
    assert ingress_allowed(result.objects, "inference", labels, 9000, envoy)
    assert not ingress_allowed(result.objects, "inference", labels, 9001, envoy)
    # the default selector (the GEP-1762 label in the Gateway's namespace) is not admitted once it is configured
    assert not ingress_allowed(result.objects, "inference", labels, 9000,
                               Source.pod("gateways", {"gateway.networking.k8s.io/gateway-name": "edge"}))
    # an office CIDR of the security group no longer shuts the Gateway out (it was the only source admitted)
    assert not ingress_allowed(result.objects, "inference", labels, 9000, Source("203.0.113.9"))


def test_by_default_the_gateway_data_plane_is_the_gateway_name_label_in_the_gateways_namespace(stack_of):
    data = stack_data(dep("stable"), kubernetes={"gateway": {"name": "edge", "namespace": "gateways"}})
    result = rendered(stack_of, data)
    labels = pod_labels(of_kind(result, "Deployment")["chat-stable"])
    assert ingress_allowed(result.objects, "default", labels, 8080,
                           Source.pod("gateways", {"gateway.networking.k8s.io/gateway-name": "edge"}))
    assert not ingress_allowed(result.objects, "default", labels, 8080,
                               Source.pod("default", {"gateway.networking.k8s.io/gateway-name": "edge"}))


def test_monitoring_reaches_the_listen_port_when_configured(stack_of):
    monitoring = {"namespace": "monitoring", "pod_labels": {"app.kubernetes.io/name": "prometheus"}}
    result = rendered(stack_of, stack_data(dep("stable"), kubernetes={"monitoring": monitoring}))
    labels = pod_labels(of_kind(result, "Deployment")["chat-stable"])
    prometheus = Source.pod("monitoring", monitoring["pod_labels"])
    assert ingress_allowed(result.objects, "default", labels, 8080, prometheus)
    assert not ingress_allowed(result.objects, "default", labels, 8080, Source.pod("monitoring", {"x": "y"}))


# --- 2. access control is enforced where it can be and warned where not -------------------------------------------

NARROW = {"security_groups": [{"name": "sg-office", "vpc": "vpc-default", "ingress": [
    {"protocol": "tcp", "from_port": 8000, "to_port": 8080, "source": "198.51.100.0/24"}]}]}


def test_a_clb_load_balancer_admits_only_the_security_groups_sources_and_keeps_the_callers_address(stack_of):
    data = stack_data(dep("a", security_group="sg-office"), dep("b", security_group="sg-office"),
                      inventory=NARROW, network_type="clb", traffic={"strategy": "by_instance_count"})
    result = rendered(stack_of, data)
    lb = of_kind(result, "Service")["chat"]["spec"]
    assert lb["type"] == "LoadBalancer" and lb["externalTrafficPolicy"] == "Local"
    assert lb["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    labels = pod_labels(of_kind(result, "Deployment")["chat-a"])
    assert ingress_allowed(result.objects, "default", labels, 8080, Source("198.51.100.20"))
    assert not ingress_allowed(result.objects, "default", labels, 8080, Source("203.0.113.9"))
    assert any("cannot check the invocation key" in w for w in result.warnings)


def test_an_open_security_group_leaves_the_load_balancer_open(stack_of):
    data = stack_data(dep("a"), network_type="clb", traffic={"strategy": "by_instance_count"})
    assert "loadBalancerSourceRanges" not in of_kind(rendered(stack_of, data), "Service")["chat"]["spec"]


def test_private_services_attach_to_the_private_gateway_with_their_sources_for_its_policy(stack_of):
    kubernetes = {"gateways": {"public": {"name": "public", "namespace": "gw"},
                               "private": {"name": "internal", "namespace": "gw"}}}
    data = stack_data(dep("stable", security_group="sg-office"), inventory=NARROW, network_type="private_gateway",
                      kubernetes=kubernetes)
    result = rendered(stack_of, data)
    route = of_kind(result, "HTTPRoute")["chat"]
    assert route["spec"]["parentRefs"][0]["name"] == "internal"
    assert route["metadata"]["annotations"]["inferstack.io/allowed-sources"] == "198.51.100.0/24"
    assert not any("PRIVATE service on the shared Gateway" in w for w in result.warnings)
    assert any("cannot check callers' addresses" in w and "198.51.100.0/24" in w for w in result.warnings)
    labels = pod_labels(of_kind(result, "Deployment")["chat-stable"])
    internal = Source.pod("gw", {"gateway.networking.k8s.io/gateway-name": "internal"})
    public = Source.pod("gw", {"gateway.networking.k8s.io/gateway-name": "public"})
    assert ingress_allowed(result.objects, "default", labels, 8080, internal)
    assert not ingress_allowed(result.objects, "default", labels, 8080, public)


def test_a_private_service_on_the_shared_gateway_is_warned_loudly(stack_of):
    result = rendered(stack_of, stack_data(dep("stable"), network_type="private_gateway"))
    assert any("PRIVATE service on the shared Gateway 'inferstack'" in w for w in result.warnings)


def test_every_keyed_service_is_warned_that_the_gateway_does_not_check_its_key(stack_of):
    result = rendered(stack_of, stack_data(dep("stable")))
    assert of_kind(result, "HTTPRoute")["chat"]["metadata"]["annotations"]["inferstack.io/access"] == "invocation-key"
    assert any(w.startswith("chat: invocation keys are not checked") for w in result.warnings)


# --- 3. PriorityClasses: rendered or warned, none for the default priority ----------------------------------------

@pytest.mark.parametrize("example_path", EXAMPLES, ids=lambda p: p.stem)
def test_every_pods_priority_class_is_rendered_or_warned(example_path):
    loaded = load_file(example_path, default_inventory())
    for bootstrap in (True, False):
        result = render(loaded.stack, RenderOptions(cluster_bootstrap=bootstrap))
        rendered_classes = set(of_kind(result, "PriorityClass"))
        for d in of_kind(result, "Deployment").values():
            name = d["spec"]["template"]["spec"].get("priorityClassName")
            if name is None:
                continue
            assert name in rendered_classes or any(name in w and "not rendered" in w for w in result.warnings), name


def test_the_default_priority_needs_nothing_cluster_wide_and_the_order_is_kept(stack_of):
    data = stack_data(*(dep(f"p{p}", priority=p) for p in range(1, 10)), dep("idle", use_idle=True, priority=9),
                      traffic={"weights": {"p5": 100}})
    result = rendered(stack_of, data, cluster_bootstrap=True)
    classes = of_kind(result, "PriorityClass")
    value = {d["metadata"]["name"]: classes[n]["value"] if (n := d["spec"]["template"]["spec"].get(
        "priorityClassName")) else 0 for d in of_kind(result, "Deployment").values()}  # no class: the default, 0
    assert "priorityClassName" not in of_kind(result, "Deployment")["chat-p5"]["spec"]["template"]["spec"]
    assert [value[f"chat-p{p}"] for p in range(1, 10)] == sorted(value[f"chat-p{p}"] for p in range(1, 10))
    assert len({value[f"chat-p{p}"] for p in range(1, 10)}) == 9
    assert value["chat-idle"] < value["chat-p1"]  # idle resources go first, whatever their priority
    assert not any("PriorityClass" in w for w in result.warnings)


# --- 4. readiness as locally: presets HTTP /healthz, others TCP on the listen port --------------------------------

@pytest.mark.parametrize("example_path", EXAMPLES, ids=lambda p: p.stem)
def test_every_container_has_a_readiness_probe_on_its_listen_port(example_path):
    result = render(load_file(example_path, default_inventory()).stack)
    for d in of_kind(result, "Deployment").values():
        probe = container(d)["readinessProbe"]
        port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
        assert port == "http" or "exec" in probe or isinstance(port, int), d["metadata"]["name"]


def test_presets_get_their_readiness_and_liveness_paths_and_other_images_a_tcp_readiness(stack_of):
    data = stack_data(dep("preset"), dep("custom", image={"custom": "registry.example.com/llm:1"}),
                      traffic={"weights": {"preset": 50, "custom": 50}})
    deployments = of_kind(rendered(stack_of, data), "Deployment")
    preset, custom = container(deployments["chat-preset"]), container(deployments["chat-custom"])
    assert preset["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert preset["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert custom["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert "livenessProbe" not in custom  # locally nothing checks a custom image's liveness unless the stack says


def test_a_stack_probe_replaces_the_default(stack_of):
    data = stack_data(dep("stable", probes={"readiness": {"http": {"path": "/ready"}, "period_s": 3}}))
    c = container(of_kind(rendered(stack_of, data), "Deployment")["chat-stable"])
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and c["readinessProbe"]["periodSeconds"] == 3


def test_a_user_port_env_cannot_move_the_process_away_from_the_probed_port(stack_of):
    result = rendered(stack_of, stack_data(dep("stable", env=[{"name": "PORT", "value": "9999"}])))
    env = [e for e in container(of_kind(result, "Deployment")["chat-stable"])["env"] if e["name"] == "PORT"]
    assert env == [{"name": "PORT", "value": "8080"}]
    assert any("env PORT is the listen port" in w for w in result.warnings)


# --- 5. pods leave the Gateway before they stop ---------------------------------------------------------------------

@pytest.mark.parametrize("delay,grace,expected", [(5, 30, 35), (0, 30, 30), (2.5, 0.5, 4), (10, 0, 10)])
def test_the_prestop_delay_runs_first_and_counts_into_the_grace_period(stack_of, delay, grace, expected):
    data = stack_data(dep("stable", graceful_shutdown_s=grace), kubernetes={"prestop_delay_s": delay})
    d = of_kind(rendered(stack_of, data), "Deployment")["chat-stable"]
    assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == expected
    lifecycle = container(d).get("lifecycle")
    if delay:
        sleep = lifecycle["preStop"]["sleep"]["seconds"]
        assert sleep >= delay and expected - sleep >= grace  # the graceful period is whole after the delay
    else:
        assert lifecycle is None


# --- 6. autoscaling takes over the count without dropping it, and switches leave nothing behind -----------------

def test_a_scaled_object_adopts_the_hpa_it_replaces(stack_of):
    metrics = [{"metric": "cpu", "target": 60, "min": 2, "max": 5}]
    hpa = of_kind(rendered(stack_of, stack_data(dep("s", replicas=None, autoscaling={"metrics": metrics}))),
                  "HorizontalPodAutoscaler")["chat-s"]
    windows = [{"start": "0 9 * * *", "end": "0 18 * * *", "replicas": 3}]
    so = of_kind(rendered(stack_of, stack_data(dep("s", replicas=None, autoscaling={
        "metrics": metrics, "schedules": windows}))), "ScaledObject")["chat-s"]
    # KEDA's webhook admits a ScaledObject over a workload another HPA scales only with the transfer annotation and
    # that HPA's name; KEDA then owns the HPA, so nothing is left behind
    assert so["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] == hpa["metadata"]["name"]


def test_the_scaled_objects_hpa_name_stays_a_valid_label_for_long_names(stack_of):
    key = "d" * 40
    data = stack_data(dep(key, replicas=None, autoscaling={"schedules": [
        {"start": "0 9 * * *", "end": "0 18 * * *", "replicas": 2}]}), key="s" * 40, name="long")
    so = next(iter(of_kind(rendered(stack_of, data), "ScaledObject").values()))
    # KEDA's default HPA name `keda-hpa-<name>` would exceed 63 characters and be rejected
    assert len(so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"]) <= 63


def test_manifests_leave_replicas_to_the_autoscaler(stack_of):
    data = stack_data(dep("s", replicas=3, autoscaling={"metrics": [{"metric": "cpu", "target": 60, "min": 2,
                                                                    "max": 5}]}))
    assert "replicas" not in of_kind(rendered(stack_of, data), "Deployment")["chat-s"]["spec"]
    kept = of_kind(rendered(stack_of, data, keep_autoscaled_replicas=True), "Deployment")["chat-s"]
    assert kept["spec"]["replicas"] == 3  # for the Pulumi component, which then ignores the field


def test_scale_down_is_stabilised_as_long_as_locally():
    assert DOWN_STABILISATION_S == AutoscalerSettings().down_stabilisation_s


# --- 7. disruption budgets never allow more than the rolling update -----------------------------------------------

@pytest.mark.parametrize("max_unavailable,max_surge", [(0, 25), (0, 100), (25, 25), (33.3, 25), (34, 34), (50, 0),
                                                       (75, 0), (100, 0), (0.5, 0), (12.5, 12.5), (99, 1)])
def test_a_pdb_allows_no_more_evictions_than_the_rolling_update_at_every_replica_count(stack_of, max_unavailable,
                                                                                     max_surge):
    for replicas in range(1, 11):
        data = stack_data(dep("s", replicas=replicas, queue="q-postpaid-a", rolling_update={
            "max_unavailable": max_unavailable, "max_surge": max_surge}))
        result = rendered(stack_of, data)
        pdb, d = of_kind(result, "PodDisruptionBudget")["chat-s"], of_kind(result, "Deployment")["chat-s"]
        allowed = pdb_allowed_disruptions(pdb, replicas)
        unavailable, _ = rolling_bounds(replicas, max_unavailable, max_surge)
        assert allowed <= rolling_max_unavailable(d, replicas) and allowed <= unavailable, (replicas, allowed)
        if max_surge > 0:
            assert allowed == unavailable  # exactly what the rolling update takes down
        if replicas == 1 and max_unavailable < 100:
            assert allowed == 0  # a single instance is never stopped by a drain
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # a broken pod never blocks a drain


def test_the_example_of_the_issue_34_percent_of_3_pods_allows_one_eviction_not_two():
    _, result = example("k8s")
    assert pdb_allowed_disruptions(of_kind(result, "PodDisruptionBudget")["embed-base"], 3) == 1
    assert pdb_allowed_disruptions(of_kind(result, "PodDisruptionBudget")["llm-pd-prefill"], 1) == 0


# --- 8. long streams are not cut -----------------------------------------------------------------------------------

def test_routes_set_no_whole_response_deadline_unless_asked(stack_of):
    result = rendered(stack_of, stack_data(dep("stable"), traffic={"timeout_s": 30}))
    rules = of_kind(result, "HTTPRoute")["chat"]["spec"]["rules"]
    assert {r["timeouts"]["request"] for r in rules} == {"0s"}
    assert any("timeout_s (30 s) bounds the wait for the first response byte" in w for w in result.warnings)
    capped = rendered(stack_of, stack_data(dep("stable"), kubernetes={"response_timeout_s": 600}))
    assert {r["timeouts"]["request"] for r in of_kind(capped, "HTTPRoute")["chat"]["spec"]["rules"]} == {"10m"}


# --- 9. fields newer than the cluster's Gateway API are not rendered ----------------------------------------------

TRAFFIC = {"weights": {"stable": 90, "canary": 10}, "mirror": {"deployment": "canary", "percent": 5}}


@pytest.mark.parametrize("version,names,share,timeouts", [
    ("v1.0", False, False, False), ("v1.1.1", False, False, False), ("v1.2", False, False, True),
    ("v1.3.0", False, True, True), ("v1.4", True, True, True), ("v1.6", True, True, True)])
def test_the_gateway_api_version_gates_newer_fields(stack_of, version, names, share, timeouts):
    data = stack_data(dep("stable"), dep("canary"), traffic=TRAFFIC, kubernetes={"gateway_api_version": version})
    result = rendered(stack_of, data)  # validated against v1.2.1's CRD where it applies, and the newest
    rules = of_kind(result, "HTTPRoute")["chat"]["spec"]["rules"]
    assert all(("name" in r) is names for r in rules)
    assert all(("timeouts" in r) is timeouts for r in rules)
    mirrors = [f["requestMirror"] for r in rules for f in r["filters"] if f["type"] == "RequestMirror"]
    if share:
        assert mirrors and all(m["percent"] == 5 for m in mirrors)
    else:  # an older CRD drops `percent` and mirrors every request: left out instead, and said
        assert mirrors == [] and any("mirroring 5 % needs Gateway API v1.3" in w for w in result.warnings)


def test_a_full_mirror_needs_no_share_field_on_an_older_gateway_api(stack_of):
    traffic = {**TRAFFIC, "mirror": {"deployment": "canary", "percent": 100}}
    data = stack_data(dep("stable"), dep("canary"), traffic=traffic)
    rules = of_kind(rendered(stack_of, data), "HTTPRoute")["chat"]["spec"]["rules"]
    assert [f["requestMirror"] for f in rules[-1]["filters"] if f["type"] == "RequestMirror"] == [
        {"backendRef": {"name": "chat-canary", "port": 8000}}]


def test_a_bad_gateway_api_version_is_refused_naming_the_field(stack_of):
    from inferstack.spec import validate_stack

    report = validate_stack(stack_data(dep("stable"), kubernetes={"gateway_api_version": "2.0"}), "<t>",
                            default_inventory()).report
    assert [(f.rule, f.path) for f in report.errors] == [("field.invalid", "kubernetes.gateway_api_version")]


# --- 10. KEDA bounds and queries as the local autoscaler ----------------------------------------------------------

def test_schedules_only_keep_the_starting_count_outside_windows(stack_of):
    windows = [{"start": "0 9 * * *", "end": "0 18 * * *", "replicas": 6}]
    data = stack_data(dep("s", replicas=3, autoscaling={"schedules": windows}))
    so = of_kind(rendered(stack_of, data), "ScaledObject")["chat-s"]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (3, 6)  # not 1 outside the window


def test_the_autoscalers_never_go_below_the_largest_rule_minimum_as_locally(stack_of):
    metrics = [{"metric": "cpu", "target": 60, "min": 2, "max": 5}, {"metric": "qps", "target": 5, "min": 4,
                                                                     "max": 8}]
    hpa = of_kind(rendered(stack_of, stack_data(dep("s", replicas=None, autoscaling={"metrics": metrics}))),
                  "HorizontalPodAutoscaler")["chat-s"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 8)


def test_keda_cannot_do_what_local_windows_do_and_says_so(stack_of):
    autoscaling = {"metrics": [{"metric": "cpu", "target": 60, "min": 3, "max": 5}],
                   "schedules": [{"name": "night", "start": "0 0 * * *", "end": "0 6 * * *", "replicas": 1}]}
    result = rendered(stack_of, stack_data(dep("s", replicas=None, autoscaling=autoscaling)))
    assert any("never scales below minReplicaCount 3" in w and "night" in w for w in result.warnings)
    assert any("only a minimum in KEDA" in w for w in result.warnings)


def test_keda_queries_select_pods_by_labels_and_survive_63_character_names(stack_of):
    key = "d" * 40
    data = stack_data(dep(key, replicas=None, autoscaling={
        "schedules": [{"start": "0 9 * * *", "end": "0 18 * * *", "replicas": 2}],
        "metrics": [{"metric": "in_flight", "target": 4, "min": 1, "max": 3}]}), key="s" * 40, name="long")
    so = next(iter(of_kind(rendered(stack_of, data), "ScaledObject").values()))
    query = next(t for t in so["spec"]["triggers"] if t["type"] == "prometheus")["metadata"]["query"]
    assert "pod=~" not in query  # Kubernetes cuts long pod names: a name pattern misses or mixes pods
    assert f'label_inferstack_io_deployment="{key}"' in query and 'label_inferstack_io_role="main"' in query


# --- 11 / 12. warnings where a cluster differs, and the smaller points ---------------------------------------------

def test_a_weighted_idle_deployment_is_warned_that_its_share_gets_503_without_pods(stack_of):
    data = stack_data(dep("stable"), dep("canary", use_idle=True), traffic={"weights": {"stable": 90, "canary": 10}})
    assert any("canary use idle resources" in w and "503" in w for w in rendered(stack_of, data).warnings)


def test_requests_routed_to_the_mirror_target_are_not_mirrored_to_it(stack_of):
    traffic = {"weights": {"stable": 100}, "mirror": {"deployment": "shadow", "percent": 5},
               "header_rules": [{"header": "x-shadow", "value": "1", "deployment": "shadow"}]}
    data = stack_data(dep("stable"), dep("shadow"), traffic=traffic, kubernetes={"gateway_api_version": "v1.4"})
    rules = {r["name"]: r for r in of_kind(rendered(stack_of, data), "HTTPRoute")["chat"]["spec"]["rules"]}

    def mirrored(name: str) -> bool:
        return any(f["type"] == "RequestMirror" for f in rules[name]["filters"])

    assert mirrored("default") and mirrored("direct-stable")
    assert not mirrored("direct-shadow") and not mirrored("header-0")


def test_pods_get_a_writable_cache_and_volumes_are_not_rechowned_at_every_start(stack_of):
    data = stack_data(dep("stable", mounts=[{"source": "models", "path": "/models", "read_only": True}]))
    d = of_kind(rendered(stack_of, data), "Deployment")["chat-stable"]
    env = {e["name"]: e.get("value") for e in container(d)["env"]}
    assert env["HOME"].startswith("/tmp") and env["XDG_CACHE_HOME"].startswith("/tmp")
    assert {"name": "tmp", "mountPath": "/tmp"} in container(d)["volumeMounts"]
    assert d["spec"]["template"]["spec"]["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


# --- #16: what a policy scanner flags that is ours ----------------------------------------------------------------

def test_the_preset_image_is_pinned_to_the_release_it_was_published_with(stack_of):
    c = container(of_kind(rendered(stack_of, stack_data(dep("stable"))), "Deployment")["chat-stable"])
    assert c["image"] == f"ghcr.io/inferstack/echo:{importlib.metadata.version('inferstack')}"
    assert PRESET_IMAGES["inferstack/echo"]["release"] == importlib.metadata.version("inferstack")


def test_a_preset_can_be_pinned_by_digest(stack_of):
    digest = "registry.example.com/inferstack/echo@sha256:" + "a" * 64
    data = stack_data(dep("stable"), kubernetes={"preset_images": {"inferstack/echo": digest}})
    c = container(of_kind(rendered(stack_of, data), "Deployment")["chat-stable"])
    assert (c["image"], c["imagePullPolicy"]) == (digest, "IfNotPresent")


@pytest.mark.parametrize("example_path", EXAMPLES, ids=lambda p: p.stem)
def test_no_rendered_image_floats_and_every_container_has_cpu_and_memory_limits(example_path):
    result = render(load_file(example_path, default_inventory()).stack)
    for d in of_kind(result, "Deployment").values():
        c = container(d)
        assert not c["image"].endswith(":latest") and ":" in c["image"].rsplit("/", 1)[-1] or "@" in c["image"]
        assert {"cpu", "memory"} <= set(c["resources"]["limits"])


def test_the_readme_table_names_every_kind_rendered():
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = text.split("| concept |", 1)[1].split("\n\n", 1)[0]
    kinds = {o["kind"] for e in EXAMPLES for o in render(load_file(e, default_inventory()).stack,
                                                         RenderOptions(cluster_bootstrap=True)).objects}
    assert sorted(k for k in kinds if k not in table) == []


# --- options: a bad value is refused naming the field --------------------------------------------------------------

@pytest.mark.parametrize("options,path", [
    ({"namespace": "Team A"}, "kubernetes.namespace"),
    ({"gateway": {"name": "gw/../x"}}, "kubernetes.gateway.name"),
    ({"gateways": {"private": {"name": "internal", "namespace": "-bad"}}}, "kubernetes.gateways.private.namespace"),
    ({"gateway": {"data_plane": {"pod_labels": {"app": "bad value"}}}}, "kubernetes.gateway.data_plane.pod_labels.app"),
    ({"path_prefix": "/../x"}, "kubernetes.path_prefix"),
    ({"path_prefix": "team-a"}, "kubernetes.path_prefix"),
    ({"preset_images": {"inferstack/echo": "registry/echo:1\nimage: evil"}}, "kubernetes.preset_images.inferstack/echo"),
    ({"prestop_delay_s": -1}, "kubernetes.prestop_delay_s"),
    ({"response_timeout_s": 0}, "kubernetes.response_timeout_s"),
    ({"gateway_api_version": "v1.2\x00"}, "kubernetes.gateway_api_version"),
])
def test_a_bad_kubernetes_option_is_refused_naming_the_field(options, path):
    from inferstack.spec import validate_stack

    report = validate_stack(stack_data(dep("stable"), kubernetes=options), "<t>", default_inventory()).report
    assert path in [f.path for f in report.errors], [(f.rule, f.path) for f in report.errors]


def test_a_huge_response_cap_renders_the_largest_gateway_api_duration(stack_of):
    result = rendered(stack_of, stack_data(dep("stable"), kubernetes={"response_timeout_s": 1e12}))
    assert {r["timeouts"]["request"] for r in of_kind(result, "HTTPRoute")["chat"]["spec"]["rules"]} == {"99999h"}
