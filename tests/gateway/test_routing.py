"""The pure routing core: split, instance choice, precedence, mirroring, state carried across snapshots."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferstack.platform.gateway.routing import (
    DIRECT_CALL_HEADER,
    HashRing,
    Instance,
    NoReadyInstance,
    RoutingTable,
    ServiceRouter,
    SmoothWeightedRoundRobin,
    UnknownDeployment,
    integer_weights,
)
from inferstack.platform.gateway.snapshot import Service


def swrr(weights: dict[str, float], previous: SmoothWeightedRoundRobin | None = None) -> SmoothWeightedRoundRobin:
    return SmoothWeightedRoundRobin(((k, k, w) for k, w in weights.items()), previous)


def picks(split: SmoothWeightedRoundRobin, n: int) -> list[str]:
    return [split.next() for _ in range(n)]


def make_service(deployments: dict[str, int], **traffic: Any) -> Service:
    """A service whose deployment `key` has `n` instances named `key-1`..`key-n`."""
    return Service.model_validate(
        {
            "key": "svc",
            "traffic": traffic,
            "deployments": [
                {
                    "key": key,
                    "instances": [{"id": f"{key}-{i}", "port": 10000 + i} for i in range(1, n + 1)],
                }
                for key, n in deployments.items()
            ],
        }
    )


def route_many(router: ServiceRouter, n: int, headers: dict[bytes, bytes] | None = None) -> list[Instance]:
    return [router.route(headers) for _ in range(n)]


# ------------------------------------------------------------------------------------------ smooth weighted RR


def test_swrr_produces_nginx_sequence_for_5_1_1() -> None:
    # The sequence documented for nginx's smooth weighted round robin.
    assert picks(swrr({"a": 5, "b": 1, "c": 1}), 7) == ["a", "a", "b", "a", "c", "a", "a"]


def test_swrr_interleaves_2_1_and_repeats_the_cycle() -> None:
    assert picks(swrr({"a": 2, "b": 1}), 6) == ["a", "b", "a", "a", "b", "a"]


def test_swrr_ninety_ten_sends_exactly_one_in_ten_to_the_small_side_in_every_cycle() -> None:
    sequence = picks(swrr({"stable": 90, "canary": 10}), 100)
    for cycle in range(10):
        assert sequence[cycle * 10 : cycle * 10 + 10].count("canary") == 1


def test_swrr_is_deterministic() -> None:
    weights = {"a": 7, "b": 3, "c": 11}
    assert picks(swrr(weights), 200) == picks(swrr(weights), 200)


def test_swrr_weights_are_shares_that_need_not_sum_to_100() -> None:
    assert Counter(picks(swrr({"a": 3, "b": 1}), 400)) == {"a": 300, "b": 100}


def test_swrr_never_chooses_weight_zero() -> None:
    assert set(picks(swrr({"a": 1, "b": 0, "c": 2}), 300)) == {"a", "c"}


def test_swrr_with_only_zero_weights_chooses_nothing() -> None:
    assert swrr({"a": 0}).next() is None
    assert swrr({}).next() is None


def test_swrr_accepts_fractional_weights_that_sum_to_100() -> None:
    counts = Counter(picks(swrr({"a": 33.33, "b": 33.33, "c": 33.34}), 10_000))
    assert counts == {"a": 3333, "b": 3333, "c": 3334}


def test_integer_weights_keep_ratios_and_reduce_by_gcd() -> None:
    assert integer_weights([90, 10]) == [9, 1]
    assert integer_weights([0.5, 0.25]) == [2, 1]
    assert integer_weights([33.33, 33.34]) == [3333, 3334]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6))
def test_swrr_gives_every_key_exactly_its_weight_over_a_full_cycle(weights: list[int]) -> None:
    named = {f"k{i}": w for i, w in enumerate(weights)}
    split = swrr(named)
    cycle = sum(split.weights)
    counts = Counter(picks(split, cycle))
    positive = [w for w in weights if w > 0]
    expected = dict(zip([k for k, w in named.items() if w > 0], integer_weights(positive)))
    assert dict(counts) == expected
    # Back at the start: the next cycle is the same sequence.
    assert split.current == [0] * len(split.weights)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=30), min_size=2, max_size=5),
    st.lists(st.integers(min_value=1, max_value=30), min_size=2, max_size=5),
    st.integers(min_value=0, max_value=500),
)
def test_swrr_carried_over_state_never_skews_new_shares_by_more_than_a_few_picks(
    old: list[int], new: list[int], steps: int
) -> None:
    before = swrr({f"k{i}": w for i, w in enumerate(old)})
    picks(before, steps)
    after = swrr({f"k{i}": w for i, w in enumerate(new)}, previous=before)
    total = sum(after.weights)
    counts = Counter(picks(after, total * 4))
    for key, weight in zip(after.keys, after.weights):
        assert abs(counts[key] - 4 * weight) <= len(new) + 1


def test_swrr_swap_from_90_10_to_50_50_is_50_50_right_away() -> None:
    before = swrr({"stable": 90, "canary": 10})
    picks(before, 37)  # mid-cycle
    after = swrr({"stable": 50, "canary": 50}, previous=before)
    counts = Counter(picks(after, 100))
    assert abs(counts["stable"] - 50) <= 2


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=30), min_size=2, max_size=5),
    st.lists(st.integers(min_value=1, max_value=30), min_size=2, max_size=5),
    st.integers(min_value=0, max_value=500),
)
def test_swrr_every_full_cycle_after_a_swap_has_exactly_the_new_shares(old: list[int], new: list[int],
                                                                       steps: int) -> None:
    before = swrr({f"k{i}": w for i, w in enumerate(old)})
    picks(before, steps)
    after = swrr({f"k{i}": w for i, w in enumerate(new)}, previous=before)
    total = sum(after.weights)
    for _ in range(3):
        counts = Counter(picks(after, total))
        assert counts == dict(zip(after.keys, after.weights))


def test_swrr_swap_with_unchanged_weights_continues_the_cycle_as_if_nothing_happened() -> None:
    reference = picks(swrr({"a": 9, "b": 1}), 40)
    before = swrr({"a": 9, "b": 1})
    first = picks(before, 13)
    after = swrr({"a": 9, "b": 1}, previous=before)
    assert first + picks(after, 27) == reference


def test_swrr_state_is_rescaled_when_the_total_weight_shrinks() -> None:
    before = swrr({"a": 99, "b": 1})
    picks(before, 50)
    after = swrr({"a": 1, "b": 1}, previous=before)
    assert Counter(picks(after, 10)) == {"a": 5, "b": 5}


# ------------------------------------------------------------------------------------------ instance choice


def test_least_busy_takes_the_instance_with_fewest_in_flight() -> None:
    router = ServiceRouter(make_service({"d": 3}, weights={"d": 1}))
    a, b, c = router.deployments["d"].instances
    a.in_flight, b.in_flight, c.in_flight = 4, 1, 2
    assert router.route(None) is b


def test_least_busy_breaks_ties_round_robin() -> None:
    router = ServiceRouter(make_service({"d": 3}, weights={"d": 1}))
    assert [i.id for i in route_many(router, 6)] == ["d-1", "d-2", "d-3", "d-1", "d-2", "d-3"]


def test_least_busy_avoids_an_instance_that_just_failed_while_others_exist() -> None:
    router = ServiceRouter(make_service({"d": 2}, weights={"d": 1}))
    first, second = router.deployments["d"].instances
    first.down_until = 100.0
    assert {router.route(None, now=50.0).id for _ in range(4)} == {second.id}
    assert {router.route(None, now=150.0).id for _ in range(4)} == {first.id, second.id}


def test_consistent_hash_sends_the_same_key_to_the_same_instance() -> None:
    router = ServiceRouter(make_service({"d": 5}, weights={"d": 1}, consistent_hash={"header": "X-User-Id"}))
    for user in (b"alice", b"bob", b"carol"):
        chosen = {router.route({b"x-user-id": user}).id for _ in range(20)}
        assert len(chosen) == 1


def test_consistent_hash_ignores_load_for_stickiness() -> None:
    router = ServiceRouter(make_service({"d": 3}, weights={"d": 1}, consistent_hash={"header": "x-user-id"}))
    target = router.route({b"x-user-id": b"alice"})
    target.in_flight = 50
    assert router.route({b"x-user-id": b"alice"}) is target


def test_consistent_hash_without_the_header_falls_back_to_least_busy() -> None:
    router = ServiceRouter(make_service({"d": 3}, weights={"d": 1}, consistent_hash={"header": "x-user-id"}))
    assert [i.id for i in route_many(router, 3, {b"x-other": b"1"})] == ["d-1", "d-2", "d-3"]


def _owners(ids: list[str], keys: list[bytes]) -> dict[bytes, str]:
    ring = HashRing([Instance(i, "127.0.0.1", 1, "d") for i in ids])
    return {k: ring.lookup(k).id for k in keys}  # type: ignore[union-attr]


def test_consistent_hash_moves_only_the_removed_instances_keys() -> None:
    keys = [f"user-{n}".encode() for n in range(2000)]
    before = _owners(["i1", "i2", "i3", "i4"], keys)
    after = _owners(["i1", "i2", "i4"], keys)
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "i3" for k in moved)
    assert len(moved) == sum(1 for k in keys if before[k] == "i3")


def test_consistent_hash_gives_an_added_instance_a_fair_slice_taken_from_the_others() -> None:
    keys = [f"user-{n}".encode() for n in range(2000)]
    before = _owners(["i1", "i2", "i3", "i4"], keys)
    after = _owners(["i1", "i2", "i3", "i4", "i5"], keys)
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == "i5" for k in moved)
    assert 0.10 < len(moved) / len(keys) < 0.30  # ideal: 1/5


def test_consistent_hash_picks_within_the_weighted_choice() -> None:
    router = ServiceRouter(
        make_service({"stable": 3, "canary": 2}, weights={"stable": 50, "canary": 50}, consistent_hash={"header": "u"})
    )
    chosen = route_many(router, 10, {b"u": b"same-user"})
    assert Counter(i.deployment for i in chosen) == {"stable": 5, "canary": 5}
    assert len({i.id for i in chosen if i.deployment == "stable"}) == 1
    assert len({i.id for i in chosen if i.deployment == "canary"}) == 1


# ------------------------------------------------------------------------------------------ strategies


def test_weighted_split_skips_a_deployment_without_instances_and_gives_its_share_to_the_rest() -> None:
    router = ServiceRouter(make_service({"stable": 1, "canary": 0, "other": 1}, weights={"stable": 60, "canary": 30, "other": 20}))
    counts = Counter(i.deployment for i in route_many(router, 800))
    assert counts == {"stable": 600, "other": 200}


def test_by_instance_count_gives_every_instance_an_equal_share() -> None:
    router = ServiceRouter(make_service({"prepaid": 3, "postpaid": 1}, strategy="by_instance_count"))
    chosen = route_many(router, 400)
    assert Counter(i.deployment for i in chosen) == {"prepaid": 300, "postpaid": 100}
    assert set(Counter(i.id for i in chosen).values()) == {100}


def test_by_instance_count_ignores_weights() -> None:
    router = ServiceRouter(make_service({"a": 1, "b": 1}, strategy="by_instance_count", weights={"a": 100, "b": 0}))
    assert Counter(i.deployment for i in route_many(router, 100)) == {"a": 50, "b": 50}


def test_deployments_not_accepting_traffic_get_none_of_the_split_but_answer_direct_calls() -> None:
    service = make_service({"a": 1, "b": 2}, strategy="by_instance_count")
    service = service.model_copy(
        update={"deployments": [service.deployments[0], service.deployments[1].model_copy(update={"accept_traffic": False})]}
    )
    router = ServiceRouter(service)
    assert {i.deployment for i in route_many(router, 50)} == {"a"}
    assert router.route({DIRECT_CALL_HEADER: b"b"}).deployment == "b"


def test_no_instance_anywhere_is_503_without_a_deployment() -> None:
    router = ServiceRouter(make_service({"a": 0}, weights={"a": 100}))
    with pytest.raises(NoReadyInstance) as raised:
        router.route(None)
    assert (raised.value.status, raised.value.deployment) == (503, None)


def test_service_without_deployments_is_503() -> None:
    with pytest.raises(NoReadyInstance):
        ServiceRouter(make_service({})).route(None)


# ------------------------------------------------------------------------------------------ precedence


@pytest.fixture
def precedence_router() -> ServiceRouter:
    return ServiceRouter(
        make_service(
            {"stable": 2, "canary": 1, "new": 1, "beta": 1},
            weights={"stable": 100, "canary": 0, "new": 0, "beta": 0},
            header_rules=[
                {"header": "X-Canary", "value": "1", "deployment": "canary"},
                {"header": "x-tier", "value": "beta", "deployment": "beta"},
                {"header": "x-canary", "value": "1", "deployment": "beta"},  # shadowed by the first rule
            ],
        )
    )


def test_direct_call_reaches_a_deployment_with_weight_zero(precedence_router: ServiceRouter) -> None:
    assert {i.deployment for i in route_many(precedence_router, 20, {DIRECT_CALL_HEADER: b"new"})} == {"new"}


def test_direct_call_beats_header_rules(precedence_router: ServiceRouter) -> None:
    headers = {DIRECT_CALL_HEADER: b"new", b"x-canary": b"1"}
    assert precedence_router.route(headers).deployment == "new"


def test_unknown_direct_call_deployment_is_404(precedence_router: ServiceRouter) -> None:
    with pytest.raises(UnknownDeployment) as raised:
        precedence_router.route({DIRECT_CALL_HEADER: b"nope"})
    assert (raised.value.status, raised.value.deployment) == (404, "nope")


def test_header_rule_beats_weights_and_the_first_matching_rule_wins(precedence_router: ServiceRouter) -> None:
    assert {i.deployment for i in route_many(precedence_router, 20, {b"x-canary": b"1"})} == {"canary"}
    assert precedence_router.route({b"x-tier": b"beta"}).deployment == "beta"


def test_header_rule_values_match_exactly(precedence_router: ServiceRouter) -> None:
    for value in (b"01", b"1 ", b"true", b""):
        assert precedence_router.route({b"x-canary": value}).deployment == "stable"


def test_header_rule_names_are_case_insensitive(precedence_router: ServiceRouter) -> None:
    # The proxy lower-cases request header names; rule names are lower-cased when the router is built.
    assert b"x-canary" in precedence_router.watched
    assert precedence_router.route({b"x-canary": b"1"}).deployment == "canary"


def test_header_rule_to_a_deployment_without_instances_is_503_naming_it() -> None:
    router = ServiceRouter(
        make_service({"stable": 1, "canary": 0}, weights={"stable": 100},
                     header_rules=[{"header": "x-canary", "value": "1", "deployment": "canary"}])
    )
    with pytest.raises(NoReadyInstance) as raised:
        router.route({b"x-canary": b"1"})
    assert raised.value.deployment == "canary"


def test_headers_that_match_nothing_follow_the_weights(precedence_router: ServiceRouter) -> None:
    assert {i.deployment for i in route_many(precedence_router, 10, {b"x-canary": b"0"})} == {"stable"}


# ------------------------------------------------------------------------------------------ retries


def test_retry_prefers_another_instance_of_the_same_deployment() -> None:
    router = ServiceRouter(make_service({"stable": 2, "canary": 1}, weights={"stable": 50, "canary": 50}))
    failed = router.deployments["stable"].instances[0]
    retry = router.retry_instance(failed, [failed], None, now=10.0)
    assert retry is router.deployments["stable"].instances[1]
    assert failed.down_until > 10.0


def test_retry_of_a_weighted_request_may_move_to_another_deployment() -> None:
    router = ServiceRouter(make_service({"stable": 1, "canary": 1}, weights={"stable": 90, "canary": 10}))
    failed = router.deployments["canary"].instances[0]
    assert router.retry_instance(failed, [failed], None, now=0.0).deployment == "stable"  # type: ignore[union-attr]


def test_retry_of_a_pinned_request_stays_in_its_deployment() -> None:
    router = ServiceRouter(make_service({"stable": 1, "canary": 1}, weights={"stable": 90, "canary": 10}))
    failed = router.deployments["canary"].instances[0]
    assert router.retry_instance(failed, [failed], {DIRECT_CALL_HEADER: b"canary"}, now=0.0) is None


# ------------------------------------------------------------------------------------------ mirroring


def test_mirror_copies_exactly_the_configured_percentage_deterministically() -> None:
    router = ServiceRouter(
        make_service({"stable": 1, "shadow": 1}, weights={"stable": 100}, mirror={"deployment": "shadow", "percent": 5})
    )
    targets = [router.mirror_target(router.route(None)) for _ in range(1000)]
    assert sum(t is not None for t in targets) == 50
    assert {t.deployment for t in targets if t is not None} == {"shadow"}
    # Evenly spread: one copy in every 20 requests.
    assert [i for i, t in enumerate(targets) if t is not None][:3] == [19, 39, 59]


def test_mirror_accepts_fractional_percentages() -> None:
    router = ServiceRouter(
        make_service({"stable": 1, "shadow": 1}, weights={"stable": 100}, mirror={"deployment": "shadow", "percent": 2.5})
    )
    assert sum(router.mirror_target(router.route(None)) is not None for _ in range(1000)) == 25


def test_mirror_is_not_applied_to_requests_routed_to_the_mirror_deployment_itself() -> None:
    router = ServiceRouter(
        make_service({"stable": 1, "shadow": 1}, weights={"shadow": 100}, mirror={"deployment": "shadow", "percent": 100})
    )
    assert all(router.mirror_target(router.route(None)) is None for _ in range(10))


def test_mirror_to_a_deployment_without_instances_copies_nothing() -> None:
    router = ServiceRouter(
        make_service({"stable": 1, "shadow": 0}, weights={"stable": 100}, mirror={"deployment": "shadow", "percent": 100})
    )
    assert all(router.mirror_target(router.route(None)) is None for _ in range(10))


# ------------------------------------------------------------------------------------------ snapshots


def test_table_keeps_instance_objects_and_their_load_across_snapshots() -> None:
    first = RoutingTable.build(1, [make_service({"d": 2}, weights={"d": 1})])
    instance = first.services["svc"].deployments["d"].instances[0]
    instance.in_flight = 3
    second = RoutingTable.build(2, [make_service({"d": 3}, weights={"d": 1})], previous=first)
    assert second.services["svc"].deployments["d"].instances[0] is instance
    assert instance.in_flight == 3
    assert len(second.all_instances()) == 3


def test_table_makes_a_new_instance_object_when_the_address_changes() -> None:
    first = RoutingTable.build(1, [make_service({"d": 1}, weights={"d": 1})])
    moved = make_service({"d": 1}, weights={"d": 1})
    moved = moved.model_copy(
        update={"deployments": [moved.deployments[0].model_copy(update={"instances": [
            moved.deployments[0].instances[0].model_copy(update={"port": 20000})]})]}
    )
    second = RoutingTable.build(2, [moved], previous=first)
    assert second.services["svc"].deployments["d"].instances[0] is not first.services["svc"].deployments["d"].instances[0]


def test_table_carries_the_split_position_into_the_next_snapshot() -> None:
    reference = RoutingTable.build(1, [make_service({"a": 1, "b": 1}, weights={"a": 9, "b": 1})])
    expected = [reference.services["svc"].route(None).deployment for _ in range(20)]
    first = RoutingTable.build(1, [make_service({"a": 1, "b": 1}, weights={"a": 9, "b": 1})])
    seen = [first.services["svc"].route(None).deployment for _ in range(7)]
    second = RoutingTable.build(2, [make_service({"a": 1, "b": 1}, weights={"a": 9, "b": 1})], previous=first)
    seen += [second.services["svc"].route(None).deployment for _ in range(13)]
    assert seen == expected
