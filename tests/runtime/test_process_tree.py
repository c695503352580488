"""Stopping an instance stops its whole process tree: descendants that left its session (a setsid child holding its
listening socket, a double-forked daemon) too, with cgroups and without, for a fresh and for an adopted instance."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from inferstack.platform.runtime import InstanceProcess, ProcessTree, RoleTemplate, free_port
from inferstack.platform.runtime.tree import cgroup_base, stray_trees, terminate_strays

from .conftest import is_running, running_controller, wait_until
from .tree_platform import INSTANCE, wait_for_kids

HELPER = Path(__file__).with_name("tree_platform.py")
ROOT = Path(__file__).resolve().parents[2]
MODES = [pytest.param("1", id="cgroups"), pytest.param("0", id="marker-session-subreaper")]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_helper(*args: str, cgroups: str, timeout: float = 30) -> list[dict]:
    import subprocess

    env = {**os.environ, "INFERSTACK_CGROUPS": cgroups, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(HELPER), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def skip_without_cgroups(cgroups: str) -> None:
    if cgroups == "1" and cgroup_base() is None:
        pytest.skip("this machine offers no writable cgroup v2 hierarchy")


def assert_tree_gone(record: dict, result: dict) -> None:
    child, daemon = record["kids"]
    assert result["forced"] is True  # it ignored SIGTERM for its 1 s graceful period
    assert result["exit_code"] in (-signal.SIGKILL, None)  # None: adopted, not our child, its status not ours
    assert {child, daemon} <= set(result["leftovers"])  # reported: what had to be killed besides the instance
    assert result["left"] == []
    assert not is_running(record["pid"]) and not is_running(child) and not is_running(daemon)
    assert port_is_free(record["port"])  # the setsid child held the listening socket: it is gone
    if record["cgroup"]:
        assert not Path(record["cgroup"]).exists()  # the instance's cgroup is removed once empty


@pytest.mark.parametrize("cgroups", MODES)
def test_stop_kills_a_setsid_child_and_a_double_forked_daemon_and_frees_the_port(tmp_path, cgroups):
    skip_without_cgroups(cgroups)
    record, result = run_helper("stop", str(tmp_path), cgroups=cgroups)
    assert bool(record["cgroup"]) == (cgroups == "1")
    assert_tree_gone(record, result)
    if result["subreaper"]:
        assert result["zombies"] == []  # the re-parented daemon was reaped, not left as a zombie


@pytest.mark.parametrize("cgroups", MODES)
def test_the_tree_of_an_instance_adopted_after_a_platform_kill_is_stopped_whole(tmp_path, cgroups):
    skip_without_cgroups(cgroups)
    import subprocess

    env = {**os.environ, "INFERSTACK_CGROUPS": cgroups, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, str(HELPER), "spawn", str(tmp_path)], env=env, stdout=subprocess.PIPE,
                             text=True)
    record = json.loads(first.stdout.readline())
    try:
        first.send_signal(signal.SIGKILL)  # the platform dies: its instance and the instance's descendants live on
        first.wait()
        assert all(is_running(p) for p in [record["pid"], *record["kids"]])
        (result,) = run_helper("adopt", str(tmp_path), json.dumps(record), cgroups=cgroups)
        assert_tree_gone(record, result)
    finally:
        for pid in [record["pid"], *record["kids"]]:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)


async def test_when_an_instance_exits_what_it_left_running_is_killed_and_reported(tmp_path):
    if cgroup_base() is None:
        pytest.skip("in-process runs need cgroups (else this test process would turn subreaper)")
    # Starts a setsid child, then exits 3: Kubernetes ends a container's other processes with its first one.
    script = ("import os, sys, time\nif os.fork() == 0:\n    os.setsid(); time.sleep(300)\nelse:\n"
              "    time.sleep(0.2); sys.exit(3)\n")
    events = []
    template = RoleTemplate(argv=(sys.executable, "-c", script), revision="r1")
    async with running_controller(tmp_path, on_event=events.append, restart_backoff_base_s=5) as ctl:
        ctl.set_desired(template, 1)
        await wait_until(lambda: any(e.reason == "Killed" for e in events), 10, "the leftover killed")
        record = ctl.instances()[0]
        assert (record.exit_code, record.phase, record.reason) == (3, "backoff", "BackOff")
    killed = next(e for e in events if e.reason == "Killed")
    assert killed.type == "Warning" and "left 1 process(es) of its tree running: killed them" in killed.message
    assert not [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
                if (env := _environ(p)) and record.tree and f"INFERSTACK_TREE={record.tree}" in env]


def _environ(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


async def test_stray_trees_of_a_scope_are_found_by_marker_and_cgroup_and_terminated(tmp_path):
    if cgroup_base() is None:
        pytest.skip("in-process runs need cgroups (else this test process would turn subreaper)")
    log = tmp_path / "stray.log"
    tree = ProcessTree.new("straytest")
    port = free_port()
    process = InstanceProcess.spawn([sys.executable, "-c", INSTANCE], env={"PATH": os.environ["PATH"],
                                    "PORT": str(port)}, log_path=log, tree=tree)
    kids = await wait_for_kids(log)
    kept = ProcessTree.new("straytest")  # an adopted instance: never touched
    assert [t.marker for t in stray_trees("straytest", keep=[kept.marker])] == [tree.marker]
    assert stray_trees("othertest", keep=[]) == []
    started = time.monotonic()
    found = await asyncio.to_thread(terminate_strays, stray_trees("straytest", keep=[]), 0.5)
    assert time.monotonic() - started >= 0.5  # SIGTERM first, the grace, then SIGKILL (it ignores SIGTERM)
    assert set(found[tree.marker]) >= {process.pid, *kids}
    assert (await process.wait()) == -signal.SIGKILL
    assert not any(is_running(p) for p in kids) and port_is_free(port)
    kept.release()
