"""Table-driven: changes come in an order that converges in one pass."""

from __future__ import annotations

import copy

import pytest
from plan_fixtures import (
    add_deployment,
    base,
    changed,
    does,
    remove_deployment,
    service,
    set_deployment,
    set_traffic,
    stack,
)

from inferstack.plan import diff


def _new_queue_used_by_canary(data):
    data["inventory"]["queues"].append({"name": "q-new", "resource_group": "rg-default", "zone": "zone-a",
                                        "billing": "postpaid", "capacity": {"cpu-small": 8}})
    set_deployment("chat/canary", queue="q-new")(data)


def _new_service(data):
    data["services"].append({"name": "embed", "resource_group": "rg-default", "vpc": "vpc-default", "deployments": []})


def _drop_service(key):
    def run(data):
        data["services"] = [s for s in data["services"] if s.get("key") != key]
    return run


def _drop_inventory_queue(data):
    data["inventory"]["queues"] = []


def _blue_green(data):
    add_deployment("chat", "green")(data)
    remove_deployment("chat", "stable")(data)
    set_traffic("chat", weights={"green": 90, "canary": 10})(data)


# id, mutation, (kind, id) pairs that must appear in this relative order
ORDER = [
    ("inventory before the deployment that uses it", _new_queue_used_by_canary,
     [("inventory", "queues/q-new"), ("deployment", "chat/canary")]),
    ("a new deployment before the traffic that gives it weight",
     does(add_deployment("chat", "shadow"), set_traffic("chat", weights={"stable": 80, "canary": 10, "shadow": 10})),
     [("deployment", "chat/shadow"), ("traffic", "chat/traffic")]),
    ("traffic away from a deployment before its deletion",
     does(remove_deployment("chat", "canary"), set_traffic("chat", weights={"stable": 100})),
     [("traffic", "chat/traffic"), ("deployment", "chat/canary")]),
    ("blue-green: create, shift, delete", _blue_green,
     [("deployment", "chat/green"), ("traffic", "chat/traffic"), ("deployment", "chat/stable")]),
    ("a service before its deployments, then its traffic", does(_new_service, add_deployment("embed", "one")),
     [("service", "embed"), ("deployment", "embed/one"), ("traffic", "embed/traffic")]),
    ("a deleted service's deployments, then the service, before services are created",
     does(_drop_service("gen"), _new_service),
     [("deployment", "gen/pd"), ("service", "gen"), ("service", "embed")]),
    ("services before inventory deletions", does(_drop_service("chat"), _drop_inventory_queue),
     [("service", "chat"), ("inventory", "queues/q-two")]),
]


@pytest.mark.parametrize("mutation, expected", [row[1:] for row in ORDER], ids=[row[0] for row in ORDER])
def test_changes_are_ordered_for_convergence_in_one_pass(mutation, expected):
    plan = changed(mutation)
    order = [(c.kind, c.id) for c in plan.changes]
    positions = [order.index(item) for item in expected]
    assert positions == sorted(positions), plan.to_text()


def test_inventory_is_created_in_dependency_order_and_deleted_in_reverse():
    data = base()
    empty = copy.deepcopy(data)
    empty["inventory"] = {}
    empty["services"] = [s for s in empty["services"] if s["key"] != "chat"]
    data["services"] = empty["services"]
    created = diff(stack(empty), stack(data))
    assert [c.id for c in created.changes] == ["vpcs/vpc-two", "resource_groups/rg-two", "queues/q-two",
                                               "subnets/subnet-two", "security_groups/sg-two"]
    deleted = diff(stack(data), stack(empty))
    assert [c.id for c in deleted.changes] == ["security_groups/sg-two", "subnets/subnet-two", "queues/q-two",
                                               "resource_groups/rg-two", "vpcs/vpc-two"]
    assert {c.action for c in deleted.changes} == {"delete"}


def test_a_new_service_from_nothing_is_created_service_deployments_traffic():
    plan = diff(None, stack({"services": [service(base(), "chat")]}))
    assert [(c.kind, c.id, c.action) for c in plan.changes] == [
        ("service", "chat", "create"), ("deployment", "chat/stable", "create"),
        ("deployment", "chat/canary", "create"), ("traffic", "chat/traffic", "create")]


def test_deleting_everything_deletes_deployments_before_their_service():
    plan = diff(stack({"services": [service(base(), "chat")]}), None)
    assert [(c.kind, c.id, c.action) for c in plan.changes] == [
        ("deployment", "chat/stable", "delete"), ("deployment", "chat/canary", "delete"),
        ("service", "chat", "delete")]
