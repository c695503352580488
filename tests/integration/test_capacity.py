"""The capacity scheduler on the whole embedded platform — real processes, real gateway: priority preempts and the
preempted come back; idle borrowers migrate make-before-break with no failed request; pay-as-you-go quotas hold."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from embedded_harness import Load, echo_deployment, echo_service, gateway, instance_pids, start_platform, wait_ready

from inferstack.targets.local.client import PlatformClient, PlatformError

NO_SURGE = {"max_unavailable": 25, "max_surge": 0}


def queue(name: str, capacity: int, *, billing: str = "prepaid", lends: bool = False) -> dict[str, Any]:
    """A queue in zone-b, where the default inventory lends nothing (q-prepaid-a lends in zone-a)."""
    return {"name": name, "resource_group": "rg-default", "zone": "zone-b", "billing": billing,
            "capacity": {"cpu-small": capacity}, "lends_idle": lends}


def deployment(name: str, queue: str, replicas: int, **extra: Any) -> dict[str, Any]:
    return echo_deployment(name, queue=queue, replicas=replicas, subnet="subnet-b", rolling_update=NO_SURGE,
                           **extra)


def until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout}s")
        time.sleep(0.1)


def role(client: PlatformClient, svc: str, dep: str) -> dict[str, Any]:
    return client.get_deployment(svc, dep)["status"].get("roles", {}).get("main", {})


def live(info: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in info.get("instances", []) if i.get("phase") != "terminating"]


def reasons(client: PlatformClient, svc: str) -> list[tuple[str, str]]:
    return [(e["object"].rsplit("/", 1)[-1], e["reason"]) for e in client.events(svc) if e["action"] == "event"]


def test_higher_priority_preempts_down_to_what_fits_and_the_preempted_come_back(tmp_path):
    platform = start_platform(tmp_path / "data")
    try:
        client = platform.client()
        low = deployment("low", "q-four", 4, priority=3)
        client.apply({"inventory": {"queues": [queue("q-four", 4)]}, "services": [echo_service("batch", [low])]})
        wait_ready(client, "batch")
        assert {i["queue"] for i in live(role(client, "batch", "low"))} == {"q-four"}

        high = echo_service("online", [deployment("high", "q-four", 2, priority=7)])
        plan = client.apply({"services": [high]}, dry_run=True)["plan"]
        (preemption,) = plan["preemptions"]
        assert (preemption["service"], preemption["deployment"], preemption["count"]) == ("batch", "low", 2)
        assert preemption["instances"] == ["batch-low-main-4", "batch-low-main-3"]  # the newest go

        client.apply({"services": [high]})
        wait_ready(client, "online")
        low_role = until("preempted down to 2", lambda: (r := role(client, "batch", "low")) and
                         len(live(r)) == 2 and r.get("ready") == 2 and r)
        (pending,) = low_role["pending"]
        assert (pending["count"], pending["reason"]) == (2, "Preempted")
        assert "preempted by online/high (priority 7)" in pending["message"]
        assert {i["id"] for i in live(low_role)} == {"batch-low-main-1", "batch-low-main-2"}
        assert reasons(client, "batch").count(("low", "Preempted")) == 2
        assert ("high", "Preempting") in reasons(client, "online")
        assert len(instance_pids("batch")) == 2 and len(instance_pids("online")) == 2

        client.delete_service("online")
        back = until("back to 4", lambda: (r := role(client, "batch", "low")) and r.get("ready") == 4 and r)
        assert back["pending"] == []
    finally:
        platform.stop()


def test_idle_borrowers_migrate_make_before_break_when_the_lender_scales_up_with_no_failed_request(tmp_path):
    platform = start_platform(tmp_path / "data")
    inventory = {"queues": [queue("q-home", 1, billing="postpaid"), queue("q-lend", 2, lends=True),
                            queue("q-lend2", 1, billing="postpaid", lends=True)]}
    owner = deployment("owner", "q-lend", 1)
    idle = deployment("idle", "q-home", 2, use_idle=True)
    try:
        client = platform.client()
        client.apply({"inventory": inventory, "services": [echo_service("lender", [owner])]})
        wait_ready(client, "lender")
        client.apply({"services": [echo_service("borrower", [idle])]})
        wait_ready(client, "borrower")
        before = live(role(client, "borrower", "idle"))
        assert sorted((i["queue"], i["borrowed_from"]) for i in before) == [("q-home", None), ("q-lend", "q-lend")]
        borrowed = next(i["id"] for i in before if i["borrowed_from"])

        url, headers = gateway(client, "borrower")
        with Load(url, headers) as load:
            time.sleep(0.5)
            client.apply({"services": [echo_service("lender", [{**owner, "replicas": 2}])]})
            wait_ready(client, "lender", timeout=40)
            time.sleep(0.5)
        assert load.failed == 0, (load.statuses, load.errors[:3])
        assert sum(load.statuses.values()) > 20
        after = live(role(client, "borrower", "idle"))
        assert sorted((i["queue"], i["borrowed_from"]) for i in after) == [("q-home", None), ("q-lend2", "q-lend2")]
        assert borrowed not in {i["id"] for i in after}
        events = reasons(client, "borrower")
        assert ("idle", "Migrating") in events and ("idle", "Migrated") in events
        assert events.index(("idle", "Migrating")) < events.index(("idle", "Migrated"))
        assert {i["queue"] for i in live(role(client, "lender", "owner"))} == {"q-lend"}
    finally:
        platform.stop()


def test_a_borrower_with_nowhere_to_go_is_withdrawn_at_once_and_its_other_instance_keeps_answering(tmp_path):
    platform = start_platform(tmp_path / "data")
    inventory = {"queues": [queue("q-home", 1, billing="postpaid"), queue("q-lend", 2, lends=True)]}
    owner = deployment("owner", "q-lend", 1)
    idle = deployment("idle", "q-home", 2, use_idle=True)
    try:
        client = platform.client()
        client.apply({"inventory": inventory, "services": [echo_service("lender", [owner]),
                                                            echo_service("borrower", [idle])]})
        wait_ready(client, "lender")
        wait_ready(client, "borrower")
        url, headers = gateway(client, "borrower")
        with Load(url, headers) as load:
            client.apply({"services": [echo_service("lender", [{**owner, "replicas": 2}])]})
            wait_ready(client, "lender", timeout=40)
            time.sleep(0.3)
        assert load.failed == 0, (load.statuses, load.errors[:3])
        info = role(client, "borrower", "idle")
        assert [(i["queue"], i["borrowed_from"]) for i in live(info)] == [("q-home", None)]
        (pending,) = info["pending"]
        assert pending["reason"] == "WaitingForLender" and pending["count"] == 1
        events = [e for e in client.events("borrower") if e["action"] == "event"]
        forced = next(e for e in events if e["reason"] == "MigratedBreakBeforeMake")
        assert forced["type"] == "Warning" and "no capacity for a replacement elsewhere" in forced["message"]
    finally:
        platform.stop()


def test_a_pay_as_you_go_quota_of_2_refuses_5_and_admits_2(tmp_path):
    platform = start_platform(tmp_path / "data")
    try:
        client = platform.client()
        client.apply({"inventory": {"queues": [queue("q-quota", 2, billing="postpaid")]}, "services": []})
        five = echo_service("peak", [deployment("elastic", "q-quota", 5)])
        with pytest.raises(PlatformError) as err:
            client.apply({"services": [five]})
        (finding,) = err.value.findings
        assert (finding["rule"], finding["path"]) == ("capacity.postpaid_quota_fits",
                                                      "services[0].deployments[0].queue")
        with pytest.raises(PlatformError):
            client.get_service("peak")  # a refused write stores nothing
        two = echo_service("peak", [deployment("elastic", "q-quota", 2)])
        client.apply({"services": [two]})
        wait_ready(client, "peak")
        assert len(instance_pids("peak")) == 2
    finally:
        platform.stop()


def _cli(data_dir, *args: str) -> str:
    from typer.testing import CliRunner

    from inferstack.cli import app

    result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_cost_after_a_scripted_peak_is_instance_seconds_times_prices_and_survives_a_restart(tmp_path, monkeypatch):
    monkeypatch.delenv("INFERSTACK_URL", raising=False)
    monkeypatch.delenv("INFERSTACK_TOKEN", raising=False)
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
        text = _cli(data, "cost", "peak")
        assert f"cost so far {expected_base + expected_elastic:.4f}" in text and "per hour now 0.1400" in text
        plan = platform.client().apply({"services": [echo_service("peak", [base, {**elastic, "replicas": 3}])]},
                                       dry_run=True)["plan"]
        line = next(ln for ln in plan["cost"]["lines"] if ln["deployment"] is None)
        assert line["before"] == pytest.approx(report["per_hour"])  # the plan and the meter: one price model
    finally:
        platform.stop()
