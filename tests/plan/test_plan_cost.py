"""Cost per hour with the default inventory's prices: prepaid capacity held, pay-as-you-go instances running."""

from __future__ import annotations

import pytest
from plan_fixtures import INVENTORY, base, changed, service, set_deployment, stack

from inferstack.plan import PlanContext, diff
from inferstack.spec import load_file

PRICED = PlanContext(inventory=INVENTORY)
QUICKSTART = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


def quickstart_stack():
    return load_file(QUICKSTART, INVENTORY).stack


def test_quickstart_costs_held_prepaid_capacity_plus_running_postpaid_instances():
    quickstart = load_file("examples/quickstart.yaml", INVENTORY).stack
    cost = diff(None, quickstart, PRICED).cost
    # stable: prepaid cpu-small, 2 replicas + 1 surge (25 % of 2, rounded up) held at 0.03
    assert cost.deployment("chat", "stable").after == pytest.approx(0.09)
    # canary: postpaid cpu-small, 1 running instance at 0.05
    assert cost.deployment("chat", "canary").after == pytest.approx(0.05)
    line = cost.service("chat")
    assert (line.before, line.after, line.delta) == (0.0, pytest.approx(0.14), pytest.approx(0.14))
    assert (cost.before, cost.after) == (0.0, pytest.approx(0.14))


# id, mutation, (service, deployment), before, after
COSTS = [
    ("prepaid replicas 4 -> 6", set_deployment("chat/stable", replicas=6), ("chat", "stable"),
     (4 + 1) * 0.03, (6 + 2) * 0.03),
    ("prepaid surge 25 % -> 0 holds less", set_deployment("chat/stable", rolling_update={"max_unavailable": 25,
                                                                                       "max_surge": 0}),
     ("chat", "stable"), 5 * 0.03, 4 * 0.03),
    ("postpaid replicas 1 -> 3", set_deployment("chat/canary", replicas=3), ("chat", "canary"), 0.05, 3 * 0.05),
    ("postpaid to a GPU spec", set_deployment("chat/canary", compute_spec="gpu-a10"), ("chat", "canary"),
     0.05, 1.50),
    ("moving to a prepaid queue holds replicas + surge", set_deployment("chat/canary", queue="q-prepaid-a"),
     ("chat", "canary"), 0.05, (1 + 1) * 0.03),
    ("idle resources hold nothing and pay running instances at their queue's rate",
     set_deployment("chat/stable", use_idle=True), ("chat", "stable"), 5 * 0.03, 4 * 0.03),
    ("idle resources on a pay-as-you-go queue pay the postpaid rate", set_deployment("chat/canary", use_idle=True),
     ("chat", "canary"), 0.05, 0.05),
    ("multi-role: each role at its own spec", set_deployment("gen/pd", queue="q-postpaid-b", subnet="subnet-b"),
     ("gen", "pd"), 2 * 0.40 + 4 * 0.05, 2 * 0.40 + 4 * 0.05),
]


@pytest.mark.parametrize("mutation, where, before, after", [row[1:] for row in COSTS], ids=[row[0] for row in COSTS])
def test_cost_per_deployment_before_and_after(mutation, where, before, after):
    line = changed(mutation, context=PRICED).cost.deployment(*where)
    assert (line.before, line.after) == (pytest.approx(before), pytest.approx(after))
    assert line.delta == pytest.approx(after - before)


def test_autoscaled_postpaid_instances_cost_their_live_count_within_the_new_bounds():
    autoscaled = set_deployment("chat/canary", autoscaling={"metrics": [{"metric": "qps", "target": 5, "min": 1,
                                                                          "max": 8}]})
    smaller = set_deployment("chat/canary", autoscaling={"metrics": [{"metric": "qps", "target": 5, "min": 1,
                                                                       "max": 4}]})
    context = PlanContext(inventory=INVENTORY, current_replicas={("chat", "canary", "main"): 6})
    line = changed(smaller, before=autoscaled, context=context).cost.deployment("chat", "canary")
    assert (line.before, line.after) == (pytest.approx(6 * 0.05), pytest.approx(4 * 0.05))


def test_a_deleted_service_costs_nothing_after():
    data = base()
    data["services"] = [s for s in data["services"] if s["key"] != "gen"]
    plan = diff(stack(base()), stack(data), PRICED)
    line = plan.cost.service("gen")
    assert (line.before, line.after, line.delta) == (pytest.approx(1.0), 0.0, pytest.approx(-1.0))
    assert plan.cost.delta == pytest.approx(-1.0)


def test_prices_of_the_stacks_own_inventory_win_over_the_context():
    data = base()
    data["inventory"]["compute_specs"] = [{"name": "cpu-small", "cpu": 1, "memory_gib": 2, "machine": {"cpu": 32},
                                           "price_per_hour": {"prepaid": 1, "postpaid": 2}}]
    cost = diff(None, stack(data), PRICED).cost
    assert cost.deployment("chat", "canary").after == pytest.approx(2.0)


def test_cost_is_unknown_without_the_prices():
    plan = diff(None, stack({"services": [service(base(), "chat")]}))
    assert plan.cost.deployment("chat", "stable").after is None
    assert plan.cost.delta is None
    assert "Cost (price units per hour): unknown" in plan.to_text()


def test_cost_is_given_in_the_prices_currency_and_never_added_across_currencies():
    plan = diff(None, quickstart_stack(), PRICED)
    assert plan.cost.currency == "USD" and plan.to_dict()["cost"]["currency"] == "USD"
    assert "Cost (USD per hour): 0.00 → 0.14 (+0.14)" in plan.to_text()
    inventory = PRICED.inventory.model_copy(deep=True)
    for spec in inventory.compute_specs:
        if spec.name == "cpu-small":
            spec.price_per_hour.currency = "CNY"
    cny = diff(None, quickstart_stack(), PlanContext(inventory=inventory))
    assert cny.cost.currency == "CNY" and "Cost (CNY per hour)" in cny.to_text()
    mixed_stack = quickstart_stack()
    mixed_stack.services[0].deployments[1].compute_spec = "cpu-large"
    for spec in inventory.compute_specs:
        if spec.name == "cpu-large":
            spec.price_per_hour.currency = "USD"
    mixed = diff(None, mixed_stack, PlanContext(inventory=inventory))
    assert mixed.cost.currencies == ["CNY", "USD"] and mixed.cost.after is None
    assert "not added up: the prices are in CNY and USD" in mixed.to_text()


def test_an_unchanged_cost_is_one_line_and_an_empty_plan_prints_none():
    same = diff(quickstart_stack(), quickstart_stack(), PRICED)
    assert "Cost" not in same.to_text()
    data = quickstart_stack()
    data.services[0].description = "changed"
    text = diff(quickstart_stack(), data, PRICED).to_text()
    assert "Cost (USD per hour): 0.14, unchanged" in text and "  chat " not in text
