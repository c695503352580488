"""``RoleController``: converges one role of a deployment to N healthy instances of a template.

Kubernetes Deployment semantics on local processes: a new template revision rolls out within max surge / max
unavailable; a crashed or unhealthy instance is restarted in place with exponential backoff, and after
``crash_loop_after`` failed starts in a row it is ``CrashLoopBackOff`` (with its exit code and its log's last lines);
a rollout whose new instances all crash-loop stops at once, one that makes no progress within the deadline stops
then — either way ``Degraded`` while the earlier revision keeps serving (conditions: ``role_status.py``). Every
instance's whole process tree goes when it stops (``tree.py``). What happens is told to ``on_event`` as
``RuntimeEvent``s. One asyncio loop per controller converges; one supervisor task per instance runs its process and
probes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from inferstack.platform.runtime.probes import (
    DEFAULT_READINESS,
    Probe,
    ProbeResult,
    Probes,
    ProbeState,
    ProbeTarget,
    probe_results,
    until_verdict,
)
from inferstack.platform.runtime.process import InstanceProcess, Termination, free_port
from inferstack.platform.runtime.role_status import InstanceView, role_status
from inferstack.platform.runtime.status import (
    BACK_OFF,
    CRASH_LOOP_BACK_OFF,
    EventType,
    InstanceRecord,
    Phase,
    RoleStatus,
    RuntimeEvent,
)
from inferstack.platform.runtime.template import INHERITED_ENV, RoleTemplate, RollingUpdate
from inferstack.platform.runtime.tree import ProcessTree, reap_orphans

log = logging.getLogger("inferstack.runtime")

OnWithdraw = Callable[[InstanceRecord], Awaitable[None]]
OnChange = Callable[["RoleController"], Awaitable[None] | None]
Admit = Callable[[str], bool]
OnEvent = Callable[[RuntimeEvent], None]
LOG_TAIL_LINES = 10
_LOG_TAIL_BYTES = 16384
_LOG_LINE_CHARS = 300
_LOG_HEADER = "--- inferstack: "


class _Instance:
    """The controller's bookkeeping for one instance id; its process changes on every restart."""

    def __init__(self, instance_id: str, ordinal: int, revision: str, template: RoleTemplate | None,
                 log_path: Path) -> None:
        self.id = instance_id
        self.ordinal = ordinal
        self.revision = revision
        self.template = template  # None: adopted with a revision this controller cannot start again
        self.log_path = log_path
        self.port = 0
        self.env: dict[str, str] | None = None
        self.process: InstanceProcess | None = None
        self.phase: Phase = "starting"
        self.ready = False
        self.ready_since: float | None = None  # when it last turned ready in its current process
        self.adopted = False
        self.restarts = 0
        self.failures_in_row = 0
        self.crash_looping = False  # failures_in_row reached the threshold; until it is ready again
        self.failure: str | None = None  # what ended its last process; kept until it is ready again
        self.not_ready: str | None = None  # the last failed readiness result while not ready
        self.exit_code: int | None = None  # of its last process that ended
        self.finished_at: str | None = None
        self.log_tail: tuple[str, ...] = ()
        self.stop_reason = ""  # why it is terminating, for the Killing event
        self.task: asyncio.Task[None] | None = None

    @property
    def reason(self) -> str | None:
        if self.crash_looping and not self.ready:
            return CRASH_LOOP_BACK_OFF
        return BACK_OFF if self.phase == "backoff" else None

    def record(self, host: str) -> InstanceRecord:
        process = self.process
        tree = process.tree if process else None
        return InstanceRecord(
            id=self.id, port=self.port, pid=process.pid if process else None,
            start_time=process.start_time if process else None, revision=self.revision, host=host,
            ready=self.ready, phase=self.phase, restarts=self.restarts, log_path=str(self.log_path),
            tree=tree.marker if tree else None, cgroup=str(tree.cgroup) if tree and tree.cgroup else None,
            reason=self.reason, message=None if self.ready else (self.failure or self.not_ready),
            failures=self.failures_in_row, exit_code=self.exit_code, finished_at=self.finished_at,
            log_tail=self.log_tail)

    def view(self) -> InstanceView:
        return InstanceView(self.id, self.ordinal, self.revision, self.ready, self.phase == "terminating",
                            self.crash_looping and not self.ready, self.restarts,
                            None if self.ready else (self.failure or self.not_ready),
                            self.log_tail[-1] if self.log_tail and not self.ready else None)


class RoleController:
    """Keeps ``replicas`` instances of a ``RoleTemplate`` running and ready; rolls between template revisions.

    Instance ids are ``<id_prefix>-<n>`` with n increasing monotonically (from ``first_ordinal``). Every instance runs
    in a process tree of marker scope ``tree_scope`` (``tree.py``). Use from within a running event loop.
    """

    def __init__(
        self,
        id_prefix: str,
        *,
        log_dir: str | Path,
        host: str = "127.0.0.1",
        progress_deadline_s: float = 600.0,
        restart_backoff_base_s: float = 1.0,
        restart_backoff_cap_s: float = 60.0,
        restart_backoff_reset_s: float = 120.0,
        crash_loop_after: int = 3,
        on_withdraw: OnWithdraw | None = None,
        on_change: OnChange | None = None,
        on_event: OnEvent | None = None,
        inherit_env: Sequence[str] = INHERITED_ENV,
        tree_scope: str = "local",
        cgroups: bool = True,
        first_ordinal: int = 1,
        admit: Admit | None = None,
    ) -> None:
        """`admit(instance_id)`: asked before a new instance starts (the capacity scheduler's grant); False leaves it
        unstarted until the controller is woken again (`wake`). Restarts in place are never asked: the instance
        keeps its slot."""
        if crash_loop_after < 1:
            raise ValueError("crash_loop_after must be >= 1")
        self.id_prefix = id_prefix
        self.host = host
        self.progress_deadline_s = progress_deadline_s
        self.restart_backoff_base_s = restart_backoff_base_s
        self.restart_backoff_cap_s = restart_backoff_cap_s
        self.restart_backoff_reset_s = restart_backoff_reset_s
        self.crash_loop_after = crash_loop_after
        self.tree_scope = tree_scope
        self.cgroups = cgroups
        self._log_dir = Path(log_dir)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._on_withdraw = on_withdraw
        self._on_change = on_change
        self._admit = admit
        self._on_event = on_event
        self._inherited = {name: os.environ[name] for name in inherit_env if name in os.environ}
        self._template: RoleTemplate | None = None
        self._stable: RoleTemplate | None = None  # during a canary: the earlier revision that keeps serving
        self._canary: int | None = None  # during a canary: most instances of the new revision
        self._replicas = 0
        self._strategy = RollingUpdate()
        self._instances: dict[str, _Instance] = {}
        self._next_ordinal = max(first_ordinal, 1)
        self._spawned_any = False
        self._last_progress = time.monotonic()
        self._complete_for: tuple[str, int] | None = None  # (revision, replicas) once reached: sticky
        self._wake = asyncio.Event()
        self._dirty = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._notifier_task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False
        self._published: tuple[RoleStatus, tuple[InstanceRecord, ...]] | None = None
        self.terminations: list[tuple[str, Termination]] = []  # (instance id, how it ended) of every stop

    # ---- desired state ---------------------------------------------------------------------------------------------

    def set_desired(self, template: RoleTemplate, replicas: int,
                    rolling_update: RollingUpdate | None = None, *, canary: int | None = None,
                    stable: RoleTemplate | None = None) -> None:
        """Converge to ``replicas`` instances of ``template``. A new ``revision`` rolls out; the same revision with
        other values is used for instances started from now on (no rollout); a replica change alone just scales.

        ``canary`` holds a rollout to a new revision as a canary (a progressive redeploy): the revision running so far
        (``stable``, else the current template) keeps ``replicas`` instances and at most ``canary`` instances of the new
        one run beside them, until ``promote`` (the rolling update goes on) or ``roll_back``. Instances of any other
        revision go. Without ``canary`` a hold ends (as ``promote``)."""
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        if self._closed:
            raise RuntimeError("controller is shut down")
        previous = self._template
        if canary is None:
            self._stable = self._canary = None
        else:
            base = self._stable or stable or previous
            if base is not None and base.revision != template.revision:
                if self._stable is None or self._canary is None:
                    self._last_progress = time.monotonic()  # the canary's instances have the deadline to turn ready
                self._stable, self._canary = base, max(canary, 1)
            else:
                self._stable = self._canary = None
        if previous is None or previous.revision != template.revision or replicas != self._replicas:
            self._last_progress = time.monotonic()
            self._complete_for = None
        self._template, self._replicas = template, replicas
        self._strategy = rolling_update or RollingUpdate()
        for inst in self._instances.values():
            if self._stable is not None and inst.revision == self._stable.revision:
                inst.template = self._stable
            if inst.revision == template.revision:
                inst.template = template
            if inst.task is None and inst.phase != "terminating":  # adopted before a template was known
                inst.task = asyncio.create_task(self._supervise(inst))
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._converge_forever())
            self._notifier_task = asyncio.create_task(self._notify_forever())
        self._wake.set()

    def promote(self) -> None:
        """End a canary hold: the rolling update to the new revision goes on within surge and unavailable."""
        if self._stable is not None:
            self._stable = self._canary = None
            self._last_progress = time.monotonic()
            self._wake.set()

    def roll_back(self) -> RoleTemplate | None:
        """End a canary hold by going back to the earlier revision: its template is current again and the new
        revision's instances go (withdrawn first, their graceful period). Returns the template now current (None when
        no canary was held)."""
        stable = self._stable
        if stable is None:
            return None
        self._template, self._stable, self._canary = stable, None, None
        self._last_progress = time.monotonic()
        self._complete_for = None
        self._wake.set()
        return stable

    @property
    def template(self) -> RoleTemplate | None:
        """The template converged to (the new revision, during a canary)."""
        return self._template

    @property
    def canary(self) -> tuple[RoleTemplate, int] | None:
        """During a canary hold: (the earlier revision's template, most new-revision instances)."""
        return (self._stable, self._canary) if self._stable is not None and self._canary is not None else None

    def scale(self, replicas: int) -> None:
        """Converge to ``replicas`` instances of the current template (no rollout)."""
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        if replicas != self._replicas:
            self._last_progress = time.monotonic()
            self._replicas = replicas
            self._complete_for = None
        self._wake.set()

    def evict(self, instance_id: str) -> bool:
        """Withdraw and stop one instance (its graceful period), e.g. preempted by the capacity scheduler. Lower the
        replicas first (``scale``), or the controller starts another in its place. False if it is not running."""
        inst = self._instances.get(instance_id)
        if inst is None or inst.phase == "terminating" or self._closed:
            return False
        self._remove(inst, why="evicted by the capacity scheduler")
        self._wake.set()
        return True

    def wake(self) -> None:
        """Converge again now (e.g. capacity was granted to instances ``admit`` refused)."""
        self._wake.set()

    def adopt_existing(self, records: Iterable[InstanceRecord]) -> list[InstanceRecord]:
        """After a platform restart: take over the recorded instances whose process is still the same one (same pid
        *and* start time); forget the others, normal convergence replaces them. Call before the first instance is
        started by this controller. Returns the adopted instances."""
        if self._spawned_any:
            raise RuntimeError("adopt_existing must be called before this controller starts any instance")
        adopted: list[InstanceRecord] = []
        for record in records:
            ordinal = self._ordinal_of(record.id)
            self._next_ordinal = max(self._next_ordinal, ordinal + 1)
            if record.id in self._instances or record.pid is None or record.start_time is None:
                continue
            log_path = Path(record.log_path) if record.log_path else self._log_path(record.id)
            tree = ProcessTree(record.tree, record.cgroup) if record.tree else None
            process = InstanceProcess.adopt(record.pid, record.start_time, log_path=log_path, tree=tree)
            if process is not None and any(i.process and i.process.pid == process.pid
                                           for i in self._instances.values()):
                process.release()  # the same process recorded twice: adopt it once
                process = None
            if process is None:
                log.info("not adopting %s: pid %d is gone or is another process now", record.id, record.pid)
                if tree is not None:
                    tree.release()  # its cgroup, once nothing of it runs any more
                continue
            template = self._template if self._template and self._template.revision == record.revision else None
            inst = _Instance(record.id, ordinal, record.revision, template, log_path)
            inst.process, inst.port, inst.phase, inst.adopted = process, record.port, "running", True
            inst.ready, inst.restarts, inst.failures_in_row = record.ready, record.restarts, record.failures
            inst.exit_code, inst.finished_at, inst.log_tail = record.exit_code, record.finished_at, record.log_tail
            inst.ready_since = time.monotonic() if record.ready else None
            self._instances[inst.id] = inst
            if self._template is not None:
                inst.task = asyncio.create_task(self._supervise(inst))
            log.info("adopted %s (pid %d, port %d, revision %s)", inst.id, process.pid, inst.port, inst.revision)
            adopted.append(inst.record(self.host))
        self._wake.set()
        self._dirty.set()
        return adopted

    # ---- observed state --------------------------------------------------------------------------------------------

    def instances(self) -> list[InstanceRecord]:
        """Every instance, in id order: what the platform persists for ``adopt_existing``."""
        return [i.record(self.host) for i in sorted(self._instances.values(), key=lambda i: i.ordinal)]

    def ready_instances(self) -> list[InstanceRecord]:
        """The instances that may take traffic now."""
        return [r for r in self.instances() if r.ready]

    def status(self) -> RoleStatus:
        template = self._template
        self._note_completion()
        revision = template.revision if template else None
        return role_status(
            revision=revision, replicas=self._replicas, strategy=self._strategy,
            instances=[i.view() for i in self._instances.values()],
            complete=revision is not None and self._complete_for == (revision, self._replicas),
            deadline_passed=self._deadline_passed(), progress_deadline_s=self.progress_deadline_s)

    @property
    def graceful_shutdown_s(self) -> float:
        """The longest graceful period among the live instances (what stopping them all may take)."""
        return max((self._grace_of(i) for i in self._instances.values()
                    if i.template is not None or self._template is not None), default=0.0)

    @property
    def next_ordinal(self) -> int:
        return self._next_ordinal

    # ---- stopping --------------------------------------------------------------------------------------------------

    async def shutdown(self, graceful: bool = True, why: str = "platform stopping") -> list[tuple[str, Termination]]:
        """Stop every instance (withdrawn first; SIGTERM and its graceful period, or SIGKILL at once) and the loops.
        How each instance ended, for the caller to report."""
        self._closed = True
        await _cancel(self._loop_task)
        already = len(self.terminations)
        for inst in list(self._instances.values()):
            if inst.phase != "terminating":
                self._remove(inst, grace_s=None if graceful else 0.0, why=why)
        while self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        await _cancel(self._notifier_task)
        await self._publish()
        return self.terminations[already:]

    async def detach(self) -> list[InstanceRecord]:
        """Stop supervising and leave every process running, for another controller to ``adopt_existing``."""
        self._closed = True
        records = self.instances()
        tasks = [self._loop_task, self._notifier_task, *self._stopping, *(i.task for i in self._instances.values())]
        for task in tasks:
            await _cancel(task)
        for inst in self._instances.values():
            if inst.process is not None:
                inst.process.release()
        self._instances.clear()
        return records

    # ---- convergence -----------------------------------------------------------------------------------------------

    async def _converge_forever(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that coincides with the wake-up,
            # and shutdown() would then wait for this loop forever.
            try:
                async with asyncio.timeout(self._seconds_to_deadline()):
                    await self._wake.wait()
            except TimeoutError:
                pass  # the progress deadline passed: the status changes although nothing happened
            self._wake.clear()
            try:
                self._converge()
            except Exception:  # a bug here must not stop every later convergence
                log.exception("converging %s failed", self.id_prefix)
            self._dirty.set()

    def _converge(self) -> None:
        template, replicas = self._template, self._replicas
        if template is None or self._closed:
            return
        if self._stable is not None and self._canary is not None:
            self._converge_canary(template, self._stable, self._canary)
            return
        surge, unavailable = self._strategy.bounds(replicas)
        live = [i for i in self._instances.values() if i.phase != "terminating"]
        new = [i for i in live if i.revision == template.revision]
        old = [i for i in live if i.revision != template.revision]
        # Terminating instances still count: the total of processes never exceeds replicas + surge.
        room = replicas + surge - len(self._instances)
        started = 0
        for _ in range(max(min(room, replicas - len(new)), 0)):
            if not self._start_instance(template):
                break
            started += 1
        if started:
            self._event("ScalingReplicaSet", f"scaled up revision {template.revision} to {len(new) + started}"
                                             f" (of {replicas})")
        excess = sorted(new, key=lambda i: (i.ready, -i.ordinal))[:max(len(new) - replicas, 0)]
        for inst in excess:  # scaled down: the not-ready go first, then the newest
            self._remove(inst, why=f"scaled down to {replicas}")
        if excess:
            self._event("ScalingReplicaSet", f"scaled down revision {template.revision} to {replicas}")
        # Earlier revisions go as fast as availability allows: never fewer ready than replicas - max unavailable.
        ready = sum(i.ready for i in live if i not in excess)
        min_ready = replicas - unavailable
        removed: dict[str, int] = {}
        for inst in sorted(old, key=lambda i: (i.ready, i.ordinal)):
            if not inst.ready or ready - 1 >= min_ready:
                ready -= inst.ready
                self._remove(inst, why=f"rolling update to revision {template.revision}")
                removed[inst.revision] = removed.get(inst.revision, 0) + 1
        for revision, gone in removed.items():
            left = sum(i.revision == revision for i in old) - gone
            self._event("ScalingReplicaSet", f"scaled down revision {revision} to {left}")

    def _converge_canary(self, template: RoleTemplate, stable: RoleTemplate, canary: int) -> None:
        """A held canary: ``replicas`` instances of the stable revision, at most ``canary`` of the new one beside them
        (the total never above replicas + surge), nothing else. A stable instance that goes is started again with the
        stable template: the earlier revision keeps serving whatever the canary does."""
        replicas = self._replicas
        surge, _ = self._strategy.bounds(replicas)
        live = [i for i in self._instances.values() if i.phase != "terminating"]
        new = [i for i in live if i.revision == template.revision]
        kept = [i for i in live if i.revision == stable.revision]
        for inst in live:
            if inst not in new and inst not in kept:
                self._remove(inst, why=f"canary of revision {template.revision} beside revision {stable.revision}")
        for inst in sorted(kept, key=lambda i: (i.ready, -i.ordinal))[:max(len(kept) - replicas, 0)]:
            self._remove(inst, why=f"scaled down to {replicas}")
        for inst in sorted(new, key=lambda i: (i.ready, -i.ordinal))[:max(len(new) - canary, 0)]:
            self._remove(inst, why=f"canary of {canary} instance(s)")
        for _ in range(max(replicas - len(kept), 0)):  # the stable revision first: it serves
            if len(self._instances) >= replicas + max(surge, canary) or not self._start_instance(stable):
                break
        started = 0
        for _ in range(max(min(canary, replicas + max(surge, canary) - len(self._instances)) - len(new), 0)):
            if not self._start_instance(template):
                break
            started += 1
        if started:
            self._event("ScalingReplicaSet", f"started {started} canary instance(s) of revision {template.revision} "
                                             f"beside {replicas} of revision {stable.revision}")

    def _note_completion(self) -> None:
        """Remember that the desired revision and count were reached (Kubernetes' ``NewReplicaSetAvailable`` stays
        until the revision or the count changes, whatever happens to instances afterwards)."""
        template = self._template
        if template is not None and self._complete_for != (template.revision, self._replicas) and self._reached():
            self._complete_for = (template.revision, self._replicas)
            if not all(i.adopted for i in self._instances.values()) or not self._instances:  # not after a restart
                self._event("RolloutComplete", f"revision {template.revision}: {self._replicas}/{self._replicas} "
                                               f"instances ready")

    def _reached(self) -> bool:
        template = self._template
        return template is not None and len(self._instances) == self._replicas and all(
            i.ready and i.revision == template.revision and i.phase != "terminating"
            for i in self._instances.values())

    def _is_complete(self) -> bool:
        template = self._template
        return template is not None and self._complete_for == (template.revision, self._replicas)

    def _deadline_passed(self) -> bool:
        if self._canary_ready():
            return False  # the release decides how long a canary runs
        return not self._is_complete() and time.monotonic() - self._last_progress > self.progress_deadline_s

    def _canary_ready(self) -> bool:
        """A held canary whose new-revision instances all run and are ready."""
        template, held = self._template, self.canary
        if template is None or held is None:
            return False
        new = [i for i in self._instances.values() if i.revision == template.revision and i.phase != "terminating"]
        return len(new) >= held[1] and all(i.ready for i in new)

    def _seconds_to_deadline(self) -> float | None:
        if self._is_complete() or self._canary_ready():
            return None
        remaining = self._last_progress + self.progress_deadline_s - time.monotonic()
        return remaining + 0.001 if remaining >= 0 else None

    # ---- one instance ----------------------------------------------------------------------------------------------

    def _start_instance(self, template: RoleTemplate) -> bool:
        ordinal = self._next_ordinal
        instance_id = f"{self.id_prefix}-{ordinal}"
        if self._admit is not None and not self._admit(instance_id):
            return False  # no capacity granted now: tried again when woken
        self._next_ordinal += 1
        inst = _Instance(instance_id, ordinal, template.revision, template, self._log_path(instance_id))
        self._instances[instance_id] = inst
        self._spawned_any = True
        inst.task = asyncio.create_task(self._supervise(inst))
        return True

    async def _supervise(self, inst: _Instance) -> None:
        """Run the instance's process and probes; after a crash or a failed probe, restart it with backoff."""
        while True:
            process = inst.process
            try:
                problem, code = await self._run_once(inst)
            except Exception as exc:  # never leave an instance unsupervised: treat it as a failed run
                log.exception("supervising %s failed", inst.id)
                if inst.process is not None:
                    await inst.process.terminate(0.0)
                problem, code = f"instance {inst.id} failed: {exc!r}", None
            finally:
                self._set_ready(inst, False)
            process = inst.process or process
            if process is not None:
                leftovers = await process.kill_leftovers()  # its first process ended: the rest of it goes too
                if leftovers:
                    self._event("Killed", f"instance {inst.id} ended and left {len(leftovers)} process(es) of its "
                                          f"tree running: killed them", "Warning", inst)
            self._record_failure(inst, problem, code)
            template = inst.template
            if template is None:  # adopted from a revision we have no template for: convergence replaces it
                del self._instances[inst.id]
                self._wake.set()
                self._dirty.set()
                return
            if inst.ready_since is not None and time.monotonic() - inst.ready_since >= self.restart_backoff_reset_s:
                inst.failures_in_row = 0
            inst.failures_in_row += 1
            delay = min(self.restart_backoff_cap_s, self.restart_backoff_base_s * 2 ** (inst.failures_in_row - 1))
            inst.phase, inst.process, inst.env = "backoff", None, None
            self._event("BackOff", f"{problem}: back-off restarting it", "Warning", inst)
            if inst.failures_in_row >= self.crash_loop_after and not inst.crash_looping:
                inst.crash_looping = True
                self._event(CRASH_LOOP_BACK_OFF, f"instance {inst.id} is crash-looping: {problem}", "Warning", inst)
            self._wake.set()  # a rollout whose new instances all crash-loop stops now, not at the deadline
            self._dirty.set()
            log.info("restarting %s in %.3gs (failure %d in a row)", inst.id, delay, inst.failures_in_row)
            await asyncio.sleep(delay)
            inst.restarts += 1

    def _record_failure(self, inst: _Instance, problem: str, code: int | None) -> None:
        inst.failure, inst.exit_code = problem, code
        inst.finished_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        template = inst.template or self._template
        inst.log_tail = _log_tail(inst.log_path, template.redact if template else (lambda text: text))
        log.warning("%s", problem)

    async def _run_once(self, inst: _Instance) -> tuple[str, int | None]:
        """One life of the instance's process; what ended it, in words, and its exit code."""
        if inst.process is None:
            try:
                self._spawn_process(inst)
            except (OSError, ValueError) as exc:  # ValueError: e.g. a NUL byte in argv or env
                return f"instance {inst.id} could not be started: {exc}", None
        process = inst.process
        assert process is not None
        probes = self._probes_of(inst)
        target = self._probe_target(inst)
        grace_s = self._grace_of(inst)
        exited = asyncio.ensure_future(process.wait())
        watchers: list[asyncio.Future] = [exited]
        try:
            if inst.phase == "starting" and probes.startup is not None:
                startup = asyncio.ensure_future(until_verdict(probes.startup, target))
                watchers.append(startup)
                await asyncio.wait({exited, startup}, return_when=asyncio.FIRST_COMPLETED)
                if exited.done():
                    return self._exit_problem(inst, exited.result()), exited.result()
                ok, result = startup.result()
                if not ok:
                    problem = (f"instance {inst.id} failed its startup probe {probes.startup.failure_threshold} "
                               f"time(s) in a row ({self._redact(inst, result.detail)}) (see log {inst.log_path})")
                    self._event("Unhealthy", problem, "Warning", inst)
                    stopped = await process.terminate(grace_s)
                    return problem, stopped.exit_code
            inst.phase = "running"
            self._dirty.set()
            watchers.append(asyncio.ensure_future(self._watch_readiness(inst, probes.readiness or DEFAULT_READINESS,
                                                                        target)))
            if probes.liveness is None:
                await exited
                return self._exit_problem(inst, exited.result()), exited.result()
            liveness = asyncio.ensure_future(_until_failing(probes.liveness, target, inst.adopted))
            watchers.append(liveness)
            await asyncio.wait({exited, liveness}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                return self._exit_problem(inst, exited.result()), exited.result()
            result = liveness.result()
            for watcher in watchers:  # readiness must not put it back into routing while it is being stopped
                watcher.cancel()
            problem = (f"instance {inst.id} failed its liveness probe {probes.liveness.failure_threshold} time(s) "
                       f"in a row ({self._redact(inst, result.detail)})")
            self._event("Unhealthy", f"{problem}: restarting it", "Warning", inst)
            self._set_ready(inst, False)
            await self._withdraw(inst)
            self._event("Killing", f"stopping instance {inst.id} (liveness probe failed): SIGTERM, SIGKILL after "
                                   f"{grace_s:g}s", instance=inst)
            stopped = await process.terminate(grace_s)
            self._report_stop(inst, stopped)
            return problem, stopped.exit_code
        finally:
            for watcher in watchers:
                watcher.cancel()

    def _spawn_process(self, inst: _Instance) -> None:
        template = inst.template
        assert template is not None
        port = self._free_port()
        env = template.instance_env(inst.id, port, self._inherited)
        template.prepare_mounts()
        with open(inst.log_path, "ab") as f:
            f.write(f"{_LOG_HEADER}starting {inst.id} (revision {template.revision}, restart {inst.restarts}) "
                    f"at {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ---\n".encode())
        reap_orphans(self._sessions())
        tree = ProcessTree.new(self.tree_scope, cgroups=self.cgroups)
        try:
            process = InstanceProcess.spawn(template.instance_argv(env), env=env, cwd=template.cwd,
                                            log_path=inst.log_path, tree=tree)
        except BaseException:
            tree.release()
            raise
        inst.process, inst.port, inst.env = process, port, env
        inst.phase, inst.ready_since, inst.adopted = "starting", None, False
        log.info("started %s (pid %d, port %d, revision %s)", inst.id, process.pid, port, template.revision)
        what = "restarted" if inst.restarts else "started"
        self._event("Started", f"{what} instance {inst.id} (revision {template.revision})", instance=inst)
        self._dirty.set()

    async def _watch_readiness(self, inst: _Instance, probe: Probe, target: ProbeTarget) -> None:
        state = ProbeState(probe, passing=inst.ready)
        async for result in probe_results(probe, target, skip_initial_delay=inst.adopted):
            if not result.ok and not inst.ready:
                inst.not_ready = f"instance {inst.id} is not ready: {self._redact(inst, result.detail)}"
            if state.record(result.ok):
                if not state.passing and inst.ready:
                    self._event("Unhealthy", f"instance {inst.id} is not ready: readiness probe failed "
                                             f"{probe.failure_threshold} time(s) in a row "
                                             f"({self._redact(inst, result.detail)})",
                                "Warning", inst)
                self._set_ready(inst, bool(state.passing))

    def _set_ready(self, inst: _Instance, ready: bool) -> None:
        if inst.ready == ready or (ready and inst.phase == "terminating"):
            return
        inst.ready = ready
        if ready:
            now = time.monotonic()
            inst.ready_since, inst.failure, inst.not_ready, inst.crash_looping = now, None, None, False
            if self._template is not None and inst.revision == self._template.revision:
                self._last_progress = now
            self._event("Ready", f"instance {inst.id} is ready", instance=inst)
            self._note_completion()
        log.info("%s is %s", inst.id, "ready" if ready else "not ready")
        self._wake.set()
        self._dirty.set()

    def _remove(self, inst: _Instance, grace_s: float | None = None, why: str = "") -> None:
        """Withdraw and stop the instance in the background; it counts towards the total until its process is gone."""
        inst.phase, inst.ready, inst.stop_reason = "terminating", False, why
        task = asyncio.create_task(self._stop(inst, self._grace_of(inst) if grace_s is None else grace_s))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        self._dirty.set()

    async def _stop(self, inst: _Instance, grace_s: float) -> None:
        await _cancel(inst.task)
        await self._withdraw(inst)
        if inst.process is not None:
            self._event("Killing", f"stopping instance {inst.id}" + (f" ({inst.stop_reason})" if inst.stop_reason
                                                                      else "")
                        + (f": SIGTERM, SIGKILL after {grace_s:g}s" if grace_s > 0 else ": SIGKILL"), instance=inst)
            stopped = await inst.process.terminate(grace_s)
            self._report_stop(inst, stopped)
            log.info("stopped %s (exit code %s)", inst.id, stopped.exit_code)
        self._instances.pop(inst.id, None)
        if self._template is not None and inst.revision != self._template.revision:
            self._last_progress = time.monotonic()
        self._note_completion()
        self._wake.set()
        self._dirty.set()

    def _report_stop(self, inst: _Instance, stopped: Termination) -> None:
        self.terminations.append((inst.id, stopped))
        if stopped.clean:
            return
        parts = []
        if stopped.forced and stopped.grace_s > 0:
            parts.append(f"did not exit within its {stopped.grace_s:g}s graceful period: SIGKILL")
        if stopped.leftovers:
            parts.append(f"killed {len(stopped.leftovers)} leftover process(es) of its tree")
        if parts:
            self._event("Killed", f"instance {inst.id} " + "; ".join(parts), "Warning", inst)

    async def _withdraw(self, inst: _Instance) -> None:
        if self._on_withdraw is None:
            return
        try:
            await self._on_withdraw(inst.record(self.host))
        except Exception:
            log.exception("on_withdraw failed for %s; stopping it anyway", inst.id)

    # ---- notification ----------------------------------------------------------------------------------------------

    def _event(self, reason: str, message: str, type_: EventType = "Normal", instance: _Instance | None = None
               ) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(RuntimeEvent(reason, message, type_, instance.id if instance else None))
        except Exception:
            log.exception("recording event %s failed", reason)

    async def _notify_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._publish()

    async def _publish(self) -> None:
        """Call ``on_change`` when the status or the instances (ready set, pids, ports) differ from the last call."""
        status = self.status()
        snapshot = (status, tuple(self.instances()))
        if snapshot == self._published:
            return
        before = self._published[0].condition("Progressing") if self._published else None
        self._published = snapshot
        progressing = status.condition("Progressing")
        if progressing.status == "False" and (before is None or before.reason != progressing.reason):
            self._event("RolloutFailed", f"{progressing.reason}: {progressing.message}", "Warning")
        if self._on_change is None:
            return
        try:
            result = self._on_change(self)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_change failed")

    # ---- helpers ---------------------------------------------------------------------------------------------------

    def _log_path(self, instance_id: str) -> Path:
        return self._log_dir / f"{instance_id}.log"

    def _ordinal_of(self, instance_id: str) -> int:
        prefix, _, number = instance_id.rpartition("-")
        return int(number) if prefix == self.id_prefix and number.isdigit() else 0

    def _sessions(self) -> list[int]:
        return [i.process.pid for i in self._instances.values() if i.process is not None]

    def _redact(self, inst: _Instance, text: str) -> str:
        """A probe's output (an exec probe may print anything) with the instance's secret values masked."""
        template = inst.template or self._template
        return template.redact(text) if template is not None else text

    def _template_of(self, inst: _Instance) -> RoleTemplate:
        template = inst.template or self._template
        assert template is not None
        return template

    def _probes_of(self, inst: _Instance) -> Probes:
        return self._template_of(inst).probes

    def _grace_of(self, inst: _Instance) -> float:
        return self._template_of(inst).graceful_shutdown_s

    def _probe_target(self, inst: _Instance) -> ProbeTarget:
        template = self._template_of(inst)
        env = inst.env or template.instance_env(inst.id, inst.port, self._inherited)
        return ProbeTarget(self.host, inst.port, env, template.cwd)

    def _free_port(self) -> int:
        taken = {i.port for i in self._instances.values()}
        while (port := free_port(self.host)) in taken:
            pass
        return port

    def _exit_problem(self, inst: _Instance, code: int | None) -> str:
        if code is None:
            what = "exited"
        elif code < 0:
            what = f"was killed by {_signal_name(-code)}"
        else:
            what = f"exited with code {code}"
        when = " during start-up" if inst.ready_since is None and not inst.adopted else ""
        return f"instance {inst.id} {what}{when} (see log {inst.log_path})"


def _log_tail(path: Path, redact: Callable[[str], str], lines: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` lines the instance wrote (our own start markers left out), secrets masked."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - _LOG_TAIL_BYTES, 0))
            raw = f.read()
    except OSError:
        return ()
    text = redact(raw.decode(errors="replace"))
    kept = [line[:_LOG_LINE_CHARS] for line in text.splitlines() if line.strip() and not line.startswith(_LOG_HEADER)]
    return tuple(kept[-lines:])


async def _until_failing(probe: Probe, target: ProbeTarget, adopted: bool) -> ProbeResult:
    """Run a liveness probe until it fails ``failure_threshold`` times in a row; the last result."""
    state = ProbeState(probe, passing=True)
    async for result in probe_results(probe, target, skip_initial_delay=adopted):
        if state.record(result.ok):
            return result
    raise AssertionError("unreachable")


async def _cancel(task: asyncio.Future | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait({task})


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
