"""`inferstack events --follow`: events printed as they happen (new writes, aggregated repeats with their count)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from platform_harness import PlatformProcess, service

from inferstack.platform.store import Store


def _follow(platform: PlatformProcess, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERSTACK_")}
    return subprocess.Popen([sys.executable, "-c", "from inferstack.cli import app; app()", "events", *args,
                             "--follow", "--interval", "0.1", "--data-dir", str(platform.data_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines_until(proc: subprocess.Popen, predicate, timeout: float = 20.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while not predicate(lines):
        assert time.monotonic() < deadline, lines
        line = proc.stdout.readline()
        if line:
            lines.append(line.rstrip("\n"))
    return lines


def test_follow_prints_new_events_as_json_lines_and_stops_cleanly_on_ctrl_c(fresh_platform: PlatformProcess) -> None:
    with fresh_platform.client() as client:
        client.put_service("before", service("before"))
        follower = _follow(fresh_platform, "--format", "json")
        try:
            seen = _lines_until(follower, lambda lines: any('"services/before"' in line for line in lines))
            client.put_service("after", service("after", description="v2"))
            seen = _lines_until(follower, lambda lines: any('"services/after"' in line for line in lines))
        finally:
            follower.send_signal(signal.SIGINT)
            follower.wait(10)
    events = [json.loads(line) for line in seen]
    assert [e["object"] for e in events][-1] == "services/after" and events[-1]["action"] == "create"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)  # in order, none twice
    assert follower.returncode == 0, follower.stderr.read()


def test_follow_of_one_service_shows_an_aggregated_repeat_again_with_its_count(fresh_platform: PlatformProcess):

    with fresh_platform.client() as client:
        client.put_service("loop", service("loop"))
        follower = _follow(fresh_platform, "loop")
        try:
            _lines_until(follower, lambda lines: any("services/loop" in line for line in lines))
            # A runtime event recorded twice (as the runtime would: the store is shared through the data dir).
            store = Store.open(fresh_platform.data_dir)
            try:
                for _ in range(2):
                    store.record_event("service", "loop", "BackOff", "instance loop-1 exited with code 3",
                                       type="Warning")
            finally:
                store.close()
            seen = _lines_until(follower, lambda lines: any("BackOff (warning) ×2" in line for line in lines))
        finally:
            follower.send_signal(signal.SIGINT)
            follower.wait(10)
    assert any("services/loop  BackOff (warning) ×2  instance loop-1 exited with code 3" in line for line in seen)
