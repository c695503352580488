"""Properties of the plan over generated valid stacks: a stack diffs empty against itself (also through YAML), a plan
applied to its old stack gives the new one, and no secret value ever reaches a plan's text, data or repr."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, event, given, settings
from plan_strategies import INVENTORY, SECRET_PREFIX, stack_pairs, stacks

from inferstack.plan import PlanContext, apply_plan, diff
from inferstack.spec import StackFile, dump_yaml, load_text, validate_stack

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.filter_too_much])
CONTEXT = PlanContext(inventory=INVENTORY)


def _describe(plan) -> str:
    return "\n" + plan.to_text()


@SETTINGS
@given(stacks())
def test_a_stack_diffed_with_itself_is_empty(stack: StackFile):
    plan = diff(stack, stack, CONTEXT)
    assert plan.empty, _describe(plan)
    assert plan.cost.delta == 0


@SETTINGS
@given(stacks())
def test_a_stack_diffed_with_its_yaml_round_trip_is_empty(stack: StackFile):
    loaded = load_text(dump_yaml(stack, reveal_secrets=True), base_inventory=INVENTORY)
    assert loaded.report.ok, str(loaded.report)
    for a, b in ((stack, loaded.stack), (loaded.stack, stack)):
        plan = diff(a, b, CONTEXT)
        assert plan.empty, _describe(plan)


@SETTINGS
@given(stacks())
def test_creating_a_stack_from_nothing_and_applying_it_gives_the_stack(stack: StackFile):
    plan = diff(None, stack, CONTEXT)
    assert all(c.action == "create" for c in plan.changes)
    assert diff(apply_plan(None, plan), stack, CONTEXT).empty


@SETTINGS
@given(stack_pairs())
def test_a_plan_applied_to_its_old_stack_gives_the_new_one(pair: tuple[StackFile, StackFile]):
    a, b = pair
    plan = diff(a, b, CONTEXT)
    result = apply_plan(a, plan)
    assert diff(result, b, CONTEXT).empty, _describe(diff(result, b, CONTEXT))
    again = validate_stack(result.to_data(), base_inventory=INVENTORY)
    assert again.report.ok, str(again.report)


@SETTINGS
@given(stack_pairs())
def test_no_secret_value_reaches_a_plan_its_data_or_its_text(pair: tuple[StackFile, StackFile]):
    a, b = pair
    plan = diff(a, b, CONTEXT)
    for shown in (plan.to_text(), json.dumps(plan.to_dict(), ensure_ascii=False), repr(plan)):
        assert SECRET_PREFIX not in shown


@SETTINGS
@given(stack_pairs())
def test_ordering_holds_for_any_pair(pair: tuple[StackFile, StackFile]):
    a, b = pair
    plan = diff(a, b, CONTEXT)
    event(f"changes: {min(len(plan.changes), 10)}; redeploys: {min(len(plan.redeploys), 3)}")
    rank = {(c.kind, c.id): i for i, c in enumerate(plan.changes)}
    inventory_writes = [i for i, c in enumerate(plan.changes) if c.kind == "inventory" and c.action != "delete"]
    inventory_deletes = [i for i, c in enumerate(plan.changes) if c.kind == "inventory" and c.action == "delete"]
    services = [i for i, c in enumerate(plan.changes) if c.kind != "inventory"]
    assert max(inventory_writes, default=-1) < min(services, default=len(plan.changes))
    assert max(services, default=-1) < min(inventory_deletes, default=len(plan.changes))
    for c in plan.changes:
        traffic = rank.get(("traffic", f"{c.service}/traffic"))
        if c.kind == "deployment" and traffic is not None:
            if c.action == "create":
                assert rank[(c.kind, c.id)] < traffic
            if c.action == "delete":
                assert rank[(c.kind, c.id)] > traffic
