"""The plan as text: every value whole, an absent weight shown as 0, cost with its unit, no empty sections."""

from __future__ import annotations

from plan_fixtures import INVENTORY, changed, set_deployment, set_traffic

from inferstack.plan import PlanContext

PRICED = PlanContext(inventory=INVENTORY)
LONG_PATH = "/" + "-".join(["health"] * 30)


def test_a_long_value_is_shown_whole_never_cut_mid_word():
    probes = {"readiness": {"http": {"path": LONG_PATH}, "period_s": 0.5, "failure_threshold": 10}}
    text = changed(set_deployment("chat/stable", probes=probes)).to_text()
    (line,) = [ln for ln in text.splitlines() if "probes.readiness:" in ln]
    assert LONG_PATH in line and line.endswith('"failure_threshold": 10}') and "..." not in line


def test_a_weight_moved_to_0_reads_0():
    text = changed(set_traffic("chat", weights={"stable": 100, "canary": 0})).to_text()
    assert "weights[stable]: 90 → 100" in text and "weights[canary]: 10 → 0" in text
    assert "(none)" not in text


def test_cost_has_its_unit_and_no_empty_section():
    moved = changed(set_deployment("chat/canary", replicas=3), context=PRICED).to_text()
    assert "Cost (USD per hour): " in moved and "canary" in moved.split("Cost (USD per hour)")[1]
    kept = changed(set_traffic("chat", timeout_s=30), context=PRICED).to_text()
    cost = [ln for ln in kept.splitlines() if ln.startswith("Cost")]
    assert cost == [cost[0]] and cost[0].endswith(", unchanged")
    assert kept.rstrip().endswith("unchanged")  # no lines of services whose cost does not move
