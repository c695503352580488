"""A role controller holding a rollout as a canary (progressive redeploys), on real echo processes: the earlier
revision keeps its count and keeps serving, the new one runs beside it within surge, until promoted or rolled back."""

from __future__ import annotations

import asyncio
import os
import signal

from inferstack.platform.runtime import RollingUpdate

from .conftest import Sampler, echo_template, http, is_complete, is_running, running_controller, wait_until

STRATEGY = RollingUpdate(50, 0)  # 2 replicas: surge 1, unavailable 0


def by_revision(ctl) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in ctl.instances():
        if r.phase != "terminating":
            out.setdefault(r.revision, []).append(r)
    return out


async def test_a_held_canary_runs_beside_the_old_revision_and_a_roll_back_removes_it(tmp_path):
    async with running_controller(tmp_path) as ctl:
        ctl.set_desired(echo_template("a"), 2, STRATEGY)
        await wait_until(lambda: is_complete(ctl, "a"), 10, "2 instances of revision a")
        old = {r.id: r.pid for r in ctl.instances()}
        async with Sampler(ctl) as sampler:
            ctl.set_desired(echo_template("b"), 2, STRATEGY, canary=1)
            await wait_until(lambda: [r.ready for r in by_revision(ctl).get("b", [])] == [True], 10,
                             "one ready canary instance")
            await asyncio.sleep(0.5)  # held: the rollout goes no further
            assert [r.revision for r in ctl.instances()] == ["a", "a", "b"]
            assert ctl.canary is not None and ctl.canary[0].revision == "a"
            assert ctl.status().condition("Degraded").status == "False"
            stable = ctl.roll_back()
            assert stable is not None and stable.revision == "a" and ctl.template.revision == "a"
            await wait_until(lambda: is_complete(ctl, "a") and len(ctl.instances()) == 2, 10, "back to revision a")
        assert {r.id: r.pid for r in ctl.instances()} == old  # the old instances never stopped
        assert sampler.min_ready >= 2 and sampler.max_total <= 3, sampler.samples


async def test_a_promoted_canary_lets_the_rolling_update_finish(tmp_path):
    async with running_controller(tmp_path) as ctl:
        ctl.set_desired(echo_template("a"), 2, STRATEGY)
        await wait_until(lambda: is_complete(ctl, "a"), 10, "revision a")
        ctl.set_desired(echo_template("b"), 2, STRATEGY, canary=1)
        await wait_until(lambda: [r.ready for r in by_revision(ctl).get("b", [])] == [True], 10, "the canary")
        ctl.promote()
        await wait_until(lambda: is_complete(ctl, "b"), 15, "the rollout to revision b")
        records = ctl.instances()
        assert [r.revision for r in records] == ["b", "b"]
        for record in records:
            status, headers, _ = await http(record.port, "POST", "/v1/predict", {"input": "x"})
            assert (status, headers["x-echo-version"]) == (200, "b")


async def test_an_old_instance_that_dies_during_a_canary_comes_back_as_the_old_revision(tmp_path):
    async with running_controller(tmp_path) as ctl:
        ctl.set_desired(echo_template("a"), 2, STRATEGY)
        await wait_until(lambda: is_complete(ctl, "a"), 10, "revision a")
        ctl.set_desired(echo_template("b"), 2, STRATEGY, canary=1)
        await wait_until(lambda: [r.ready for r in by_revision(ctl).get("b", [])] == [True], 10, "the canary")
        victim = by_revision(ctl)["a"][0]
        os.kill(victim.pid, signal.SIGKILL)
        await wait_until(lambda: not is_running(victim.pid), 5, "the old instance gone")
        await wait_until(lambda: sum(r.ready for r in by_revision(ctl).get("a", [])) == 2, 10,
                         "two ready instances of revision a again")
        assert len(by_revision(ctl)["b"]) == 1 and ctl.canary is not None


async def test_a_new_revision_during_a_canary_replaces_the_canary_not_the_stable_revision(tmp_path):
    async with running_controller(tmp_path) as ctl:
        ctl.set_desired(echo_template("a"), 2, STRATEGY)
        await wait_until(lambda: is_complete(ctl, "a"), 10, "revision a")
        old = {r.id for r in ctl.instances()}
        ctl.set_desired(echo_template("b"), 2, STRATEGY, canary=1)
        await wait_until(lambda: bool(by_revision(ctl).get("b")), 10, "a canary of b")
        ctl.set_desired(echo_template("c"), 2, STRATEGY, canary=1)
        await wait_until(lambda: set(by_revision(ctl)) == {"a", "c"} and len(ctl.instances()) == 3, 10,
                         "the canary of c beside a, b gone")
        assert {r.id for r in by_revision(ctl)["a"]} == old and ctl.canary[0].revision == "a"


async def test_a_canary_that_crash_loops_stops_the_rollout_while_the_old_revision_serves(tmp_path):
    async with running_controller(tmp_path, crash_loop_after=2) as ctl:
        ctl.set_desired(echo_template("a"), 2, STRATEGY)
        await wait_until(lambda: is_complete(ctl, "a"), 10, "revision a")
        ctl.set_desired(echo_template("b", ECHO_EXIT_AT_START="1"), 2, STRATEGY, canary=1)
        await wait_until(lambda: ctl.status().condition("Progressing").status == "False", 10, "the rollout stopped")
        assert ctl.status().condition("Progressing").reason == "CrashLoopBackOff"
        assert sum(r.ready for r in by_revision(ctl)["a"]) == 2
