"""A deployment or a service is Ready only once the gateway has acknowledged the routing that includes it, and a
publish the gateway does not take shows as a condition with the reason. The platform runs in this process (store,
reconciler, real gateway process, real instances); the gateway's acknowledgement is held back or refused on purpose."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from embedded_harness import echo_deployment, echo_service

from inferstack.platform.control import Platform, WriteContext
from inferstack.platform.embedded import attach
from inferstack.platform.gateway.supervisor import GatewayError
from inferstack.platform.reconciler import Settings
from inferstack.platform.runtime.tree import cgroup_base
from inferstack.platform.store import Store

pytestmark = pytest.mark.skipif(cgroup_base() is None, reason="in-process instances need cgroups here (else this "
                                                                "test process would turn child subreaper)")


def _cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


async def _until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_ready_waits_for_the_gateway_and_a_refused_publish_is_a_condition(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))


async def _scenario(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    platform = Platform(store)
    reconciler = attach(platform, tmp_path, settings=Settings(progress_deadline_s=30, restart_backoff_base_s=0.1))
    gateway = reconciler.gateway
    real_push = gateway.apush
    gate = asyncio.Event()
    gate.set()
    refuse: list[str] = []

    async def push(snapshot: dict) -> dict:  # the real gateway, with its acknowledgement under the test's control
        await gate.wait()
        if refuse:
            raise GatewayError(refuse[0])
        return await real_push(snapshot)

    gateway.apush = push

    def dep(key: str) -> dict:
        return store.get("deployment", key, "truth").status

    def svc() -> dict:
        return store.get("service", "truth").status

    async def apply(services: list[dict]) -> None:
        outcome = platform.apply({"services": services}, WriteContext())
        for key in outcome.services:
            await platform.on_change(key)

    await reconciler.start()
    try:
        stable = {**echo_deployment("stable"), "weight": 100}
        await apply([echo_service("truth", [stable])])
        await _until(lambda: _cond(dep("stable"), "Ready")["status"] == "True", what="stable Ready")
        assert _cond(dep("stable"), "Ready")["reason"] == "Routed"
        assert _cond(svc(), "Ready")["reason"] == "Routed" and svc()["observed_routing_generation"] > 0

        # The gateway does not acknowledge: the new deployment runs and is available, but it is not Ready.
        gate.clear()
        await apply([echo_service("truth", [stable, {**echo_deployment("canary"), "weight": 0}])])
        await _until(lambda: store.get("deployment", "canary", "truth") is not None
                     and _cond(dep("canary"), "Available")["status"] == "True", what="canary available")
        await asyncio.sleep(0.5)
        held = dep("canary")
        assert _cond(held, "Progressing")["reason"] == "NewReplicaSetAvailable"
        ready = _cond(held, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "RoutingPending"), ready
        assert "truth-canary-main-1" in ready["message"] and "observed_routing_generation" not in held
        gate.set()
        await _until(lambda: _cond(dep("canary"), "Ready")["status"] == "True", what="canary Ready once routed")
        assert dep("canary")["observed_routing_generation"] > svc()["observed_routing_generation"] - 1

        # The gateway refuses the snapshot: every service says so, with the reason, until one is taken again.
        refuse.append("snapshot rejected (400): boom")
        await apply([echo_service("truth", [{**stable, "weight": 50}, {**echo_deployment("canary"), "weight": 50}])])
        await _until(lambda: _cond(svc(), "Ready")["reason"] == "PublishFailed", what="PublishFailed")
        failed = _cond(svc(), "Ready")
        assert failed["status"] == "False" and "boom" in failed["message"]
        assert _cond(store.get("traffic", "truth", "truth").status, "Ready")["status"] == "False"  # not routed
        assert [e["reason"] for e in store.events(object="platform/gateway")][-1:] == ["PublishFailed"]
        refuse.clear()
        await _until(lambda: _cond(svc(), "Ready")["reason"] == "Routed", what="Routed again")
        traffic = store.get("traffic", "truth", "truth")
        assert traffic.status["observed_generation"] == traffic.generation
        assert _cond(traffic.status, "Ready")["status"] == "True"
    finally:
        gate.set()
        refuse.clear()
        await reconciler.stop()
        store.close()
