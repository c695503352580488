"""Idle resources on the whole embedded platform — real processes, real gateway: borrowers migrate
make-before-break when the lender needs its capacity back, with no failed request; with nowhere to go they are
withdrawn at once and the service keeps answering on the instance it has elsewhere."""

from __future__ import annotations

import time

from capacity_harness import deployment, live, queue, reasons, role
from embedded_harness import Load, echo_service, gateway, start_platform, wait_ready


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
        assert ("idle", "MigratedBreakBeforeMake") not in events
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
