"""Gateway metrics: plain counters exported in Prometheus format; series of departed instances expire."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from inferstack.platform.gateway.metrics import RETIRED_KEPT_S, GatewayMetrics


def samples(metrics: GatewayMetrics, name: str) -> dict[tuple, float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.name == name
    }


def test_observations_become_counters_and_a_cumulative_histogram() -> None:
    metrics = GatewayMetrics()
    stats = metrics.stats("chat", "stable", "i1")
    for status, seconds in ((200, 0.0005), (201, 0.02), (404, 0.02), (503, 3.0)):
        stats.observe(status, seconds)

    requests = samples(metrics, "inferstack_gateway_requests_total")
    assert {dict(k)["code"]: v for k, v in requests.items()} == {"2xx": 2, "4xx": 1, "5xx": 1}
    buckets = {dict(k)["le"]: v for k, v in samples(metrics, "inferstack_gateway_request_duration_seconds_bucket").items()}
    assert (buckets["0.001"], buckets["0.025"], buckets["2.5"], buckets["5.0"], buckets["+Inf"]) == (1, 3, 3, 4, 4)
    assert samples(metrics, "inferstack_gateway_request_duration_seconds_sum") == {
        (("deployment", "stable"), ("instance", "i1"), ("service", "chat")): 3.0405
    }


def test_series_of_a_departed_instance_stay_for_a_while_then_go() -> None:
    metrics = GatewayMetrics()
    metrics.stats("chat", "stable", "gone").observe(200, 0.01)
    metrics.retire(("chat", "stable", "gone"), now=100.0)

    metrics.forget_retired(now=100.0 + RETIRED_KEPT_S - 1)
    assert samples(metrics, "inferstack_gateway_requests_total")
    metrics.forget_retired(now=100.0 + RETIRED_KEPT_S + 1)
    assert samples(metrics, "inferstack_gateway_requests_total") == {}


def test_an_instance_that_comes_back_keeps_its_series() -> None:
    metrics = GatewayMetrics()
    metrics.stats("chat", "stable", "back").observe(200, 0.01)
    metrics.retire(("chat", "stable", "back"), now=0.0)
    metrics.stats("chat", "stable", "back").observe(200, 0.01)
    metrics.forget_retired(now=RETIRED_KEPT_S * 2)
    assert list(samples(metrics, "inferstack_gateway_requests_total").values()) == [2]


def test_departed_instance_with_requests_in_flight_is_kept() -> None:
    metrics = GatewayMetrics()
    metrics.stats("chat", "stable", "busy").in_flight = 1
    metrics.retire(("chat", "stable", "busy"), now=0.0)
    metrics.forget_retired(now=RETIRED_KEPT_S * 2)
    assert samples(metrics, "inferstack_gateway_in_flight")
