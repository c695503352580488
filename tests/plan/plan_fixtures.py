"""A base stack for table-driven plan tests, and helpers to change a copy of it and plan the change."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from inferstack.plan import Plan, PlanContext, diff
from inferstack.spec import StackFile, default_inventory, validate_stack

INVENTORY = default_inventory()
SECRET = "hunter2-very-secret"
NEW_SECRET = "correct-horse-battery"

Mutation = Callable[[dict[str, Any]], Any]


def base() -> dict[str, Any]:
    """`chat` (stable: prepaid, 4 replicas, 25/25; canary: postpaid, 1 replica) at 90/10, and `gen`, one multi-role
    deployment `pd` (prefill + decode). The stack declares a second VPC and resource group for replace cases."""
    return {
        "inventory": {
            "vpcs": [{"name": "vpc-two", "cidr": "10.1.0.0/16"}],
            "resource_groups": [{"name": "rg-two"}],
            "queues": [{"name": "q-two", "resource_group": "rg-two", "zone": "zone-a", "billing": "postpaid",
                        "capacity": {"cpu-small": 32, "cpu-large": 8}}],
            "subnets": [{"name": "subnet-two", "vpc": "vpc-two", "zone": "zone-a"}],
            "security_groups": [{"name": "sg-two", "vpc": "vpc-two",
                                 "ingress": [{"from_port": 1024, "to_port": 65535, "source": "0.0.0.0/0"}]}],
        },
        "services": [
            {"name": "chat", "key": "chat", "resource_group": "rg-default", "vpc": "vpc-default",
             "deployments": [
                 {"name": "stable", "key": "stable", "image": {"preset": "inferstack/echo"}, "queue": "q-prepaid-a",
                  "compute_spec": "cpu-small", "replicas": 4,
                  "rolling_update": {"max_unavailable": 25, "max_surge": 25},
                  "subnet": "subnet-a", "security_group": "sg-default",
                  "env": [{"name": "MODE", "value": "fast"}, {"name": "API_KEY", "secret": SECRET}]},
                 {"name": "canary", "key": "canary", "image": {"preset": "inferstack/echo"}, "queue": "q-postpaid-a",
                  "compute_spec": "cpu-small", "replicas": 1,
                  "rolling_update": {"max_unavailable": 0, "max_surge": 100},
                  "subnet": "subnet-a", "security_group": "sg-default"},
             ],
             "traffic": {"weights": {"stable": 90, "canary": 10}}},
            {"name": "gen", "key": "gen", "resource_group": "rg-default", "vpc": "vpc-default",
             "deployments": [
                 {"name": "pd", "key": "pd", "inference_mode": "multi_role", "image": {"preset": "inferstack/echo"},
                  "queue": "q-postpaid-a", "subnet": "subnet-a", "security_group": "sg-default",
                  "roles": [
                      {"name": "prefill", "entry": True, "compute_spec": "cpu-large", "replicas": 2,
                       "rolling_update": {"max_unavailable": 50, "max_surge": 0}},
                      {"name": "decode", "compute_spec": "cpu-small", "replicas": 4, "rolling_update": {}},
                  ]},
             ]},
        ],
    }


def stack(data: dict[str, Any]) -> StackFile:
    loaded = validate_stack(data, base_inventory=INVENTORY)
    assert loaded.report.ok, str(loaded.report)
    assert loaded.stack is not None
    return loaded.stack


def service(data: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in data["services"] if s.get("key", s["name"]) == key)


def deployment(data: dict[str, Any], path: str) -> dict[str, Any]:
    """The deployment `service/key` of stack data."""
    svc, key = path.split("/")
    return next(d for d in service(data, svc)["deployments"] if d.get("key", d["name"]) == key)


def role(data: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    return next(r for r in deployment(data, path)["roles"] if r["name"] == name)


def changed(mutate: Mutation, before: Mutation | None = None, context: PlanContext | None = None,
            start: Callable[[], dict[str, Any]] = base) -> Plan:
    """The plan from the base stack (changed by `before`) to a copy changed by `mutate`."""
    old = start()
    if before:
        before(old)
    new = copy.deepcopy(old)
    mutate(new)
    return diff(stack(old), stack(new), context)


def assert_redeploys(plan: Plan, change_id: str, roles: dict[str, str]) -> None:
    """The deployment change `change_id` updates in place and redeploys exactly `roles`, each with its reason."""
    change = plan.change(change_id, kind="deployment")
    assert change is not None and change.action == "update", plan.to_text()
    assert {r.role: r.reasons for r in change.redeploy}.keys() == roles.keys()
    for r in change.redeploy:
        assert roles[r.role] in r.reasons


def does(*mutations: Mutation) -> Mutation:
    """One mutation made of several."""
    def run(data: dict[str, Any]) -> None:
        for m in mutations:
            m(data)
    return run


def set_deployment(path: str, **fields: Any) -> Mutation:
    return lambda data: deployment(data, path).update(fields)


def drop_deployment_field(path: str, field: str) -> Mutation:
    return lambda data: deployment(data, path).pop(field)


def set_role(path: str, name: str, **fields: Any) -> Mutation:
    return lambda data: role(data, path, name).update(fields)


def set_service(key: str, **fields: Any) -> Mutation:
    return lambda data: service(data, key).update(fields)


def set_traffic(key: str, **fields: Any) -> Mutation:
    return lambda data: service(data, key).setdefault("traffic", {}).update(fields)


def add_deployment(svc: str, key: str, **fields: Any) -> Mutation:
    def run(data: dict[str, Any]) -> None:
        service(data, svc)["deployments"].append({
            "name": key, "image": {"preset": "inferstack/echo"}, "queue": "q-postpaid-a", "compute_spec": "cpu-small",
            "replicas": 1, "rolling_update": {}, "subnet": "subnet-a", "security_group": "sg-default", **fields})
    return run


def remove_deployment(svc: str, key: str) -> Mutation:
    def run(data: dict[str, Any]) -> None:
        s = service(data, svc)
        s["deployments"] = [d for d in s["deployments"] if d.get("key", d["name"]) != key]
    return run
