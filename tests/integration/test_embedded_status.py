"""Status and events that tell the truth on the embedded platform, with real processes and real traffic:
a crash-looping revision is CrashLoopBackOff with its exit code while the old one serves every request, a rolling
update of 4 stays Available and lists every step, and a re-created deployment never shows its predecessor's logs."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from embedded_harness import Load, echo_deployment, echo_service, gateway, start_platform, wait_ready
from typer.testing import CliRunner

from inferstack.cli import app

EXITS_3 = "import sys; print('loading the model', flush=True); print('fatal: no weights', file=sys.stderr); sys.exit(3)"


def _version(value: str) -> list[dict]:
    return [{"name": "INFERSTACK_VERSION", "value": value}]


def _condition(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def test_a_command_that_exits_3_is_crash_loop_back_off_with_exit_code_3_while_the_old_revision_serves(tmp_path):
    # The real defaults (restart back-off from 1 s, a 120 s progress deadline): what stops the rollout is the crash
    # loop, not the deadline.
    platform = start_platform(tmp_path / "data", INFERSTACK_PROGRESS_DEADLINE_S="120", INFERSTACK_RESTART_BACKOFF_S="1")
    try:
        client = platform.client()
        good = echo_deployment("main", replicas=2, env=_version("1"))
        client.apply({"services": [echo_service("loop", [good])]})
        wait_ready(client, "loop")
        url, headers = gateway(client, "loop")
        with Load(url, headers) as load:
            time.sleep(0.2)
            started = time.monotonic()
            client.apply({"services": [echo_service("loop", [{**good, "env": _version("2"),
                                                              "command": [sys.executable, "-c", EXITS_3]}])]})
            dep = client.wait("loop", "main", timeout=30, until=lambda d: _condition(d, "Progressing")["status"]
                              == "False")
            took = time.monotonic() - started
            time.sleep(0.3)
        print(f"CrashLoopBackOff reported {took:.1f}s after the apply")
        assert load.failed == 0, (load.statuses, load.errors[:3])  # the old revision served every request
        assert sum(load.statuses.values()) > 20 and set(load.versions) == {"1"}
        progressing, available = _condition(dep, "Progressing"), _condition(dep, "Available")
        assert progressing["reason"] == "CrashLoopBackOff", progressing
        assert "exited with code 3 during start-up" in progressing["message"]
        assert "fatal: no weights" in progressing["message"]  # the log's last line
        assert (available["status"], _condition(dep, "Degraded")["reason"]) == ("True", "CrashLoopBackOff")
        assert dep["status"]["observed_generation"] == dep["metadata"]["generation"]
        role = dep["status"]["roles"]["main"]
        looping = [i for i in role["instances"] if i["reason"] == "CrashLoopBackOff"]
        assert looping and role["crash_looping"] == len(looping) and role["ready"] == 2  # max unavailable 0 of 2
        for inst in looping:
            assert inst["exit_code"] == 3 and inst["failures"] >= 3 and inst["restarts"] >= 2
            assert inst["log_tail"][-2:] == ["loading the model", "fatal: no weights"]
        reasons = Counter(e["reason"] for e in client.events("loop") if e["action"] == "event")
        assert reasons["CrashLoopBackOff"] == len(looping) and reasons["RolloutFailed"] == 1
        backoffs = [e for e in client.events("loop") if e["reason"] == "BackOff"]
        assert sum(e["count"] for e in backoffs) >= 3 * len(looping)  # repeats aggregated, each with its count
        assert len(backoffs) == len(looping)
        shown = CliRunner().invoke(app, ["status", "loop", "--data-dir", str(tmp_path / "data")],
                                   env={"COLUMNS": "200"})
        assert shown.exit_code == 0, shown.output
        assert "CrashLoopBackOff, exit code 3" in shown.output and "fatal: no weights" in shown.output
    finally:
        platform.stop()


def test_a_rolling_update_of_4_stays_available_throughout_and_every_step_is_an_event(tmp_path):
    platform = start_platform(tmp_path / "data")
    try:
        client = platform.client()
        dep = echo_deployment("main", replicas=4, env=_version("1"))
        client.apply({"services": [echo_service("roll", [dep])]})
        wait_ready(client, "roll")
        since = client.events("roll")[-1]["seq"]
        client.apply({"services": [echo_service("roll", [{**dep, "env": _version("2")}])]})
        samples: list[tuple[str, str, str]] = []
        deadline = time.monotonic() + 30
        while True:
            d = client.get_deployment("roll", "main")
            samples.append((_condition(d, "Available")["status"], _condition(d, "Progressing")["reason"],
                            _condition(d, "Ready")["reason"]))
            if (d["status"]["observed_generation"] == d["metadata"]["generation"]
                    and _condition(d, "Ready")["status"] == "True"):
                break
            assert time.monotonic() < deadline, samples[-5:]
            time.sleep(0.02)
        assert len(samples) > 5 and {s[0] for s in samples} == {"True"}, samples  # Available all along
        assert ("True", "ReplicaSetUpdated", "ReplicaSetUpdated") in samples  # rolling, and said so
        assert samples[-1] == ("True", "NewReplicaSetAvailable", "Routed")
        assert d["status"]["observed_routing_generation"] > 0
        steps = [e for e in client.events("roll", since=since) if e["action"] == "event"]
        reasons = Counter(e["reason"] for e in steps)
        assert reasons["Started"] == 4 and reasons["Ready"] == 4 and reasons["Killing"] == 4, reasons
        assert reasons["RolloutComplete"] == 1 and not reasons["Killed"] and not reasons["BackOff"], reasons
        scaling = [e["message"] for e in steps if e["reason"] == "ScalingReplicaSet"]
        assert scaling[0].startswith("scaled up revision ") and scaling[0].endswith(" to 1 (of 4)")
        assert any(m.endswith(" to 4 (of 4)") for m in scaling) and any(m.endswith(" to 0") for m in scaling)
        assert all(e["object"] == "services/roll/deployments/main" for e in steps)
        order = [e["reason"] for e in steps]
        assert order.index("ScalingReplicaSet") < order.index("Started") < order.index("RolloutComplete")
        assert order[-1] == "RolloutComplete" or "RolloutComplete" in order[-3:]
    finally:
        platform.stop()


def test_a_re_created_deployment_never_shows_the_old_ones_logs_and_they_go_after_retention(tmp_path):
    platform = start_platform(tmp_path / "data", INFERSTACK_LOG_RETENTION_S="1")
    logs_root = tmp_path / "data" / "logs" / "relog" / "main"
    try:
        client = platform.client()
        client.apply({"services": [echo_service("relog", [echo_deployment("main", env=_version("old"))])]})
        wait_ready(client, "relog")
        old_uid = client.get_deployment("relog", "main")["metadata"]["uid"]
        old = client.request("GET", "/v1/services/relog/deployments/main/logs")["instances"]
        assert [i["instance"] for i in old] == ["relog-main-main-1"] and old[0]["lines"]
        client.delete_service("relog")
        client.apply({"services": [echo_service("relog", [echo_deployment("main", env=_version("new"))])]})
        wait_ready(client, "relog")
        new_uid = client.get_deployment("relog", "main")["metadata"]["uid"]
        assert new_uid != old_uid
        shown = client.request("GET", "/v1/services/relog/deployments/main/logs")["instances"]
        assert [i["instance"] for i in shown] == ["relog-main-main-2"]  # its own instance only, a fresh id
        assert not any("relog-main-main-1" in line for i in shown for line in i["lines"])
        deadline = time.monotonic() + 20
        while (logs_root / old_uid).exists():  # drained (2 s graceful period), then 1 s of retention
            assert time.monotonic() < deadline, sorted(p.name for p in logs_root.iterdir())
            time.sleep(0.1)
        assert (logs_root / new_uid).is_dir() and not (tmp_path / "data" / "work" / "relog" / "main" / old_uid
                                                       ).exists()
    finally:
        platform.stop()
    assert Path(logs_root / new_uid).is_dir()  # a live deployment's logs stay
