"""The capacity scheduler as a pure function, pass after pass with a fake clock: what starts where, who is preempted
or migrated, and why the rest waits."""

from __future__ import annotations

from dataclasses import replace

from inferstack.platform.scheduler import (
    AWAITING_MIGRATION,
    BREAK_BEFORE_MAKE,
    MIGRATED,
    NO_CAPACITY,
    PREEMPTED,
    PREEMPTING,
    SCALED_DOWN,
    WAITING_FOR_LENDER,
    Decision,
    Demand,
    Placement,
    Policy,
    QueueInfo,
    schedule,
)

Q = QueueInfo("q", "zone-a", "prepaid", False, {"small": 4})
LOW = ("batch", "low", "main")
HIGH = ("online", "high", "main")
TOP = ("other", "top", "main")
IDLE = ("borrower", "idle", "main")
OWNER = ("lender", "owner", "main")


def owner(role, want, priority, queue="q", **extra) -> Demand:
    return Demand(role, queue, "small", "zone-a", priority, False, want, **extra)


def placed(role, n, queue="q", *, first=1, since=0.0, ready=True, **extra) -> list[Placement]:
    return [Placement(f"{role[1]}-{i}", role, queue, "small", since + i, ready, **extra) for i in range(first, first + n)]


def apply(placements: list[Placement], decision: Decision, now: float, ready: bool = False) -> list[Placement]:
    """What the runtime does with a decision: evicted instances start leaving, grants become instances, the doomed
    are handed back with the time they were first doomed."""
    out = []
    for p in placements:
        if any(e.instance == p.instance for e in decision.evictions):
            p = replace(p, leaving=True)
        since = decision.doomed.get(p.instance, (None,))[0]
        out.append(replace(p, doomed_since=since))
    for i, g in enumerate(decision.grants):
        out.extend(Placement(f"{g.role[1]}-new{now:g}-{i}-{j}", g.role, g.queue, g.spec, now, ready)
                   for j in range(g.count))
    return out


def granted(decision: Decision) -> list[tuple]:
    """(role, queue, lender) per slot granted."""
    return sorted((g.role, g.queue, g.lender) for g in decision.grants for _ in range(g.count))


def gone(placements: list[Placement]) -> list[Placement]:
    return [p for p in placements if not p.leaving]


def counts(decision: Decision) -> dict:
    return {(w.role[1], w.reason): w.count for w in decision.pending}


def test_a_role_is_placed_within_its_queue_and_the_rest_waits_with_the_reason():
    d = schedule([Q], [owner(LOW, 6, 3)], [], now=0)
    assert granted(d) == [(LOW, "q", None)] * 4
    (waiting,) = d.pending
    assert (waiting.count, waiting.reason) == (2, NO_CAPACITY)
    assert "no capacity left in queue 'q' for spec 'small' (4 slot(s): batch/low (priority 3): 4)" in waiting.message


def test_a_pay_as_you_go_queue_is_a_quota():
    quota = QueueInfo("pp", "zone-a", "postpaid", False, {"small": 2})
    d = schedule([quota], [owner(LOW, 5, 5, queue="pp")], [], now=0)
    assert len(granted(d)) == 2 and counts(d) == {("low", NO_CAPACITY): 3}
    assert "no quota left in queue 'pp'" in d.pending[0].message


def test_higher_priority_preempts_the_newest_lower_ones_which_come_back_when_it_goes():
    demands = [owner(LOW, 4, 3), owner(HIGH, 2, 7)]
    running = placed(LOW, 4)
    first = schedule([Q], demands, running, now=10)
    assert [(e.instance, e.reason, e.by) for e in first.evictions] == [("low-4", PREEMPTED, HIGH),
                                                                        ("low-3", PREEMPTED, HIGH)]
    assert "preempted on queue 'q' by online/high (priority 7)" in first.evictions[0].message
    assert first.grants == [] and counts(first) == {("high", PREEMPTING): 2, ("low", PREEMPTED): 2}
    stopping = apply(running, first, now=10)
    second = schedule([Q], demands, stopping, now=11)  # the victims still stop: nothing new starts
    assert second.evictions == [] and second.grants == []
    assert counts(second) == {("high", PREEMPTING): 2, ("low", PREEMPTED): 2}
    after = schedule([Q], demands, gone(stopping), now=12)
    assert [g[0] for g in granted(after)] == [HIGH, HIGH]
    (low,) = after.pending_of(LOW)
    assert low.reason == PREEMPTED and low.message.startswith("preempted by online/high (priority 7)")
    running = apply(gone(stopping), after, now=12, ready=True)
    back = schedule([Q], [owner(LOW, 4, 3)], [p for p in running if p.role == LOW], now=13)
    assert [g[0] for g in granted(back)] == [LOW, LOW] and back.pending == []


def test_equal_priority_never_preempts():
    d = schedule([Q], [owner(LOW, 4, 5), owner(HIGH, 1, 5)], placed(LOW, 4), now=1)
    assert d.evictions == [] and counts(d) == {("high", NO_CAPACITY): 1}


def test_victims_are_the_lowest_priority_then_the_newest():
    demands = [owner(LOW, 2, 2), owner(HIGH, 2, 4), owner(TOP, 3, 9)]
    running = placed(LOW, 2, since=100) + placed(HIGH, 2, since=0)
    d = schedule([Q], demands, running, now=200)
    assert [e.instance for e in d.evictions] == ["low-2", "low-1", "high-2"]


def test_idle_instances_go_first_whatever_their_priority_and_never_preempt():
    idle = Demand(IDLE, "q", "small", "zone-a", 9, True, 2)
    demands = [owner(LOW, 2, 2), owner(HIGH, 2, 4), idle]
    running = placed(LOW, 2) + placed(IDLE, 2)
    d = schedule([Q], demands, running, now=5)
    # high takes the idle instances' slots, not low's; with nowhere to migrate to they go at once
    assert sorted((e.instance, e.reason, e.by) for e in d.evictions) == [("idle-1", BREAK_BEFORE_MAKE, HIGH),
                                                                          ("idle-2", BREAK_BEFORE_MAKE, HIGH)]
    assert counts(d) == {("high", AWAITING_MIGRATION): 2, ("idle", WAITING_FOR_LENDER): 2}
    alone = schedule([Q], [owner(LOW, 4, 1), idle], placed(LOW, 4), now=5)
    assert alone.evictions == [] and counts(alone) == {("idle", WAITING_FOR_LENDER): 2}


LENDER = QueueInfo("lend", "zone-a", "prepaid", True, {"small": 2})
LENDER2 = QueueInfo("lend2", "zone-a", "postpaid", True, {"small": 1})
HOME = QueueInfo("home", "zone-a", "postpaid", False, {"small": 1})
FAR = QueueInfo("far", "zone-b", "prepaid", True, {"small": 8})


def borrower(want=2) -> Demand:
    return Demand(IDLE, "home", "small", "zone-a", 5, True, want)


def test_idle_instances_use_their_own_queue_first_then_a_lender_of_their_zone():
    d = schedule([HOME, LENDER, FAR], [borrower(3)], [], now=0)
    assert [(q, lender) for _, q, lender in granted(d)] == [("home", None), ("lend", "lend"), ("lend", "lend")]
    full = schedule([HOME, LENDER, FAR], [borrower(4)], [], now=0)
    assert counts(full) == {("idle", WAITING_FOR_LENDER): 1}  # the far lender is in another zone


def test_a_preempted_borrower_migrates_make_before_break():
    queues = [HOME, LENDER, LENDER2]
    demands = [borrower(), owner(OWNER, 2, 1, queue="lend")]
    running = placed(IDLE, 1, "home") + placed(IDLE, 1, "lend", first=2) + placed(OWNER, 1, "lend")
    # The owner scales 1 → 2: the borrower on its queue is doomed, a replacement goes to the other lender.
    first = schedule(queues, demands, running, now=100)
    assert first.evictions == [] and set(first.doomed) == {"idle-2"}
    assert granted(first) == [(IDLE, "lend2", "lend2")]
    assert counts(first) == {("owner", AWAITING_MIGRATION): 1}
    running = apply(running, first, now=100, ready=False)
    waiting = schedule(queues, demands, running, now=110)  # the replacement is not ready yet: nobody goes
    assert waiting.evictions == [] and waiting.grants == [] and waiting.doomed["idle-2"][0] == 100
    running = [replace(p, ready=True) for p in apply(running, waiting, now=110)]
    swapped = schedule(queues, demands, running, now=111)
    assert [(e.instance, e.reason, e.by) for e in swapped.evictions] == [("idle-2", MIGRATED, OWNER)]
    running = gone(apply(running, swapped, now=111))
    last = schedule(queues, demands, running, now=112)
    assert granted(last) == [(OWNER, "lend", None)] and last.pending == []


def test_a_preempted_borrower_with_nowhere_to_go_is_withdrawn_at_once_break_before_make():
    demands = [borrower(), owner(OWNER, 2, 1, queue="lend")]
    running = placed(IDLE, 1, "home") + placed(IDLE, 1, "lend", first=2) + placed(OWNER, 1, "lend")
    d = schedule([HOME, LENDER], demands, running, now=100)
    (eviction,) = d.evictions
    assert (eviction.instance, eviction.reason) == ("idle-2", BREAK_BEFORE_MAKE)
    assert "no capacity for a replacement elsewhere" in eviction.message
    assert counts(d) == {("idle", WAITING_FOR_LENDER): 1, ("owner", AWAITING_MIGRATION): 1}


def test_a_replacement_that_never_becomes_ready_does_not_hold_the_owner_past_the_deadline():
    queues = [HOME, LENDER, LENDER2]
    demands = [borrower(), owner(OWNER, 2, 1, queue="lend")]
    running = placed(IDLE, 1, "home") + placed(IDLE, 1, "lend", first=2) + placed(OWNER, 1, "lend")
    policy = Policy(make_before_break_s=30)
    running = apply(running, schedule(queues, demands, running, now=100, policy=policy), now=100)
    assert schedule(queues, demands, running, now=129, policy=policy).evictions == []
    (late,) = schedule(queues, demands, running, now=131, policy=policy).evictions
    assert late.reason == BREAK_BEFORE_MAKE and "not ready within 30 s" in late.message


def test_scaling_down_drops_the_not_ready_then_borrowed_then_newest():
    running = (placed(IDLE, 1, "home", since=0) + placed(IDLE, 1, "lend", first=2, since=0)
               + placed(IDLE, 1, "home", first=3, since=50, ready=False))
    d = schedule([HOME, LENDER], [replace(borrower(1), queue="home")], running, now=60)
    assert {(e.instance, e.reason) for e in d.evictions} == {("idle-3", SCALED_DOWN), ("idle-2", SCALED_DOWN)}


def test_instances_of_roles_without_a_demand_keep_their_slots():
    d = schedule([Q], [owner(HIGH, 4, 9)], placed(LOW, 3), now=1)
    assert len(granted(d)) == 1 and d.evictions == []


def test_a_rolling_update_may_use_its_surge_slots():
    d = schedule([Q], [owner(LOW, 2, 5, surge=1)], placed(LOW, 2), now=1)
    assert len(granted(d)) == 1


def test_an_instance_on_a_queue_its_role_no_longer_uses_is_replaced_before_it_goes():
    other = QueueInfo("q2", "zone-a", "prepaid", False, {"small": 2})
    demands = [owner(LOW, 1, 5, queue="q2")]
    running = placed(LOW, 1, "q")
    d = schedule([Q, other], demands, running, now=1)
    assert granted(d) == [(LOW, "q2", None)] and d.evictions == []
    running = apply(running, d, now=1, ready=True)
    (e,) = schedule([Q, other], demands, running, now=2).evictions
    assert (e.instance, e.reason) == ("low-1", MIGRATED)


def test_a_queue_that_shrank_sheds_its_excess_idle_first_then_the_lowest_priority():
    smaller = QueueInfo("q", "zone-a", "prepaid", False, {"small": 2})
    idle = Demand(IDLE, "q", "small", "zone-a", 9, True, 1)
    running = placed(LOW, 1, since=0) + placed(HIGH, 2, since=5) + placed(IDLE, 1, since=1)
    d = schedule([smaller], [owner(LOW, 1, 3), owner(HIGH, 2, 7), idle], running, now=10)
    assert sorted((e.instance, e.reason) for e in d.evictions) == [("idle-1", PREEMPTED), ("low-1", PREEMPTED)]
    assert "queue 'q' holds 2 of 'small' now and 4 ran there" in d.evictions[0].message
    assert counts(d) == {("low", PREEMPTED): 1, ("idle", WAITING_FOR_LENDER): 1}


def test_huge_counts_are_decided_in_bulk():
    huge = QueueInfo("q", "zone-a", "postpaid", False, {"small": 10**12})
    d = schedule([huge], [owner(LOW, 10**15, 5), Demand(IDLE, "q", "small", "zone-a", 5, True, 10**15)], [], now=0)
    assert [(g.role, g.count) for g in d.grants] == [(LOW, 10**12)]
    assert counts(d) == {("low", NO_CAPACITY): 10**15 - 10**12, ("idle", WAITING_FOR_LENDER): 10**15}
