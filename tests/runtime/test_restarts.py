"""Crashed and unhealthy instances: replaced in place, with exponential backoff; probes in Kubernetes order."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from itertools import pairwise

from inferstack.platform.runtime import HttpGet, InstanceRecord, Probe, Probes, RoleController, RoleTemplate

from .conftest import FAST_READINESS, echo_template, http, is_running, running_controller, wait_until


async def test_an_instance_killed_with_sigkill_is_replaced(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="inferstack.runtime")
    totals: list[int] = []
    async with running_controller(tmp_path, on_change=lambda c: totals.append(c.status().total)) as ctl:
        ctl.set_desired(echo_template("a"), 2)
        await wait_until(lambda: ctl.status().ready == 2, 10, "2 ready")
        victim, bystander = ctl.instances()
        os.kill(victim.pid, signal.SIGKILL)
        await wait_until(lambda: ctl.status().ready == 1, 2, "the killed instance to leave routing")
        assert [r.id for r in ctl.ready_instances()] == [bystander.id]
        await wait_until(lambda: ctl.status().ready == 2, 5, "the replacement to be ready")
        replaced = next(r for r in ctl.instances() if r.id == victim.id)
        assert replaced.pid != victim.pid and replaced.restarts == 1 and is_running(replaced.pid)
        assert next(r for r in ctl.instances() if r.id == bystander.id).pid == bystander.pid
        status, headers, _ = await http(replaced.port, "GET", "/healthz")
        assert (status, headers["x-echo-instance"]) == (200, victim.id)
        assert max(totals) == 2  # replaced in place, never an extra instance
    assert f"instance {victim.id} was killed by SIGKILL (see log " in caplog.text


async def test_a_failing_liveness_probe_restarts_the_instance_with_growing_backoff(tmp_path):
    history: list[tuple[float, str, int | None]] = []  # (time, phase, pid) of the one instance
    withdrawn: list[int | None] = []

    async def on_withdraw(record: InstanceRecord) -> None:
        withdrawn.append(record.pid)

    def on_change(controller: RoleController) -> None:
        record = controller.instances()[0] if controller.instances() else None
        if record and (not history or history[-1][1:] != (record.phase, record.pid)):
            history.append((time.monotonic(), record.phase, record.pid))

    # The startup probe holds liveness back until the process listens (else 2 refused connects would kill it).
    probes = Probes(startup=Probe(HttpGet("/livez"), period_s=0.02, failure_threshold=250), readiness=FAST_READINESS,
                    liveness=Probe(HttpGet("/livez"), period_s=0.05, timeout_s=0.5, failure_threshold=2))
    async with running_controller(tmp_path, restart_backoff_base_s=0.15, restart_backoff_cap_s=0.6,
                                  on_withdraw=on_withdraw, on_change=on_change) as ctl:
        ctl.set_desired(echo_template("a", probes=probes, ECHO_FAIL_LIVENESS_AFTER_S="0.3"), 1)
        await wait_until(lambda: ctl.instances() and ctl.instances()[0].restarts >= 4, 12, "4 restarts")
        await wait_until(lambda: ctl.instances()[0].pid is not None, 2, "the 5th process")
        assert ctl.instances()[0].id == "chat-canary-main-1"

    # Downtime between a process's failure and the next process: the backoff, doubling up to the cap.
    gaps = []
    for (t, phase, _), (t_next, _, pid_next) in pairwise(history):
        if phase == "backoff" and pid_next is not None:
            gaps.append(t_next - t)
    assert len(gaps) >= 4, history
    expected = [0.15, 0.3, 0.6, 0.6]
    assert all(e - 0.02 <= g <= e + 0.25 for g, e in zip(gaps, expected, strict=False)), gaps
    assert gaps[1] > gaps[0] * 1.5 and gaps[2] > gaps[1] * 1.5  # grows ...
    assert abs(gaps[3] - gaps[2]) < 0.2  # ... up to the cap
    pids = list(dict.fromkeys(pid for _, _, pid in history if pid))
    assert len(pids) >= 5
    assert set(withdrawn[:4]) <= set(pids)  # each unhealthy process was withdrawn before it was stopped


async def test_failing_startup_probe_restarts_and_degrades_with_the_probe_named(tmp_path):
    probes = Probes(startup=Probe(HttpGet("/healthz"), period_s=0.05, failure_threshold=3), readiness=FAST_READINESS)
    async with running_controller(tmp_path, progress_deadline_s=60) as ctl:  # the crash loop stops it, not this
        ctl.set_desired(echo_template("a", probes=probes, ECHO_WARMUP_S="30"), 1)
        await wait_until(lambda: ctl.status().condition("Degraded").status == "True", 5, "Degraded")
        message = ctl.status().condition("Degraded").message
        assert ctl.instances()[0].restarts >= 1
    # 503 while warming up (or refused, when a loaded machine starts it slower than the 3 probes take).
    assert re.search(r"crash-looping \(1\): instance chat-canary-main-1 failed its startup probe 3 time\(s\) in a row "
                     r"\(HTTP GET /healthz on port \d+: (503|Connection refused)\) \(see log .*chat-canary-main-1.log\)",
                     message), message


async def test_readiness_and_liveness_wait_for_the_startup_probe(tmp_path):
    # /healthz answers 503 for 0.6 s. A liveness probe on it that allows a single failure would kill the instance if
    # it ran during start-up; it must not run until the startup probe has passed.
    strict = Probe(HttpGet("/healthz"), period_s=0.05, failure_threshold=1)
    probes = Probes(startup=Probe(HttpGet("/healthz"), period_s=0.05, failure_threshold=100),
                    readiness=FAST_READINESS, liveness=strict)
    async with running_controller(tmp_path) as ctl:
        ctl.set_desired(echo_template("a", probes=probes, ECHO_WARMUP_S="0.6"), 1)
        took = await wait_until(lambda: ctl.status().ready == 1, 5, "ready")
        assert took >= 0.55
        pid = ctl.instances()[0].pid
        await asyncio.sleep(0.3)  # liveness now runs: /healthz answers 200, so it keeps passing
        assert ctl.instances()[0].restarts == 0 and ctl.instances()[0].pid == pid


async def test_an_unstartable_command_is_reported(tmp_path):
    async with running_controller(tmp_path, progress_deadline_s=0.4) as ctl:
        ctl.set_desired(RoleTemplate(argv=("/nonexistent/model-server",), revision="x"), 1)
        await wait_until(lambda: ctl.status().condition("Degraded").status == "True", 5, "Degraded")
        message = ctl.status().condition("Degraded").message
    assert "instance chat-canary-main-1 could not be started: [Errno 2] No such file or directory" in message
