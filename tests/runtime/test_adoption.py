"""Platform restarts: instances are re-adopted by pid + start time, never started twice, never orphaned."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import textwrap
import time

from inferstack.platform.runtime import InstanceProcess, InstanceRecord, ProcessTree
from inferstack.platform.runtime.tree import is_subreaper

from .conftest import (
    ECHO_ARGV,
    Sampler,
    echo_template,
    http,
    is_complete,
    is_running,
    live_children,
    running_controller,
    wait_until,
)


async def test_a_new_controller_adopts_the_running_instances_instead_of_starting_new_ones(tmp_path):
    async with running_controller(tmp_path) as first:
        first.set_desired(echo_template("a"), 3)
        await wait_until(lambda: is_complete(first, "a"), 10, "3 instances")
        records = await first.detach()  # the platform dies: nothing is stopped
    assert sorted(live_children()) == sorted(r.pid for r in records)

    async with running_controller(tmp_path) as second:
        adopted = second.adopt_existing(records)
        assert [(r.id, r.pid, r.start_time, r.port) for r in adopted] == [
            (r.id, r.pid, r.start_time, r.port) for r in records]
        assert second.status().ready == 3  # still routable at once: no gap in the routing snapshot
        async with Sampler(second) as sampler:
            second.set_desired(echo_template("a"), 3)
            await asyncio.sleep(0.5)
        assert sampler.max_total == 3  # nothing doubled, at any moment
        assert [(r.id, r.pid) for r in second.instances()] == [(r.id, r.pid) for r in records]
        assert all(r.ready for r in second.instances())
        assert sorted(live_children()) == sorted(r.pid for r in records)
        # Convergence goes on from the adopted state: the next instance gets the next id.
        second.set_desired(echo_template("a"), 4)
        await wait_until(lambda: second.status().ready == 4, 5, "scale to 4")
        assert second.instances()[-1].id == "chat-canary-main-4"
    assert not any(is_running(r.pid) for r in records)


async def test_records_of_dead_or_reused_pids_are_forgotten_and_replaced(tmp_path):
    async with running_controller(tmp_path) as first:
        first.set_desired(echo_template("a"), 3)
        await wait_until(lambda: is_complete(first, "a"), 10, "3 instances")
        records = await first.detach()
    dead, reused, alive = records
    os.kill(dead.pid, signal.SIGKILL)
    # The pid of `reused` now belongs to "another process": same pid, different start time.
    stranger = dataclasses.replace(reused, start_time=reused.start_time + 12345)
    duplicate = dataclasses.replace(alive, id="chat-canary-main-9")  # the same process recorded twice
    await wait_until(lambda: not is_running(dead.pid), 2, "the kill")

    async with running_controller(tmp_path) as second:
        adopted = second.adopt_existing([dead, stranger, alive, duplicate])
        assert [r.id for r in adopted] == [alive.id]
        second.set_desired(echo_template("a"), 3)
        await wait_until(lambda: is_complete(second, "a"), 10, "replacements")
        ids = [r.id for r in second.instances()]
        assert ids == [alive.id, "chat-canary-main-10", "chat-canary-main-11"]  # new ids past every recorded one
        assert second.instances()[0].pid == alive.pid
        # The process behind the stale record was not touched: it is not ours any more.
        assert is_running(reused.pid)
    assert not is_running(alive.pid)
    os.kill(reused.pid, signal.SIGKILL)
    await wait_until(lambda: not is_running(reused.pid), 2, "the kill")
    ProcessTree(reused.tree, reused.cgroup).release()  # its cgroup: a platform releases it when it stops it


PLATFORM = textwrap.dedent("""
    import asyncio, dataclasses, json, sys
    from inferstack.platform.runtime import HttpGet, Probe, Probes, RoleController, RoleTemplate

    async def main():
        ctl = RoleController("svc-dep-main", log_dir=sys.argv[1])
        ctl.set_desired(RoleTemplate(argv=tuple(sys.argv[2:]), revision="r1",
                                     probes=Probes(readiness=Probe(HttpGet("/healthz"), period_s=0.05))), 2)
        while ctl.status().ready < 2:
            await asyncio.sleep(0.02)
        print(json.dumps([dataclasses.asdict(r) for r in ctl.instances()]), flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
""")


async def test_instances_outlive_a_killed_platform_process_and_are_adopted_by_the_next_one(tmp_path):
    out = tmp_path / "platform.out"
    platform = InstanceProcess.spawn([sys.executable, "-c", PLATFORM, str(tmp_path / "logs"), *ECHO_ARGV],
                                     env={"PATH": os.environ["PATH"]}, log_path=out)
    deadline = time.monotonic() + 15
    while not out.exists() or not out.read_text().startswith("["):
        assert platform.is_running() and time.monotonic() < deadline, out.read_text() if out.exists() else ""
        await asyncio.sleep(0.02)
    records = [InstanceRecord(**r) for r in json.loads(out.read_text().splitlines()[0])]
    pids = [r.pid for r in records]
    try:
        platform.send_signal(signal.SIGKILL)  # the platform crashes
        await platform.wait()
        await asyncio.sleep(0.2)
        assert all(is_running(pid) for pid in pids)  # its instances did not go down with it
        if not is_subreaper():  # (a subreaper test process would inherit them)
            assert not set(pids) & set(live_children())  # and they are nobody's children of ours

        async with running_controller(tmp_path, prefix="svc-dep-main") as ctl:
            assert len(ctl.adopt_existing(records)) == 2
            ctl.set_desired(echo_template("r1"), 2)
            await asyncio.sleep(0.3)
            assert [r.pid for r in ctl.instances()] == pids and ctl.status().ready == 2
            for record in records:
                assert (await http(record.port, "GET", "/healthz"))[0] == 200
            # An adopted instance that dies is noticed (no child exit to reap: its pidfd tells) and replaced.
            os.kill(pids[0], signal.SIGKILL)
            await wait_until(lambda: ctl.status().ready == 2 and ctl.instances()[0].pid != pids[0], 5, "replacement")
        assert not any(is_running(pid) for pid in pids)  # stopped with the controller: no orphans
    finally:
        for pid in pids:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
