"""A release step's gates on the gateway's per-instance totals: windows, readings and verdicts (pure)."""

from __future__ import annotations

from bisect import bisect_left

import pytest

from inferstack.platform.gateway.metrics import WINDOW_BOUNDS
from inferstack.platform.release_gates import Counts, Sample, judge, window
from inferstack.spec import Progressive


def latencies(*seconds: float) -> dict[int, int]:
    out: dict[int, int] = {}
    for s in seconds:
        i = bisect_left(WINDOW_BOUNDS, s)
        out[i] = out.get(i, 0) + 1
    return out


def counts(requests: int, failures: int = 0, seconds: float = 0.005) -> Counts:
    return Counts(requests, failures, latencies(*[seconds] * requests))


def policy(**gates) -> Progressive:
    return Progressive.model_validate({"bake_time_s": 1, "gates": {"min_requests": 10, **gates}})


@pytest.mark.parametrize("true_ms", [0.2, 3.3, 47.0, 180.0, 199.0, 201.0, 999.0, 31_000.0])
def test_p99_is_read_within_the_histogram_precision_and_never_below_the_truth(true_ms):
    c = Counts(100, 0, latencies(*([0.00005] * 99 + [true_ms / 1000])))
    # the 99th of 100 requests is a 0.05 ms one (the first bucket, up to 0.1 ms); with two slow ones it is a slow one
    assert c.p99_ms == pytest.approx(0.1)
    slow = Counts(100, 0, latencies(*([0.00005] * 98 + [true_ms / 1000] * 2)))
    assert true_ms <= slow.p99_ms <= true_ms * 1.045


def test_a_window_is_per_instance_differences_summed_by_side():
    start = Sample("g:1", {("s", "a", "a-1"): counts(10, 1), ("s", "b", "b-1"): counts(5)})
    end = Sample("g:1", {("s", "a", "a-1"): counts(30, 4), ("s", "a", "a-2"): counts(7, 7),
                         ("s", "b", "b-1"): counts(9), ("other", "a", "x"): counts(99)})
    sides = window(start, end, lambda k: k[1] if k[0] == "s" else None)
    assert (sides["a"].requests, sides["a"].failures) == (27, 10)  # 20 more on a-1, 7 on a new instance
    assert sides["b"].requests == 4 and "other" not in sides
    assert sum(sides["a"].latency.values()) == 27


def test_an_instance_whose_counters_went_back_counts_from_zero():
    assert counts(5, 1).since(counts(50, 3)) == counts(5, 1)


def test_a_sample_skips_rows_that_do_not_read():
    sample = Sample.of({"pid": 7, "started": 1, "instances": [
        {"service": "s", "deployment": "a", "instance": "a-1", "requests": 3, "failures": 1, "latency": {"12": 3}},
        {"service": "s", "deployment": "a", "instance": "a-2", "requests": "many"},
        {"deployment": "a"}, "garbage"]})
    assert list(sample.instances) == [("s", "a", "a-1")] and sample.source == "7:1"


def test_an_error_rate_above_its_gate_fails_at_once_even_while_baking():
    verdict = judge(policy(max_error_rate=1), {"canary": counts(20, 4)}, counts(200), baked=False, timed_out=False)
    assert verdict.outcome == "fail" and verdict.gate == "max_error_rate"
    assert verdict.reason == "canary: error rate 20 % > 1 % (4 of 20 requests failed)"
    canary = next(r for r in verdict.readings if r["side"] == "canary")
    assert canary["error_rate"] == 20 and canary["requests"] == 20 and canary["failures"] == 4


def test_no_gate_passes_before_the_bake_time_or_the_minimum_of_requests():
    p = policy(max_error_rate=1)
    assert judge(p, {"canary": counts(50)}, None, baked=False, timed_out=False, remaining_s=0.4).reason == \
        "baking, 0.4 s left"
    waiting = judge(p, {"canary": counts(9)}, None, baked=True, timed_out=False)
    assert waiting.outcome == "wait" and waiting.reason == "waiting for requests: canary 9 of 10"
    # fewer than the minimum: an error rate of 100 % is not judged yet either
    assert judge(p, {"canary": counts(9, 9)}, None, baked=True, timed_out=False).outcome == "wait"
    late = judge(p, {"canary": counts(9)}, None, baked=True, timed_out=True)
    assert late.outcome == "fail" and late.gate == "min_requests" and "canary 9 of 10 required" in late.reason


def test_the_p99_gates_absolute_and_relative_to_the_baseline():
    slow = counts(50, seconds=0.3)
    absolute = judge(policy(max_p99_ms=200), {"canary": slow}, counts(50), baked=True, timed_out=False)
    assert absolute.outcome == "fail" and absolute.gate == "max_p99_ms" and "> 200 ms over 50 requests" in \
        absolute.reason
    relative = judge(policy(max_p99_ratio=1.5), {"canary": counts(50, seconds=0.02)},
                     counts(50, seconds=0.01), baked=True, timed_out=False)
    assert relative.outcome == "fail" and relative.gate == "max_p99_ratio" and "× the baseline's" in relative.reason
    healthy = judge(policy(max_p99_ratio=1.5, max_p99_ms=200), {"canary": counts(50, seconds=0.011)},
                    counts(50, seconds=0.01), baked=True, timed_out=False)
    assert healthy.outcome == "pass" and "canary: 50 requests, error rate 0 %, p99" in healthy.reason


def test_a_baseline_without_requests_in_the_window_is_read_from_its_last_window():
    p = policy(max_p99_ratio=1.5)
    fallback = judge(p, {"canary": counts(50, seconds=0.05)}, Counts(), baked=True, timed_out=False,
                     baseline_p99_before=10.0)
    assert fallback.outcome == "fail" and "baseline's 10 ms" in fallback.reason
    unread = judge(p, {"canary": counts(50, seconds=0.05)}, Counts(), baked=True, timed_out=False)
    assert unread.outcome == "pass" and "p99 ratio not read: the baseline took no request" in unread.reason


def test_each_side_gaining_traffic_is_judged_on_its_own():
    verdict = judge(policy(max_error_rate=5), {"a": counts(100), "b": counts(100, 10)}, None, baked=True,
                    timed_out=False)
    assert verdict.outcome == "fail" and verdict.reason.startswith("b: error rate 10 %")
