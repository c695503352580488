"""`inferstack cost` on the whole embedded platform with a scripted clock: a peak's cost is instance-seconds ×
prices computed by hand, it survives a restart, and the plan's cost per hour is the meter's."""

from __future__ import annotations

import pytest
from capacity_harness import cli, role, until
from embedded_harness import echo_deployment, echo_service, start_platform, wait_ready


def test_cost_after_a_scripted_peak_is_instance_seconds_times_prices_and_survives_a_restart(tmp_path):
    clock = tmp_path / "clock"
    t0 = 1_700_000_000.0
    clock.write_text(str(t0))
    data = tmp_path / "data"
    platform = start_platform(data, INFERSTACK_CLOCK_FILE=str(clock))
    # base: prepaid cpu-small (0.03/h), 2 replicas + 1 surge held; elastic: pay-as-you-go cpu-small (0.05/h).
    base = echo_deployment("base", queue="q-prepaid-a", replicas=2, weight=50)
    elastic = echo_deployment("elastic", queue="q-postpaid-a", replicas=1, weight=50)

    def scale(n: int) -> None:
        platform.client().apply({"services": [echo_service("peak", [base, {**elastic, "replicas": n}])]})
        until(f"{n} elastic instance(s)", lambda: len(role(platform.client(), "peak", "elastic")
                                                   .get("instances", [])) == n
              and role(platform.client(), "peak", "elastic").get("ready") == n)

    try:
        scale(1)
        wait_ready(platform.client(), "peak")
        start = platform.client().cost("peak")
        assert (start["cost"], start["per_hour"]) == (0, pytest.approx(3 * 0.03 + 1 * 0.05))
        clock.write_text(str(t0 + 3600))
        scale(4)  # the peak: pay-as-you-go absorbs it
        clock.write_text(str(t0 + 5400))
        scale(1)
        platform.stop()  # the bill survives a restart; instances stop with the platform, prepaid slots stay held
        clock.write_text(str(t0 + 6000))
        platform.start()
        wait_ready(platform.client(), "peak")
        clock.write_text(str(t0 + 9000))
        report = platform.client().cost("peak")
        by_line = {ln["deployment"]: ln for ln in report["lines"]}
        assert by_line["base"]["reserved_slot_seconds"] == 3 * 9000
        assert by_line["elastic"]["instance_seconds"] == 1 * 3600 + 4 * 1800 + 1 * 3000
        expected_base = 3 * 9000 * 0.03 / 3600
        expected_elastic = (1 * 3600 + 4 * 1800 + 1 * 3000) * 0.05 / 3600
        money = {"abs": 1e-6}  # the report rounds to 6 places
        assert by_line["base"]["cost"] == pytest.approx(expected_base, **money)
        assert by_line["elastic"]["cost"] == pytest.approx(expected_elastic, **money)
        assert report["cost"] == pytest.approx(expected_base + expected_elastic, **money)
        assert report["by_billing"] == {"postpaid": pytest.approx(expected_elastic, **money),
                                        "prepaid": pytest.approx(expected_base, **money)}
        assert report["per_hour"] == pytest.approx(3 * 0.03 + 1 * 0.05)
        text = cli(data, "cost", "peak")
        assert f"cost so far {expected_base + expected_elastic:.4f}" in text and "per hour now 0.1400" in text
        plan = platform.client().apply({"services": [echo_service("peak", [base, {**elastic, "replicas": 3}])]},
                                       dry_run=True)["plan"]
        line = next(ln for ln in plan["cost"]["lines"] if ln["deployment"] is None)
        assert line["before"] == pytest.approx(report["per_hour"])  # the plan and the meter: one price model

        # Deleted, its final bill stays readable and stops growing; created again under its key, a new bill starts.
        uid = platform.client().get_service("peak")["metadata"]["uid"]
        platform.client().delete_service("peak")
        until("the deleted service's bill closed", lambda: [
            (b["deleted"], b["per_hour"]) for b in platform.client().costs() if b["uid"] == uid] == [(True, 0)])
        clock.write_text(str(t0 + 20000))
        final = next(b for b in platform.client().costs() if b["uid"] == uid)
        assert final["service"] == "peak" and final["cost"] == pytest.approx(report["cost"], **money)
        text = cli(data, "cost", "peak", "--deleted")
        assert f"peak (deleted; uid {uid})" in text and f"cost so far {report['cost']:.4f}" in text
        assert "No services." in cli(data, "cost")  # without --deleted: live services only
        scale(1)
        bills = {(b["service"], b["deleted"]) for b in platform.client().costs()}
        assert bills == {("peak", True), ("peak", False)}
        both = cli(data, "cost", "--deleted")
        assert both.count("Cost of peak") == 2 and f"peak (deleted; uid {uid})" in both
    finally:
        platform.stop()
