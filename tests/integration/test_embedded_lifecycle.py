"""Rollouts under load, a broken image, platform crash and restart, platform stop, the legacy Default redeploy."""

from __future__ import annotations

import time

from embedded_harness import Load, echo_deployment, echo_service, gateway, instance_pids, start_platform, wait_ready


def _version(value: str) -> list[dict]:
    return [{"name": "INFERSTACK_VERSION", "value": value}]


def test_rolling_update_of_4_instances_under_load_fails_no_request_and_a_broken_image_keeps_the_old(tmp_path):
    platform = start_platform(tmp_path / "data")
    try:
        client = platform.client()
        dep = echo_deployment("main", replicas=4, env=_version("1"))
        client.apply({"services": [echo_service("roll", [dep])]})
        wait_ready(client, "roll")
        url, headers = gateway(client, "roll")
        with Load(url, headers) as load:
            time.sleep(0.3)
            client.apply({"services": [echo_service("roll", [{**dep, "env": _version("2")}])]})
            wait_ready(client, "roll")
            time.sleep(0.3)
        assert load.failed == 0, (load.statuses, load.errors[:3])
        assert load.versions[0] == "1" and load.versions[-1] == "2"
        assert sum(load.statuses.values()) > 50

        # A new revision that exits at start: the rollout stops, Degraded with the reason, the old ones serve.
        broken = {**dep, "env": _version("3") + [{"name": "ECHO_EXIT_AT_START", "value": "1"}]}
        with Load(url, headers) as load:
            client.apply({"services": [echo_service("roll", [broken])]})
            status = client.wait("roll", "main", timeout=15, until=lambda d: any(
                c["type"] == "Degraded" and c["status"] == "True" for c in d["status"].get("conditions", [])))
            time.sleep(0.3)
        assert load.failed == 0, (load.statuses, load.errors[:3])
        assert set(load.versions) == {"2"}
        degraded = next(c for c in status["status"]["conditions"] if c["type"] == "Degraded")
        assert "exited with code 1" in degraded["message"], degraded
        assert status["status"]["roles"]["main"]["ready"] >= 3  # 4 replicas, 25 % unavailable
    finally:
        platform.stop()
    assert instance_pids("roll", tmp_path / "data") == {}


def test_platform_sigkill_and_restart_readopts_instances_and_stop_leaves_no_process(tmp_path):
    platform = start_platform(tmp_path / "data")
    try:
        client = platform.client()
        client.apply({"services": [echo_service("adopt", [echo_deployment("main", replicas=3)])]})
        wait_ready(client, "adopt")
        before = instance_pids("adopt", tmp_path / "data")
        assert len(before) == 3
        platform.kill()
        assert instance_pids("adopt", tmp_path / "data") == before  # instances outlive a platform crash
        platform.start()
        client = platform.client()
        wait_ready(client, "adopt")
        time.sleep(0.5)
        assert instance_pids("adopt", tmp_path / "data") == before  # re-adopted: the same processes, none doubled
        url, headers = gateway(client, "adopt")
        with Load(url, headers) as load:
            time.sleep(0.3)
        assert load.failed == 0 and sum(load.statuses.values()) > 5
    finally:
        platform.stop()
    assert instance_pids("adopt", tmp_path / "data") == {}


def test_first_added_deployment_redeploys_legacy_default(tmp_path):
    platform = start_platform(tmp_path / "data")
    try:
        client = platform.client()
        flat = {k: v for k, v in echo_service("ocr", []).items() if k != "deployments"}
        inline = {k: v for k, v in echo_deployment("x", replicas=1).items() if k != "name"}
        client.apply({"services": [{**flat, **inline}]})
        wait_ready(client, "ocr")
        before = instance_pids("ocr", tmp_path / "data")
        default = client.get_deployment("ocr", "default")
        plan = client.apply({"services": [{**flat, "deployments": [
            {**inline, "name": "Default", "key": "default", "weight": 100},
            {**echo_deployment("canary"), "weight": 0}]}]}, dry_run=True)
        assert "Default" in plan["plan_text"] or "default" in plan["plan_text"]
        client.apply({"services": [{**flat, "deployments": [
            {**inline, "name": "Default", "key": "default", "weight": 100},
            {**echo_deployment("canary"), "weight": 0}]}]})
        wait_ready(client, "ocr")
        after = client.get_deployment("ocr", "default")
        assert client.get_service("ocr")["status"]["converted"] is True
        assert after["metadata"]["generation"] == default["metadata"]["generation"] + 1
        assert after["status"]["roles"]["main"]["revision"] != default["status"]["roles"]["main"]["revision"]
        old_default = {i: p for i, p in before.items() if "-default-" in i}
        new_default = {i: p for i, p in instance_pids("ocr", tmp_path / "data").items() if "-default-" in i}
        assert old_default and new_default and not set(old_default.values()) & set(new_default.values())
    finally:
        platform.stop()
