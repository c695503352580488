"""`inferstack platform stop` after the platform was killed with -9: no server answers, yet nothing of its instances'
process trees is left running afterwards (each gets its graceful period first), and the gateway it left serving is
stopped too (its listeners freed)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from embedded_harness import instance_pids, service_pids, start_platform
from test_embedded_stop import cli_stop, port_is_free, ready_tree, stubborn_service

from inferstack.platform.server import process_start_time


def test_stop_with_no_platform_running_stops_the_instance_trees_a_killed_platform_left(tmp_path):
    platform = start_platform(tmp_path / "data")
    try:
        client = platform.client()
        client.apply({"services": [stubborn_service("orphaned")]})
        port, pids = ready_tree(client, "orphaned", tmp_path / "data")
        gateway_port = urlsplit(client.get_service("orphaned")["status"]["gateway_url"]).port
        record = tmp_path / "data" / "gateway" / "record.json"
        gateway_pid = json.loads(record.read_text())["pid"]
        platform.kill()
        assert service_pids("orphaned", tmp_path / "data") == pids  # the instance and its setsid child outlive the platform
        assert pid_alive(gateway_pid) and not port_is_free(gateway_port)  # so does the gateway, serving
        done, took = cli_stop(tmp_path / "data")
    finally:
        platform.stop()
    assert done.returncode == 0, done.stderr
    assert (f"no platform was running; stopped what a killed platform had left: the gateway (pid {gateway_pid}), "
            f"1 instance process tree(s) (2 process(es))") in done.stdout, done.stdout
    assert took >= 2.0  # the deployment's 2 s graceful period (it ignores SIGTERM), then SIGKILL
    assert service_pids("orphaned", tmp_path / "data") == set() and instance_pids("orphaned", tmp_path / "data") == {}
    assert port_is_free(port)
    assert not pid_alive(gateway_pid) and port_is_free(gateway_port) and not record.exists()


def pid_alive(pid: int) -> bool:
    return process_start_time(pid) is not None  # None once exited (a zombie too)
