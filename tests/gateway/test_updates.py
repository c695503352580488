"""Snapshots swapped under load: weights, rolling instance replacement, withdrawal, listeners."""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx
import pytest

from .conftest import BackendHost, GatewayUnderTest, Load, generate_load, run, service


def test_weights_changed_from_90_10_to_50_50_under_load_fail_nothing_and_split_50_50_after(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    stable, canary = backends.start("swap-stable"), backends.start("swap-canary")
    deployments = {"stable": [stable], "canary": [canary]}
    gateway.push(service("chat", deployments, weights={"stable": 90, "canary": 10}))

    async def scenario() -> tuple[Load, float, float]:
        load = Load()
        done_at_swap: list[int] = []
        clients = asyncio.create_task(
            generate_load(gateway.port("chat"), concurrency=8, load=load,
                          until=lambda: bool(done_at_swap) and len(load.results) - done_at_swap[0] >= 5100)
        )
        while len(load.results) < 4000:
            await asyncio.sleep(0.01)
        # Requests started while the push is under way may see either snapshot: they count on neither side.
        push_started = asyncio.get_running_loop().time()
        await gateway.apush(service("chat", deployments, weights={"stable": 50, "canary": 50}))
        swapped_at = asyncio.get_running_loop().time()
        done_at_swap.append(len(load.results))
        await clients
        return load, push_started, swapped_at

    load, push_started, swapped_at = run(scenario())

    assert load.bad() == []
    before = [r for r in load.results if r.started < push_started]
    after = [r for r in load.results if r.started > swapped_at]
    assert len(before) >= 3000 and len(after) >= 5000
    assert abs(load.shares(before)["stable"] - 90) <= 1
    assert abs(load.shares(after)["stable"] - 50) <= 2
    assert abs(load.shares(after[:1000])["stable"] - 50) <= 2  # right after the swap, not only on average


def _in_flight(samples: list[tuple[dict[str, str], float]], instances: set[str]) -> float:
    return sum(value for labels, value in samples if labels["instance"] in instances)


def test_rolling_update_under_load_fails_no_request(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    old = [backends.start(f"roll-old-{n}") for n in range(2)]
    new = [backends.start(f"roll-new-{n}") for n in range(2)]
    gateway.push(service("chat", {"main": old}, weights={"main": 100}))
    old_names = {b.name for b in old}

    async def scenario() -> tuple[Load, float]:
        load = Load()
        done = asyncio.Event()
        clients = asyncio.create_task(
            # A few milliseconds per request, so that requests are always in flight when instances change.
            generate_load(gateway.port("chat"), concurrency=16, path="/delay?s=0.003", until=done.is_set, load=load)
        )
        await asyncio.sleep(0.3)
        for step, backend in enumerate(new):
            # Surge one new instance, then retire one old one: the snapshot is the only signal the gateway gets.
            await gateway.apush(service("chat", {"main": old[step:] + new[: step + 1]}, weights={"main": 100}))
            await asyncio.sleep(0.2)
            await gateway.apush(service("chat", {"main": old[step + 1 :] + new[: step + 1]}, weights={"main": 100}))
            retired = {old[step].name}
            while _in_flight(await gateway.ametric_samples("inferstack_gateway_in_flight"), retired):
                await asyncio.sleep(0.005)
            await asyncio.to_thread(old[step].stop)
            await asyncio.sleep(0.2)
        retired_at = asyncio.get_running_loop().time()
        await asyncio.sleep(0.3)
        done.set()
        await clients
        return load, retired_at

    load, retired_at = run(scenario())

    assert load.bad() == []
    assert len(load.results) > 500
    seen = {r.instance for r in load.results}
    assert seen == old_names | {b.name for b in new}
    assert {r.instance for r in load.results if r.started > retired_at} == {b.name for b in new}


def test_request_in_flight_when_its_instance_is_withdrawn_completes_and_later_ones_go_elsewhere(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    leaving, staying = backends.start("withdrawn", delay=0.0), backends.start("staying")
    gateway.push(service("chat", {"main": [leaving]}, weights={"main": 100}))
    results: list[httpx.Response] = []
    slow = threading.Thread(target=lambda: results.append(httpx.get(gateway.url("chat", "/delay?s=0.8"), timeout=5)))
    slow.start()
    deadline = 50
    while leaving.in_flight == 0 and deadline:
        threading.Event().wait(0.02)
        deadline -= 1
    assert leaving.in_flight == 1

    gateway.push(service("chat", {"main": [staying]}, weights={"main": 100}))
    later = [httpx.get(gateway.url("chat")).text for _ in range(5)]
    slow.join(5)

    assert later == ["staying"] * 5
    assert [(r.status_code, r.headers["x-inferstack-instance"], r.text) for r in results] == [
        (200, "withdrawn", "withdrawn")
    ]
    # The withdrawn instance's pooled connection was closed once its request was done: nothing is left open to it.
    threading.Event().wait(0.1)
    assert leaving.connections == set()


def test_listener_keeps_its_port_across_snapshots_and_closes_when_dropped(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    backend = backends.start("listener-backend")
    first = gateway.push(service("chat", {"main": [backend]}, weights={"main": 100}))["listeners"]["chat/8000"]
    with httpx.Client() as client:
        assert client.get(f"http://127.0.0.1:{first}/").status_code == 200
        second = gateway.push(service("chat", {"main": [backend]}, weights={"main": 50}))["listeners"]["chat/8000"]
        assert second == first
        # The client's keep-alive connection survived the swap too.
        assert client.get(f"http://127.0.0.1:{first}/").status_code == 200

    result = gateway.push(service("other", {"main": [backend]}, weights={"main": 100}))

    assert "chat/8000" not in result["listeners"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{first}/")


def test_listener_binds_the_requested_port_and_falls_back_to_a_free_one_when_taken(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    backend = backends.start("bind-backend")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        wanted = probe.getsockname()[1]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        document = service("chat", {"main": [backend]}, weights={"main": 100})
        document["listeners"] = [{"port": 8000, "bind_port": wanted}, {"port": 8001, "bind_port": taken_port}]
        listeners = gateway.push(document)["listeners"]

    assert listeners["chat/8000"] == wanted
    assert listeners["chat/8001"] not in (0, taken_port)
    assert httpx.get(f"http://127.0.0.1:{listeners['chat/8001']}/").text == "bind-backend"


def test_two_services_are_served_on_their_own_listeners(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    chat, embed = backends.start("svc-chat"), backends.start("svc-embed")
    gateway.push(
        service("chat", {"main": [chat]}, weights={"main": 100}),
        service("embed", {"main": [embed]}, weights={"main": 100}, port=9000),
    )
    assert httpx.get(gateway.url("chat")).text == "svc-chat"
    assert httpx.get(gateway.url("embed", logical_port=9000)).text == "svc-embed"
