"""Priority on the whole embedded platform — real processes: a higher priority preempts down to what fits, the
preempted come back, placements survive a platform crash; a pay-as-you-go quota refuses what cannot fit."""

from __future__ import annotations

import time

import pytest
from capacity_harness import cli, deployment, live, queue, reasons, role, until
from embedded_harness import echo_service, instance_pids, start_platform, wait_ready

from inferstack.targets.local.client import PlatformError


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
        shown = cli(tmp_path / "data", "status", "batch")
        assert "placement:" in shown and "low: 2 on q-four" in shown
        assert "low: 2 pending (Preempted) preempted by online/high (priority 7)" in shown
        assert ("high", "Preempting") in reasons(client, "online")
        assert len(instance_pids("batch", tmp_path / "data")) == 2 and len(instance_pids("online", tmp_path / "data")) == 2

        # kill -9 the platform: the instances run on; restarted, it re-adopts them where they were placed and
        # starts nothing that does not fit.
        running = {**instance_pids("batch", tmp_path / "data"), **instance_pids("online", tmp_path / "data")}
        platform.kill()
        platform.start()
        client = platform.client()
        wait_ready(client, "online")
        until("the preempted pending again", lambda: role(client, "batch", "low").get("pending"))
        time.sleep(2)  # room for a wrong scheduler to start what does not fit
        assert {**instance_pids("batch", tmp_path / "data"), **instance_pids("online", tmp_path / "data")} == running
        assert [(p["count"], p["reason"]) for p in role(client, "batch", "low")["pending"]] == [(2, "Preempted")]

        client.delete_service("online")
        back = until("back to 4", lambda: (r := role(client, "batch", "low")) and r.get("ready") == 4 and r)
        assert back["pending"] == []
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
        assert len(instance_pids("peak", tmp_path / "data")) == 2
    finally:
        platform.stop()
