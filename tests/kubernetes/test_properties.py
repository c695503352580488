"""Any valid spec renders schema-valid objects, deterministically, with no secret value unless asked for — and objects
that keep the promises of the semantic tests (test_semantics.py) whatever the spec: a readiness probe in every
container, budgets within the rolling update, every PriorityClass rendered or warned, the Gateway admitted, exactly the
objects `spec.kubernetes.service_objects` announces (what the name-clash rule checks)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from k8s_checks import (
    Source,
    ingress_allowed,
    pdb_allowed_disruptions,
    problems,
    require_schemas,
    rolling_max_unavailable,
)

from inferstack.spec import default_inventory, validate_stack
from inferstack.spec.kubernetes import service_objects
from inferstack.targets.kubernetes import RenderOptions, render

BASE = default_inventory()
# The stack's own inventory: roomy prepaid queues (so admission rarely rejects a draw), fractional specs.
INVENTORY = {
    "compute_specs": [
        {"name": "cpu-frac", "cpu": 2.5, "memory_gib": 3.3, "machine": {"cpu": 8}},
        {"name": "cpu-wide", "cpu": 20, "memory_gib": 64, "machine": {"cpu": 32}},
    ],
    "queues": [
        {"name": "q-big-a", "resource_group": "rg-default", "zone": "zone-a", "billing": "prepaid",
         "capacity": {"cpu-small": 500, "cpu-frac": 500, "cpu-wide": 500, "gpu-a10": 500, "gpu-a10x4": 500},
         "lends_idle": True},
        {"name": "q-big-b", "resource_group": "rg-default", "zone": "zone-b", "billing": "postpaid",
         "capacity": {"cpu-small": 500, "cpu-frac": 500, "gpu-a10": 500}},
    ],
}
QUEUES = {q["name"]: q for q in INVENTORY["queues"]}
SUBNET = {"zone-a": "subnet-a", "zone-b": "subnet-b"}

keys = st.from_regex(r"[a-z][a-z0-9-]{0,39}", fullmatch=True)
roles = st.from_regex(r"[a-z][a-z0-9-]{0,19}", fullmatch=True)
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
refs = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,30}", fullmatch=True)
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
seconds = st.sampled_from([0.1, 0.5, 1, 2.25, 10, 30])
percents = st.sampled_from([0, 0.5, 12.5, 25, 33.3, 50, 100])


@st.composite
def probes(draw) -> dict[str, Any]:
    out = {}
    for kind in draw(st.lists(st.sampled_from(["startup", "readiness", "liveness"]), unique=True, max_size=3)):
        action = draw(st.sampled_from([{"http": {"path": "/healthz"}}, {"http": {"path": "/x", "port": 9001}},
                                       {"tcp": {}}, {"command": ["check", "--fast"]}]))
        out[kind] = {**action, "initial_delay_s": draw(st.sampled_from([0, 0.5, 3])), "period_s": draw(seconds),
                     "timeout_s": draw(seconds), "failure_threshold": draw(st.integers(1, 5))}
        if kind == "readiness":
            out[kind]["success_threshold"] = draw(st.integers(1, 3))
    return out


@st.composite
def autoscaling(draw) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        lo = draw(st.integers(1, 3))
        out["metrics"] = [{"metric": draw(st.sampled_from(["qps", "cpu", "gpu", "in_flight", "latency_p99_ms"])),
                           "target": draw(st.sampled_from([0.5, 8, 70, 250])), "min": lo,
                           "max": lo + draw(st.integers(0, 5))}]
    if draw(st.booleans()) or not out:
        window = draw(st.sampled_from([{"replicas": 2}, {"min": 2, "max": 6}]))
        out["schedules"] = [{"start": "0 9 * * 1-5", "end": "0 18 * * 1-5",
                             "timezone": draw(st.sampled_from(["UTC", "Asia/Shanghai"])), **window}]
    return out


@st.composite
def role_fields(draw, queue: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "compute_spec": draw(st.sampled_from(sorted(QUEUES[queue]["capacity"]))),
        "rolling_update": draw(st.sampled_from([{"max_unavailable": u, "max_surge": s}
                                                for u in [0, 0.5, 25, 100] for s in [0, 12.5, 100] if u or s])),
        "probes": draw(probes()),
    }
    if draw(st.booleans()):
        fields["autoscaling"] = draw(autoscaling())
    else:
        fields["replicas"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        fields["command"] = draw(st.lists(text, min_size=1, max_size=3))
    env = []
    for name in draw(st.lists(env_names, max_size=3, unique=True)):
        if draw(st.booleans()):
            env.append({"name": name, "secret": f"S3CR3T{draw(text)}"})
        else:
            env.append({"name": name, "value": draw(text)})
    fields["env"] = env
    return fields


@st.composite
def deployments(draw, key: str, clb_share: bool) -> dict[str, Any]:
    queue = draw(st.sampled_from(sorted(QUEUES)))
    listen = draw(st.sampled_from([8080, 9000, 8000]))
    d: dict[str, Any] = {
        "name": draw(st.sampled_from([key, "部署", "Same_Name"])), "key": key,
        "image": draw(st.sampled_from([{"preset": "inferstack/echo"}, {"custom": "registry.example.com/a/b:1"},
                                       {"url": "docker.io/library/x@sha256:" + "a" * 64}])),
        "queue": queue, "subnet": SUBNET[QUEUES[queue]["zone"]], "security_group": "sg-open",
        "ports": {"listen": listen, "call": draw(st.lists(st.sampled_from([9001, 9002]), unique=True, max_size=2))},
        "priority": draw(st.integers(1, 9)), "use_idle": draw(st.booleans()), "numa_affinity": draw(st.booleans()),
        "graceful_shutdown_s": draw(st.sampled_from([0, 0.5, 30, 95.5])),
    }
    mount_paths = draw(st.lists(st.sampled_from(["/models", "/tmp", "/data/x"]), unique=True, max_size=2))
    d["mounts"] = [{"source": draw(refs), "path": p, "read_only": draw(st.booleans())} for p in mount_paths]
    if "/models" in mount_paths and draw(st.booleans()):
        d["model"] = {"path": "/models/m"}
    elif draw(st.booleans()):
        d["model"] = {"registry": "qwen2-7b", "version": "3"}
    if clb_share and draw(st.booleans()):
        d["accept_traffic"] = draw(st.booleans())
    if draw(st.booleans()):
        names = draw(st.lists(roles, min_size=2, max_size=3, unique=True))
        entry = draw(st.integers(0, len(names) - 1))
        d["inference_mode"] = "multi_role"
        d["roles"] = [{"name": n, "entry": i == entry, **draw(role_fields(queue))} for i, n in enumerate(names)]
    else:
        d.update(draw(role_fields(queue)))
        if d["env"] and draw(st.booleans()):
            d["env"] = d["env"][:1]
    return d


@st.composite
def stacks(draw) -> dict[str, Any]:
    services = []
    for i, skey in enumerate(draw(st.lists(keys, min_size=1, max_size=2, unique=True))):
        network = draw(st.sampled_from(["public_gateway", "private_gateway", "clb"]))
        strategy = draw(st.sampled_from(["weighted", "by_instance_count"]))
        dkeys = draw(st.lists(keys, min_size=0, max_size=3, unique=True))
        deps = [draw(deployments(k, network == "clb" and strategy == "by_instance_count")) for k in dkeys]
        traffic: dict[str, Any] = {"strategy": strategy, "timeout_s": draw(st.sampled_from([0.25, 60, 3723.5]))}
        if strategy == "weighted" and dkeys:
            cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(dkeys) - 1, max_size=len(dkeys) - 1)))
            bounds = [0, *cuts, 100]
            traffic["weights"] = {k: float(bounds[j + 1] - bounds[j]) for j, k in enumerate(dkeys)}
        if dkeys:
            traffic["header_rules"] = [{"header": draw(st.sampled_from(["x-canary", "X-Team", "bad header"])),
                                        "value": draw(st.sampled_from(["1", "", "beta"])),
                                        "deployment": draw(st.sampled_from(dkeys))}
                                       for _ in range(draw(st.integers(0, 2)))]
            if draw(st.booleans()):
                traffic["mirror"] = {"deployment": draw(st.sampled_from(dkeys)),
                                     "percent": draw(st.sampled_from([2.5, 5, 100]))}
            if draw(st.booleans()):
                traffic["consistent_hash"] = {"header": "x-user-id"}
        services.append({"name": f"svc-{i}", "key": skey, "resource_group": "rg-default", "vpc": "vpc-default",
                         "network_type": network, "traffic": traffic, "deployments": deps,
                         "ports": draw(st.lists(st.sampled_from([8000, 8443, 9001]), unique=True, max_size=2))})
    inventory = {**INVENTORY, "security_groups": [{"name": "sg-open", "vpc": "vpc-default", "ingress": [
        {"protocol": "tcp", "from_port": 1, "to_port": 65535, "source": "10.0.0.0/8"},
        {"protocol": draw(st.sampled_from(["udp", "all"])), "from_port": 53, "source": "fd00::/8"}]}]}
    return {"target": "kubernetes", "inventory": inventory, "services": services,
            "kubernetes": {"namespace": draw(st.sampled_from(["default", "inference"])),
                           "gateway": draw(st.sampled_from([{}, {"name": "edge", "namespace": "gateways"}])),
                           "gateway_api_version": draw(st.sampled_from(["v1.0", "v1.2", "v1.3", "v1.4.1"])),
                           "prestop_delay_s": draw(st.sampled_from([0, 2.5, 5]))}}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=stacks(), include_secrets=st.booleans(), cluster_bootstrap=st.booleans())
def test_any_valid_spec_renders_schema_valid_objects_deterministically(data, include_secrets, cluster_bootstrap):
    require_schemas()
    loaded = validate_stack(data, "<generated>", BASE)
    if not loaded.report.ok:  # generated keys may join to one name (`a-b` + `c` = `a` + `b-c`): validate refuses it
        reject()
    stack = loaded.stack
    options = RenderOptions(include_secrets=include_secrets, cluster_bootstrap=cluster_bootstrap)
    result = render(stack, options)  # a valid stack always renders: validate knew every name clash
    assert problems(result.objects, stack.kubernetes_options.gateway_api_minor) == []
    again = render(stack, options)
    assert again.to_documents() == result.to_documents() and again.warnings == result.warnings
    if not include_secrets:
        assert "S3CR3T" not in result.to_documents()
    announced = {(kind, name) for svc in stack.services for kind, name, _ in service_objects(svc)}
    optional = {"PriorityClass"} if include_secrets else {"PriorityClass", "Secret"}  # rendered only when asked
    assert {(o["kind"], o["metadata"]["name"]) for o in result.objects if o["kind"] not in optional} \
        == {(k, n) for k, n in announced if k not in optional}
    _keeps_the_semantic_promises(stack, result)


def _keeps_the_semantic_promises(stack, result) -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in result.objects}
    classes = {n for k, n in objects if k == "PriorityClass"}
    namespace = stack.kubernetes_options.namespace
    for (kind, name), obj in objects.items():
        if kind != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        assert "readinessProbe" in pod["containers"][0], name
        priority = pod.get("priorityClassName")
        assert priority is None or priority in classes or any(priority in w for w in result.warnings), name
        budget = objects[("PodDisruptionBudget", name)]
        for replicas in range(1, 11):
            assert pdb_allowed_disruptions(budget, replicas) <= rolling_max_unavailable(obj, replicas), name
        labels = obj["spec"]["template"]["metadata"]["labels"]
        if labels["inferstack.io/traffic"] == "on":
            svc = next(s for s in stack.services if ("Deployment", name) in
                       {(k, n) for k, n, _ in service_objects(s)})
            if svc.network_type == "clb" and svc.traffic.strategy == "by_instance_count":
                continue
            gateway = stack.kubernetes_options.gateway_for(svc.network_type)
            plane = Source.pod(gateway.namespace or namespace, {"gateway.networking.k8s.io/gateway-name": gateway.name})
            port = pod["containers"][0]["ports"][0]["containerPort"]
            assert ingress_allowed(result.objects, namespace, labels, port, plane), name
