"""``RoleController``: converges one role of a deployment to N healthy instances of a template.

Kubernetes Deployment semantics on local processes: a new template revision rolls out within max surge / max
unavailable; a crashed or unhealthy instance is restarted in place with exponential backoff; a rollout that makes no
progress within the deadline is reported ``Degraded`` while the earlier revision keeps serving. One asyncio loop per
controller converges; one supervisor task per instance runs its process and probes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
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
from inferstack.platform.runtime.process import InstanceProcess, free_port
from inferstack.platform.runtime.status import Condition, InstanceRecord, Phase, RoleStatus
from inferstack.platform.runtime.template import INHERITED_ENV, RoleTemplate, RollingUpdate

log = logging.getLogger("inferstack.runtime")

OnWithdraw = Callable[[InstanceRecord], Awaitable[None]]
OnChange = Callable[["RoleController"], Awaitable[None] | None]
Admit = Callable[[str], bool]


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
        self.failure: str | None = None  # what ended its last process; kept until it is ready again
        self.not_ready: str | None = None  # the last failed readiness result while not ready
        self.task: asyncio.Task[None] | None = None

    def record(self, host: str) -> InstanceRecord:
        process = self.process
        return InstanceRecord(
            id=self.id, port=self.port, pid=process.pid if process else None,
            start_time=process.start_time if process else None, revision=self.revision, host=host,
            ready=self.ready, phase=self.phase, restarts=self.restarts, log_path=str(self.log_path))


class RoleController:
    """Keeps ``replicas`` instances of a ``RoleTemplate`` running and ready; rolls between template revisions.

    Instance ids are ``<id_prefix>-<n>`` with n increasing monotonically. Use from within a running event loop.
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
        on_withdraw: OnWithdraw | None = None,
        on_change: OnChange | None = None,
        inherit_env: Sequence[str] = INHERITED_ENV,
        admit: Admit | None = None,
    ) -> None:
        """`admit(instance_id)`: asked before a new instance starts (the capacity scheduler's grant); False leaves it
        unstarted until the controller is woken again (`wake`). Restarts in place are never asked: the instance
        keeps its slot."""
        self.id_prefix = id_prefix
        self.host = host
        self.progress_deadline_s = progress_deadline_s
        self.restart_backoff_base_s = restart_backoff_base_s
        self.restart_backoff_cap_s = restart_backoff_cap_s
        self.restart_backoff_reset_s = restart_backoff_reset_s
        self._log_dir = Path(log_dir)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._on_withdraw = on_withdraw
        self._on_change = on_change
        self._admit = admit
        self._inherited = {name: os.environ[name] for name in inherit_env if name in os.environ}
        self._template: RoleTemplate | None = None
        self._replicas = 0
        self._strategy = RollingUpdate()
        self._instances: dict[str, _Instance] = {}
        self._next_ordinal = 1
        self._spawned_any = False
        self._last_progress = time.monotonic()
        self._wake = asyncio.Event()
        self._dirty = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._notifier_task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False
        self._published: tuple[RoleStatus, tuple[InstanceRecord, ...]] | None = None

    # ---- desired state ---------------------------------------------------------------------------------------------

    def set_desired(self, template: RoleTemplate, replicas: int,
                    rolling_update: RollingUpdate | None = None) -> None:
        """Converge to ``replicas`` instances of ``template``. A new ``revision`` rolls out; the same revision with
        other values is used for instances started from now on (no rollout); a replica change alone just scales."""
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        if self._closed:
            raise RuntimeError("controller is shut down")
        previous = self._template
        if previous is None or previous.revision != template.revision or replicas != self._replicas:
            self._last_progress = time.monotonic()
        self._template, self._replicas = template, replicas
        self._strategy = rolling_update or RollingUpdate()
        for inst in self._instances.values():
            if inst.revision == template.revision:
                inst.template = template
            if inst.task is None and inst.phase != "terminating":  # adopted before a template was known
                inst.task = asyncio.create_task(self._supervise(inst))
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._converge_forever())
            self._notifier_task = asyncio.create_task(self._notify_forever())
        self._wake.set()

    def scale(self, replicas: int) -> None:
        """Converge to ``replicas`` instances of the current template (no rollout)."""
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        if replicas != self._replicas:
            self._last_progress = time.monotonic()
            self._replicas = replicas
        self._wake.set()

    def evict(self, instance_id: str) -> bool:
        """Withdraw and stop one instance (its graceful period), e.g. preempted by the capacity scheduler. Lower the
        replicas first (``scale``), or the controller starts another in its place. False if it is not running."""
        inst = self._instances.get(instance_id)
        if inst is None or inst.phase == "terminating" or self._closed:
            return False
        self._remove(inst)
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
            process = InstanceProcess.adopt(record.pid, record.start_time, log_path=log_path)
            if process is not None and any(i.process and i.process.pid == process.pid
                                           for i in self._instances.values()):
                process.release()  # the same process recorded twice: adopt it once
                process = None
            if process is None:
                log.info("not adopting %s: pid %d is gone or is another process now", record.id, record.pid)
                continue
            template = self._template if self._template and self._template.revision == record.revision else None
            inst = _Instance(record.id, ordinal, record.revision, template, log_path)
            inst.process, inst.port, inst.phase, inst.adopted = process, record.port, "running", True
            inst.ready, inst.restarts = record.ready, record.restarts
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
        template, replicas = self._template, self._replicas
        live = [i for i in self._instances.values() if i.phase != "terminating"]
        new = [i for i in live if template is not None and i.revision == template.revision]
        ready = sum(i.ready for i in live)
        updated_ready = sum(i.ready for i in new)
        total = len(self._instances)
        conditions: tuple[Condition, ...]
        if template is None:
            conditions = tuple(Condition(t, "False", "NotConfigured", "no template set yet")  # type: ignore[arg-type]
                               for t in ("Ready", "Progressing", "Degraded"))
            return RoleStatus(None, replicas, total, ready, 0, 0, conditions)
        _, unavailable = self._strategy.bounds(replicas)
        min_ready = max(replicas - unavailable, 0)
        counts = f"{ready}/{replicas} instances ready"
        ready_condition = (
            Condition("Ready", "True", "MinimumReplicasAvailable", f"{counts} (at least {min_ready} required)")
            if ready >= min_ready else
            Condition("Ready", "False", "MinimumReplicasUnavailable", f"{counts}, at least {min_ready} required"))
        progress = f"{updated_ready}/{replicas} instances of revision {template.revision} ready"
        old = len(live) - len(new)
        if self._is_complete():
            progressing = Condition("Progressing", "False", "Complete", progress)
            degraded = Condition("Degraded", "False", "AsExpected", progress)
        elif self._deadline_passed():
            message = (f"no progress for {self.progress_deadline_s:g}s ({progress}"
                       + (f", {old} of earlier revisions still serving" if old else "") + ")")
            problem = self._worst_problem(new) or self._worst_problem(live)
            if problem:
                message = f"{problem}; {message}"
            progressing = Condition("Progressing", "False", "ProgressDeadlineExceeded", message)
            degraded = Condition("Degraded", "True", "ProgressDeadlineExceeded", message)
        else:
            reason = "RollingUpdate" if old else ("ScalingDown" if len(new) > replicas else "ScalingUp")
            detail = progress + (f", {old} of earlier revisions left" if old else "")
            progressing = Condition("Progressing", "True", reason, detail)
            degraded = Condition("Degraded", "False", "AsExpected", detail)
        return RoleStatus(template.revision, replicas, total, ready, len(new), updated_ready,
                          (ready_condition, progressing, degraded))

    # ---- stopping --------------------------------------------------------------------------------------------------

    async def shutdown(self, graceful: bool = True) -> None:
        """Stop every instance (withdrawn first; SIGTERM and its graceful period, or SIGKILL at once) and the loops."""
        self._closed = True
        await _cancel(self._loop_task)
        for inst in list(self._instances.values()):
            if inst.phase != "terminating":
                self._remove(inst, grace_s=None if graceful else 0.0)
        while self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        await _cancel(self._notifier_task)
        await self._publish()

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
        surge, unavailable = self._strategy.bounds(replicas)
        live = [i for i in self._instances.values() if i.phase != "terminating"]
        new = [i for i in live if i.revision == template.revision]
        old = [i for i in live if i.revision != template.revision]
        # Terminating instances still count: the total of processes never exceeds replicas + surge.
        room = replicas + surge - len(self._instances)
        for _ in range(min(room, replicas - len(new))):
            if not self._start_instance(template):
                break
        excess = sorted(new, key=lambda i: (i.ready, -i.ordinal))[:max(len(new) - replicas, 0)]
        for inst in excess:  # scaled down: the not-ready go first, then the newest
            self._remove(inst)
        # Earlier revisions go as fast as availability allows: never fewer ready than replicas - max unavailable.
        ready = sum(i.ready for i in live if i not in excess)
        min_ready = replicas - unavailable
        for inst in sorted(old, key=lambda i: (i.ready, i.ordinal)):
            if not inst.ready:
                self._remove(inst)
            elif ready - 1 >= min_ready:
                self._remove(inst)
                ready -= 1

    def _is_complete(self) -> bool:
        template = self._template
        return template is not None and len(self._instances) == self._replicas and all(
            i.ready and i.revision == template.revision and i.phase != "terminating"
            for i in self._instances.values())

    def _deadline_passed(self) -> bool:
        return time.monotonic() - self._last_progress > self.progress_deadline_s

    def _seconds_to_deadline(self) -> float | None:
        if self._is_complete():
            return None
        remaining = self._last_progress + self.progress_deadline_s - time.monotonic()
        return remaining + 0.001 if remaining >= 0 else None

    @staticmethod
    def _worst_problem(instances: list[_Instance]) -> str | None:
        # A crash says more than "connection refused" from the readiness probe of the process started after it.
        troubled = [i for i in instances if not i.ready and (i.failure or i.not_ready)]
        newest = max(troubled, key=lambda i: i.ordinal, default=None)
        return (newest.failure or newest.not_ready) if newest else None

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
            try:
                problem = await self._run_once(inst)
            except Exception as exc:  # never leave an instance unsupervised: treat it as a failed run
                log.exception("supervising %s failed", inst.id)
                if inst.process is not None:
                    inst.process.kill()
                    await inst.process.wait()
                problem = f"instance {inst.id} failed: {exc!r}"
            finally:
                self._set_ready(inst, False)
            inst.failure = problem
            log.warning("%s", problem)
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
            self._dirty.set()
            log.info("restarting %s in %.3gs (failure %d in a row)", inst.id, delay, inst.failures_in_row)
            await asyncio.sleep(delay)
            inst.restarts += 1

    async def _run_once(self, inst: _Instance) -> str:
        """One life of the instance's process; returns what ended it, in words."""
        if inst.process is None:
            try:
                self._spawn_process(inst)
            except (OSError, ValueError) as exc:  # ValueError: e.g. a NUL byte in argv or env
                return f"instance {inst.id} could not be started: {exc}"
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
                    return self._exit_problem(inst, exited.result())
                ok, result = startup.result()
                if not ok:
                    await process.terminate(grace_s)
                    return (f"instance {inst.id} failed its startup probe {probes.startup.failure_threshold} time(s) "
                            f"in a row ({result.detail}) (see log {inst.log_path})")
            inst.phase = "running"
            self._dirty.set()
            watchers.append(asyncio.ensure_future(self._watch_readiness(inst, probes.readiness or DEFAULT_READINESS,
                                                                        target)))
            if probes.liveness is None:
                await exited
                return self._exit_problem(inst, exited.result())
            liveness = asyncio.ensure_future(_until_failing(probes.liveness, target, inst.adopted))
            watchers.append(liveness)
            await asyncio.wait({exited, liveness}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                return self._exit_problem(inst, exited.result())
            result = liveness.result()
            for watcher in watchers:  # readiness must not put it back into routing while it is being stopped
                watcher.cancel()
            self._set_ready(inst, False)
            await self._withdraw(inst)
            await process.terminate(grace_s)
            return (f"instance {inst.id} failed its liveness probe {probes.liveness.failure_threshold} time(s) "
                    f"in a row ({result.detail})")
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
            f.write(f"--- inferstack: starting {inst.id} (revision {template.revision}, restart {inst.restarts}) "
                    f"at {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ---\n".encode())
        process = InstanceProcess.spawn(template.instance_argv(env), env=env, cwd=template.cwd,
                                        log_path=inst.log_path)
        inst.process, inst.port, inst.env = process, port, env
        inst.phase, inst.ready_since, inst.adopted = "starting", None, False
        log.info("started %s (pid %d, port %d, revision %s)", inst.id, process.pid, port, template.revision)
        self._dirty.set()

    async def _watch_readiness(self, inst: _Instance, probe: Probe, target: ProbeTarget) -> None:
        state = ProbeState(probe, passing=inst.ready)
        async for result in probe_results(probe, target, skip_initial_delay=inst.adopted):
            if not result.ok and not inst.ready:
                inst.not_ready = f"instance {inst.id} is not ready: {result.detail}"
            if state.record(result.ok):
                self._set_ready(inst, bool(state.passing))

    def _set_ready(self, inst: _Instance, ready: bool) -> None:
        if inst.ready == ready or (ready and inst.phase == "terminating"):
            return
        inst.ready = ready
        if ready:
            now = time.monotonic()
            inst.ready_since, inst.failure, inst.not_ready = now, None, None
            if self._template is not None and inst.revision == self._template.revision:
                self._last_progress = now
        log.info("%s is %s", inst.id, "ready" if ready else "not ready")
        self._wake.set()
        self._dirty.set()

    def _remove(self, inst: _Instance, grace_s: float | None = None) -> None:
        """Withdraw and stop the instance in the background; it counts towards the total until its process is gone."""
        inst.phase, inst.ready = "terminating", False
        task = asyncio.create_task(self._stop(inst, self._grace_of(inst) if grace_s is None else grace_s))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        self._dirty.set()

    async def _stop(self, inst: _Instance, grace_s: float) -> None:
        await _cancel(inst.task)
        await self._withdraw(inst)
        if inst.process is not None:
            code = await inst.process.terminate(grace_s)
            log.info("stopped %s (exit code %s)", inst.id, code)
        self._instances.pop(inst.id, None)
        if self._template is not None and inst.revision != self._template.revision:
            self._last_progress = time.monotonic()
        self._wake.set()
        self._dirty.set()

    async def _withdraw(self, inst: _Instance) -> None:
        if self._on_withdraw is None:
            return
        try:
            await self._on_withdraw(inst.record(self.host))
        except Exception:
            log.exception("on_withdraw failed for %s; stopping it anyway", inst.id)

    # ---- notification ----------------------------------------------------------------------------------------------

    async def _notify_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._publish()

    async def _publish(self) -> None:
        """Call ``on_change`` when the status or the instances (ready set, pids, ports) differ from the last call."""
        snapshot = (self.status(), tuple(self.instances()))
        if snapshot == self._published:
            return
        self._published = snapshot
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
