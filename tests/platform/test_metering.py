"""The meter with a fake clock: instance-seconds × prices computed by hand, prepaid slots paid whatever their use,
borrowing at the lender's rate, and a bill that survives a restart (and a crash) of the platform."""

from __future__ import annotations

import os
import stat

import pytest

from inferstack.plan.prices import Charge
from inferstack.platform.metering import Line, Meter, Use, clock_from_env


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


ELASTIC = Line("uid-1", "chat", "elastic", "main", "q-post", "cpu-small")
BASE = Line("uid-1", "chat", "base", "main", "q-pre", "cpu-small")
BORROWED = Line("uid-1", "chat", "idle", "main", "q-lend", "cpu-small", lender="q-lend")


def postpaid(n: int) -> dict[Line, Use]:
    return {ELASTIC: Use(Charge("cpu-small", "postpaid", 0, n), 0.05)}


def test_pay_as_you_go_instance_seconds_through_a_peak_times_the_price(tmp_path):
    clock = Clock()
    meter = Meter(tmp_path / "meter.db", clock)
    start = clock.now
    meter.observe(postpaid(2))
    clock.now = start + 3600
    meter.observe(postpaid(5))  # the peak
    clock.now = start + 5400
    meter.observe(postpaid(2))
    clock.now = start + 9000
    report = meter.report("uid-1")
    (line,) = report["lines"]
    assert line["instance_seconds"] == 2 * 3600 + 5 * 1800 + 2 * 3600
    assert report["cost"] == pytest.approx((2 * 3600 + 5 * 1800 + 2 * 3600) * 0.05 / 3600)
    assert report["per_hour"] == pytest.approx(2 * 0.05)
    assert report["by_billing"] == {"postpaid": pytest.approx(report["cost"])}
    assert meter.report("another-uid")["lines"] == []


def test_prepaid_slots_are_paid_whatever_their_use_and_more_running_instances_as_they_run(tmp_path):
    clock = Clock()
    meter = Meter(tmp_path / "meter.db", clock)
    meter.observe({BASE: Use(Charge("cpu-small", "prepaid", reserved=3, running=0), 0.03)})
    clock.now += 1800
    meter.observe({BASE: Use(Charge("cpu-small", "prepaid", reserved=3, running=5), 0.03)})
    clock.now += 1800
    (line,) = meter.report("uid-1")["lines"]
    assert line["reserved_slot_seconds"] == 3 * 3600
    assert line["instance_seconds"] == 5 * 1800
    assert line["charged_instance_seconds"] == 3 * 1800 + 5 * 1800
    assert line["cost"] == pytest.approx((3 * 1800 + 5 * 1800) * 0.03 / 3600)


def test_borrowed_instances_pay_the_lenders_rate_and_show_as_idle(tmp_path):
    clock = Clock()
    meter = Meter(tmp_path / "meter.db", clock)
    meter.observe({BORROWED: Use(Charge("cpu-small", "prepaid", 0, 2), 0.03)})
    clock.now += 3600
    report = meter.report("uid-1")
    assert report["lines"][0]["borrowed_from"] == "q-lend" and report["lines"][0]["billing"] == "prepaid"
    assert report["by_billing"] == {"idle": pytest.approx(2 * 0.03)}


def test_the_bill_survives_a_restart_and_a_crash_charges_the_time_it_was_down(tmp_path):
    clock = Clock()
    meter = Meter(tmp_path / "meter.db", clock)
    meter.observe(postpaid(3))
    clock.now += 600
    meter.observe(postpaid(3), force=True)  # flushed; then the platform dies without closing
    clock.now += 1200
    again = Meter(tmp_path / "meter.db", clock)  # instances outlived the platform: still running
    assert again.report("uid-1")["lines"][0]["instance_seconds"] == 3 * 1800
    again.observe({**postpaid(1), BASE: Use(Charge("cpu-small", "prepaid", reserved=2, running=2), 0.03)})
    clock.now += 100
    again.close()  # a graceful stop: the instances stopped, the prepaid slots stay held
    clock.now += 5000
    final = Meter(tmp_path / "meter.db", clock).report("uid-1")
    lines = {ln["deployment"]: ln for ln in final["lines"]}
    assert lines["elastic"]["instance_seconds"] == 3 * 1800 + 100
    assert lines["base"]["instance_seconds"] == 2 * 100
    assert lines["base"]["reserved_slot_seconds"] == 2 * 5100
    assert final["per_hour"] == pytest.approx(2 * 0.03)
    assert stat.S_IMODE(os.stat(tmp_path / "meter.db").st_mode) == 0o600


def test_an_unchanged_use_is_written_only_once_per_flush_interval(tmp_path):
    clock = Clock()
    meter = Meter(tmp_path / "meter.db", clock, flush_s=10)
    meter.observe(postpaid(1))
    clock.now += 5
    meter.observe(postpaid(1))
    rows = meter._conn.execute("SELECT since FROM lines").fetchall()
    assert rows == [(clock.now - 5,)]
    clock.now += 6
    meter.observe(postpaid(1))
    assert meter._conn.execute("SELECT since, running_s FROM lines").fetchall() == [(clock.now, 11.0)]


def test_the_clock_of_a_platform_under_test_comes_from_a_file(tmp_path):
    path = tmp_path / "clock"
    path.write_text("12345.5\n")
    assert clock_from_env({"INFERSTACK_CLOCK_FILE": str(path)})() == 12345.5
    assert abs(clock_from_env({})() - __import__("time").time()) < 5
