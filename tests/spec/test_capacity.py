"""Admission with priority (domain.md, Capacity): a write is refused only when it cannot fit even after preempting
every lower-priority instance of its queue; pay-as-you-go capacity is a quota held the same way; only what a write
adds is judged against what the platform admitted before."""

from __future__ import annotations

import copy
from typing import Any

from inferstack.spec import Inventory, Service, validate
from inferstack.spec.capacity import Admitted

INVENTORY: dict[str, Any] = {
    "vpcs": [{"name": "vpc-1"}],
    "resource_groups": [{"name": "rg-1"}],
    "queues": [
        {"name": "q-pre", "resource_group": "rg-1", "zone": "zone-a", "billing": "prepaid",
         "capacity": {"small": 4}, "lends_idle": True},
        {"name": "q-post", "resource_group": "rg-1", "zone": "zone-a", "billing": "postpaid", "capacity": {"small": 2}},
        {"name": "q-lend-b", "resource_group": "rg-1", "zone": "zone-b", "billing": "prepaid",
         "capacity": {"small": 8}, "lends_idle": True},
    ],
    "compute_specs": [{"name": "small", "cpu": 1, "memory_gib": 2, "machine": {"cpu": 16}}],
    "subnets": [{"name": "sub-a", "vpc": "vpc-1", "zone": "zone-a"}],
    "security_groups": [{"name": "sg-1", "vpc": "vpc-1", "ingress": [{"from_port": 1, "to_port": 65535,
                                                                     "source": "0.0.0.0/0"}]}],
    "images": [{"name": "echo", "command": ["true"]}],
}
NO_SURGE = {"max_unavailable": 25, "max_surge": 0}


def deployment(key: str, *, priority: int = 5, replicas: int = 1, queue: str = "q-pre", **extra: Any) -> dict:
    return {"name": key, "image": {"preset": "echo"}, "queue": queue, "compute_spec": "small", "replicas": replicas,
            "rolling_update": NO_SURGE, "subnet": "sub-a", "security_group": "sg-1", "priority": priority, **extra}


def service(key: str, *deployments: dict) -> dict:
    weights = {d["name"]: 100 / len(deployments) for d in deployments} if deployments else {}
    return {"name": key, "resource_group": "rg-1", "vpc": "vpc-1", "ports": [8000],
            "traffic": {"weights": weights}, "deployments": list(deployments)}


def admitted(*services: dict, inventory: dict | None = None) -> Admitted:
    return Admitted.of([Service.model_validate(s) for s in services], Inventory.model_validate(inventory or INVENTORY))


def capacity_errors(services: list[dict], before: Admitted | None = None, inventory: dict | None = None) -> list:
    report = validate(services, inventory or INVENTORY, admitted=before)
    return [f for f in report.errors if f.rule.startswith("capacity.")]


LOW = service("batch", deployment("low", priority=3, replicas=4))


def test_a_higher_priority_write_is_admitted_when_it_fits_by_preempting_lower_ones():
    high = service("online", deployment("high", priority=7, replicas=2))
    assert capacity_errors([high, LOW], admitted(LOW)) == []


def test_a_write_that_cannot_fit_even_after_preempting_every_lower_instance_is_refused_naming_what_holds():
    other_high = service("other", deployment("top", priority=9, replicas=3))
    high = service("online", deployment("high", priority=7, replicas=2))
    (finding,) = capacity_errors([high, LOW, other_high], admitted(LOW, other_high))
    assert (finding.rule, finding.path, finding.value) == ("capacity.prepaid_fits",
                                                           "services[0].deployments[0].queue", "q-pre")
    assert "needs 2 instance(s)" in finding.message and "1 are free" in finding.message
    assert "other/top (priority 9): 3" in finding.message


def test_equal_priority_never_preempts_so_it_must_fit_beside():
    same = service("online", deployment("same", priority=3, replicas=1))
    (finding,) = capacity_errors([same, LOW], admitted(LOW))
    assert finding.rule == "capacity.prepaid_fits" and "0 are free" in finding.message


def test_an_admitted_deployment_is_not_refused_for_an_edit_that_asks_no_more():
    high = service("online", deployment("high", priority=7, replicas=2))
    edited = copy.deepcopy(LOW)
    edited["deployments"][0]["env"] = [{"name": "MODE", "value": "slow"}]
    assert capacity_errors([edited, high], admitted(LOW, high)) == []


def test_an_admitted_deployment_that_asks_more_or_drops_priority_is_judged_again():
    high = service("online", deployment("high", priority=7, replicas=2))
    low_small = service("batch", deployment("low", priority=3, replicas=2))
    before = admitted(low_small, high)
    grown = service("batch", deployment("low", priority=3, replicas=3))
    assert [f.rule for f in capacity_errors([grown, high], before)] == ["capacity.prepaid_fits"]
    top_then_lower = service("online", deployment("high", priority=2, replicas=2))
    assert [f.path for f in capacity_errors([top_then_lower, LOW], admitted(LOW, high))] == [
        "services[0].deployments[0].queue"]


def test_a_shrunk_queue_judges_every_ask_on_it_again():
    smaller = copy.deepcopy(INVENTORY)
    smaller["queues"][0]["capacity"]["small"] = 3
    assert [f.rule for f in capacity_errors([LOW], admitted(LOW), smaller)] == ["capacity.prepaid_fits"]


def test_a_pay_as_you_go_queue_is_a_quota_five_asked_of_two_is_refused():
    five = service("peak", deployment("elastic", queue="q-post", replicas=5))
    (finding,) = capacity_errors([five])
    assert finding.rule == "capacity.postpaid_quota_fits"
    assert "quota of 2 instance(s) of 'small'" in finding.message and "needs 5 instance(s)" in finding.message
    two = service("peak", deployment("elastic", queue="q-post", replicas=2))
    assert capacity_errors([two]) == []


def test_surge_counts_towards_the_ask():
    surging = service("peak", deployment("elastic", queue="q-post", replicas=2,
                                         rolling_update={"max_unavailable": 0, "max_surge": 25}))
    (finding,) = capacity_errors([surging])
    assert "needs 3 instance(s)" in finding.message


def test_idle_deployments_hold_nothing_but_ask_no_more_than_they_could_ever_borrow():
    # Own queue q-pre (4) is the only queue of zone-a they may use: q-lend-b lends in another zone.
    idle = service("borrower", deployment("idle", use_idle=True, replicas=4))
    assert capacity_errors([idle, LOW]) == []
    greedy = service("borrower", deployment("idle", use_idle=True, replicas=5))
    (finding,) = capacity_errors([greedy])
    assert (finding.rule, finding.path) == ("capacity.idle_fits", "services[0].deployments[0].use_idle")
    assert "at most 4 could ever run" in finding.message and "'q-pre': 4" in finding.message


def test_multi_role_roles_of_one_spec_count_together():
    roles = deployment("pd", replicas=None)
    for f in ("compute_spec", "replicas", "rolling_update"):
        roles.pop(f)
    roles.update(inference_mode="multi_role", roles=[
        {"name": "prefill", "compute_spec": "small", "replicas": 2, "rolling_update": NO_SURGE},
        {"name": "decode", "entry": True, "compute_spec": "small", "replicas": 3, "rolling_update": NO_SURGE}])
    (finding,) = capacity_errors([service("gen", roles)])
    assert "needs 5 instance(s)" in finding.message
