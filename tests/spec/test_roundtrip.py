"""Generated valid specs survive YAML: dump → load gives an equal model."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferstack.spec import default_inventory, dump_yaml, load_text, validate_stack

INVENTORY = default_inventory()
QUEUES = {q.name: q for q in INVENTORY.queues}
SUBNET_BY_ZONE = {"zone-a": "subnet-a", "zone-b": "subnet-b"}

keys = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)
names = st.from_regex(r"[A-Za-z0-9_\-\u4e00-\u4e20]{1,20}", fullmatch=True)
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)


@st.composite
def env_vars(draw):
    names_ = draw(st.lists(env_names, max_size=3, unique=True))
    out = []
    for n in names_:
        if draw(st.booleans()):
            out.append({"name": n, "value": draw(text)})
        else:
            out.append({"name": n, "secret": draw(text)})
    return out


@st.composite
def deployments(draw, key):
    queue = draw(st.sampled_from(["q-prepaid-a", "q-postpaid-a", "q-prepaid-b", "q-postpaid-b"]))
    d = {
        "name": draw(names), "key": key,
        "image": {"preset": "inferstack/echo"},
        "queue": queue,
        "compute_spec": "cpu-small",
        "replicas": draw(st.integers(1, 2)),
        "rolling_update": {"max_unavailable": draw(st.sampled_from([0, 25, 50])),
                           "max_surge": draw(st.sampled_from([25, 50, 100]))},
        "subnet": SUBNET_BY_ZONE[QUEUES[queue].zone],
        "security_group": draw(st.sampled_from(["sg-default", "sg-loopback"])),
        "env": draw(env_vars()),
        "priority": draw(st.integers(1, 9)),
        "graceful_shutdown_s": draw(st.sampled_from([0, 0.5, 30, 120.25])),
    }
    if draw(st.booleans()):
        d["probes"] = {"readiness": {"http": {"path": "/healthz"}, "period_s": draw(st.sampled_from([0.1, 1, 10]))}}
    if draw(st.booleans()):
        d["autoscaling"] = {"metrics": [{"metric": "qps", "target": draw(st.integers(1, 100)), "min": 1,
                                         "max": draw(st.integers(2, 5))}]}
    return d


@st.composite
def stacks(draw):
    services = []
    for i, skey in enumerate(draw(st.lists(keys, min_size=1, max_size=3, unique=True))):
        dkeys = draw(st.lists(keys, min_size=0, max_size=3, unique=True))
        deps = [draw(deployments(k)) for k in dkeys]
        weights = {}
        if deps:
            cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(deps) - 1, max_size=len(deps) - 1)))
            bounds = [0, *cuts, 100]
            weights = {k: float(bounds[j + 1] - bounds[j]) for j, k in enumerate(dkeys)}
        services.append({
            "name": f"svc-{i}-{draw(names)}", "key": skey, "resource_group": "rg-default", "vpc": "vpc-default",
            "description": draw(st.one_of(st.none(), text)),
            "ports": [8000],
            "traffic": {"strategy": "weighted", "weights": weights, "timeout_s": draw(st.sampled_from([0.5, 60]))},
            "deployments": deps,
        })
        if services[-1]["description"] is None:
            del services[-1]["description"]
    return {"services": services}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacks())
def test_valid_specs_round_trip_through_yaml(data):
    loaded = validate_stack(data, base_inventory=INVENTORY)
    if not loaded.report.ok:  # e.g. capacity: the generator does not try to fit every queue
        assert {f.rule for f in loaded.report.errors} <= {"capacity.prepaid_fits", "capacity.postpaid_quota_fits",
                                                          "capacity.idle_fits"}
        return
    text_ = dump_yaml(loaded.stack, reveal_secrets=True)
    again = load_text(text_, base_inventory=INVENTORY)
    assert again.report.ok, str(again.report)
    assert again.stack == loaded.stack


def test_public_dump_masks_secrets():
    data = {"services": [{"name": "a", "resource_group": "rg-default", "vpc": "vpc-default", "deployments": [{
        "name": "d", "image": {"preset": "inferstack/echo"}, "queue": "q-postpaid-a", "compute_spec": "cpu-small",
        "replicas": 1, "rolling_update": {}, "subnet": "subnet-a", "security_group": "sg-default",
        "env": [{"name": "K", "secret": "topsecret"}]}]}]}
    loaded = validate_stack(data, base_inventory=INVENTORY)
    assert loaded.report.ok, str(loaded.report)
    assert "topsecret" not in dump_yaml(loaded.stack)
    assert "topsecret" in dump_yaml(loaded.stack, reveal_secrets=True)
