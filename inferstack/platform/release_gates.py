"""A release step's gates, judged on the gateway's own per-instance totals (`GET /windows`; `gateway/metrics.py`).

Pure. A *sample* is what the gateway reported at one moment: per instance, requests and failures so far and a fine
latency histogram (bucket index over `WINDOW_BOUNDS`). A step's *window* is the difference of two samples of the same
gateway process, per instance (an instance new in the window counts from 0), summed by *side* — a deployment for a
traffic shift, a revision of one deployment for a canary redeploy.

Readings: the error rate is failures ÷ requests in percent; the p99 is the upper bound of the histogram bucket
holding the 99th-percentile request (nearest rank), so it errs high by at most 4.4 %. Verdicts (`judge`): an error
rate above its gate over at least `min_requests` requests fails at once; otherwise nothing passes before the bake time
is over and every side gaining traffic has answered `min_requests`; then the p99 gates are read — absolute, and
relative to the baseline's p99 over the same window (when the baseline took no request in it, as in the last step of a
full shift, its p99 of the latest window where it did; with none at all the ratio is not read, and the reading says
so). A step whose sides have not seen their requests by the step's timeout fails on `min_requests`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from inferstack.spec import Progressive

from .gateway.metrics import WINDOW_BOUNDS

InstanceKey = tuple[str, str, str]  # (service, deployment, instance)


@dataclass(frozen=True)
class Counts:
    """Requests, failures and the fine latency histogram of one instance or one side."""

    requests: int = 0
    failures: int = 0
    latency: Mapping[int, int] = field(default_factory=dict)

    def __add__(self, other: Counts) -> Counts:
        latency = dict(self.latency)
        for i, n in other.latency.items():
            latency[i] = latency.get(i, 0) + n
        return Counts(self.requests + other.requests, self.failures + other.failures, latency)

    def since(self, earlier: Counts | None) -> Counts:
        """What happened after `earlier` (a counter that went back — a restarted process — counts from 0)."""
        if earlier is None or self.requests < earlier.requests or self.failures < earlier.failures:
            return self
        latency = {i: n - earlier.latency.get(i, 0) for i, n in self.latency.items() if n > earlier.latency.get(i, 0)}
        return Counts(self.requests - earlier.requests, self.failures - earlier.failures, latency)

    @property
    def error_rate(self) -> float | None:
        """Failed requests in percent, None without requests."""
        return 100.0 * self.failures / self.requests if self.requests else None

    @property
    def p99_ms(self) -> float | None:
        """The 99th-percentile latency in ms (the upper bound of its bucket), None without timed requests."""
        total = sum(self.latency.values())
        if total <= 0:
            return None
        rank = 0.99 * total
        seen = 0
        for index in sorted(self.latency):
            seen += self.latency[index]
            if seen >= rank:
                return 1000.0 * WINDOW_BOUNDS[min(index, len(WINDOW_BOUNDS) - 1)]
        return 1000.0 * WINDOW_BOUNDS[-1]


@dataclass(frozen=True)
class Sample:
    """The gateway's totals at one moment: `source` names the gateway process (its counters restart with it)."""

    source: str
    instances: Mapping[InstanceKey, Counts]

    @classmethod
    def of(cls, answer: Mapping[str, Any]) -> Sample:
        """From the gateway's `GET /windows` answer; rows that do not read are left out."""
        instances: dict[InstanceKey, Counts] = {}
        for row in answer.get("instances") or []:
            try:
                key = (str(row["service"]), str(row["deployment"]), str(row["instance"]))
                latency = {int(i): int(n) for i, n in (row.get("latency") or {}).items() if int(n) > 0}
                instances[key] = Counts(int(row["requests"]), int(row["failures"]), latency)
            except (KeyError, TypeError, ValueError):
                continue
        return cls(f"{answer.get('pid')}:{answer.get('started')}", instances)


def window(start: Sample, end: Sample, side_of: Callable[[InstanceKey], str | None]) -> dict[str, Counts]:
    """Per side, what its instances did between two samples of one gateway process (`side_of` → None: not counted)."""
    out: dict[str, Counts] = {}
    for key, counts in end.instances.items():
        side = side_of(key)
        if side is not None:
            out[side] = out.get(side, Counts()) + counts.since(start.instances.get(key))
    return out


Outcome = Literal["pass", "fail", "wait"]


@dataclass(frozen=True)
class Verdict:
    """A step's verdict: `gate` names the gate that failed (or that is waited for), `readings` every side's."""

    outcome: Outcome
    reason: str
    gate: str | None = None
    readings: tuple[dict[str, Any], ...] = ()


def _num(value: float) -> str:
    return f"{round(value, 2):g}"


def reading(side: str, counts: Counts, baseline_p99: float | None) -> dict[str, Any]:
    """One side's reading as status shows it."""
    out: dict[str, Any] = {"side": side, "requests": counts.requests, "failures": counts.failures,
                           "error_rate": None if counts.error_rate is None else round(counts.error_rate, 3),
                           "p99_ms": None if counts.p99_ms is None else round(counts.p99_ms, 3)}
    if baseline_p99 is not None:
        out["baseline_p99_ms"] = round(baseline_p99, 3)
    return out


def judge(policy: Progressive, targets: Mapping[str, Counts], baseline: Counts | None, *, baked: bool,
          timed_out: bool, baseline_p99_before: float | None = None, remaining_s: float = 0.0) -> Verdict:
    """The verdict of one step so far (see the module docstring). `targets`: the sides gaining traffic;
    `baseline`: the side losing it (None: none); `baseline_p99_before`: its p99 of the latest window where it had
    requests."""
    gates = policy.gates
    base_p99 = baseline.p99_ms if baseline is not None and baseline.requests else None
    if base_p99 is None:
        base_p99 = baseline_p99_before
    readings = tuple(reading(side, c, base_p99) for side, c in sorted(targets.items()))
    if baseline is not None:
        readings += ({**reading("baseline", baseline, None), "baseline": True},)

    def verdict(outcome: Outcome, reason: str, gate: str | None = None) -> Verdict:
        return Verdict(outcome, reason, gate, readings)

    for side, c in sorted(targets.items()):
        rate = c.error_rate
        if gates.max_error_rate is not None and rate is not None and c.requests >= gates.min_requests \
                and rate > gates.max_error_rate:
            return verdict("fail", f"{side}: error rate {_num(rate)} % > {_num(gates.max_error_rate)} % "
                                   f"({c.failures} of {c.requests} requests failed)", "max_error_rate")
    short = {side: c.requests for side, c in sorted(targets.items()) if c.requests < gates.min_requests}
    if not baked:
        return verdict("wait", f"baking, {_num(max(remaining_s, 0.0))} s left")
    if short or not targets:
        seen = ", ".join(f"{side} {n}" for side, n in short.items()) or "no side gaining traffic"
        if timed_out:
            return verdict("fail", f"too few requests to judge within the step's {_num(policy.timeout_s())} s: "
                                   f"{seen} of {gates.min_requests} required", "min_requests")
        return verdict("wait", f"waiting for requests: {seen} of {gates.min_requests}", "min_requests")
    for side, c in sorted(targets.items()):
        p99 = c.p99_ms
        if p99 is None:
            continue
        if gates.max_p99_ms is not None and p99 > gates.max_p99_ms:
            return verdict("fail", f"{side}: p99 {_num(p99)} ms > {_num(gates.max_p99_ms)} ms over {c.requests} "
                                   f"requests", "max_p99_ms")
        if gates.max_p99_ratio is not None and base_p99:
            ratio = p99 / base_p99
            if ratio > gates.max_p99_ratio:
                return verdict("fail", f"{side}: p99 {_num(p99)} ms is {_num(ratio)} × the baseline's "
                                       f"{_num(base_p99)} ms > {_num(gates.max_p99_ratio)} ×", "max_p99_ratio")
    parts = []
    for side, c in sorted(targets.items()):
        text = f"{side}: {c.requests} requests"
        if c.error_rate is not None:
            text += f", error rate {_num(c.error_rate)} %"
        if c.p99_ms is not None:
            text += f", p99 {_num(c.p99_ms)} ms"
        parts.append(text)
    if gates.max_p99_ratio is not None and not base_p99:
        parts.append("p99 ratio not read: the baseline took no request")
    return verdict("pass", "; ".join(parts))


def totals(sides: Iterable[Counts]) -> Counts:
    out = Counts()
    for c in sides:
        out = out + c
    return out
