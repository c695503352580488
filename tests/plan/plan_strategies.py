"""Hypothesis strategies: valid stack files against the default inventory, and pairs of related stacks.

Stacks are drawn in a "plain" list form (every service has `deployments:`; `_flat` asks for the legacy form) from
small pools of keys, so that two draws share services and deployments often; `mixed` takes each object or field from
one of two stacks, `repair` restores what mixing breaks on purpose-free grounds (zones, weights, references), and
`render` writes the stack-file data. Every stack handed to a test has passed `validate_stack`."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from inferstack.spec import StackFile, default_inventory, validate_stack

INVENTORY = default_inventory()
ZONE_SUBNET = {"zone-a": "subnet-a", "zone-b": "subnet-b"}
SERVICE_KEYS = ("chat", "embed", "rank")
DEPLOYMENT_KEYS = ("default", "stable", "canary", "shadow")
ROLE_NAMES = ("prefill", "decode", "encode")
SECRET_PREFIX = "S3cr3t-"
EXTRA_QUEUE = "q-extra"
ROLE_GROUP = ("inference_mode", "roles", "compute_spec", "replicas", "autoscaling", "command", "env", "probes",
              "rolling_update")
"""Deployment fields taken together when mixing (standard and multi-role fields do not mix)."""

names = st.sampled_from(["Stable", "稳定版", "canary_2", "Default", "blue-green"])
env_names = st.sampled_from(["A", "B", "TOKEN", "MODEL_DIR"])
plain_values = st.sampled_from(["1", "x", "中文", "", "a b"])
secret_values = st.builds(lambda s: SECRET_PREFIX + s, st.text(alphabet="abcdef0123", max_size=6))
rolling_updates = st.sampled_from([
    {"max_unavailable": 25, "max_surge": 25}, {"max_unavailable": 25.0, "max_surge": 25.0},
    {"max_unavailable": 0, "max_surge": 100}, {"max_unavailable": 100, "max_surge": 0}, {},
])
probes = st.sampled_from([
    None, {"readiness": {"http": {"path": "/healthz"}, "period_s": 0.5}},
    {"liveness": {"tcp": {}}, "startup": {"command": ["true"], "failure_threshold": 30}},
])


@st.composite
def env_lists(draw: Any) -> list[dict[str, Any]]:
    out = []
    for name in draw(st.lists(env_names, max_size=3, unique=True)):
        if draw(st.booleans()):
            out.append({"name": name, "value": draw(plain_values)})
        else:
            out.append({"name": name, "secret": draw(secret_values)})
    return out


@st.composite
def role_fields(draw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"compute_spec": draw(st.sampled_from(["cpu-small", "cpu-small", "cpu-large"])),
                           "rolling_update": draw(rolling_updates)}
    if draw(st.booleans()):
        out["autoscaling"] = {"metrics": [{"metric": "qps", "target": draw(st.sampled_from([10, 10.0, 50])),
                                           "min": 1, "max": draw(st.integers(2, 4))}]}
        if draw(st.booleans()):
            out["replicas"] = draw(st.integers(1, 2))
    else:
        out["replicas"] = draw(st.sampled_from([1, 2, 2.0]))
    command = draw(st.sampled_from([None, ["python", "-m", "serve"], ["serve", "--port", "8080"]]))
    if command:
        out["command"] = command
    env = draw(env_lists())
    if env:
        out["env"] = env
    probe = draw(probes)
    if probe:
        out["probes"] = probe
    return out


@st.composite
def deployments(draw: Any, key: str, queues: list[str]) -> dict[str, Any]:
    queue = draw(st.sampled_from(queues))
    d: dict[str, Any] = {
        "name": "Default" if key == "default" else draw(st.one_of(st.just(key), names)), "key": key,
        "image": draw(st.sampled_from([{"preset": "inferstack/echo"}, {"custom": "registry.example.com/llm:1"},
                                       {"url": "https://images.example.com/llm:2"}])),
        "queue": queue,
        "security_group": draw(st.sampled_from(["sg-default", "sg-loopback"])),
    }
    for field, values in (("graceful_shutdown_s", [30, 30.0, 10, 0.5]), ("priority", [5, 1, 9]),
                          ("use_idle", [False, True]), ("numa_affinity", [False, True]),
                          ("ports", [{"listen": 8080}, {"listen": 9000, "call": [9001]}]),
                          ("model", [{"registry": "qwen2-7b", "version": "3"}]),
                          ("mounts", [[{"source": "models", "path": "/models", "read_only": True}]])):
        if draw(st.booleans()):
            d[field] = draw(st.sampled_from(values))
    if draw(st.integers(0, 3)) == 0:
        roles = draw(st.lists(st.sampled_from(ROLE_NAMES), min_size=2, max_size=3, unique=True))
        d["inference_mode"] = "multi_role"
        d["roles"] = [{"name": r, "entry": i == 0, **draw(role_fields())} for i, r in enumerate(roles)]
        shared = draw(env_lists())
        if shared:
            d["env"] = shared
    else:
        d.update(draw(role_fields()))
    return d


@st.composite
def weights_for(draw: Any, keys: list[str]) -> dict[str, float]:
    if len(keys) == 3 and draw(st.booleans()):
        return dict(zip(keys, draw(st.sampled_from([[33.33, 33.33, 33.34], [100 / 3] * 3, [50, 25, 25]]))))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(keys) - 1, max_size=len(keys) - 1)))
    bounds = [0, *cuts, 100]
    return {k: float(bounds[i + 1] - bounds[i]) for i, k in enumerate(keys)}


@st.composite
def services(draw: Any, key: str, queues: list[str]) -> dict[str, Any]:
    dkeys = draw(st.lists(st.sampled_from(DEPLOYMENT_KEYS), min_size=draw(st.sampled_from([0, 1, 1, 2])),
                          max_size=3, unique=True))
    deps = [draw(deployments(k, queues)) for k in dkeys]
    network = draw(st.sampled_from(["public_gateway", "private_gateway", "clb"]))
    strategy = draw(st.sampled_from(["weighted", "weighted", "by_instance_count"]))
    traffic: dict[str, Any] = {"strategy": strategy}
    if strategy == "weighted" and deps and (len(deps) > 1 or draw(st.booleans())):
        traffic["weights"] = draw(weights_for(dkeys))
    if deps and draw(st.booleans()):
        traffic["header_rules"] = [{"header": "x-canary", "value": "1", "deployment": draw(st.sampled_from(dkeys))}]
    if deps and draw(st.booleans()):
        traffic["mirror"] = {"deployment": draw(st.sampled_from(dkeys)), "percent": draw(st.sampled_from([5, 5.0]))}
    if draw(st.booleans()):
        traffic["consistent_hash"] = {"header": "x-user-id"}
    if draw(st.booleans()):
        traffic["timeout_s"] = draw(st.sampled_from([60, 60.0, 5]))
    if network == "clb" and strategy == "by_instance_count":
        for d in deps:
            choice = draw(st.sampled_from([None, True, False]))
            if choice is not None:
                d["accept_traffic"] = choice
    svc: dict[str, Any] = {
        "name": key if draw(st.booleans()) else f"服务-{key}", "key": key,
        "resource_group": "rg-default", "vpc": "vpc-default", "network_type": network,
        "ports": draw(st.sampled_from([[8000], [8000, 8443]])),
        "traffic": traffic, "deployments": deps, "_flat": draw(st.booleans()),
    }
    if draw(st.booleans()):
        svc["description"] = draw(st.sampled_from(["chat bot", "多部署服务", ""]))
    return svc


@st.composite
def plain_stacks(draw: Any) -> dict[str, Any]:
    inventory: dict[str, Any] = {}
    queues = [q.name for q in INVENTORY.queues]
    if draw(st.booleans()):
        inventory["queues"] = [{"name": EXTRA_QUEUE, "resource_group": "rg-default", "zone": "zone-a",
                                "billing": draw(st.sampled_from(["prepaid", "postpaid"])),
                                "capacity": {"cpu-small": draw(st.sampled_from([32, 64])), "cpu-large": 16},
                                "lends_idle": draw(st.booleans())}]
        queues.append(EXTRA_QUEUE)
    keys = draw(st.lists(st.sampled_from(SERVICE_KEYS), min_size=1, max_size=3, unique=True))
    return repair({"inventory": inventory, "services": [draw(services(k, queues)) for k in keys]})


# --- mixing two stacks -----------------------------------------------------------------------------------------

def _pick(draw: Any, a: Any, b: Any) -> Any:
    return copy.deepcopy(draw(st.sampled_from([a, b])))


def _mixed_deployment(draw: Any, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {}
    role_source = draw(st.sampled_from([a, b]))
    for field in ROLE_GROUP:
        if field in role_source:
            out[field] = copy.deepcopy(role_source[field])
    for field in dict.fromkeys([*a, *b]):
        if field not in ROLE_GROUP:
            source = draw(st.sampled_from([a, b]))
            if field in source:
                out[field] = copy.deepcopy(source[field])
    out["name"], out["key"] = a["name"], a["key"]
    return out


def _mixed_by_key(draw: Any, a: list[dict[str, Any]], b: list[dict[str, Any]], mix: Any) -> list[dict[str, Any]]:
    """Items of `a` and `b` matched by key: each dropped, taken from one side, or (when on both) mixed by `mix`."""
    a_items = {item["key"]: item for item in a}
    b_items = {item["key"]: item for item in b}
    out = []
    for k in dict.fromkeys([*a_items, *b_items]):
        choice = draw(st.sampled_from(["a", "b", "mix", "mix", "mix", "drop"]))
        if choice == "drop":
            continue
        if k in a_items and k in b_items and choice == "mix":
            out.append(mix(draw, a_items[k], b_items[k]))
        else:
            side = a_items if (choice == "a" and k in a_items) or k not in b_items else b_items
            out.append(copy.deepcopy(side[k]))
    return out


def _mixed_service(draw: Any, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {f: _pick(draw, a.get(f), b.get(f)) for f in dict.fromkeys([*a, *b]) if f != "deployments"}
    out = {k: v for k, v in out.items() if v is not None}
    out["key"] = a["key"]
    out["deployments"] = _mixed_by_key(draw, a["deployments"], b["deployments"], _mixed_deployment)
    return out


@st.composite
def mixed(draw: Any, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """A stack taking each service, deployment or field from `a` or `b` (then repaired)."""
    services_ = _mixed_by_key(draw, a["services"], b["services"], _mixed_service)
    return repair({"inventory": _pick(draw, a["inventory"], b["inventory"]), "services": services_})


def repair(stack: dict[str, Any]) -> dict[str, Any]:
    """Fix what mixing breaks: queues exist, subnets follow their queue's zone, weights cover exactly the
    deployments, traffic references only existing deployments, accept_traffic only where allowed."""
    zones = {q.name: q.zone for q in INVENTORY.queues}
    zones.update((q["name"], q["zone"]) for q in stack["inventory"].get("queues", []))
    for svc in stack["services"]:
        keys = [d["key"] for d in svc["deployments"]]
        traffic = svc.setdefault("traffic", {})
        allow_accept = svc.get("network_type") == "clb" and traffic.get("strategy") == "by_instance_count"
        for d in svc["deployments"]:
            if d["queue"] not in zones:
                d["queue"] = "q-postpaid-a"
            d["subnet"] = ZONE_SUBNET[zones[d["queue"]]]
            if not allow_accept:
                d.pop("accept_traffic", None)
        weights = traffic.get("weights")
        if traffic.get("strategy", "weighted") != "weighted":
            traffic.pop("weights", None)
        elif (weights is None and len(keys) > 1) or (
                weights is not None and (set(weights) != set(keys) or abs(sum(weights.values()) - 100) > 0.05)):
            share = 100 // len(keys) if keys else 0
            traffic["weights"] = {k: float(share + (100 - share * len(keys) if i == 0 else 0))
                                  for i, k in enumerate(keys)}
        traffic["header_rules"] = [r for r in traffic.get("header_rules", []) if r["deployment"] in keys]
        if traffic.get("mirror") and traffic["mirror"]["deployment"] not in keys:
            del traffic["mirror"]
    return stack


# --- stack-file data and models --------------------------------------------------------------------------------

def render(plain: dict[str, Any]) -> dict[str, Any]:
    """Stack-file data: `_flat` services whose one deployment is `default` are written in the legacy form."""
    data = copy.deepcopy(plain)
    for svc in data["services"]:
        flat = svc.pop("_flat", False)
        deps = svc["deployments"]
        # `ports` of the flat form are the service's, so a deployment with its own ports stays in the list form.
        if flat and [d["key"] for d in deps] == ["default"] and "ports" not in deps[0]:
            dep = svc.pop("deployments")[0]
            dep.pop("name")
            dep.pop("key")
            svc.update(dep)
    return data


def valid(data: dict[str, Any]) -> StackFile:
    """The stack of `data`, or reject the example when it is not valid against the default inventory."""
    loaded = validate_stack(data, base_inventory=INVENTORY)
    assume(loaded.report.ok)
    assert loaded.stack is not None
    return loaded.stack


@st.composite
def stacks(draw: Any) -> StackFile:
    return valid(render(draw(plain_stacks())))


@st.composite
def stack_pairs(draw: Any) -> tuple[StackFile, StackFile]:
    """(a, b): b is a mix of a and another stack, a stack of its own, or a itself."""
    a = draw(plain_stacks())
    other = draw(plain_stacks())
    b = draw(st.sampled_from(["mix", "mix", "mix", "other", "same"]))
    b_plain = draw(mixed(a, other)) if b == "mix" else other if b == "other" else copy.deepcopy(a)
    return valid(render(a)), valid(render(b_plain))
