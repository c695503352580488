"""The plan names the instances a change will preempt (domain.md, Capacity), by the scheduler's rules."""

from __future__ import annotations

from typing import Any

from inferstack.plan import LiveInstance, PlanContext, diff
from inferstack.spec import Inventory, StackFile

INVENTORY = Inventory.model_validate({
    "vpcs": [{"name": "vpc"}], "resource_groups": [{"name": "rg"}],
    "queues": [{"name": "q", "resource_group": "rg", "zone": "z", "billing": "prepaid", "capacity": {"small": 4},
                "lends_idle": True},
               {"name": "home", "resource_group": "rg", "zone": "z", "billing": "postpaid", "capacity": {"small": 1}}],
    "compute_specs": [{"name": "small", "cpu": 1, "memory_gib": 1, "machine": {"cpu": 8}}],
    "subnets": [{"name": "sub", "vpc": "vpc", "zone": "z"}],
    "security_groups": [{"name": "sg", "vpc": "vpc", "ingress": [{"from_port": 1, "to_port": 65535,
                                                                  "source": "0.0.0.0/0"}]}],
    "images": [{"name": "echo", "command": ["true"]}],
})


def service(key: str, dep: str, replicas: int, priority: int, queue: str = "q", **extra: Any) -> dict[str, Any]:
    return {"name": key, "resource_group": "rg", "vpc": "vpc", "deployments": [{
        "name": dep, "image": {"preset": "echo"}, "queue": queue, "compute_spec": "small", "replicas": replicas,
        "priority": priority, "rolling_update": {"max_unavailable": 25, "max_surge": 0}, "subnet": "sub",
        "security_group": "sg", **extra}]}


def stack(*services: dict[str, Any]) -> StackFile:
    return StackFile.model_validate({"services": list(services)})


LOW = service("batch", "low", 4, 3)
HIGH = service("online", "high", 2, 7)


def test_a_higher_priority_deployment_preempts_the_lower_ones_it_displaces():
    plan = diff(stack(LOW), stack(LOW, HIGH), PlanContext(inventory=INVENTORY))
    (p,) = plan.preemptions
    assert (p.service, p.deployment, p.queue, p.spec, p.count, p.priority) == ("batch", "low", "q", "small", 2, 3)
    assert p.by == ["online/high (priority 7)"] and not p.migrates
    assert p.instances == []  # offline: what runs is what the old stack fits, without instance ids
    assert "preempts 2 instance(s) of batch/low (priority 3) on queue 'q'" in plan.to_text()
    assert plan.to_dict()["preemptions"][0]["count"] == 2


def test_on_the_platform_the_newest_running_instances_are_named():
    live = {("batch", "low", "main"): [LiveInstance(f"batch-low-main-{i}", "q") for i in range(1, 5)]}
    context = PlanContext(inventory=INVENTORY, others=[stack(LOW).services[0]], instances=live)
    plan = diff(stack(), stack(HIGH), context)
    (p,) = plan.preemptions
    assert p.instances == ["batch-low-main-4", "batch-low-main-3"]


def test_what_fits_preempts_nothing_and_equal_priority_never_preempts():
    small = service("online", "high", 1, 7)
    assert diff(stack(service("batch", "low", 3, 3)), stack(service("batch", "low", 3, 3), small),
                PlanContext(inventory=INVENTORY)).preemptions == []
    same = service("online", "same", 2, 3)
    assert diff(stack(LOW), stack(LOW, same), PlanContext(inventory=INVENTORY)).preemptions == []


def test_idle_instances_on_the_queue_migrate_first():
    idle = service("borrower", "idle", 2, 9, queue="home", use_idle=True)
    live = {("borrower", "idle", "main"): [LiveInstance("borrower-idle-main-1", "home"),
                                           LiveInstance("borrower-idle-main-2", "q")],
            ("batch", "low", "main"): [LiveInstance(f"batch-low-main-{i}", "q") for i in range(1, 4)]}
    low3 = service("batch", "low", 3, 3)
    context = PlanContext(inventory=INVENTORY, others=[stack(low3, idle).services[i] for i in (0, 1)],
                          instances=live)
    plan = diff(stack(), stack(service("online", "high", 1, 5)), context)
    (p,) = plan.preemptions
    assert (p.deployment, p.migrates, p.instances) == ("idle", True, ["borrower-idle-main-2"])
    assert "migrates 1 instance(s) of borrower/idle" in plan.to_text()
