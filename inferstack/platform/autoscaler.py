"""The autoscaler (自动扩缩容) of the embedded platform: per deployment role with `autoscaling`, the instance count.

Every interval it reads the gateway's metrics and the instances' CPU time, decides each role's count and writes it to
the deployment's status as `roles[<role>].autoscaled` (the reconciler runs that many; the spec's replicas only start
the role), with the decision in `status.autoscaling[<role>]` (count, reason, pending). A changed count is a
`SuccessfulRescale` runtime event on the deployment (Kubernetes' HPA reason), a count held below what is wanted a
`ScalingLimited` warning. It writes status only, never spec.

The decision is the pure part below (no I/O, tested on its own):
- schedules: a window is open when its `start` cron fired more recently than its `end` cron (in its time zone);
  inside, `replicas` fixes the count and `min`/`max` bound the metric-based count; several open windows: the highest
  bounds win. Outside every window the metric rules' own bounds apply (no rules: the role's starting count);
- metric rules: desired = ceil(ready × observed / target) (Kubernetes HPA), unchanged within a 10 % tolerance band,
  each rule clamped to its own min/max; the highest rule wins. Only the entry role scales on metrics (traffic is
  measured at the gateway); `gpu` has no local source;
- scale-down stabilisation: a lower count only once it has been recommended for the whole window (the highest
  recommendation in the window wins); scale-up is immediate, and so is a bound (a window's count, a lowered max);
- capacity (domain.md): a role never grows past what its queue holds for its compute spec — prepaid capacity, or a
  pay-as-you-go queue's quota — beside the current counts of every role of equal or higher priority (lower ones it
  may preempt; the capacity scheduler decides at run time). Growth above the admitted count is best effort, the rest
  reported as Pending. Idle-resource roles are not capped here: they only ever get spare capacity.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from croniter import CroniterBadDateError, croniter
from prometheus_client.parser import text_string_to_metric_families

from inferstack.spec import Autoscaling, Deployment, MetricRule, Queue, Role, Schedule

from .store import Store

log = logging.getLogger("inferstack.autoscaler")

DEPLOYMENT = "deployment"
TOLERANCE = 0.1  # no change while observed / target lies within 1 ± this (Kubernetes' default)
TRAFFIC_METRICS = frozenset({"qps", "in_flight", "latency_p99_ms"})  # measured at the gateway
INTERVAL_ENV = "INFERSTACK_AUTOSCALE_INTERVAL_S"
STABILISATION_ENV = "INFERSTACK_AUTOSCALE_DOWN_STABILISATION_S"
_EPS = 1e-9  # float slack: 1.1 / 1 - 1 is 0.10000000000000009, 3 × (1 / 3) × 3 is 3.0000000000000004

Recommendation = tuple[float, int]  # (unix time in seconds, count recommended then)
Observations = Mapping[str, float | None]  # metric → observed value per ready instance (None: nothing to go by)


# --- schedules -----------------------------------------------------------------------------------------------------

def last_fire(cron: str, timezone: str, now: datetime) -> datetime | None:
    """When `cron` last fired at or before `now` (aware), read in `timezone`; None if it never fires."""
    local = now.astimezone(ZoneInfo(timezone))
    try:
        # croniter's get_prev is strictly before its start; a microsecond later makes `now` itself count.
        return croniter(cron, local + timedelta(microseconds=1)).get_prev(datetime)
    except CroniterBadDateError:
        return None


def window_open(schedule: Schedule, now: datetime) -> bool:
    """The window is open when its start fired more recently than its end (a tie is closed)."""
    started = last_fire(schedule.start, schedule.timezone, now)
    ended = last_fire(schedule.end, schedule.timezone, now)
    return started is not None and (ended is None or started > ended)


def schedule_label(schedule: Schedule) -> str:
    return f"'{schedule.name}'" if schedule.name else f"'{schedule.start}'..'{schedule.end}' ({schedule.timezone})"


@dataclass(frozen=True)
class ScaleBounds:
    """The hard bounds of a role's count right now and where they come from."""

    low: int
    high: int
    source: str
    window: bool  # inside a schedule window: its bounds replace the metric rules' own


def scale_bounds(autoscaling: Autoscaling, now: datetime, starting: int) -> ScaleBounds:
    """Open windows' bounds (the highest win), else the metric rules' (floor..highest max), else the starting count."""
    open_windows = [s for s in autoscaling.schedules if window_open(s, now)]
    if open_windows:
        low = max(s.replicas if s.replicas is not None else (s.min or 1) for s in open_windows)
        high = max(s.replicas if s.replicas is not None else (s.max or s.min or 1) for s in open_windows)
        labels = ", ".join(schedule_label(s) for s in open_windows)
        return ScaleBounds(low, max(low, high), f"schedule {labels} open", window=True)
    if autoscaling.metrics:
        return ScaleBounds(autoscaling.floor, max(m.max for m in autoscaling.metrics), "metric rules", window=False)
    return ScaleBounds(starting, starting, "no schedule window open: starting replicas", window=False)


# --- metric rules --------------------------------------------------------------------------------------------------

def clamp(n: int, low: int, high: int) -> int:
    return max(low, min(high, n))


def hpa_count(ready: int, observed: float, target: float, tolerance: float = TOLERANCE) -> int | None:
    """ceil(ready × observed / target), the Kubernetes HPA formula; None (keep the count) within the tolerance band
    or without a ready instance to measure."""
    if ready <= 0 or target <= 0:
        return None
    ratio = observed / target
    if abs(ratio - 1.0) <= tolerance + _EPS:
        return None
    return max(0, math.ceil(ready * ratio - _EPS))


def metric_count(rules: Sequence[MetricRule], observations: Observations, *, ready: int, current: int,
                 bounds: ScaleBounds, tolerance: float = TOLERANCE) -> tuple[int | None, str]:
    """The highest count any rule with an observation asks for (outside windows clamped to its own min/max), and
    why; None when no rule has anything to go by."""
    asks: list[tuple[int, str]] = []
    for rule in rules:
        observed = observations.get(rule.metric)
        if observed is None:
            continue
        n = hpa_count(ready, observed, rule.target, tolerance)
        within = n is None
        n = current if n is None else n
        if not bounds.window:
            n = clamp(n, rule.min, rule.max)
        per = "" if rule.metric == "latency_p99_ms" else " per instance"  # a latency is not shared out
        why = (f"{rule.metric} {observed:.3g}{per} over {ready} ready, target {rule.target:g}"
               + (" (within tolerance)" if within else ""))
        asks.append((n, why))
    if not asks:
        return None, "no metric observed"
    return max(asks, key=lambda a: a[0])


def stabilise(current: int, recommended: int, history: Sequence[Recommendation], now: float,
              window_s: float) -> tuple[int, tuple[Recommendation, ...]]:
    """Scale up at once; scale down only to the highest count recommended over the whole last `window_s` (so never
    before the window has been observed). Returns the count and the history to keep."""
    records = [*history, (now, recommended)]
    start = now - window_s
    before = [r for r in records if r[0] <= start]
    since = before[-1][0] if before else -math.inf  # the newest record at or before the window proves it is covered
    kept = tuple(r for r in records if r[0] >= since)
    if recommended >= current:
        return recommended, kept
    if not before:
        return current, kept
    return min(current, max(n for _, n in kept)), kept


def capacity_limit(count: int, current: int, free: int | None) -> int:
    """At most `free` instances (None: no limit) — but capacity never takes away instances a role already has."""
    if free is None or count <= free:
        return count
    return max(min(current, count), free)


@dataclass(frozen=True)
class Decision:
    """A role's count for now, why, and the stabilisation history to keep."""

    count: int
    reason: str
    history: tuple[Recommendation, ...]


def decide(autoscaling: Autoscaling, *, now: datetime, current: int, ready: int, observations: Observations,
           history: Sequence[Recommendation], stabilisation_s: float, starting: int,
           tolerance: float = TOLERANCE) -> Decision:
    """The count of one role: bounds from schedules or rules, the metric rules' ask, scale-down stabilisation."""
    bounds = scale_bounds(autoscaling, now, starting)
    wanted, why = metric_count(autoscaling.metrics, observations, ready=ready, current=current, bounds=bounds,
                               tolerance=tolerance)
    if wanted is None:
        wanted = current
    recommended = clamp(wanted, bounds.low, bounds.high)
    count, history = stabilise(current, recommended, history, now.timestamp(), stabilisation_s)
    count = clamp(count, bounds.low, bounds.high)  # a bound lowered by a window or an edit applies at once
    reason = f"{why}; {recommended} recommended within {bounds.low}..{bounds.high} ({bounds.source})"
    if count > recommended:
        reason += f"; scale-down to {recommended} held for the {stabilisation_s:g} s stabilisation window"
    return Decision(count, reason, history)


# --- observations --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GatewayScrape:
    """The gateway's per-instance series that the rules read, at one time (monotonic seconds)."""

    at: float
    requests: dict[tuple[str, ...], float] = field(default_factory=dict)  # (svc, dep, instance, code) → total
    buckets: dict[tuple[str, ...], float] = field(default_factory=dict)  # (svc, dep, instance, le) → cumulative
    in_flight: dict[tuple[str, str], float] = field(default_factory=dict)  # (svc, dep) → now


def parse_gateway_metrics(text: str, at: float) -> GatewayScrape:
    """Read the gateway's Prometheus text (see `gateway/metrics.py`); the gateway's own answers ("-") are left out."""
    scrape = GatewayScrape(at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            svc, dep, instance = labels.get("service", ""), labels.get("deployment", "-"), labels.get("instance", "-")
            if dep == "-" or instance == "-":
                continue
            if sample.name == "inferstack_gateway_requests_total":
                scrape.requests[(svc, dep, instance, labels.get("code", ""))] = sample.value
            elif sample.name == "inferstack_gateway_request_duration_seconds_bucket":
                scrape.buckets[(svc, dep, instance, labels["le"])] = sample.value
            elif sample.name == "inferstack_gateway_in_flight":
                scrape.in_flight[(svc, dep)] = scrape.in_flight.get((svc, dep), 0.0) + sample.value
    return scrape


def _deltas(previous: Mapping[tuple[str, ...], float], current: Mapping[tuple[str, ...], float],
            svc: str, dep: str) -> dict[tuple[str, ...], float]:
    """Counter increases per series of a deployment; a new series counts from 0, a reset from its new value."""
    out = {}
    for key, value in current.items():
        if key[0] == svc and key[1] == dep:
            before = previous.get(key, 0.0)
            out[key] = value - before if value >= before else value
    return out


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative counts by upper bound; None without observations."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower  # past the last finite bucket: its bound is the best estimate
            return lower + (upper - lower) * (rank - below) / (count - below) if count > below else upper
        lower, below = upper, count
    return lower


def traffic_observations(previous: GatewayScrape | None, current: GatewayScrape, svc: str, dep: str,
                         ready: int) -> dict[str, float | None]:
    """in_flight and qps per ready instance, p99 latency in ms, of one deployment between two scrapes."""
    if ready <= 0:
        return {"in_flight": None, "qps": None, "latency_p99_ms": None}
    out: dict[str, float | None] = {"in_flight": current.in_flight.get((svc, dep), 0.0) / ready,
                                    "qps": None, "latency_p99_ms": None}
    elapsed = current.at - previous.at if previous is not None else 0.0
    if previous is None or elapsed <= 0:
        return out
    out["qps"] = sum(_deltas(previous.requests, current.requests, svc, dep).values()) / elapsed / ready
    summed: dict[float, float] = {}
    for key, delta in _deltas(previous.buckets, current.buckets, svc, dep).items():
        le = float(key[3])
        summed[le] = summed.get(le, 0.0) + delta
    p99 = histogram_quantile(0.99, summed)
    out["latency_p99_ms"] = None if p99 is None else p99 * 1000
    return out


CpuSample = dict[tuple[str, int], float]  # (instance id, pid) → CPU seconds used so far


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float | None:
    """User + system CPU time of a process from /proc/<pid>/stat; None when it is gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": field 3 (state) is index 0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_percent(previous: CpuSample | None, current: CpuSample, elapsed: float) -> float | None:
    """Average CPU use of the instances seen in both samples, in % of one core."""
    if previous is None or elapsed <= 0:
        return None
    both = [key for key in current if key in previous]
    if not both:
        return None
    used = sum(max(0.0, current[k] - previous[k]) for k in both)
    return used / elapsed * 100 / len(both)


def role_count(role: Role, status: Mapping[str, Any]) -> int:
    """The count a role runs at: the autoscaler's (in status) under autoscaling, else its replicas."""
    scaled = ((status.get("roles") or {}).get(role.name) or {}).get("autoscaled")
    if role.autoscaling is not None and isinstance(scaled, int) and scaled >= 1:
        return scaled
    return role.starting_replicas


# --- the loop ------------------------------------------------------------------------------------------------------

@dataclass
class AutoscalerSettings:
    """Knobs (tests use short ones): INFERSTACK_AUTOSCALE_INTERVAL_S, INFERSTACK_AUTOSCALE_DOWN_STABILISATION_S."""

    interval_s: float = 5.0
    down_stabilisation_s: float = 30.0
    tolerance: float = TOLERANCE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AutoscalerSettings:
        settings = cls()
        if environ.get(INTERVAL_ENV):
            settings.interval_s = float(environ[INTERVAL_ENV])
        if environ.get(STABILISATION_ENV):
            settings.down_stabilisation_s = float(environ[STABILISATION_ENV])
        return settings


RoleKey = tuple[str, str, str]  # (service, deployment, role)


class Autoscaler:
    """Runs beside the reconciler: decides every autoscaled role's count and hands it over through status."""

    def __init__(self, store: Store, reconciler: Any, settings: AutoscalerSettings | None = None, *,
                 clock: Callable[[], datetime] | None = None):
        self.store = store
        self.reconciler = reconciler
        self.settings = settings or AutoscalerSettings.from_env()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._history: dict[RoleKey, tuple[Recommendation, ...]] = {}
        self._scrape: GatewayScrape | None = None
        self._cpu: dict[RoleKey, tuple[float, CpuSample]] = {}
        self._noted: set[tuple[RoleKey, str]] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="autoscaler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("autoscaling pass failed; trying again next interval")
            await asyncio.sleep(self.settings.interval_s)

    async def tick(self) -> None:
        """One pass over every autoscaled role; the services whose counts moved are handed to the reconciler."""
        scrape = await self._scrape_gateway() if self._needs_traffic() else None
        changed = self._decide_all(scrape)
        if scrape is not None:
            self._scrape = scrape
        for service in sorted(changed):
            await self.reconciler.on_change(service)

    def _needs_traffic(self) -> bool:
        for row in self.store.list(DEPLOYMENT):
            autoscaling = Deployment.model_validate(row.spec).entry_role().autoscaling
            if autoscaling is not None and any(m.metric in TRAFFIC_METRICS for m in autoscaling.metrics):
                return True
        return False

    async def _scrape_gateway(self) -> GatewayScrape | None:
        gateway = getattr(self.reconciler, "gateway", None)
        if gateway is None:
            return None
        at = time.monotonic()
        try:
            text = await gateway.ametrics()
        except (httpx.HTTPError, RuntimeError) as exc:  # the gateway restarting: no traffic observations
            log.warning("reading the gateway's metrics failed (%s); traffic rules wait", exc)
            return None
        return parse_gateway_metrics(text, at)

    def _decide_all(self, scrape: GatewayScrape | None) -> set[str]:
        """Synchronous on purpose: the rows read and the status written are one state (no await in between)."""
        now = self._clock()
        rows = self.store.list(DEPLOYMENT)
        queues = {r.key: Queue.model_validate(r.spec) for r in self.store.list("queues")}
        held = _held_by_role(rows, queues)
        seen: set[RoleKey] = set()
        changed: set[str] = set()
        for row in rows:
            deployment = Deployment.model_validate(row.spec)
            entry = deployment.entry_role().name
            for role in deployment.effective_roles():
                key = (row.parent, row.key, role.name)
                role_status = (row.status.get("roles") or {}).get(role.name)
                if role.autoscaling is None or role_status is None:
                    continue  # not autoscaled, or not started by the reconciler yet
                seen.add(key)
                observations = self._observations(key, role, role.name == entry, role_status, scrape)
                current = role_count(role, row.status)
                decision = decide(role.autoscaling, now=now, current=current, ready=int(role_status.get("ready", 0)),
                                  observations=observations, history=self._history.get(key, ()),
                                  stabilisation_s=self.settings.down_stabilisation_s,
                                  starting=role.starting_replicas, tolerance=self.settings.tolerance)
                self._history[key] = decision.history
                count, pending = self._within_capacity(key, deployment, role, decision.count, current, held, queues)
                if self._record(row, role.name, current, count, decision.reason, pending, now):
                    changed.add(row.parent)
        for gone in set(self._history) - seen:
            self._history.pop(gone, None)
            self._cpu.pop(gone, None)
        return changed

    def _observations(self, key: RoleKey, role: Role, entry: bool, role_status: Mapping[str, Any],
                      scrape: GatewayScrape | None) -> dict[str, float | None]:
        assert role.autoscaling is not None
        metrics = {m.metric for m in role.autoscaling.metrics}
        if not metrics:
            return {}
        if not entry:
            self._note(key, "entry", "only the entry role scales on metrics (traffic is measured at the gateway); "
                                     "its metric rules keep the count")
            return {}
        if "gpu" in metrics:
            self._note(key, "gpu", "the gpu metric has no source on the local platform; that rule keeps the count")
        ready = int(role_status.get("ready", 0))
        observed: dict[str, float | None] = {}
        if metrics & TRAFFIC_METRICS and scrape is not None:
            observed.update(traffic_observations(self._scrape, scrape, key[0], key[1], ready))
        if "cpu" in metrics:
            observed["cpu"] = self._cpu_observation(key, role_status)
        return observed

    def _cpu_observation(self, key: RoleKey, role_status: Mapping[str, Any]) -> float | None:
        at = time.monotonic()
        sample: CpuSample = {}
        for instance in role_status.get("instances") or []:
            if instance.get("ready") and instance.get("pid") and instance.get("phase") != "terminating":
                used = cpu_seconds(int(instance["pid"]))
                if used is not None:
                    sample[(instance["id"], int(instance["pid"]))] = used
        previous = self._cpu.get(key)
        self._cpu[key] = (at, sample)
        return cpu_percent(previous[1], sample, at - previous[0]) if previous else None

    @staticmethod
    def _within_capacity(key: RoleKey, deployment: Deployment, role: Role, count: int, current: int,
                         held: dict[tuple[str, str], dict[RoleKey, tuple[int, int]]],
                         queues: Mapping[str, Queue]) -> tuple[int, str | None]:
        """The count capped by the role's queue beside the counts of the roles of equal or higher priority (`held`:
        count and priority per role, kept current)."""
        slot = _slot(deployment, role, queues)
        if slot is None:
            return count, None
        queue, spec = slot
        others = sum(n for k, (n, p) in held[slot].items() if k != key and p >= deployment.priority)
        capacity = queues[queue].capacity[spec]
        limited = capacity_limit(count, current, capacity - others)
        held[slot][key] = (limited, deployment.priority)
        if limited >= count:
            return count, None
        what = (f"prepaid queue '{queue}' holds {capacity}" if queues[queue].billing == "prepaid" else
                f"pay-as-you-go queue '{queue}' has a quota of {capacity}")
        return limited, (f"Pending: {count - limited} instance(s) wanted above {limited}: {what} of '{spec}' and "
                         f"{others} are counted for roles of equal or higher priority (best effort above the "
                         f"admitted count)")

    def _record(self, row: Any, role: str, current: int, count: int, reason: str, pending: str | None,
                now: datetime) -> bool:
        """Write the count to status when it, or the pending state, moves (or when none is written yet); an
        `autoscale` event only when the count moves. Returns whether it moved."""
        fresh = self.store.get(DEPLOYMENT, row.key, row.parent)  # an earlier role of this deployment may have written
        if fresh is None or role not in (fresh.status.get("roles") or {}):
            return False
        roles = dict(fresh.status["roles"])
        info = dict(fresh.status.get("autoscaling") or {})
        before = info.get(role) or {}
        moved = count != current
        if not moved and roles[role].get("autoscaled") == count and before.get("pending") == pending:
            return False
        reason = (f"{current} → {count}: " if moved else f"{count}: ") + reason + (f"; {pending}" if pending else "")
        roles[role] = {**roles[role], "autoscaled": count}
        info[role] = {"count": count, "reason": reason, "pending": pending,
                      "time": now.astimezone(UTC).isoformat(timespec="seconds")}
        self.store.write_status(DEPLOYMENT, row.key, {"roles": roles, "autoscaling": info}, parent=row.parent,
                                request_id="autoscaler", event=None)
        if moved:
            self.store.record_event(DEPLOYMENT, row.key, "SuccessfulRescale", f"role {role}: {reason}",
                                    parent=row.parent, request_id="autoscaler")
        if pending and pending != before.get("pending"):
            self.store.record_event(DEPLOYMENT, row.key, "ScalingLimited", f"role {role}: {pending}",
                                    parent=row.parent, type="Warning", request_id="autoscaler")
        if moved or pending != before.get("pending"):
            log.info("%s/%s/%s: %s", row.parent, row.key, role, reason)
        return moved

    def _note(self, key: RoleKey, topic: str, message: str) -> None:
        if (key, topic) not in self._noted:
            self._noted.add((key, topic))
            log.info("%s: %s", "/".join(key), message)


def _slot(deployment: Deployment, role: Role, queues: Mapping[str, Queue]) -> tuple[str, str] | None:
    """(queue, compute spec) whose capacity or quota the role counts against; None when nothing limits it."""
    queue = queues.get(deployment.queue)
    if queue is None or deployment.use_idle or role.compute_spec not in queue.capacity:
        return None
    return deployment.queue, role.compute_spec


def _held_by_role(rows: Iterable[Any], queues: Mapping[str, Queue]
                  ) -> dict[tuple[str, str], dict[RoleKey, tuple[int, int]]]:
    """Per (queue, spec): every role's current count and its deployment's priority."""
    held: dict[tuple[str, str], dict[RoleKey, tuple[int, int]]] = {}
    for row in rows:
        deployment = Deployment.model_validate(row.spec)
        for role in deployment.effective_roles():
            slot = _slot(deployment, role, queues)
            if slot is not None:
                held.setdefault(slot, {})[(row.parent, row.key, role.name)] = (role_count(role, row.status),
                                                                               deployment.priority)
    return held


__all__ = [
    "Autoscaler", "AutoscalerSettings", "Decision", "GatewayScrape", "ScaleBounds", "capacity_limit", "clamp",
    "cpu_percent", "cpu_seconds", "decide", "histogram_quantile", "hpa_count", "last_fire", "metric_count",
    "parse_gateway_metrics", "role_count", "scale_bounds", "stabilise", "traffic_observations", "window_open",
]
