"""The release manager: drives every progressive release of the embedded platform, step by step, on the gateway's own
per-instance metrics (`inferstack.spec.progressive` says what a release is; `release_gates.py` how a step is judged;
`release_status.py` how it shows).

Two kinds of run, one loop:

- `TrafficShift` — a service's weights move from those live at the gateway to the declared ones. The weights of the
  step reached are written to the traffic object's status (`live_weights`, with the `release` record) *before* they are
  routed, in one status write: the routing book routes a traffic object with a policy by `live_weights`, so the
  gateway only ever gets a whole step's weight set, from one snapshot, and a platform that dies at any point finds the
  weights the gateway has (or is about to get) in status.
- `CanaryRedeploy` — a deployment's new revision runs beside the old one (the role controller holds its rollout,
  `RoleController.set_desired(canary=...)`) and takes the step's share of the deployment's requests (the snapshot's
  `revision_weights`); the step of 100 promotes (the rolling update goes on); a failure rolls back (the new revision is
  torn down, the old keeps serving) or pauses.

A traffic shift routes its first step only once every deployment gaining traffic has rolled out the revision of
its current generation (an apply that changes a deployment and the weights toward it at once: the shift must judge the
new revision, never the old one on its way out); a rollout that fails first fails the release. A canary redeploy held
on such a deployment does not hold the shift back (the revision split is its own release).

A step's window opens when the gateway has acknowledged a snapshot routing the step (and, for a canary, a ready
new-revision instance); its totals are sampled (`GET /windows`) at the step's start and then every tick — a tenth of
the bake time, 50 ms to 1 s — and judged (`release_gates.judge`). Verdicts and readings go to status (readings at most
once a second while a step waits) and every step to the event log (`ReleaseStarted`, `ReleaseStep`,
`ReleaseSucceeded`, `ReleasePromoted`, `ReleaseRolledBack`, `ReleasePaused`, `ReleaseSuperseded`, `ReleaseResumed`).

**Restarts (decided).** A release survives a platform restart by its status: at start-up every release still
`Progressing` is taken up again at the step it had reached — the weights (or revision shares) of that step stay routed
(the gateway kept them, the status has them) — and that step's window starts again from zero once the gateway routes
it (event `ReleaseResumed`): the platform never trusts a window it did not watch whole, so no step is promoted on
metrics from before the restart, and none is skipped. A release that had rolled back or paused stays so. A gateway
restarted within a window (its counters start again) likewise restarts the window."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import ValidationError

from inferstack.spec import Deployment, Progressive, Traffic

from .gateway.process import GatewayUnavailable
from .objects import DEPLOYMENT, TRAFFIC, now
from .release_gates import Counts, Sample, Verdict, judge, window
from .release_status import (
    FAILED,
    PAUSED,
    PROGRESSING,
    ROLLED_BACK,
    SHARE_EPSILON,
    SUCCEEDED,
    SUPERSEDED,
    attempt_key,
    same_split,
    shares,
    where,
)
from .store import Store

log = logging.getLogger("inferstack.releases")

READINGS_EVERY_S = 1.0
HISTORY_KEPT = 32


def step_weights(start: Mapping[str, float], end: Mapping[str, float], percent: float) -> dict[str, float]:
    """The weights `percent` % of the way from `start` to `end` (both percent shares over the same keys)."""
    return {k: round(start.get(k, 0.0) + (end.get(k, 0.0) - start.get(k, 0.0)) * percent / 100, 4)
            for k in dict.fromkeys([*start, *end])}


def weights_text(weights: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {round(float(v), 2):g}" for k, v in weights.items())


class Run:
    """One release in flight: its persisted record (`state`, status.release) and the clock of its current step."""

    kind = ""

    def __init__(self, svc: str, key: str, state: dict[str, Any], policy: Progressive) -> None:
        self.svc, self.key, self.state, self.policy = svc, key, state, policy
        self.armed_at: float | None = None  # monotonic: when the gateway began routing the current step
        self.start: Sample | None = None
        self.baseline_p99: float | None = None  # the baseline's p99 of the latest window where it had requests
        self.readings_at = 0.0
        self.step_began = time.monotonic()
        self.resumed = False  # taken up again after a platform restart (said once)

    @property
    def obj(self) -> str:
        return f"{self.svc}/{self.key}"

    @property
    def step(self) -> int:
        return int(self.state.get("step") or 0)

    @property
    def percent(self) -> float:
        steps = self.state.get("steps") or [100]
        return float(steps[max(self.step, 1) - 1])

    @property
    def last_step(self) -> bool:
        return self.step >= len(self.state.get("steps") or [])

    def rearm(self) -> None:
        """The current step's window starts again (a new step, a restart, another gateway process)."""
        self.armed_at, self.start, self.step_began = None, None, time.monotonic()

    def matches(self, entry: Mapping[str, Any]) -> bool:
        """Whether an acknowledged snapshot's entry of the service routes the current step."""
        raise NotImplementedError

    def side_of(self, key: tuple[str, str, str]) -> str | None:
        raise NotImplementedError

    def targets(self) -> list[str]:
        raise NotImplementedError

    def has_baseline(self) -> bool:
        return True

    def enter_step(self, index: int, timestamp: str) -> None:
        self.state.update(step=index, step_started_at=timestamp, readings=[], reason="")
        self.rearm()


class TrafficShift(Run):
    """A service's weights moving from `from` to `to` (percent shares over the same deployment keys)."""

    kind = "traffic"

    def __init__(self, svc: str, state: dict[str, Any], policy: Progressive) -> None:
        super().__init__(svc, "traffic", state, policy)
        start, end = state.get("from") or {}, state.get("to") or {}
        keys = list(dict.fromkeys([*start, *end]))
        self.gaining = [k for k in keys if end.get(k, 0.0) > start.get(k, 0.0) + SHARE_EPSILON]
        self._losing = {k for k in keys if end.get(k, 0.0) < start.get(k, 0.0) - SHARE_EPSILON}

    def weights_at(self, index: int) -> dict[str, float]:
        steps = self.state["steps"]
        return step_weights(self.state["from"], self.state["to"], float(steps[index - 1]))

    def matches(self, entry: Mapping[str, Any]) -> bool:
        routed = (entry.get("traffic") or {}).get("weights") or {}
        return same_split(routed, self.state.get("weights") or {})

    def side_of(self, key: tuple[str, str, str]) -> str | None:
        if key[0] != self.svc:
            return None
        if key[1] in self.gaining:
            return key[1]
        return "baseline" if key[1] in self._losing else None

    def targets(self) -> list[str]:
        weights = self.state.get("weights") or {}
        return [k for k in self.gaining if float(weights.get(k, 0.0)) > 0]

    def has_baseline(self) -> bool:
        return bool(self._losing)


class CanaryRedeploy(Run):
    """A deployment's new revision `revision` taking a step share of its requests beside `stable_revision`."""

    kind = "redeploy"

    def __init__(self, svc: str, dep: str, state: dict[str, Any], policy: Progressive) -> None:
        super().__init__(svc, dep, state, policy)
        self.revisions: dict[str, str] = {}  # instance id → revision, of every instance seen during the release

    @property
    def revision(self) -> str:
        return str(self.state.get("revision") or "")

    @property
    def stable_revision(self) -> str:
        return str(self.state.get("stable_revision") or "")

    def revision_weights(self) -> dict[str, float]:
        share = float(self.state.get("share") or 0.0)
        return {self.revision: share, self.stable_revision: round(100.0 - share, 4)}

    def matches(self, entry: Mapping[str, Any]) -> bool:
        for dep in entry.get("deployments") or []:
            if dep.get("key") != self.key:
                continue
            routed = dep.get("revision_weights") or {}
            canaries = [i for i in dep.get("instances") or [] if i.get("revision") == self.revision]
            return bool(canaries) and same_split(routed, self.revision_weights())
        return False

    def side_of(self, key: tuple[str, str, str]) -> str | None:
        if key[0] != self.svc or key[1] != self.key:
            return None
        revision = self.revisions.get(key[2])
        if revision == self.revision:
            return f"revision {self.revision}"
        return "baseline" if revision == self.stable_revision else None

    def targets(self) -> list[str]:
        return [f"revision {self.revision}"]


Windows = Callable[[list[str]], Awaitable[Mapping[str, Any]]]
Rollouts = Callable[[str, str], tuple[str, str]]  # (service, deployment) → ("done" | "waiting" | "failed", why)
ROLLED_OUT, ROLLING_OUT, ROLLOUT_FAILED = "done", "waiting", "failed"


def _rolled_out(svc: str, dep: str) -> tuple[str, str]:
    return ROLLED_OUT, ""


class ReleaseManager:
    """Every release of the platform (see the module docstring). The reconciler calls `traffic_changed` and
    `canary_converged` as it converges, `acknowledged` after each snapshot the gateway took, and reads
    `revision_weights` when it builds one; the manager calls back `routing_changed(service)` when what must be routed
    changed, and `deployment_changed(service, deployment)` when a deployment's release record did."""

    def __init__(self, store: Store, *, windows: Windows, routing_changed: Callable[[str], None],
                 deployment_changed: Callable[[str, str], None], controllers: Callable[[str, str], Any],
                 rollouts: Rollouts = _rolled_out) -> None:
        self.store = store
        self._rollout = rollouts  # where a deployment's rollout of its current generation is
        self._windows = windows
        self._routing_changed = routing_changed
        self._deployment_changed = deployment_changed
        self._controller = controllers  # (service, deployment) → the entry role's RoleController, or None
        self.runs: dict[str, Run] = {}  # obj ("svc/traffic", "svc/dep") → run
        self._wake = asyncio.Event()

    # --- what the routing reads --------------------------------------------------------------------------------------

    def revision_weights(self, svc: str, dep: str) -> dict[str, float] | None:
        """A canary's split of a deployment's requests by revision, while one is held (progressing or paused)."""
        run = self.runs.get(f"{svc}/{dep}")
        if isinstance(run, CanaryRedeploy) and run.state.get("phase") in (PROGRESSING, PAUSED):
            return run.revision_weights()
        return None

    def load(self) -> None:
        """At start-up: take up the canaries the status records as held (their revision split is routed from the
        first snapshot on); traffic shifts are taken up as their services reconcile (their weights are in status)."""
        for svc, dep, row in self.store.scan(DEPLOYMENT):
            if isinstance(row, ValueError):
                continue
            release = row.status.get("release")
            if not isinstance(release, dict) or release.get("phase") not in (PROGRESSING, PAUSED):
                continue
            try:
                policy = Deployment.model_validate(row.spec).progressive
            except ValidationError:
                continue
            if policy is not None and release.get("kind") == "redeploy":
                self.runs[f"{svc}/{dep}"] = CanaryRedeploy(svc, dep, dict(release), policy)

    # --- traffic shifts ---------------------------------------------------------------------------------------------

    def traffic_changed(self, svc: str, deployment_keys: list[str], routed: Mapping[str, float] | None) -> None:
        """The service reconciled: start, take up, supersede or end its traffic shift. `routed`: the weights the
        gateway last acknowledged for it (what is live when status has no `live_weights` yet)."""
        row = self.store.get(TRAFFIC, svc, svc)
        obj = f"{svc}/traffic"
        if row is None:
            self.runs.pop(obj, None)
            return
        try:
            traffic = Traffic.model_validate(row.spec)
        except ValidationError:
            return  # the routing book keeps its last good routing and says why
        policy = traffic.progressive if traffic.strategy == "weighted" else None
        status = row.status
        release = status.get("release") if isinstance(status.get("release"), dict) else None
        if policy is None:
            self._end_traffic_policy(svc, row, release)
            return
        keys = list(dict.fromkeys([*deployment_keys, *traffic.weights]))
        live_raw = status.get("live_weights")
        live = live_raw if isinstance(live_raw, dict) else (routed if routed else None)
        attempt = attempt_key(row.generation, policy, int(status.get("release_retries") or 0))
        if release is not None and release.get("attempt") == attempt:
            run = self.runs.get(obj)
            if release.get("phase") == PROGRESSING and not isinstance(run, TrafficShift):
                run = self.runs[obj] = TrafficShift(svc, dict(release), policy)
                if not run.step:
                    self._event(run, "ReleaseResumed", "resumed after a platform restart: step 1 is routed once the "
                                                       "deployments gaining traffic have rolled out")
                else:
                    self._event(run, "ReleaseResumed", f"{where(release)} resumed after a platform restart: its "
                                                       f"window starts again once the gateway routes "
                                                       f"{weights_text(release.get('weights') or {})}")
                self._routing_changed(svc)  # a snapshot carrying the step opens its window
                self._wake.set()
            return
        if release is not None and release.get("phase") == PROGRESSING:
            self._event(TrafficShift(svc, dict(release), policy), "ReleaseSuperseded",
                        f"generation {row.generation} changed the traffic object: a new release starts from "
                        f"{weights_text(release.get('weights') or {})}")
        self.runs.pop(obj, None)
        desired = {k: float(v) for k, v in traffic.weights.items()}
        if live is None or same_split(live, desired):
            patch: dict[str, Any] = {"live_weights": desired}
            if release is not None and (release.get("phase") == PROGRESSING or release.get("phase") in FAILED):
                patch["release"] = {**release, "phase": SUPERSEDED, "finished_at": now(),
                                    "reason": f"generation {row.generation} declares the weights that are live: "
                                              f"nothing to shift"}
            if any(status.get(k) != v for k, v in patch.items()):
                self._write_traffic(svc, patch)
            return
        start, end = shares(live, keys), shares(desired, keys)
        state: dict[str, Any] = {
            "kind": "traffic", "attempt": attempt, "generation": row.generation, "phase": PROGRESSING,
            "steps": [float(s) for s in policy.steps], "step": 0, "from": start, "to": end, "weights": start,
            "started_at": now(), "history": [], "readings": [], "reason": "",
        }
        run = self.runs[obj] = TrafficShift(svc, state, policy)
        self._event(run, "ReleaseStarted", f"shifting {weights_text(start)} → {weights_text(end)} in steps of "
                                           f"{', '.join(f'{s:g}' for s in policy.steps)} %")
        self._first_step_when_rolled_out(run)

    def _first_step_when_rolled_out(self, run: TrafficShift) -> None:
        """Route step 1 once every deployment gaining traffic runs its current generation's revision; until then the
        weights stay where they were (step 0, `reason` says what is awaited). A failed rollout fails the release."""
        waiting = []
        for dep in run.gaining:
            state, why = self._rollout(run.svc, dep)
            if state == ROLLOUT_FAILED:
                self._failed(run, Verdict("fail", f"{dep}: its rollout failed before the shift began: {why}",
                                          "rollout"))
                return
            if state == ROLLING_OUT:
                waiting.append(f"{dep} ({why})" if why else dep)
        if not waiting:
            self._enter_traffic_step(run, 1)
            return
        reason = f"waiting for the rollout of {', '.join(waiting)} before step 1"
        at = time.monotonic()
        if run.readings_at == 0.0 or (reason != run.state.get("reason") and at - run.readings_at >= READINGS_EVERY_S):
            run.readings_at = at  # the first time at once: the routing must keep the weights live before the release
            run.state["reason"] = reason
            self._write_traffic(run.svc, {"release": dict(run.state), "live_weights": dict(run.state["weights"])})
        self._wake.set()

    def _end_traffic_policy(self, svc: str, row: Any, release: dict[str, Any] | None) -> None:
        """No policy (any more): the declared weights are routed as written."""
        run = self.runs.pop(f"{svc}/traffic", None)
        patch: dict[str, Any] = {}
        if row.status.get("live_weights") is not None:
            patch["live_weights"] = None
        if release is not None and release.get("phase") in (PROGRESSING, *FAILED):
            patch["release"] = {**release, "phase": SUPERSEDED, "finished_at": now(),
                                "reason": "the progressive policy was removed: the declared weights apply at once"}
            if run is not None:
                self._event(run, "ReleaseSuperseded", patch["release"]["reason"])
        if patch:
            self._write_traffic(svc, patch)

    def _enter_traffic_step(self, run: TrafficShift, index: int) -> None:
        run.enter_step(index, now())
        run.state["weights"] = run.weights_at(index)
        self._event(run, "ReleaseStep", f"{where(run.state)}: weights {weights_text(run.state['weights'])}")
        self._write_traffic(run.svc, {"release": dict(run.state), "live_weights": dict(run.state["weights"])})
        self._wake.set()

    def _write_traffic(self, svc: str, patch: dict[str, Any]) -> None:
        """One status write (`live_weights: None` = route the spec's weights), then a new snapshot."""
        self.store.write_status(TRAFFIC, svc, patch, parent=svc, request_id="releases", event=None)
        self._routing_changed(svc)

    # --- canary redeploys --------------------------------------------------------------------------------------------

    def canary_state(self, svc: str, dep: str) -> Mapping[str, Any] | None:
        run = self.runs.get(f"{svc}/{dep}")
        return run.state if isinstance(run, CanaryRedeploy) else None

    def start_canary(self, svc: str, dep: str, generation: int, attempt: list[int], policy: Progressive,
                     revision: str, stable_revision: str) -> dict[str, Any]:
        """A canary redeploy of `revision` beside `stable_revision` begins (the controller holds its rollout)."""
        obj = f"{svc}/{dep}"
        previous = self.runs.pop(obj, None)
        if isinstance(previous, CanaryRedeploy) and previous.state.get("phase") == PROGRESSING:
            self._event(previous, "ReleaseSuperseded", f"generation {generation} changed the deployment: a canary of "
                                                       f"revision {revision} starts instead")
        state: dict[str, Any] = {
            "kind": "redeploy", "attempt": attempt, "generation": generation, "phase": PROGRESSING,
            "steps": [float(s) for s in policy.steps], "step": 0, "revision": revision,
            "stable_revision": stable_revision, "share": 0.0, "started_at": now(), "history": [], "readings": [],
            "reason": "",
        }
        run = self.runs[obj] = CanaryRedeploy(svc, dep, state, policy)
        self._event(run, "ReleaseStarted", f"canary of revision {revision} beside revision {stable_revision} in steps "
                                           f"of {', '.join(f'{s:g}' for s in policy.steps)} % of its requests")
        self._enter_canary_step(run, 1, write=False)
        return dict(run.state)

    def resume_canary(self, svc: str, dep: str, release: Mapping[str, Any], policy: Progressive) -> None:
        """After a restart: the deployment's canary continues at the step it had reached."""
        obj = f"{svc}/{dep}"
        run = self.runs.get(obj)
        if isinstance(run, CanaryRedeploy) and run.state.get("attempt") == release.get("attempt") and \
                run.armed_at is not None:
            return
        if not isinstance(run, CanaryRedeploy) or run.state.get("attempt") != release.get("attempt"):
            run = self.runs[obj] = CanaryRedeploy(svc, dep, dict(release), policy)
        if release.get("phase") == PROGRESSING and not run.resumed:
            run.resumed = True
            self._event(run, "ReleaseResumed", f"{where(release)} resumed after a platform restart: its window starts "
                                               f"again once the gateway routes it")
            self._routing_changed(svc)  # a snapshot carrying the step opens its window
            self._wake.set()

    def forget(self, svc: str, dep: str | None = None) -> None:
        for obj in [o for o in self.runs if o.split("/", 1)[0] == svc and (dep is None or o == f"{svc}/{dep}")]:
            del self.runs[obj]

    def _enter_canary_step(self, run: CanaryRedeploy, index: int, write: bool = True) -> None:
        run.enter_step(index, now())
        run.state["share"] = run.percent
        self._event(run, "ReleaseStep", f"{where(run.state)}: revision {run.revision} takes {run.percent:g} % of the "
                                        f"deployment's requests")
        if write:
            self._write_deployment(run)
        self._routing_changed(run.svc)
        self._wake.set()

    def _write_deployment(self, run: CanaryRedeploy) -> None:
        self.store.write_status(DEPLOYMENT, run.key, {"release": dict(run.state)}, parent=run.svc,
                                request_id="releases", event=None)
        self._deployment_changed(run.svc, run.key)

    # --- the gateway acknowledged a snapshot -------------------------------------------------------------------------

    def acknowledged(self, snapshot: Mapping[str, Any]) -> None:
        """Open the window of every step the gateway now routes (never raises: publishing must not depend on it)."""
        try:
            self._arm(snapshot)
        except Exception:
            log.exception("opening release windows failed")

    def _arm(self, snapshot: Mapping[str, Any]) -> None:
        entries = {e.get("key"): e for e in snapshot.get("services") or []}
        at = time.monotonic()
        for run in self.runs.values():
            if run.armed_at is None and run.state.get("phase") == PROGRESSING and run.step > 0:
                entry = entries.get(run.svc)
                if entry is not None and run.matches(entry):
                    run.armed_at = at
                    self._wake.set()

    # --- the loop ----------------------------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        while True:
            active = [r for r in self.runs.values() if r.state.get("phase") == PROGRESSING]
            if not active:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self.tick()
            except Exception:  # a bug here must not stop every later release
                log.exception("advancing releases failed; trying again")
            interval = min(max(min(r.policy.bake_time_s / 10 for r in active), 0.05), 1.0)
            self._wake.clear()
            try:
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def tick(self) -> None:
        """Judge every armed step once (one read of the gateway's totals for all of them)."""
        active = [r for r in self.runs.values() if r.state.get("phase") == PROGRESSING]
        for run in active:
            if isinstance(run, TrafficShift) and not run.step:
                self._first_step_when_rolled_out(run)
            if isinstance(run, CanaryRedeploy):
                failure = self._canary_failure(run)
                if failure is not None:
                    self._failed(run, Verdict("fail", failure, "instances"))
        armed = [r for r in self.runs.values() if r.state.get("phase") == PROGRESSING and r.armed_at is not None]
        if not armed:
            return
        try:
            answer = await self._windows(sorted({r.svc for r in armed}))
        except GatewayUnavailable as exc:
            log.info("release windows not read: %s", exc)
            return
        sample = Sample.of(answer)
        at = time.monotonic()
        for run in armed:
            if self.runs.get(run.obj) is not run or run.state.get("phase") != PROGRESSING or run.armed_at is None:
                continue  # superseded (a newer change) or settled while the totals were read
            if isinstance(run, CanaryRedeploy):
                self._note_revisions(run)
            if run.start is None or run.start.source != sample.source:
                if run.start is not None:
                    log.warning("%s: the gateway restarted within %s: its window starts again", run.obj,
                                where(run.state))
                run.start, run.armed_at = sample, at
                continue
            self._judge(run, sample, at)

    def _judge(self, run: Run, sample: Sample, at: float) -> None:
        assert run.start is not None and run.armed_at is not None
        counts = window(run.start, sample, run.side_of)
        targets = {side: counts.get(side, Counts()) for side in run.targets()}
        baseline = counts.get("baseline", Counts()) if run.has_baseline() else None
        elapsed = at - run.armed_at
        policy = run.policy
        verdict = judge(policy, targets, baseline, baked=elapsed >= policy.bake_time_s,
                        timed_out=at - run.step_began >= policy.timeout_s(), baseline_p99_before=run.baseline_p99,
                        remaining_s=policy.bake_time_s - elapsed)
        if baseline is not None and baseline.requests and baseline.p99_ms is not None:
            run.baseline_p99 = baseline.p99_ms
        if verdict.outcome == "wait":
            if at - run.readings_at >= READINGS_EVERY_S:
                run.readings_at = at
                run.state.update(readings=list(verdict.readings), reason=verdict.reason)
                self._persist(run)
            return
        run.state["history"] = [*(run.state.get("history") or []), {
            "step": run.step, "percent": run.percent, "outcome": "passed" if verdict.outcome == "pass" else "failed",
            "reason": verdict.reason, "readings": list(verdict.readings), "at": now()}][-HISTORY_KEPT:]
        run.state["readings"] = list(verdict.readings)
        if verdict.outcome == "fail":
            self._failed(run, verdict)
        elif isinstance(run, TrafficShift):
            self._traffic_passed(run, verdict)
        elif isinstance(run, CanaryRedeploy):
            self._canary_passed(run, verdict)

    def _persist(self, run: Run) -> None:
        if isinstance(run, TrafficShift):
            self.store.write_status(TRAFFIC, run.svc, {"release": dict(run.state)}, parent=run.svc,
                                    request_id="releases", event=None)
            self._routing_changed(run.svc)
        elif isinstance(run, CanaryRedeploy):
            self._write_deployment(run)

    def _traffic_passed(self, run: TrafficShift, verdict: Verdict) -> None:
        if not run.last_step:
            self._event(run, "ReleaseStepPassed", f"{where(run.state)} passed: {verdict.reason}")
            self._enter_traffic_step(run, run.step + 1)
            return
        run.state.update(phase=SUCCEEDED, finished_at=now(), reason="")
        self._event(run, "ReleaseSucceeded", f"{where(run.state)} passed: {verdict.reason}; weights "
                                             f"{weights_text(run.state['to'])}")
        self._write_traffic(run.svc, {"release": dict(run.state), "live_weights": dict(run.state["to"])})
        self.runs.pop(run.obj, None)

    def _canary_passed(self, run: CanaryRedeploy, verdict: Verdict) -> None:
        steps = run.state.get("steps") or []
        if run.step < len(steps) and float(steps[run.step]) < 100:
            self._event(run, "ReleaseStepPassed", f"{where(run.state)} passed: {verdict.reason}")
            self._enter_canary_step(run, run.step + 1)
            return
        controller = self._controller(run.svc, run.key)
        if controller is not None:
            controller.promote()
        run.state.update(step=len(steps), share=100.0, phase=SUCCEEDED, finished_at=now(), reason="")
        self._event(run, "ReleasePromoted", f"revision {run.revision} passed every canary step ({verdict.reason}): "
                                            f"the rolling update replaces revision {run.stable_revision}")
        self._write_deployment(run)
        self._routing_changed(run.svc)
        self.runs.pop(run.obj, None)

    def _failed(self, run: Run, verdict: Verdict) -> None:
        rollback = run.policy.on_failure == "rollback"
        run.state.update(phase=ROLLED_BACK if rollback else PAUSED, finished_at=now(), reason=verdict.reason,
                         failed_gate=verdict.gate)
        if isinstance(run, TrafficShift):
            back = dict(run.state["from"]) if rollback else dict(run.state["weights"])
            if rollback:
                run.state["weights"] = back
            what = f"weights back to {weights_text(back)}" if rollback else \
                f"weights stay at {weights_text(back)} until the spec changes or a retry"
            self._event(run, "ReleaseRolledBack" if rollback else "ReleasePaused",
                        f"{where(run.state)} failed: {verdict.reason}; {what}", warning=True)
            self._write_traffic(run.svc, {"release": dict(run.state), "live_weights": back})
        elif isinstance(run, CanaryRedeploy):
            controller = self._controller(run.svc, run.key)
            if rollback:
                if controller is not None:
                    controller.roll_back()
                run.state["share"] = 0.0
                what = f"revision {run.revision} is torn down, revision {run.stable_revision} keeps serving"
            else:
                what = f"revision {run.revision} keeps {run.percent:g} % until the spec changes or a retry"
            self._event(run, "ReleaseRolledBack" if rollback else "ReleasePaused",
                        f"{where(run.state)} failed: {verdict.reason}; {what}", warning=True)
            self._write_deployment(run)
            self._routing_changed(run.svc)
        if rollback:
            self.runs.pop(run.obj, None)

    def _note_revisions(self, run: CanaryRedeploy) -> None:
        controller = self._controller(run.svc, run.key)
        if controller is not None:
            run.revisions.update({r.id: r.revision for r in controller.instances()})

    def _canary_failure(self, run: CanaryRedeploy) -> str | None:
        """Why a canary cannot go on whatever the metrics say: its new instances crash-loop or never turn ready."""
        controller = self._controller(run.svc, run.key)
        if controller is None:
            return None
        progressing = controller.status().condition("Progressing")
        if progressing.status == "False":
            return f"revision {run.revision}'s instances: {progressing.reason}: {progressing.message}"
        return None

    # --- events ------------------------------------------------------------------------------------------------------

    def _event(self, run: Run, reason: str, message: str, *, warning: bool = False) -> None:
        """A release event; its message names the attempt, so another attempt's events never fold into these."""
        kind, key = (TRAFFIC, run.svc) if isinstance(run, TrafficShift) else (DEPLOYMENT, run.key)
        attempt = run.state.get("attempt") or [run.state.get("generation"), 0, 0]
        retries = sum(int(a) for a in attempt[1:])
        message = f"release of generation {attempt[0]}" + (f" (retry {retries})" if retries else "") + f": {message}"
        try:
            self.store.record_event(kind, key, reason, message, parent=run.svc,
                                    type="Warning" if warning else "Normal", request_id="releases")
        except Exception:
            log.exception("recording release event %s failed", reason)
        log.info("%s: %s: %s", run.obj, reason, message)


__all__ = ["CanaryRedeploy", "ReleaseManager", "Run", "TrafficShift", "step_weights"]
