"""Every rule of RULES has a rejecting case here that asserts its id and path, with an accepting case beside it
at the boundary. A rule added to RULES without a case fails `test_every_rule_has_a_rejecting_case`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from inferstack.spec import RULES, SECRET_MASK, Severity, check_across_stacks, validate, validate_stack
from inferstack.spec import limits as L


def base_stack() -> dict[str, Any]:
    """A valid stack with its own complete inventory: two zones, prepaid and postpaid queues."""
    return {
        "inventory": {
            "vpcs": [{"name": "vpc-1"}, {"name": "vpc-2"}],
            "resource_groups": [{"name": "rg-1"}, {"name": "rg-2"}],
            "queues": [
                {"name": "q-pre-a", "resource_group": "rg-1", "zone": "zone-a", "billing": "prepaid",
                 "capacity": {"small": 10, "gpu4": 2}, "lends_idle": True},
                {"name": "q-post-a", "resource_group": "rg-1", "zone": "zone-a", "billing": "postpaid",
                 "capacity": {"small": 100}},
                {"name": "q-pre-b", "resource_group": "rg-1", "zone": "zone-b", "billing": "prepaid",
                 "capacity": {"small": 10}},
                {"name": "q-other", "resource_group": "rg-2", "zone": "zone-a", "billing": "prepaid",
                 "capacity": {"small": 10}},
            ],
            "compute_specs": [
                {"name": "small", "cpu": 1, "memory_gib": 2, "machine": {"cpu": 16}},
                {"name": "large", "cpu": 8, "memory_gib": 16, "machine": {"cpu": 16}},
                {"name": "gpu4", "cpu": 16, "memory_gib": 64, "gpu_type": "A10", "gpu_count": 4,
                 "machine": {"cpu": 64, "gpu": 6}},
            ],
            "subnets": [
                {"name": "sub-a", "vpc": "vpc-1", "zone": "zone-a"},
                {"name": "sub-b", "vpc": "vpc-1", "zone": "zone-b"},
                {"name": "sub-other", "vpc": "vpc-2", "zone": "zone-a"},
            ],
            "security_groups": [
                {"name": "sg-1", "vpc": "vpc-1", "ingress": [{"from_port": 8000, "to_port": 9000, "source": "0.0.0.0/0"}]},
                {"name": "sg-narrow", "vpc": "vpc-1", "ingress": [{"from_port": 8000, "source": "10.0.0.0/8"}]},
                {"name": "sg-other", "vpc": "vpc-2", "ingress": [{"from_port": 1, "to_port": 65535, "source": "0.0.0.0/0"}]},
            ],
            "images": [{"name": "inferstack/echo", "command": ["{python}", "-m", "inferstack.images.echo"]}],
        },
        "services": [{
            "name": "chat",
            "resource_group": "rg-1",
            "vpc": "vpc-1",
            "ports": [8000],
            "traffic": {"strategy": "weighted", "weights": {"stable": 90, "canary": 10}},
            "deployments": [
                {"name": "stable", "image": {"preset": "inferstack/echo"}, "queue": "q-pre-a", "compute_spec": "small",
                 "replicas": 2, "rolling_update": {"max_unavailable": 25, "max_surge": 25}, "subnet": "sub-a",
                 "security_group": "sg-1", "env": [{"name": "MODE", "value": "fast"}, {"name": "TOKEN", "secret": "s3cr3t"}]},
                {"name": "canary", "image": {"preset": "inferstack/echo"}, "queue": "q-post-a", "compute_spec": "small",
                 "replicas": 1, "rolling_update": {"max_unavailable": 0, "max_surge": 100}, "subnet": "sub-a",
                 "security_group": "sg-1"},
            ],
        }],
    }


def svc(d: dict) -> dict:
    return d["services"][0]


def dep(d: dict, i: int = 0) -> dict:
    return d["services"][0]["deployments"][i]


def inv(d: dict, kind: str, i: int = 0) -> dict:
    return d["inventory"][kind][i]


def multi_role(d: dict) -> dict:
    """Turn deployment 0 into a valid multi_role deployment and return it."""
    x = dep(d)
    for f in ("compute_spec", "replicas", "rolling_update"):
        x.pop(f)
    x["inference_mode"] = "multi_role"
    x["roles"] = [
        {"name": "prefill", "compute_spec": "small", "replicas": 1, "rolling_update": {"max_surge": 100, "max_unavailable": 0}},
        {"name": "decode", "entry": True, "compute_spec": "small", "replicas": 1,
         "rolling_update": {"max_surge": 100, "max_unavailable": 0}},
    ]
    return x


def clb(d: dict) -> dict:
    s = svc(d)
    s["network_type"] = "clb"
    s["traffic"] = {"strategy": "by_instance_count"}
    return s


def roomy(d: dict) -> dict:
    """The postpaid queue's quota raised to its maximum, so that counts at their limits fit it."""
    inv(d, "queues", 1)["capacity"]["small"] = L.MAX_CAPACITY
    return d


def extra_deployments(n: int) -> list[dict]:
    """`n` more valid deployments (weight 0) on the postpaid queue, which holds any count."""
    return [{"name": f"extra-{i}", "image": {"preset": "inferstack/echo"}, "queue": "q-post-a",
             "compute_spec": "small", "replicas": 1, "rolling_update": {"max_unavailable": 25, "max_surge": 25},
             "subnet": "sub-a", "security_group": "sg-1"} for i in range(n)]


def extra_services(n: int, deployments: int = 0, prefix: str = "svc") -> list[dict]:
    traffic = {"weights": {"extra-0": 100}} if deployments else {}
    return [{"name": f"{prefix}-{i}", "resource_group": "rg-1", "vpc": "vpc-1", "ports": [8000], "traffic": traffic,
             "deployments": extra_deployments(deployments)} for i in range(n)]


Mutation = Callable[[dict], Any]
P = "services[0]"
D0 = f"{P}.deployments[0]"
D1 = f"{P}.deployments[1]"

# (rule, mutation, expected path)
REJECTING: list[tuple[str, Mutation, str]] = [
    ("field.required", lambda d: svc(d).pop("vpc"), f"{P}.vpc"),
    ("field.unknown", lambda d: dep(d).update(imagee={"preset": "x"}), f"{D0}.imagee"),
    ("field.type", lambda d: dep(d).update(replicas="three"), f"{D0}.replicas"),
    ("field.enum", lambda d: svc(d).update(network_type="vpn"), f"{P}.network_type"),
    ("field.invalid", lambda d: dep(d).update(replicas=2.5), f"{D0}.replicas"),
    ("name.format", lambda d: dep(d).update(name="a" * 201, key="stable"), f"{D0}.name"),
    ("key.format", lambda d: dep(d).update(key="Stable"), f"{D0}.key"),
    ("ref.format", lambda d: dep(d).update(queue="-bad queue"), f"{D0}.queue"),
    ("description.length", lambda d: svc(d).update(description="x" * 1025), f"{P}.description"),
    ("port.range", lambda d: svc(d).update(ports=[65536]), f"{P}.ports[0]"),
    ("cidr.format", lambda d: inv(d, "vpcs").update(cidr="10.0.0.0/33"), "inventory.vpcs[0].cidr"),
    ("env.name_format", lambda d: dep(d)["env"][0].update(name="1MODE"), f"{D0}.env[0].name"),
    ("mount.path_absolute", lambda d: dep(d).update(mounts=[{"source": "m", "path": "models"}]), f"{D0}.mounts[0].path"),
    ("priority.range", lambda d: dep(d).update(priority=10), f"{D0}.priority"),
    ("rolling_update.percent_range", lambda d: dep(d)["rolling_update"].update(max_surge=101),
     f"{D0}.rolling_update.max_surge"),
    ("replicas.min_one", lambda d: dep(d).update(replicas=0), f"{D0}.replicas"),
    ("autoscaling.cron_format", lambda d: dep(d).update(autoscaling={"schedules": [
        {"start": "0 25 * * *", "end": "0 18 * * *", "replicas": 2}]}), f"{D0}.autoscaling.schedules[0].start"),
    ("autoscaling.timezone_known", lambda d: dep(d).update(autoscaling={"schedules": [
        {"start": "0 9 * * *", "end": "0 18 * * *", "timezone": "Mars/Olympus", "replicas": 2}]}),
     f"{D0}.autoscaling.schedules[0].timezone"),
    ("autoscaling.target_positive", lambda d: dep(d).update(autoscaling={"metrics": [
        {"metric": "qps", "target": 0, "max": 3}]}), f"{D0}.autoscaling.metrics[0].target"),
    ("probe.timing", lambda d: dep(d).update(probes={"readiness": {"tcp": {}, "period_s": 0}}),
     f"{D0}.probes.readiness.period_s"),
    ("graceful_shutdown.range", lambda d: dep(d).update(graceful_shutdown_s=-1), f"{D0}.graceful_shutdown_s"),
    ("traffic.weight_non_negative", lambda d: svc(d)["traffic"].update(weights={"stable": 110, "canary": -10}),
     f"{P}.traffic.weights.canary"),
    ("traffic.mirror_percent_range", lambda d: svc(d)["traffic"].update(mirror={"deployment": "canary", "percent": 0}),
     f"{P}.traffic.mirror.percent"),
    ("traffic.timeout_positive", lambda d: svc(d)["traffic"].update(timeout_s=0), f"{P}.traffic.timeout_s"),
    ("traffic.retries_range", lambda d: svc(d)["traffic"].update(retries=4), f"{P}.traffic.retries"),
    ("role.name_format", lambda d: multi_role(d)["roles"][0].update(name="Prefill"), f"{D0}.roles[0].name"),
    ("compute_spec.resources_positive", lambda d: inv(d, "compute_specs").update(cpu=0), "inventory.compute_specs[0].cpu"),
    ("compute_spec.currency_code", lambda d: inv(d, "compute_specs").update(price_per_hour={"currency": "usd"}),
     "inventory.compute_specs[0].price_per_hour.currency"),
    ("queue.capacity_non_negative", lambda d: inv(d, "queues")["capacity"].update(small=-1),
     "inventory.queues[0].capacity.small"),
    ("stack.declares_nothing", lambda d: (d.pop("services"), d.pop("inventory")), ""),
    ("inventory.name_unique", lambda d: d["inventory"]["subnets"].append({"name": "sub-a", "vpc": "vpc-1", "zone": "zone-b"}),
     "inventory.subnets[3].name"),
    ("queue.resource_group_exists", lambda d: inv(d, "queues").update(resource_group="rg-9"),
     "inventory.queues[0].resource_group"),
    ("queue.capacity_spec_exists", lambda d: inv(d, "queues")["capacity"].update(huge=1), "inventory.queues[0].capacity.huge"),
    ("subnet.vpc_exists", lambda d: inv(d, "subnets", 2).update(vpc="vpc-9"), "inventory.subnets[2].vpc"),
    ("security_group.vpc_exists", lambda d: inv(d, "security_groups", 2).update(vpc="vpc-9"),
     "inventory.security_groups[2].vpc"),
    ("security_group.port_range", lambda d: inv(d, "security_groups")["ingress"][0].update(to_port=7999),
     "inventory.security_groups[0].ingress[0].to_port"),
    ("compute_spec.fits_machine", lambda d: inv(d, "compute_specs", 1).update(cpu=17), "inventory.compute_specs[1]"),
    ("service.key_required", lambda d: svc(d).update(name="聊天"), P),
    ("service.key_unique", lambda d: d["services"].append({**copy.deepcopy(svc(d)), "name": "chat2", "key": "chat"}),
     "services[1].key"),
    ("service.name_unique_in_resource_group",
     lambda d: d["services"].append({**copy.deepcopy(svc(d)), "key": "chat-two"}), "services[1].name"),
    ("service.resource_group_exists", lambda d: svc(d).update(resource_group="rg-9"), f"{P}.resource_group"),
    ("service.vpc_exists", lambda d: svc(d).update(vpc="vpc-9"), f"{P}.vpc"),
    ("service.ports_unique", lambda d: svc(d).update(ports=[8000, 8000]), f"{P}.ports[1]"),
    ("service.legacy_and_list_form", lambda d: svc(d).update(image={"preset": "inferstack/echo"}), P),
    ("traffic.weight_given_twice", lambda d: dep(d).update(weight=90), P),
    ("traffic.weights_only_weighted", lambda d: svc(d)["traffic"].update(strategy="by_instance_count"),
     f"{P}.traffic.weights"),
    ("traffic.weight_unknown_deployment", lambda d: svc(d)["traffic"].update(weights={"stable": 90, "canry": 10}),
     f"{P}.traffic.weights.canry"),
    ("traffic.weights_sum", lambda d: svc(d)["traffic"].update(weights={"stable": 90, "canary": 20}), f"{P}.traffic.weights"),
    ("traffic.header_rule_deployment_exists", lambda d: svc(d)["traffic"].update(
        header_rules=[{"header": "x-canary", "value": "1", "deployment": "shadow"}]),
     f"{P}.traffic.header_rules[0].deployment"),
    ("traffic.mirror_deployment_exists", lambda d: svc(d)["traffic"].update(mirror={"deployment": "shadow", "percent": 5}),
     f"{P}.traffic.mirror.deployment"),
    ("deployment.key_required", lambda d: dep(d).update(name="稳定"), D0),
    ("deployment.key_unique", lambda d: dep(d, 1).update(name="stable"), f"{D1}.key"),
    ("deployment.image_exactly_one", lambda d: dep(d).update(image={"preset": "inferstack/echo", "url": "x"}), f"{D0}.image"),
    ("deployment.image_preset_exists", lambda d: dep(d).update(image={"preset": "inferstack/nope"}), f"{D0}.image.preset"),
    ("deployment.model_source_exactly_one", lambda d: dep(d).update(model={"registry": "m", "path": "/m"}), f"{D0}.model"),
    ("deployment.model_path_on_mount", lambda d: dep(d).update(model={"path": "/models/a"},
                                                               mounts=[{"source": "m", "path": "/data"}]),
     f"{D0}.model.path"),
    ("deployment.queue_exists", lambda d: dep(d).update(queue="q-nope"), f"{D0}.queue"),
    ("deployment.queue_in_resource_group", lambda d: dep(d).update(queue="q-other"), f"{D0}.queue"),
    ("deployment.compute_spec_exists", lambda d: dep(d).update(compute_spec="nope"), f"{D0}.compute_spec"),
    ("deployment.compute_spec_offered_by_queue", lambda d: dep(d).update(compute_spec="large"), f"{D0}.compute_spec"),
    ("deployment.subnet_exists", lambda d: dep(d).update(subnet="sub-nope"), f"{D0}.subnet"),
    ("subnet.in_service_vpc", lambda d: dep(d).update(subnet="sub-other"), f"{D0}.subnet"),
    ("subnet.zone_matches_queue", lambda d: dep(d).update(subnet="sub-b"), f"{D0}.subnet"),
    ("deployment.security_group_exists", lambda d: dep(d).update(security_group="sg-nope"), f"{D0}.security_group"),
    ("security_group.in_service_vpc", lambda d: dep(d).update(security_group="sg-other"), f"{D0}.security_group"),
    ("security_group.allows_ports", lambda d: dep(d).update(security_group="sg-narrow"), f"{D0}.security_group"),
    ("deployment.roles_match_mode", lambda d: dep(d).update(roles=[]), f"{D0}.roles"),
    ("deployment.replicas_or_autoscaling", lambda d: dep(d).pop("replicas"), f"{D0}.replicas"),
    ("deployment.accept_traffic_scope", lambda d: dep(d).update(accept_traffic=True), f"{D0}.accept_traffic"),
    ("deployment.ports_unique", lambda d: dep(d).update(ports={"listen": 8080, "call": [8080]}), f"{D0}.ports.call[0]"),
    ("role.entry_exactly_one", lambda d: multi_role(d)["roles"][0].update(entry=True), f"{D0}.roles"),
    ("role.name_unique", lambda d: multi_role(d)["roles"][0].update(name="decode"), f"{D0}.roles[1]"),
    ("rolling_update.not_both_zero", lambda d: dep(d).update(rolling_update={"max_unavailable": 0, "max_surge": 0}),
     f"{D0}.rolling_update"),
    ("autoscaling.not_empty", lambda d: dep(d).update(autoscaling={}), f"{D0}.autoscaling"),
    ("autoscaling.schedule_count", lambda d: dep(d).update(autoscaling={"schedules": [
        {"start": "0 9 * * *", "end": "0 18 * * *", "replicas": 2, "min": 1, "max": 3}]}),
     f"{D0}.autoscaling.schedules[0]"),
    ("autoscaling.min_le_max", lambda d: dep(d).update(autoscaling={"metrics": [
        {"metric": "qps", "target": 5, "min": 4, "max": 3}]}), f"{D0}.autoscaling.metrics[0].min"),
    ("env.name_unique", lambda d: dep(d)["env"].append({"name": "MODE", "value": "slow"}), f"{D0}.env[2].name"),
    ("env.value_exactly_one", lambda d: dep(d)["env"].append({"name": "EMPTY"}), f"{D0}.env[2]"),
    ("mount.path_unique", lambda d: dep(d).update(mounts=[{"source": "a", "path": "/m"}, {"source": "b", "path": "/m"}]),
     f"{D0}.mounts[1]"),
    ("probe.exactly_one_action", lambda d: dep(d).update(probes={"readiness": {"tcp": {}, "http": {}}}),
     f"{D0}.probes.readiness"),
    ("probe.success_threshold_one", lambda d: dep(d).update(probes={"liveness": {"tcp": {}, "success_threshold": 2}}),
     f"{D0}.probes.liveness.success_threshold"),
    ("capacity.prepaid_fits", lambda d: dep(d).update(replicas=9), f"{D0}.queue"),
    ("capacity.postpaid_quota_fits", lambda d: dep(d, 1).update(replicas=51), f"{D1}.queue"),  # 51 + 51 > 100
    ("capacity.idle_fits", lambda d: dep(d).update(use_idle=True, replicas=9), f"{D0}.use_idle"),  # 9 + 3 > 10
    ("queue.billing_matches_resource_group", lambda d: inv(d, "resource_groups").update(billing="prepaid"),
     "inventory.queues[1].billing"),
    ("numa.exceeds_half_machine", lambda d: dep(d).update(numa_affinity=True, compute_spec="gpu4", replicas=1),
     f"{D0}.compute_spec"),
    ("use_idle.no_lender", lambda d: (dep(d).update(use_idle=True), inv(d, "queues").update(lends_idle=False)),
     f"{D0}.use_idle"),
    ("autoscaling.replicas_outside_bounds", lambda d: dep(d).update(autoscaling={"metrics": [
        {"metric": "qps", "target": 5, "min": 3, "max": 4}]}), f"{D0}.replicas"),
    ("progressive.step_range", lambda d: svc(d)["traffic"].update(progressive={"steps": [0, 50, 100]}),
     f"{P}.traffic.progressive.steps[0]"),
    ("progressive.steps_increasing", lambda d: svc(d)["traffic"].update(progressive={"steps": [50, 10, 100]}),
     f"{P}.traffic.progressive.steps"),
    ("progressive.bake_time_range", lambda d: svc(d)["traffic"].update(progressive={"bake_time_s": 0}),
     f"{P}.traffic.progressive.bake_time_s"),
    ("progressive.step_timeout_range", lambda d: svc(d)["traffic"].update(progressive={
        "bake_time_s": 30, "step_timeout_s": 10}), f"{P}.traffic.progressive.step_timeout_s"),
    ("progressive.gate_range", lambda d: svc(d)["traffic"].update(progressive={"gates": {"max_error_rate": 101}}),
     f"{P}.traffic.progressive.gates.max_error_rate"),
    ("progressive.gates_not_empty", lambda d: svc(d)["traffic"].update(progressive={"gates": {
        "max_error_rate": None}}), f"{P}.traffic.progressive.gates"),
    ("progressive.retry_range", lambda d: svc(d)["traffic"].update(progressive={"retry": -1}),
     f"{P}.traffic.progressive.retry"),
    ("progressive.weighted_only", lambda d: svc(d).update(traffic={"strategy": "by_instance_count",
                                                                   "progressive": {}}),
     f"{P}.traffic.progressive"),
    ("progressive.standard_only", lambda d: multi_role(d).update(progressive={}), f"{D0}.progressive"),
    ("progressive.needs_surge", lambda d: dep(d).update(progressive={}, rolling_update={"max_unavailable": 25,
                                                                                       "max_surge": 0}),
     f"{D0}.rolling_update.max_surge"),
    # service `chat-canary`'s per-instance Service would be named like `chat`/`canary`'s Service
    ("kubernetes.object_name_unique", lambda d: (d.update(target="kubernetes"), d["services"].append(
        {**copy.deepcopy(svc(d)), "name": "chat-canary", "key": "chat-canary",
         "traffic": {"strategy": "by_instance_count"}, "deployments": [copy.deepcopy(dep(d, 1))]})), "services[1].key"),
    # size and count (spec/limits.py)
    ("number.finite", lambda d: svc(d)["traffic"].update(timeout_s=float("inf")), f"{P}.traffic.timeout_s"),
    ("text.length", lambda d: dep(d).update(model={"registry": "m" * 257}), f"{D0}.model.registry"),
    ("text.control_characters", lambda d: dep(d)["env"][0].update(value="fa\x00st"), f"{D0}.env[0].value"),
    ("env.value_size", lambda d: dep(d)["env"][0].update(value="x" * (L.MAX_ENV_VALUE + 1)), f"{D0}.env[0].value"),
    ("env.total_size", lambda d: dep(d).update(env=[{"name": f"V{i}", "value": "x" * L.MAX_ENV_VALUE}
                                                    for i in range(4)]), f"{D0}.env"),
    ("command.size", lambda d: dep(d).update(command=[]), f"{D0}.command"),
    ("replicas.max", lambda d: dep(d, 1).update(replicas=L.MAX_REPLICAS + 1), f"{D1}.replicas"),
    ("service.deployments_max", lambda d: svc(d)["deployments"].extend(
        extra_deployments(L.MAX_DEPLOYMENTS_PER_SERVICE - 1)), f"{P}.deployments"),
    ("stack.services_max", lambda d: d["services"].extend(extra_services(L.MAX_SERVICES)), "services"),
    ("stack.deployments_max", lambda d: d["services"].extend(
        extra_services(L.MAX_DEPLOYMENTS // L.MAX_DEPLOYMENTS_PER_SERVICE + 1, L.MAX_DEPLOYMENTS_PER_SERVICE)), "services"),
    ("list.max_items", lambda d: svc(d).update(ports=list(range(8000, 8001 + L.MAX_PORTS))), f"{P}.ports"),
    ("mount.source_format", lambda d: dep(d).update(mounts=[{"source": "a/../../x", "path": "/m"}]),
     f"{D0}.mounts[0].source"),
    ("image.name_format", lambda d: dep(d).update(image={"custom": "registry.example.com/../etc:1"}),
     f"{D0}.image.custom"),
    ("header.name_format", lambda d: svc(d)["traffic"].update(
        header_rules=[{"header": "x canary:", "value": "1", "deployment": "canary"}]),
     f"{P}.traffic.header_rules[0].header"),
    ("probe.http_path_format", lambda d: dep(d).update(probes={"readiness": {"http": {"path": "healthz"}}}),
     f"{D0}.probes.readiness.http.path"),
    ("traffic.timeout_max", lambda d: svc(d)["traffic"].update(timeout_s=L.MAX_TIMEOUT_S + 1), f"{P}.traffic.timeout_s"),
    ("autoscaling.target_range", lambda d: dep(d).update(autoscaling={"metrics": [
        {"metric": "qps", "target": 0.0001, "max": 3}]}), f"{D0}.autoscaling.metrics[0].target"),
    ("compute_spec.resources_max", lambda d: inv(d, "compute_specs").update(memory_gib=L.MAX_MEMORY_GIB * 2),
     "inventory.compute_specs[0].memory_gib"),
    ("queue.capacity_max", lambda d: inv(d, "queues", 1)["capacity"].update(small=L.MAX_CAPACITY + 1),
     "inventory.queues[1].capacity.small"),
]

# Rules over several stacks at once (`check_across_stacks`, as `inferstack validate A B` runs it): (rule, mutation of
# the second stack, expected path in it). Both stacks start as `base_stack()` with `target: kubernetes`, their routes
# on one shared Gateway `gateways/shared`.
REJECTING_ACROSS_STACKS: list[tuple[str, Mutation, str]] = [
    ("kubernetes.route_path_unique", lambda d: d["kubernetes"].update(namespace="team-b"), f"{P}.key"),
]

# The policy pack's advice (`validate_stack(..., advice=True)`; plans and applies leave it out): (rule, mutation,
# expected path).
REJECTING_WITH_ADVICE: list[tuple[str, Mutation, str]] = [
    ("progressive.advised", lambda d: None, f"{P}.traffic"),  # public_gateway, two deployments taking traffic
]

# Accepting cases at the boundary of a rejecting one.
ACCEPTING: list[tuple[str, Mutation]] = [
    ("CJK name with an explicit key", lambda d: dep(d).update(name="稳定_部署-1", key="stable")),
    ("name of 200 characters keeps an explicit key", lambda d: dep(d).update(name="b" * 200, key="stable")),
    ("key of 40 characters", lambda d: dep(d).update(key="a" * 40) or svc(d)["traffic"].update(
        weights={"a" * 40: 90, "canary": 10})),
    ("description of 1024 characters", lambda d: svc(d).update(description="x" * 1024)),
    ("port 65535", lambda d: (svc(d).update(ports=[8000]), dep(d).update(security_group="sg-1"))),
    ("env name with underscore first", lambda d: dep(d)["env"][0].update(name="_MODE")),
    ("priority 9", lambda d: dep(d).update(priority=9)),
    ("priority 1", lambda d: dep(d).update(priority=1)),
    ("surge 100 %", lambda d: dep(d)["rolling_update"].update(max_surge=100)),
    ("zone equal", lambda d: dep(d).update(subnet="sub-a", queue="q-pre-a")),
    ("weights as thirds", lambda d: (d["services"][0]["deployments"].append(
        {**copy.deepcopy(dep(d, 1)), "name": "third"}), svc(d)["traffic"].update(
        weights={"stable": 33.33, "canary": 33.33, "third": 33.34}))),
    ("prepaid capacity exactly full", lambda d: dep(d).update(replicas=8)),  # 8 + ceil(25 %) = 10
    ("pay-as-you-go quota exactly full", lambda d: dep(d, 1).update(replicas=50)),  # 50 + 50 = 100
    ("idle resources exactly within reach", lambda d: dep(d).update(use_idle=True, replicas=8)),
    ("a prepaid-only resource group of prepaid queues", lambda d: inv(d, "resource_groups", 1).update(
        billing="prepaid")),
    ("a postpaid-only resource group of postpaid queues", lambda d: (
        inv(d, "resource_groups", 1).update(billing="postpaid"), inv(d, "queues", 3).update(billing="postpaid"))),
    ("names repeat with distinct keys", lambda d: (dep(d, 1).update(name="stable", key="canary"))),
    ("mirror 100 %", lambda d: svc(d)["traffic"].update(mirror={"deployment": "canary", "percent": 100})),
    ("retries 0", lambda d: svc(d)["traffic"].update(retries=0)),
    ("fractional probe periods", lambda d: dep(d).update(probes={"readiness": {"tcp": {}, "period_s": 0.05,
                                                                               "timeout_s": 0.01}})),
    ("graceful 0", lambda d: dep(d).update(graceful_shutdown_s=0)),
    ("accept_traffic with clb + by_instance_count", lambda d: (clb(d), dep(d).update(accept_traffic=False))),
    ("autoscaling without replicas", lambda d: (dep(d).pop("replicas"), dep(d).update(autoscaling={"metrics": [
        {"metric": "qps", "target": 5, "min": 1, "max": 3}]}))),
    ("a valid multi_role deployment", lambda d: multi_role(d)),
    ("a service with no deployments", lambda d: svc(d).update(deployments=[], traffic={})),
    ("one deployment without weights takes all traffic", lambda d: (svc(d)["deployments"].pop(), svc(d).pop("traffic"))),
    ("ingress to_port equal to from_port", lambda d: inv(d, "security_groups")["ingress"][0].update(to_port=8000) or
     svc(d)["deployments"][0].update(ports={"listen": 8000}) or svc(d)["deployments"][1].update(ports={"listen": 8000})),
    ("NUMA at half a machine", lambda d: dep(d).update(numa_affinity=True)),
    ("an env value at its size limit", lambda d: dep(d)["env"][0].update(value="x" * L.MAX_ENV_VALUE)),
    ("an environment at its total size limit", lambda d: dep(d).update(env=[
        {"name": "A", "value": "x" * L.MAX_ENV_VALUE}, {"name": "B", "value": "x" * L.MAX_ENV_VALUE},
        {"name": "C", "value": "x" * L.MAX_ENV_VALUE}, {"name": "D", "value": "x" * (L.MAX_ENV_VALUE - 8)}])),
    ("tabs and line breaks in env values and descriptions", lambda d: (
        dep(d)["env"][0].update(value="-----BEGIN KEY-----\n\tabc\r\n"), svc(d).update(description="a\n\tb"))),
    ("a one-item command", lambda d: dep(d).update(command=["serve"])),
    ("replicas at their maximum", lambda d: roomy(d) and dep(d, 1).update(replicas=L.MAX_REPLICAS)),
    ("a service with the most deployments", lambda d: roomy(d) and svc(d)["deployments"].extend(
        extra_deployments(L.MAX_DEPLOYMENTS_PER_SERVICE - 2))),
    ("ports at their maximum count", lambda d: svc(d).update(ports=list(range(8000, 8000 + L.MAX_PORTS)))),
    ("a mount source with dots inside", lambda d: dep(d).update(mounts=[{"source": "models.v2_x-1", "path": "/m"}])),
    ("an image reference with port, tag and digest", lambda d: dep(d).update(
        image={"custom": "registry.example.com:5000/team/llm:1.4@sha256:" + "a" * 64})),
    ("an image URL", lambda d: dep(d).update(image={"url": "https://images.example.com/llm:2"})),
    ("a header token with punctuation", lambda d: svc(d)["traffic"].update(
        header_rules=[{"header": "X-Canary_v2.1", "value": "\u91d1\u4e1d\u96c0 1", "deployment": "canary"}])),
    ("an HTTP probe path with a query", lambda d: dep(d).update(probes={"readiness": {"http": {"path": "/h?x=1"}}})),
    ("timeout at one day", lambda d: svc(d)["traffic"].update(timeout_s=L.MAX_TIMEOUT_S)),
    ("metric targets at both bounds", lambda d: dep(d).update(autoscaling={"metrics": [
        {"metric": "qps", "target": L.MIN_METRIC_TARGET, "max": 3},
        {"metric": "in_flight", "target": L.MAX_METRIC_TARGET, "max": 3}]})),
    ("queue capacity at its maximum", lambda d: inv(d, "queues", 1)["capacity"].update(small=L.MAX_CAPACITY)),
    ("a model registry reference at its length limit", lambda d: dep(d).update(model={"registry": "m" * 256})),
    ("a stack with the most services", lambda d: d["services"].extend(extra_services(L.MAX_SERVICES - 1))),
    ("a stack with the most deployments", lambda d: roomy(d) and d["services"].extend(
        extra_services(L.MAX_DEPLOYMENTS // L.MAX_DEPLOYMENTS_PER_SERVICE, L.MAX_DEPLOYMENTS_PER_SERVICE)
        + extra_services(1, L.MAX_DEPLOYMENTS % L.MAX_DEPLOYMENTS_PER_SERVICE - 2, prefix="rest"))),
    ("a large finite number where a number is asked", lambda d: inv(d, "queues", 1)["capacity"].update(
        small=L.MAX_CAPACITY) or inv(d, "compute_specs").update(price_per_hour={"prepaid": 1e6})),
    ("integral floats where integers are asked (how Pulumi sends numbers)", lambda d: (
        dep(d).update(replicas=2.0, priority=5.0), svc(d).update(ports=[8000.0]))),
    ("a traffic shift in fractions of a second", lambda d: svc(d)["traffic"].update(progressive={
        "steps": [10, 50, 100], "bake_time_s": 0.2, "gates": {"max_error_rate": 0, "max_p99_ms": 50,
                                                               "max_p99_ratio": 1.5, "min_requests": 1}})),
    ("a canary redeploy with one step below 100", lambda d: dep(d).update(progressive={"steps": [1, 100]})),
    ("step timeout equal to the bake time", lambda d: svc(d)["traffic"].update(progressive={
        "bake_time_s": 30, "step_timeout_s": 30})),
    ("a single full step for a traffic shift", lambda d: svc(d)["traffic"].update(progressive={"steps": [100]})),
]


def run(mutate: Mutation):
    d = base_stack()
    mutate(d)
    return validate_stack(d).report


def test_base_stack_is_valid_without_findings():
    report = validate_stack(base_stack()).report
    assert report.findings == []


@pytest.mark.parametrize("rule,mutate,path", REJECTING, ids=[r[0] for r in REJECTING])
def test_rejecting_case_names_rule_and_path(rule, mutate, path):
    report = run(mutate)
    hits = [f for f in report.findings if f.rule == rule]
    assert hits, f"expected {rule}, got {[(f.rule, f.path) for f in report.findings]}"
    assert path in [f.path for f in hits], [(f.rule, f.path) for f in hits]
    finding = next(f for f in hits if f.path == path)
    assert finding.severity is RULES[rule].severity
    assert finding.message


@pytest.mark.parametrize("name,mutate", ACCEPTING, ids=[a[0] for a in ACCEPTING])
def test_accepting_boundary_case(name, mutate):
    report = run(mutate)
    assert report.errors == [], [str(f) for f in report.errors]


def kubernetes_stack() -> dict:
    return {**base_stack(), "target": "kubernetes",
            "kubernetes": {"namespace": "team-a", "gateway": {"name": "shared", "namespace": "gateways"}}}


@pytest.mark.parametrize("rule,mutate,path", REJECTING_ACROSS_STACKS, ids=[r[0] for r in REJECTING_ACROSS_STACKS])
def test_rejecting_case_across_stacks_names_rule_and_path(rule, mutate, path):
    first, second = kubernetes_stack(), kubernetes_stack()
    mutate(second)
    stacks = [validate_stack(first, "a.yaml"), validate_stack(second, "b.yaml")]
    assert all(s.report.ok for s in stacks)  # each alone is valid
    check_across_stacks(stacks)
    assert stacks[0].report.errors == []  # the first claimant keeps its path
    hits = [f for f in stacks[1].report.findings if f.rule == rule]
    assert [f.path for f in hits] == [path]
    assert "a.yaml: services[0]" in hits[0].message and hits[0].severity is RULES[rule].severity


def test_stacks_on_one_gateway_with_distinct_path_prefixes_do_not_collide():
    first, second = kubernetes_stack(), kubernetes_stack()
    first["kubernetes"].update(path_prefix="/team-a")
    second["kubernetes"].update(namespace="team-b", path_prefix="/team-b")
    stacks = [validate_stack(first, "a.yaml"), validate_stack(second, "b.yaml")]
    check_across_stacks(stacks)
    assert [f for s in stacks for f in s.report.findings] == []


def test_kubernetes_rules_apply_only_to_kubernetes_stacks():
    d = base_stack()
    d["services"].append({**copy.deepcopy(svc(d)), "name": "chat-canary", "key": "chat-canary",
                          "traffic": {"strategy": "by_instance_count"}, "deployments": [copy.deepcopy(dep(d, 1))]})
    assert validate_stack(d).report.findings == []  # local: names never meet
    d["target"] = "kubernetes"
    assert [f.rule for f in validate_stack(d).report.errors] == ["kubernetes.object_name_unique"]


@pytest.mark.parametrize("rule,mutate,path", REJECTING_WITH_ADVICE, ids=[r[0] for r in REJECTING_WITH_ADVICE])
def test_rejecting_advice_names_rule_and_path(rule, mutate, path):
    d = base_stack()
    mutate(d)
    assert [f for f in validate_stack(d).report.findings if f.rule == rule] == []  # advice only when asked
    hits = [f for f in validate_stack(d, advice=True).report.findings if f.rule == rule]
    assert [f.path for f in hits] == [path] and hits[0].severity is RULES[rule].severity and hits[0].message


def test_every_rule_has_a_rejecting_case():
    covered = {r for r, _, _ in REJECTING} | {r for r, _, _ in REJECTING_ACROSS_STACKS} | \
        {r for r, _, _ in REJECTING_WITH_ADVICE}
    assert set(RULES) - covered == set()


def test_all_violations_are_reported_at_once():
    d = base_stack()
    dep(d).update(subnet="sub-b", priority=10)
    dep(d, 1).update(security_group="sg-narrow")
    svc(d)["traffic"]["weights"] = {"stable": 90, "canary": 20}
    report = validate_stack(d).report
    # priority is a field error of deployment 0; its zone mismatch (a cross-object rule that does not read priority)
    # is still reported, and so are the other deployments' and the traffic object's findings, with the input's paths.
    assert sorted((f.rule, f.path) for f in report.errors) == sorted([
        ("priority.range", f"{D0}.priority"), ("subnet.zone_matches_queue", f"{D0}.subnet"),
        ("security_group.allows_ports", f"{D1}.security_group"), ("traffic.weights_sum", f"{P}.traffic.weights")])
    assert {(f.rule, f.path) for f in report.deferred} == {("capacity.prepaid_fits", "services")}
    assert validate(d["services"], d["inventory"]).rules() == report.rules()
    d = base_stack()
    dep(d).update(subnet="sub-b")
    dep(d, 1).update(security_group="sg-narrow")
    svc(d)["traffic"]["weights"] = {"stable": 90, "canary": 20}
    report = validate_stack(d).report
    assert {"subnet.zone_matches_queue", "security_group.allows_ports", "traffic.weights_sum"} <= report.rules()


def test_secret_values_never_appear_in_findings():
    d = base_stack()
    dep(d)["env"][1]["secret"] = 12345  # wrong type: a secret is a string
    dep(d)["env"].append({"name": "TOKEN", "secret": "hunter2"})
    report = validate_stack(d).report
    text = str(report) + repr(report.to_list())
    assert "hunter2" not in text and "12345" not in text
    assert any(f.value == SECRET_MASK for f in report.findings)


def test_zone_mismatch_message_names_both_zones():
    d = base_stack()
    dep(d).update(subnet="sub-b")
    (f,) = [f for f in validate_stack(d).report.findings if f.rule == "subnet.zone_matches_queue"]
    assert "zone-b" in f.message and "zone-a" in f.message and f.value == "sub-b"


def test_missing_inventory_is_deferred_when_inventory_is_partial():
    d = base_stack()
    report = validate(d["services"], {"vpcs": d["inventory"]["vpcs"]}, partial_inventory=True)
    assert report.errors == []
    assert "deployment.queue_exists" in {f.rule for f in report.deferred}
    assert all("not checked yet" in f.message for f in report.deferred)


def test_unknown_values_are_deferred_not_skipped():
    d = base_stack()
    dep(d)["subnet"] = "<unknown>"
    report = validate(d["services"], d["inventory"])
    assert report.errors == []
    deferred = [f for f in report.findings if f.severity is Severity.DEFERRED]
    assert [f.path for f in deferred] == [f"{D0}.subnet"]
    assert "not known until apply" in deferred[0].message


def test_flat_legacy_form_is_one_default_deployment():
    d = base_stack()
    s = svc(d)
    flat = {k: v for k, v in s.items() if k not in ("deployments", "traffic")}
    flat.update({k: v for k, v in dep(d).items() if k != "name"})
    d["services"] = [flat]
    loaded = validate_stack(d)
    assert loaded.report.errors == []
    (service,) = loaded.stack.services
    assert service.legacy_form
    assert [(x.key, x.name) for x in service.deployments] == [("default", "Default")]
    assert service.traffic.weights == {"default": 100.0}


def test_weight_sugar_becomes_traffic_weights():
    d = base_stack()
    svc(d).pop("traffic")
    dep(d)["weight"] = 70
    dep(d, 1)["weight"] = 30
    loaded = validate_stack(d)
    assert loaded.report.errors == []
    assert loaded.stack.services[0].traffic.weights == {"stable": 70.0, "canary": 30.0}
