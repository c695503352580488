"""A deployment's progressive policy rendered as a Flagger Canary (Gateway API provider), validated against Flagger's
CRD schema; what Flagger cannot do is warned."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_checks import require_schemas, schema_errors
from test_render import by_kind, dep, rendered, service

from inferstack.spec import StackFile, default_inventory, validate_stack

POLICY = {"steps": [5, 25, 50, 100], "bake_time_s": 30,
          "gates": {"max_error_rate": 1, "max_p99_ms": 800, "max_p99_ratio": 1.5, "min_requests": 200}}


def stack(data: dict[str, Any]) -> StackFile:
    loaded = validate_stack(data, base_inventory=default_inventory())
    assert loaded.report.ok, str(loaded.report)
    return loaded.stack


def test_a_canaried_deployment_renders_a_flagger_canary_that_validates_against_the_crd():
    require_schemas()
    result = rendered(stack(service(dep("stable", progressive=POLICY, replicas=3), traffic={})))
    canary = by_kind(result, "Canary")["chat-stable"]
    assert schema_errors(canary) == []
    spec = canary["spec"]
    assert spec["provider"] == "gatewayapi:v1"
    assert spec["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-stable"}
    assert spec["analysis"]["stepWeights"] == [5, 25, 50] and spec["analysis"]["maxWeight"] == 50
    assert spec["analysis"]["interval"] == "30s" and spec["analysis"]["threshold"] == 1
    metrics = {m["name"]: m for m in spec["analysis"]["metrics"]}
    assert metrics["request-success-rate"]["thresholdRange"] == {"min": 99}
    assert metrics["request-duration"]["thresholdRange"] == {"max": 800}
    assert spec["service"]["gatewayRefs"] == [{"name": "inferstack"}] and spec["service"]["port"] == 8000


def test_flagger_selects_by_its_label_and_owns_the_deployments_service():
    result = rendered(stack(service(dep("stable", progressive=POLICY), traffic={})))
    deployment = by_kind(result, "Deployment")["chat-stable"]
    assert deployment["spec"]["selector"]["matchLabels"]["app"] == "chat-stable"
    assert deployment["spec"]["template"]["metadata"]["labels"]["app"] == "chat-stable"
    assert "chat-stable" not in by_kind(result, "Service")  # Flagger's apex Service takes that name


def test_the_sole_weighted_deployment_is_the_services_default_route_through_flagger():
    result = rendered(stack(service(dep("stable", progressive=POLICY), dep("canary"),
                                    traffic={"weights": {"stable": 100, "canary": 0}})))
    route = by_kind(result, "HTTPRoute")["chat"]
    names = [r.get("backendRefs", [{}])[0].get("name") for r in route["spec"]["rules"]]
    assert "chat-canary" in names and len(route["spec"]["rules"]) == 1  # canary's direct-call rule only
    match = by_kind(result, "Canary")["chat-stable"]["spec"]["service"]["match"]
    assert {"uri": {"prefix": "/chat"}} in match
    assert {"uri": {"prefix": "/chat"}, "headers": {"X-Inferstack-Deployment": {"exact": "stable"}}} in match


def test_a_deployment_sharing_the_split_keeps_the_services_route_and_is_warned():
    result = rendered(stack(service(dep("stable", progressive=POLICY), dep("canary"),
                                    traffic={"weights": {"stable": 90, "canary": 10}})))
    route = by_kind(result, "HTTPRoute")["chat"]
    assert any(r.get("name", "default") == "default" or len(r["backendRefs"]) == 2 for r in route["spec"]["rules"])
    assert any("direct calls only" in w for w in result.warnings)
    match = by_kind(result, "Canary")["chat-stable"]["spec"]["service"]["match"]
    assert match == [{"uri": {"prefix": "/chat"}, "headers": {"X-Inferstack-Deployment": {"exact": "stable"}}}]


def test_what_flagger_cannot_do_is_warned():
    policy = {**POLICY, "bake_time_s": 0.5, "on_failure": "pause"}
    result = rendered(stack(service(dep("stable", progressive=policy), traffic={})))
    text = "\n".join(result.warnings)
    assert "no Flagger equivalent, not rendered: gates.max_p99_ratio, gates.min_requests, on_failure: pause" in text
    assert "bake_time_s 0.5 becomes Flagger's interval of 1s" in text
    assert "http_request_duration_seconds" in text


def test_a_traffic_shift_between_deployments_is_warned_and_rendered_as_declared():
    result = rendered(stack(service(dep("stable"), dep("canary"), traffic={
        "weights": {"stable": 90, "canary": 10}, "progressive": POLICY})))
    assert any("traffic.progressive" in w and "no Flagger equivalent" in w for w in result.warnings)
    assert by_kind(result, "Canary") == {}
    default = by_kind(result, "HTTPRoute")["chat"]["spec"]["rules"][-1]
    assert sorted(r["weight"] for r in default["backendRefs"]) == [1000, 9000]


def test_an_autoscaled_canary_names_its_autoscaler():
    autoscaled = dep("stable", progressive=POLICY, autoscaling={"metrics": [
        {"metric": "cpu", "target": 60, "min": 2, "max": 5}]})
    autoscaled.pop("replicas")
    result = rendered(stack(service(autoscaled, traffic={})))
    assert by_kind(result, "Canary")["chat-stable"]["spec"]["autoscalerRef"] == {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "chat-stable"}


@pytest.mark.parametrize("bad", [{"analysis": {"interval": "30s", "threshold": 1}},
                                 {"provider": "gatewayapi:v9"}])
def test_the_crd_schema_does_reject_a_broken_canary(bad):
    require_schemas()
    result = rendered(stack(service(dep("stable", progressive=POLICY), traffic={})))
    canary = by_kind(result, "Canary")["chat-stable"]
    broken = {**canary, "spec": {**canary["spec"], **bad}}
    assert schema_errors(broken)  # the validation can fail: it is not a formality
