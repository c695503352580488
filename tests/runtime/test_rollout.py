"""Rolling updates of one role on real echo processes: bounds held at every moment, broken revisions contained."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inferstack.platform.runtime import RollingUpdate

from .conftest import Sampler, echo_template, http, is_complete, is_running, running_controller, wait_until


@pytest.mark.parametrize(("surge_pct", "unavailable_pct", "max_total", "min_ready"), [(25, 25, 5, 3), (0, 50, 4, 2)])
async def test_rolling_update_stays_within_surge_and_unavailability_at_every_moment(
        tmp_path, surge_pct, unavailable_pct, max_total, min_ready):
    strategy = RollingUpdate(surge_pct, unavailable_pct)
    ready_counts_seen_by_on_change: list[int] = []
    async with running_controller(
            tmp_path, on_change=lambda c: ready_counts_seen_by_on_change.append(len(c.ready_instances()))) as ctl:
        ctl.set_desired(echo_template("a"), 4, strategy)
        await wait_until(lambda: is_complete(ctl, "a"), 10, "4 instances of revision a")
        old = ctl.instances()
        ready_counts_seen_by_on_change.clear()

        async with Sampler(ctl) as sampler:
            ctl.set_desired(echo_template("b"), 4, strategy)
            await wait_until(lambda: is_complete(ctl, "b"), 15, "rollout to revision b")

        assert len(sampler.samples) >= 10  # sampled all along (a rollout here takes a few hundred ms)
        assert sampler.min_ready >= min_ready, sampler.samples
        assert sampler.max_total <= max_total, sampler.samples
        assert sampler.min_ready == min_ready or sampler.max_total == max_total  # the budget was actually used
        assert min(ready_counts_seen_by_on_change) >= min_ready

        final = ctl.instances()
        assert [r.revision for r in final] == ["b"] * 4 and all(r.ready for r in final)
        assert [r.id for r in final] == [f"chat-canary-main-{n}" for n in range(5, 9)]  # ids only ever grow
        assert not any(is_running(r.pid) for r in old)
        for record in final:
            status, headers, _ = await http(record.port, "POST", "/v1/predict", {"input": "x"})
            assert (status, headers["x-echo-version"], headers["x-echo-instance"]) == (200, "b", record.id)
        status = ctl.status()
        assert (status.ready, status.total, status.updated, status.updated_ready) == (4, 4, 4, 4)
        assert status.condition("Available").status == "True"
        assert status.condition("Degraded").status == "False"


async def test_broken_revision_stops_the_rollout_degraded_and_old_instances_keep_serving(tmp_path):
    # A deadline far away: the crash loop, not the deadline, stops this rollout.
    async with running_controller(tmp_path, progress_deadline_s=60) as ctl:
        ctl.set_desired(echo_template("good"), 4, RollingUpdate(25, 25))
        await wait_until(lambda: is_complete(ctl, "good"), 10, "4 good instances")

        async with Sampler(ctl) as sampler:
            ctl.set_desired(echo_template("bad", ECHO_EXIT_AT_START="1"), 4, RollingUpdate(25, 25))
            assert (ctl.status().condition("Progressing").status, ctl.status().condition("Progressing").reason) == (
                "True", "ReplicaSetUpdated")
            await wait_until(lambda: ctl.status().condition("Degraded").status == "True", 5, "Degraded")
            await asyncio.sleep(0.5)  # it stays stopped: no further old instance is taken down

        status = ctl.status()
        degraded = status.condition("Degraded")
        assert degraded.reason == "CrashLoopBackOff"  # every new instance crash-loops: no wait for the deadline
        assert (status.condition("Progressing").status, status.condition("Progressing").reason) == (
            "False", "CrashLoopBackOff")
        assert status.condition("Available").status == "True"  # the earlier revision serves
        assert "exited with code 1 during start-up (see log " in degraded.message
        assert "revision bad" in degraded.message and "of earlier revisions still serving" in degraded.message
        log_path = Path(degraded.message.split("(see log ")[1].split(")")[0])
        assert log_path.exists() and "ECHO_EXIT_AT_START" in log_path.read_text()
        assert sampler.min_ready >= 3 and sampler.max_total <= 5
        assert status.updated_ready == 0

        serving = ctl.ready_instances()
        assert len(serving) == 3 and {r.revision for r in serving} == {"good"}
        for record in serving:
            response_status, headers, _ = await http(record.port, "GET", "/healthz")
            assert (response_status, headers["x-echo-instance"]) == (200, record.id)

        # A fixed revision resumes the rollout and clears the condition.
        ctl.set_desired(echo_template("fixed"), 4, RollingUpdate(25, 25))
        await wait_until(lambda: is_complete(ctl, "fixed"), 15, "rollout to the fixed revision")
        assert ctl.status().condition("Degraded").status == "False"


async def test_changing_the_replica_count_alone_scales_without_a_rollout(tmp_path):
    async with running_controller(tmp_path) as ctl:
        ctl.set_desired(echo_template("a"), 2, RollingUpdate(25, 25))
        await wait_until(lambda: is_complete(ctl, "a"), 10, "2 instances")
        first = {r.id: r.pid for r in ctl.instances()}
        ctl.set_desired(echo_template("a"), 4, RollingUpdate(25, 25))
        assert ctl.status().condition("Progressing").reason == "ReplicaSetUpdated"
        await wait_until(lambda: is_complete(ctl, "a") and ctl.status().ready == 4, 10, "4 instances")
        assert {r.id: r.pid for r in ctl.instances() if r.id in first} == first  # nobody restarted
        ctl.set_desired(echo_template("a"), 1, RollingUpdate(25, 25))
        await wait_until(lambda: is_complete(ctl, "a") and ctl.status().total == 1, 10, "1 instance")
        assert [r.id for r in ctl.instances()] == ["chat-canary-main-1"]  # the newest went first


async def test_a_revision_that_never_turns_ready_stops_at_the_progress_deadline(tmp_path):
    async with running_controller(tmp_path, progress_deadline_s=1.5) as ctl:
        ctl.set_desired(echo_template("good"), 2, RollingUpdate(50, 0))
        await wait_until(lambda: is_complete(ctl, "good"), 10, "2 good instances")
        ctl.set_desired(echo_template("slow", ECHO_WARMUP_S="60"), 2, RollingUpdate(50, 0))  # runs, never ready
        await wait_until(lambda: ctl.status().condition("Degraded").status == "True", 10, "Degraded")
        status = ctl.status()
        progressing = status.condition("Progressing")
        assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
        assert "no progress for 1.5s (0/2 instances of revision slow ready, 2 of earlier revisions still serving)" \
            in progressing.message
        assert "is not ready: HTTP GET /healthz" in progressing.message  # why, from the new instance's probe
        assert status.condition("Available").status == "True" and status.crash_looping == 0
        assert {r.revision for r in ctl.ready_instances()} == {"good"}
