"""Gateway metrics: plain counters on the hot path, exported through a prometheus-client Collector."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "inferstack_gateway_"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
ERROR_KINDS = ("connect", "timeout", "upstream", "client_abort", "unavailable", "mirror")
CONNECT, TIMEOUT, UPSTREAM, CLIENT_ABORT, UNAVAILABLE, MIRROR = range(len(ERROR_KINDS))
NO_LABEL = "-"
RETIRED_KEPT_S = 300.0  # an instance's series outlive it by this much, so that its last values get scraped
WINDOW_BOUNDS: tuple[float, ...] = tuple(1e-4 * 2 ** (i / 16) for i in range(16 * 20 + 1))
"""Upper bounds (seconds) of the fine latency histogram a progressive release's gates read: 16 per doubling from
0.1 ms to ~105 s, so a p99 read from it is within 4.4 % (the Prometheus buckets above are far coarser)."""

Labels = tuple[str, str, str]


class RouteStats:
    """Counters of one (service, deployment, instance); deployment/instance are "-" when the gateway answered.

    For progressive releases (`window`): `fine` is a latency histogram over `WINDOW_BOUNDS`, and `unanswered` counts
    the tries of this instance that failed without an answer being counted here — a connection that failed and was
    retried elsewhere, a response that broke off after it began. So over any window an instance served
    `sum(codes) + unanswered` requests of which `codes[5] + unanswered` failed (the gateway's own 502/504 for it
    are in `codes`)."""

    __slots__ = ("buckets", "codes", "errors", "fine", "in_flight", "latency_sum", "mirrored", "unanswered")

    def __init__(self) -> None:
        self.codes = [0] * 6  # by status // 100; index 0 collects nonsense statuses
        self.mirrored = [0] * 6
        self.errors = [0] * len(ERROR_KINDS)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.fine = [0] * (len(WINDOW_BOUNDS) + 1)
        self.latency_sum = 0.0
        self.in_flight = 0
        self.unanswered = 0

    def observe(self, status: int, seconds: float) -> None:
        """One answered request."""
        self.codes[status // 100 if 100 <= status < 600 else 0] += 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.fine[bisect_left(WINDOW_BOUNDS, seconds)] += 1
        self.latency_sum += seconds

    def window(self) -> dict[str, Any]:
        """Totals so far for a release's gates (see the class docstring); the histogram sparse, by bucket index."""
        answered = sum(self.codes)
        return {"requests": answered + self.unanswered, "failures": self.codes[5] + self.unanswered,
                "latency": {str(i): n for i, n in enumerate(self.fine) if n}}


class GatewayMetrics(Collector):
    """All RouteStats of the process (kept after an instance leaves: counters never go back)."""

    def __init__(self) -> None:
        self._stats: dict[Labels, RouteStats] = {}
        self._retired: dict[Labels, float] = {}  # labels of instances that left the snapshot -> when
        self.snapshot_version = -1
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def stats(self, service: str, deployment: str = NO_LABEL, instance: str = NO_LABEL) -> RouteStats:
        labels = (service, deployment, instance)
        self._retired.pop(labels, None)
        stats = self._stats.get(labels)
        if stats is None:
            stats = self._stats[labels] = RouteStats()
        return stats

    def retire(self, labels: Labels, now: float) -> None:
        """The instance left the snapshot: its series go away later (see `forget_retired`)."""
        self._retired[labels] = now

    def forget_retired(self, now: float) -> None:
        """Drop the series of instances retired long enough ago and with nothing left in flight."""
        for labels, since in list(self._retired.items()):
            if now - since > RETIRED_KEPT_S and self._stats[labels].in_flight <= 0:
                del self._retired[labels]
                del self._stats[labels]

    def windows(self, services: Iterable[str]) -> list[dict[str, Any]]:
        """Every instance's totals for release gates (`RouteStats.window`), of `services` (retired instances too, so
        a window's requests to an instance that left stay counted)."""
        wanted = set(services)
        return [{"service": svc, "deployment": dep, "instance": inst, **stats.window()}
                for (svc, dep, inst), stats in list(self._stats.items()) if svc in wanted and inst != NO_LABEL]

    def add_gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """An unlabelled gauge read at scrape time."""
        self.gauges[name] = (documentation, read)

    def exposition(self) -> bytes:
        """Prometheus text format."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        names = ["service", "deployment", "instance"]
        requests = CounterMetricFamily(PREFIX + "requests", "Requests answered, by status class.", labels=[*names, "code"])
        mirrored = CounterMetricFamily(
            PREFIX + "mirrored_requests", "Mirrored copies answered, by status class.", labels=[*names, "code"]
        )
        errors = CounterMetricFamily(PREFIX + "errors", "Failures, by kind.", labels=[*names, "kind"])
        latency = HistogramMetricFamily(
            PREFIX + "request_duration_seconds", "Time from request head to end of response.", labels=names
        )
        in_flight = GaugeMetricFamily(PREFIX + "in_flight", "Requests being proxied.", labels=names)
        for labels, stats in list(self._stats.items()):
            for index, name in enumerate(STATUS_CLASSES, start=1):
                if stats.codes[index]:
                    requests.add_metric([*labels, name], stats.codes[index])
                if stats.mirrored[index]:
                    mirrored.add_metric([*labels, name], stats.mirrored[index])
            for index, kind in enumerate(ERROR_KINDS):
                if stats.errors[index]:
                    errors.add_metric([*labels, kind], stats.errors[index])
            count = sum(stats.buckets)
            if count:
                cumulative, running = [], 0
                for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), stats.buckets):
                    running += n
                    cumulative.append((bound, running))
                latency.add_metric(list(labels), cumulative, stats.latency_sum)
            if labels[2] != NO_LABEL:
                in_flight.add_metric(list(labels), stats.in_flight)
        yield from (requests, mirrored, errors, latency, in_flight)
        version = GaugeMetricFamily(PREFIX + "snapshot_version", "Version of the routing snapshot in use.")
        version.add_metric([], self.snapshot_version)
        yield version
        for name, (documentation, read) in self.gauges.items():
            gauge = GaugeMetricFamily(PREFIX + name, documentation)
            gauge.add_metric([], read())
            yield gauge
