"""Per-service isolation of routing: an object that cannot be built — planted straight into the SQLite store, as a
row written by an older version or edited on disk would be — keeps only its own service on its last good routing,
marked with the reason, and never holds back another service's weight change or rolling update."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter

from embedded_harness import Load, echo_deployment, echo_service, gateway, split, start_platform, wait_ready


def _plant(data_dir, kind: str, parent: str, key: str, edit) -> None:
    """Rewrite an object's stored spec text behind the platform's back (and bump its generation, as a write would)."""
    db = sqlite3.connect(data_dir / "platform.db")
    try:
        where = "WHERE kind = ? AND parent = ? AND key = ?"
        (text,) = db.execute(f"SELECT spec FROM objects {where}", (kind, parent, key)).fetchone()
        db.execute(f"UPDATE objects SET spec = ?, generation = generation + 1 {where}", (edit(text), kind, parent, key))
        db.commit()
    finally:
        db.close()


def _version(value: str) -> list[dict]:
    return [{"name": "INFERSTACK_VERSION", "value": value}]


def _other(blue: float, green: float, version: str = "1") -> dict:
    return echo_service("other", [echo_deployment("blue", replicas=2), echo_deployment("green", replicas=2,
                                                                                       env=_version(version))],
                        traffic={"weights": {"blue": blue, "green": green}})


def _until(predicate, timeout: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_unbuildable_objects_keep_their_service_on_last_good_routing_and_others_update_with_no_failed_request(
        tmp_path):
    data_dir = tmp_path / "data"
    platform = start_platform(data_dir)
    try:
        client = platform.client()
        client.apply({"services": [echo_service("broken", [echo_deployment("main")]),
                                   echo_service("mangled", [echo_deployment("main")]), _other(100, 0)]})
        for key in ("broken", "mangled", "other"):
            wait_ready(client, key)
        broken_url, broken_headers = gateway(client, "broken")
        mangled_url, mangled_headers = gateway(client, "mangled")
        url, headers = gateway(client, "other")

        # A traffic object with a timeout of Infinity (Python's json writes and reads it; no model accepts it), and
        # a deployment whose replicas are a word.
        _plant(data_dir, "traffic", "broken", "broken", lambda _: '{"timeout_s": Infinity, "weights": {"main": 100}}')
        _plant(data_dir, "deployment", "mangled", "main",
               lambda text: text.replace('"replicas":1', '"replicas":"many"', 1))

        with Load(url, headers) as load, Load(broken_url, broken_headers) as broken_load, \
                Load(mangled_url, mangled_headers) as mangled_load:
            time.sleep(0.3)
            client.apply({"services": [_other(0, 100)]})  # a weight change of another service
            assert _until(lambda: set(split(url, headers, 20)) == {"green"}, what="the weight change")
            client.apply({"services": [_other(0, 100, version="2")]})  # and a rolling update of it
            wait_ready(client, "other")
            _until(lambda: set(split(url, headers, 20, **{"X-Inferstack-Deployment": "green"})) == {"green"})
            time.sleep(0.3)
        print(f"\nother: {dict(load.statuses)}, broken: {dict(broken_load.statuses)}, "
              f"mangled: {dict(mangled_load.statuses)}")
        assert load.failed == 0 and sum(load.statuses.values()) > 50, (load.statuses, load.errors[:3])
        assert load.versions[-1] == "2"
        # The services that cannot be built serve on, on their last good routing.
        assert broken_load.failed == 0 and sum(broken_load.statuses.values()) > 20, broken_load.statuses
        assert mangled_load.failed == 0 and sum(mangled_load.statuses.values()) > 20, mangled_load.statuses

        # Their status says why; the other service's routing is fresh.
        broken = client.get_service("broken")["status"]
        assert broken["routing"]["state"] == "last_good", broken
        assert broken["routing"]["reason"].startswith("services/broken/traffic: holds a number that is not finite")
        degraded = next(c for c in broken["conditions"] if c["type"] == "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "RoutingNotBuilt")
        assert "services/broken/traffic" in degraded["message"] and "last good routing" in degraded["message"]
        mangled = client.get_service("mangled")["status"]
        assert mangled["routing"]["state"] == "last_good"
        assert "services/mangled/deployments/main: replicas: Input should be a valid integer" in \
            mangled["routing"]["reason"], mangled["routing"]
        assert client.get_service("other")["status"]["routing"]["state"] == "fresh"
        acknowledged = client.request("GET", "/v1/gateway")
        assert acknowledged["services"]["broken"]["fresh"] is False
        assert acknowledged["services"]["other"]["fresh"] is True
        assert acknowledged["services"]["other"]["snapshot_version"] == acknowledged["acknowledged_version"]

        # Fixed through the API: the service's routing is fresh again and the mark goes.
        client.request("PUT", "/v1/services/broken/traffic", body={"weights": {"main": 100}, "timeout_s": 5})
        _until(lambda: client.get_service("broken")["status"]["routing"]["state"] == "fresh", what="recovery")
        degraded = next(c for c in client.get_service("broken")["status"]["conditions"] if c["type"] == "Degraded")
        assert degraded["status"] == "False"
        assert split(broken_url, broken_headers, 5) == Counter({"main": 5})
    finally:
        platform.stop()
