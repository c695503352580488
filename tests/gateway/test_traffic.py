"""Traffic splits through the real gateway process: shares, pinning, stickiness, mirroring, metrics."""

from __future__ import annotations

from collections import Counter

import httpx

from .conftest import BackendHost, GatewayUnderTest, generate_load, run, service, wait_for


def test_ten_thousand_requests_split_90_10_within_one_point(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    stable, canary = backends.start("split-stable"), backends.start("split-canary")
    gateway.push(service("chat", {"stable": [stable], "canary": [canary]}, weights={"stable": 90, "canary": 10}))

    load = run(generate_load(gateway.port("chat"), requests=10_000, concurrency=8))

    assert load.bad() == []
    assert len(load.results) == 10_000
    shares = load.shares()
    assert abs(shares["stable"] - 90) <= 1
    assert abs(shares["canary"] - 10) <= 1
    # The instance header names the backend that answered (each backend answers with its name).
    assert all(r.body.decode() == r.instance for r in load.results)
    assert (stable.requests, canary.requests) == (
        sum(r.deployment == "stable" for r in load.results),
        sum(r.deployment == "canary" for r in load.results),
    )


def test_by_instance_count_with_three_plus_one_instances_splits_75_25(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    prepaid = [backends.start(f"prepaid-{n}") for n in range(3)]
    postpaid = [backends.start("postpaid-0")]
    gateway.push(service("chat", {"prepaid": prepaid, "postpaid": postpaid}, strategy="by_instance_count"))

    load = run(generate_load(gateway.port("chat"), requests=4000, concurrency=8))

    assert load.bad() == []
    shares = load.shares()
    assert abs(shares["prepaid"] - 75) <= 2
    assert abs(shares["postpaid"] - 25) <= 2
    per_instance = Counter(r.instance for r in load.results)
    assert set(per_instance) == {b.name for b in prepaid + postpaid}


def test_header_rule_and_direct_call_pin_every_matching_request(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    stable, canary, preview = backends.start("pin-stable"), backends.start("pin-canary"), backends.start("pin-new")
    gateway.push(
        service(
            "chat",
            {"stable": [stable], "canary": [canary], "new": [preview]},
            weights={"stable": 90, "canary": 10, "new": 0},
            header_rules=[{"header": "X-Canary", "value": "1", "deployment": "canary"}],
        )
    )
    port = gateway.port("chat")

    by_rule = run(generate_load(port, requests=500, concurrency=4, headers={"x-canary": "1"}))
    by_direct_call = run(generate_load(port, requests=500, concurrency=4, headers={"X-Inferstack-Deployment": "new"}))
    both = run(generate_load(port, requests=100, concurrency=2,
                             headers={"X-CANARY": "1", "x-inferstack-deployment": "stable"}))
    other_value = run(generate_load(port, requests=1000, concurrency=4, headers={"x-canary": "yes"}))

    assert {r.deployment for r in by_rule.results} == {"canary"} and len(by_rule.ok()) == 500
    assert {r.deployment for r in by_direct_call.results} == {"new"} and len(by_direct_call.ok()) == 500
    assert {r.deployment for r in both.results} == {"stable"}  # the direct call wins over the rule
    assert abs(other_value.shares()["stable"] - 90) <= 1 and "new" not in other_value.shares()


def test_unknown_direct_call_deployment_is_404_json(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    gateway.push(service("chat", {"stable": [backends.start("unknown-stable")]}, weights={"stable": 100}))

    response = httpx.get(gateway.url("chat"), headers={"X-Inferstack-Deployment": "nope"})

    assert response.status_code == 404
    assert response.json() == {"error": {"message": "service 'chat' has no deployment 'nope' (named by the "
                                               "X-Inferstack-Deployment header)", "type": "invalid_request_error", "param": None, "code": "deployment_not_found"}, "service": "chat", "deployment": "nope"}
    assert response.headers["x-inferstack-deployment"] == "nope"


def test_consistent_hash_keeps_each_user_on_one_instance(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    instances = [backends.start(f"sticky-{n}") for n in range(4)]
    gateway.push(service("chat", {"stable": instances}, weights={"stable": 100}, consistent_hash="x-user-id"))

    with httpx.Client() as client:
        seen = {
            user: {client.get(gateway.url("chat"), headers={"X-User-Id": user}).text for _ in range(10)}
            for user in (f"user-{n}" for n in range(12))
        }

    assert all(len(names) == 1 for names in seen.values())
    assert len({next(iter(names)) for names in seen.values()}) > 1  # users are spread over instances


def test_mirror_copies_five_percent_and_never_answers_the_client(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    stable, shadow = backends.start("mirror-stable"), backends.start("mirror-shadow")
    gateway.push(
        service("chat", {"stable": [stable], "shadow": [shadow]}, weights={"stable": 100, "shadow": 0},
                mirror={"deployment": "shadow", "percent": 5})
    )

    load = run(generate_load(gateway.port("chat"), requests=2000, concurrency=8))

    assert load.bad() == []
    assert {r.deployment for r in load.results} == {"stable"}
    wait_for(lambda: shadow.requests == 100)
    assert stable.requests == 2000
    mirrored = gateway.metric_samples("inferstack_gateway_mirrored_requests_total")
    assert [(labels["deployment"], labels["code"], value) for labels, value in mirrored] == [("shadow", "2xx", 100)]


def test_mirror_gets_the_request_body_too(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    stable, shadow = backends.start("body-stable"), backends.start("body-shadow")
    gateway.push(
        service("chat", {"stable": [stable], "shadow": [shadow]}, weights={"stable": 100},
                mirror={"deployment": "shadow", "percent": 100})
    )
    with httpx.Client() as client:
        sized = client.post(gateway.url("chat", "/echo"), content=b"sized payload")
        chunked = client.post(gateway.url("chat", "/echo"), content=iter([b"chunked ", b"payload"]))

    assert (sized.json()["backend"], chunked.json()["backend"]) == ("body-stable", "body-stable")
    wait_for(lambda: len(shadow.bodies) == 2)
    assert shadow.bodies == stable.bodies == [b"sized payload", b"chunked payload"]


def test_mirror_that_is_down_does_not_fail_or_slow_the_main_requests(
    gateway: GatewayUnderTest, backends: BackendHost, refused_port: int
) -> None:
    stable = backends.start("mirror-down-stable")
    gateway.push(
        service("chat", {"stable": [stable], "shadow": [{"id": "shadow-down", "host": "127.0.0.1", "port": refused_port}]},
                weights={"stable": 100}, mirror={"deployment": "shadow", "percent": 100})
    )

    load = run(generate_load(gateway.port("chat"), requests=200, concurrency=4))

    assert load.bad() == []
    errors = {labels["instance"]: value for labels, value in gateway.metric_samples("inferstack_gateway_errors_total")
              if labels["kind"] == "mirror"}
    assert errors == {"shadow-down": 200}


def test_metrics_count_requests_by_service_deployment_instance_and_status_class(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    stable, canary = backends.start("metrics-stable"), backends.start("metrics-canary")
    gateway.push(service("metered", {"stable": [stable], "canary": [canary]}, weights={"stable": 3, "canary": 1}))

    run(generate_load(gateway.port("metered"), requests=400, concurrency=4))
    with httpx.Client() as client:
        client.get(gateway.url("metered", "/status?code=503"), headers={"x-inferstack-deployment": "canary"})
        client.get(gateway.url("metered"), headers={"x-inferstack-deployment": "missing"})

    requests = {(labels["deployment"], labels["instance"], labels["code"]): value
                for labels, value in gateway.metric_samples("inferstack_gateway_requests_total")
                if labels["service"] == "metered"}
    assert requests == {
        ("stable", "metrics-stable", "2xx"): 300,
        ("canary", "metrics-canary", "2xx"): 100,
        ("canary", "metrics-canary", "5xx"): 1,
        ("-", "-", "4xx"): 1,
    }
    counts = {labels["instance"]: value
              for labels, value in gateway.metric_samples("inferstack_gateway_request_duration_seconds_count")
              if labels["service"] == "metered"}
    assert counts == {"metrics-stable": 300, "metrics-canary": 101, "-": 1}
    in_flight = {labels["instance"]: value for labels, value in gateway.metric_samples("inferstack_gateway_in_flight")
                 if labels["service"] == "metered"}
    assert in_flight == {"metrics-stable": 0, "metrics-canary": 0}
