"""`inferstack platform stop` with an instance that ignores SIGTERM and whose tree escaped its session: stop waits for
the instance's own graceful period (not a fixed 20 s), leaves nothing of its tree and frees its port — also for an
instance adopted after the platform was killed with -9."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from embedded_harness import echo_deployment, echo_service, instance_pids, service_pids, start_platform, wait_ready

# Listens on $PORT, ignores SIGTERM, and starts a setsid child that ignores it too and holds the listening socket.
STUBBORN = r"""
import os, signal, socket, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen()
if os.fork() == 0:
    os.setsid()
    while True:
        time.sleep(1)
while True:
    time.sleep(1)
"""


def stubborn_service(key: str) -> dict:
    dep = echo_deployment("main", command=[sys.executable, "-c", STUBBORN], graceful_shutdown_s=2,
                          probes={"readiness": {"tcp": {}, "period_s": 0.1, "failure_threshold": 1}})
    return echo_service(key, [dep])


def cli_stop(data_dir: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERSTACK_")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "from inferstack.cli import app; app()", "platform", "stop",
                           "--data-dir", str(data_dir)], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    return done, time.monotonic() - started


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ready_tree(client, key: str, data_dir: Path) -> tuple[int, set[int]]:
    """The instance's port and every process carrying the service's environment (the instance and its child)."""
    wait_ready(client, key)
    (instance,) = client.get_deployment(key, "main")["status"]["roles"]["main"]["instances"]
    deadline = time.monotonic() + 10
    while len(pids := service_pids(key, data_dir)) < 2:
        assert time.monotonic() < deadline, pids
        time.sleep(0.05)
    return instance["port"], pids


def assert_stopped_whole(done: subprocess.CompletedProcess, took: float, port: int, key: str, data_dir: Path) -> None:
    assert done.returncode == 0, done.stderr
    assert took >= 2.0, took  # the instance's 2 s graceful period was granted ...
    assert took < 20.0, took  # ... and stop did not need a fixed 20 s
    assert "1 instance(s) stopped: 0 within their graceful period, 1 killed (SIGKILL) after it" in done.stdout
    assert f"{key}/main {key}-main-main-1: still running after 2s" in done.stdout
    assert "1 leftover process(es) of instance process trees killed" in done.stdout
    assert service_pids(key, data_dir) == set() and instance_pids(key, data_dir) == {}  # the setsid child too
    assert port_is_free(port)


def test_platform_stop_waits_for_the_graceful_period_and_leaves_nothing_of_the_tree(tmp_path):
    platform = start_platform(tmp_path / "data")
    try:
        client = platform.client()
        client.apply({"services": [stubborn_service("stubborn")]})
        port, _ = ready_tree(client, "stubborn", tmp_path / "data")
        done, took = cli_stop(tmp_path / "data")
        platform.proc.wait(5)
    finally:
        platform.stop()
    assert_stopped_whole(done, took, port, "stubborn", tmp_path / "data")


def test_an_instance_adopted_after_a_platform_kill_is_stopped_whole_too(tmp_path):
    platform = start_platform(tmp_path / "data")
    try:
        client = platform.client()
        client.apply({"services": [stubborn_service("adopted")]})
        port, pids = ready_tree(client, "adopted", tmp_path / "data")
        platform.kill()
        assert service_pids("adopted", tmp_path / "data") == pids  # the tree outlives the platform
        platform.start()
        client = platform.client()
        wait_ready(client, "adopted")
        assert service_pids("adopted", tmp_path / "data") == pids  # re-adopted, not restarted
        done, took = cli_stop(tmp_path / "data")
        platform.proc.wait(5)
    finally:
        platform.stop()
    assert_stopped_whole(done, took, port, "adopted", tmp_path / "data")
