"""Crash loops as Kubernetes reports them (CrashLoopBackOff with exit code and the log's last lines, a rollout stopped at
once), conditions with Deployment semantics, and the runtime events a controller emits."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections import Counter

from inferstack.platform.runtime import Exec, Probe, Probes, RoleTemplate, RollingUpdate, RuntimeEvent, TcpSocket

from .conftest import Sampler, echo_template, is_complete, running_controller, wait_until

# Writes two lines (one carries the secret) and exits 3 at once: a model server that cannot load its config.
EXITS_3 = ("import sys; print('loading /models/tiny with token', sys.argv[1], flush=True); "
           "print('fatal: config.json: no such file', file=sys.stderr); sys.exit(3)")


def exits_3(revision: str = "bad") -> RoleTemplate:
    return RoleTemplate(argv=(sys.executable, "-c", EXITS_3, "hunter2-secret"), revision=revision,
                        secrets=frozenset({"hunter2-secret"}))


async def test_a_command_that_exits_3_is_crash_loop_back_off_with_its_exit_code_and_last_log_lines(tmp_path):
    events: list[RuntimeEvent] = []
    # A 60 s progress deadline: what is reported here comes from the crash loop, not from the deadline.
    async with running_controller(tmp_path, on_event=events.append, progress_deadline_s=60) as ctl:
        ctl.set_desired(exits_3(), 1)
        await wait_until(lambda: any(e.reason == "RolloutFailed" for e in events), 10, "the rollout stopped")
        record, status, seen = ctl.instances()[0], ctl.status(), list(events)  # one moment: no await in between
    assert (record.reason, record.exit_code, record.ready) == ("CrashLoopBackOff", 3, False)
    assert record.failures >= 3 and record.restarts in (record.failures - 1, record.failures)  # first start + restarts
    assert record.message.startswith("instance chat-canary-main-1 exited with code 3 during start-up (see log ")
    assert record.log_tail[-2:] == ("loading /models/tiny with token ***", "fatal: config.json: no such file")
    assert record.finished_at and record.finished_at.endswith("Z")
    progressing = status.condition("Progressing")
    assert (progressing.status, progressing.reason) == ("False", "CrashLoopBackOff")
    assert status.condition("Degraded").reason == "CrashLoopBackOff"
    assert "exited with code 3" in progressing.message and "fatal: config.json" in progressing.message
    assert status.crash_looping == 1
    reasons = Counter(e.reason for e in seen)
    assert reasons["BackOff"] == record.failures and reasons["CrashLoopBackOff"] == 1 and reasons["RolloutFailed"] == 1
    assert reasons["Started"] >= 3
    assert all(e.type == "Warning" for e in seen if e.reason in ("BackOff", "CrashLoopBackOff", "RolloutFailed"))
    assert not [e for e in events if "hunter2" in e.message]


async def test_a_rollout_whose_new_instances_all_crash_loop_stops_at_once_while_the_old_ones_serve(tmp_path):
    async with running_controller(tmp_path, progress_deadline_s=60) as ctl:
        ctl.set_desired(echo_template("good"), 4, RollingUpdate(25, 25))
        await wait_until(lambda: is_complete(ctl, "good"), 15, "4 good instances")
        async with Sampler(ctl) as sampler:
            ctl.set_desired(exits_3(), 4, RollingUpdate(25, 25))
            await wait_until(lambda: ctl.status().condition("Degraded").status == "True", 15, "Degraded")
            available = [ctl.status().condition("Available").status]
        status = ctl.status()
        assert status.condition("Progressing").reason == "CrashLoopBackOff"
        assert available == ["True"] and sampler.min_ready >= 3  # the earlier revision keeps serving
        assert "3 of earlier revisions still serving" in status.condition("Progressing").message
        assert {r.revision for r in ctl.ready_instances()} == {"good"}
        # A fixed revision resumes the rollout; the conditions say so.
        ctl.set_desired(echo_template("fixed"), 4, RollingUpdate(25, 25))
        await wait_until(lambda: is_complete(ctl, "fixed"), 20, "the fixed revision")
        status = ctl.status()
        assert [(c.type, c.status, c.reason) for c in status.conditions] == [
            ("Available", "True", "MinimumReplicasAvailable"), ("Progressing", "True", "NewReplicaSetAvailable"),
            ("Degraded", "False", "AsExpected")]
        assert all(r.reason is None and r.message is None for r in ctl.instances())


async def test_an_instance_that_crash_loops_after_the_rollout_degrades_but_the_rollout_stays_complete(tmp_path):
    # Listens (so it turns ready), then exits 3 after 0.3 s, every time.
    script = ("import os, socket, sys, time; s = socket.socket(); "
              "s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); time.sleep(0.3); sys.exit(3)")
    template = RoleTemplate(argv=(sys.executable, "-c", script), revision="r1",
                            probes=Probes(readiness=Probe(TcpSocket(), period_s=0.05)))
    async with running_controller(tmp_path) as ctl:
        ctl.set_desired(template, 1)
        await wait_until(lambda: ctl.status().condition("Degraded").status == "True", 15, "Degraded")
        status = ctl.status()
        assert (status.condition("Progressing").status, status.condition("Progressing").reason) == (
            "True", "NewReplicaSetAvailable")  # reached once: Kubernetes keeps it so until the next rollout
        assert status.condition("Degraded").reason == "CrashLoopBackOff"
        assert "1 of 1 instances crash-looping: instance chat-canary-main-1 exited with code 3" in \
            status.condition("Degraded").message


async def test_a_rolling_update_of_4_emits_every_step_and_stays_available(tmp_path):
    events: list[RuntimeEvent] = []
    async with running_controller(tmp_path, on_event=events.append) as ctl:
        ctl.set_desired(echo_template("a"), 4, RollingUpdate(25, 25))
        await wait_until(lambda: is_complete(ctl, "a"), 15, "revision a")
        await asyncio.sleep(0.05)
        events.clear()
        available: list[str] = []

        async def sample() -> None:
            while True:
                available.append(ctl.status().condition("Available").status)
                await asyncio.sleep(0.005)

        sampler = asyncio.ensure_future(sample())
        ctl.set_desired(echo_template("b"), 4, RollingUpdate(25, 25))
        await wait_until(lambda: is_complete(ctl, "b"), 20, "revision b")
        sampler.cancel()
        events = list(events)  # the steps of the rollout, not the shutdown's
    assert len(available) > 20 and set(available) == {"True"}
    reasons = Counter(e.reason for e in events if e.instance is not None)
    assert reasons == {"Started": 4, "Ready": 4, "Killing": 4}
    scaling = [e.message for e in events if e.reason == "ScalingReplicaSet"]
    # Max surge 1: one new instance; max unavailable 1: one old one goes at once.
    assert scaling[:2] == ["scaled up revision b to 1 (of 4)", "scaled down revision a to 3"]
    assert "scaled up revision b to 4 (of 4)" in scaling and "scaled down revision a to 0" in scaling
    assert [e.message for e in events if e.reason == "RolloutComplete"] == ["revision b: 4/4 instances ready"]
    killing = [e.message for e in events if e.reason == "Killing"]
    assert all("(rolling update to revision b): SIGTERM, SIGKILL after 1s" in m for m in killing)


async def test_a_probe_that_prints_a_secret_never_shows_it_in_status_or_events(tmp_path):
    events: list[RuntimeEvent] = []
    leaky = Probe(Exec((sys.executable, "-c", "import os; print('token', os.environ['API_KEY']); raise SystemExit(1)")),
                  period_s=0.05, timeout_s=5, failure_threshold=1)
    template = echo_template("s1", probes=Probes(readiness=leaky), API_KEY="hunter2-secret")
    template = dataclasses.replace(template, secrets=frozenset({"hunter2-secret"}))
    async with running_controller(tmp_path, on_event=events.append) as ctl:
        ctl.set_desired(template, 1)
        await wait_until(lambda: ctl.instances() and "token ***" in (ctl.instances()[0].message or ""), 10,
                         "the probe's output in the instance's message")
        shown = [repr(ctl.instances()), repr(ctl.status()), *(e.message for e in events)]
    assert not [text for text in shown if "hunter2" in text]
