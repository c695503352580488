"""RoleController: withdrawal before stopping, graceful periods, what an instance is started with, secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time

import pytest

from inferstack.platform.runtime import (
    InstanceRecord,
    Mount,
    Probe,
    Probes,
    RoleController,
    RoleTemplate,
    RollingUpdate,
    TcpSocket,
)

from .conftest import echo_template, is_complete, is_running, running_controller, wait_until

FAST_TCP = Probes(readiness=Probe(TcpSocket(), period_s=0.05))

# Listens on $PORT; on SIGTERM notes the time and either carries on (stubborn) or exits 0.
SERVER = """
import os, pathlib, signal, socket, sys, time
marker, stubborn = pathlib.Path(sys.argv[1]), sys.argv[2] == "stubborn"
def on_term(*_):
    marker.write_text(repr(time.time()))
    if not stubborn:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen()
while True:
    time.sleep(0.01)
"""


def server_template(marker, behaviour: str, graceful_shutdown_s: float) -> RoleTemplate:
    return RoleTemplate(argv=(sys.executable, "-c", SERVER, str(marker), behaviour), revision="r1",
                        probes=FAST_TCP, graceful_shutdown_s=graceful_shutdown_s)


async def test_instances_are_withdrawn_before_they_are_stopped(tmp_path):
    withdrawn: list[tuple[str, bool, bool]] = []

    async def on_withdraw(record: InstanceRecord) -> None:
        in_routing = any(r.id == record.id for r in ctl.ready_instances())
        await asyncio.sleep(0.2)  # the platform pushing a routing snapshot
        withdrawn.append((record.id, in_routing, is_running(record.pid)))

    async with running_controller(tmp_path, on_withdraw=on_withdraw) as ctl:
        ctl.set_desired(echo_template("a"), 3)
        await wait_until(lambda: is_complete(ctl, "a"), 10, "3 instances")
        ctl.set_desired(echo_template("a"), 1)
        await wait_until(lambda: ctl.status().total == 1, 5, "scale down to 1")
        # Out of routing when withdrawn, and still running until the withdrawal finished.
        assert sorted(withdrawn) == [("chat-canary-main-2", False, True), ("chat-canary-main-3", False, True)]
    assert [w[0] for w in withdrawn][-1] == "chat-canary-main-1"  # shutdown withdraws too


@pytest.mark.parametrize("behaviour", ["stubborn", "polite"])
async def test_shutdown_grants_the_graceful_period_and_kills_only_after_it(tmp_path, behaviour):
    marker = tmp_path / "sigterm-at"
    ctl = RoleController("svc-dep-main", log_dir=tmp_path / "logs")
    grace = 0.8 if behaviour == "stubborn" else 10.0
    ctl.set_desired(server_template(marker, behaviour, graceful_shutdown_s=grace), 1)
    await wait_until(lambda: ctl.status().ready == 1, 10, "ready")
    pid = ctl.instances()[0].pid
    started = time.time()
    await ctl.shutdown()
    took = time.time() - started
    assert float(marker.read_text()) - started < 0.3  # SIGTERM reached it at once
    assert not is_running(pid)
    if behaviour == "stubborn":
        assert 0.8 <= took < 2.0  # the whole period, then SIGKILL
    else:
        assert took < 1.0  # exited on SIGTERM: no needless wait for the 10 s period
    assert ctl.instances() == [] and ctl.status().total == 0


async def test_instance_gets_its_env_port_cwd_mounts_and_expanded_argv(tmp_path):
    script = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items() "
              "if k.startswith(('INFERSTACK_', 'PORT', 'MODEL'))}, 'cwd': os.getcwd(), 'has_secret': "
              "os.environ.get('API_KEY') == 'hunter2-secret', 'home': 'HOME' in os.environ, 'leak': "
              "'NOT_FOR_INSTANCES' in os.environ}, open('info.json', 'w')); "
              "open(os.path.join(json.loads(os.environ['INFERSTACK_MOUNTS'])[0]['source'], 'written'), 'w'); "
              "import time; time.sleep(60)")
    workdir = tmp_path / "work"
    workdir.mkdir()
    template = RoleTemplate(
        argv=(sys.executable, "-c", script, "--port=$(PORT)", "$$(PORT)", "$(UNKNOWN)", "--model=$(MODEL)"),
        revision="r9", env={"API_KEY": "hunter2-secret", "MODEL": "tiny"}, cwd=workdir,
        mounts=(Mount(tmp_path / "data" / "models", "/mnt/models", read_only=True),),
        probes=Probes(readiness=Probe(TcpSocket(), period_s=0.05)), graceful_shutdown_s=0.2)
    os.environ["NOT_FOR_INSTANCES"] = "1"
    try:
        async with running_controller(tmp_path) as ctl:
            ctl.set_desired(template, 1)
            await wait_until(lambda: (workdir / "info.json").exists() and (workdir / "info.json").stat().st_size, 5)
            await asyncio.sleep(0.05)
            info = json.loads((workdir / "info.json").read_text())
            record = ctl.instances()[0]
    finally:
        del os.environ["NOT_FOR_INSTANCES"]
    assert info["argv"] == [f"--port={record.port}", "$(PORT)", "$(UNKNOWN)", "--model=tiny"]
    assert info["env"]["PORT"] == str(record.port)
    assert info["env"]["INFERSTACK_INSTANCE"] == "chat-canary-main-1" and info["env"]["INFERSTACK_REVISION"] == "r9"
    assert json.loads(info["env"]["INFERSTACK_MOUNTS"]) == [
        {"path": "/mnt/models", "source": str(tmp_path / "data" / "models"), "read_only": True}]
    assert (tmp_path / "data" / "models" / "written").exists()  # the shared directory exists and is usable
    assert info["cwd"] == str(workdir)
    assert info["has_secret"] and info["home"] and not info["leak"]


async def test_secrets_appear_in_no_log_repr_or_status(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="inferstack.runtime")
    template = echo_template("s1", API_KEY="hunter2-secret", ECHO_EXIT_AT_START="1")
    async with running_controller(tmp_path, progress_deadline_s=0.5) as ctl:
        ctl.set_desired(template, 1)
        await wait_until(lambda: ctl.status().condition("Degraded").status == "True", 5, "Degraded")
        texts = [repr(template), repr(ctl.status()), repr(ctl.instances()), caplog.text,
                 *(p.read_text() for p in (tmp_path / "logs").iterdir())]
    assert "exited with code 1" in caplog.text
    assert not [t for t in texts if "hunter2" in t]


async def test_status_before_and_after_configuration(tmp_path):
    async with running_controller(tmp_path) as ctl:
        assert ctl.status().condition("Available").reason == "NotConfigured"
        ctl.set_desired(echo_template("a"), 2, RollingUpdate(0, 50))
        status = ctl.status()
        assert (status.condition("Progressing").status, status.condition("Progressing").reason) == (
            "True", "ReplicaSetUpdated")
        assert (status.condition("Available").status, status.condition("Available").reason) == (
            "False", "MinimumReplicasUnavailable")
        await wait_until(lambda: is_complete(ctl, "a"), 10, "complete")
        status = ctl.status()
        assert status.condition("Available").message == "2/2 instances ready (at least 1 required)"
        assert status.condition("Progressing").message == "revision a rolled out: 2/2 instances of revision a ready"
        with pytest.raises(RuntimeError):
            ctl.adopt_existing([])  # too late: this controller already started instances
        with pytest.raises(ValueError):
            ctl.set_desired(echo_template("a"), -1)


def test_rolling_update_bounds_use_kubernetes_rounding():
    assert RollingUpdate(25, 25).bounds(4) == (1, 1)
    assert RollingUpdate(25, 25).bounds(3) == (1, 0)  # surge rounds up, unavailable down
    assert RollingUpdate(0, 50).bounds(4) == (0, 2)
    assert RollingUpdate(0, 25).bounds(3) == (0, 1)  # both would be 0: unavailable becomes 1
    assert RollingUpdate(20.1, 0.1).bounds(1000) == (201, 1)  # exact decimal arithmetic
    with pytest.raises(ValueError):
        RollingUpdate(0, 0)
    with pytest.raises(ValueError):
        RollingUpdate(101, 0)
