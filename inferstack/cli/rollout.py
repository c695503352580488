"""Following a rollout after `apply`: what the platform reports, shown as it changes, until Ready, Degraded or timeout.

On a terminal a live table shows each deployment; wherever the output goes, each change of a deployment's status —
generation, ready counts, restarts, instance phases, any condition's status, reason or message — and each change of an
instance is printed as one timestamped line, as it happens (so `inferstack apply … | cat` and CI logs show progress,
crash loops and their reasons while the command waits).

The lines are rendered generically from whatever the status carries: a condition type, an instance field or a role
count the platform adds later shows up without a change here. Only fields that move on their own without meaning a
state change (pids, ports, timestamps, log paths) are left out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .output import clock, console, err_console, on_terminal, table

if TYPE_CHECKING:
    from ..targets.local.client import PlatformClient

POLL_S = 0.05  # a status read per service every 50 ms: cheap, and apply returns soon after Ready
# Instance and role fields that change without meaning a state change, or that are shown otherwise.
_VOLATILE = frozenset({"pid", "port", "host", "start_time", "log_path", "tree", "cgroup", "finished_at", "log_tail",
                       "id", "revision", "instances",
                       "last_transition_time", "last_probe_time", "last_heartbeat_time", "started_at", "updated_at",
                       "created_at", "since", "time", "timestamp"})
_ROLE_COUNTS = ("desired", "ready", "total", "updated", "updated_ready", "replicas")
_GOOD = {"Ready": "True", "Available": "True", "Degraded": "False"}  # the healthy status of these condition types


class Outcome(str, Enum):
    READY = "ready"
    DEGRADED = "degraded"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"


@dataclass
class FollowResult:
    outcome: Outcome
    generations: dict[str, int] = field(default_factory=dict)
    """`service/deployment` (and `service/traffic`) -> the generation being rolled out, as last read."""
    problems: list[str] = field(default_factory=list)
    """`service/deployment: reason: message` of each deployment that is Degraded."""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.READY

    def written(self) -> str:
        """`the change was applied (generation 3)`; with several deployments, each one's generation."""
        gens = {k: v for k, v in self.generations.items() if not k.endswith("/traffic")} or self.generations
        if not gens:
            return "the change was applied"
        if len(gens) == 1:
            return f"the change was applied (generation {next(iter(gens.values()))})"
        return "the change was applied (" + ", ".join(f"{k} generation {v}" for k, v in gens.items()) + ")"


# --- reading what the status carries ---------------------------------------------------------------------------

def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in obj.get("status", {}).get("conditions") or [] if isinstance(c, dict)]


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in _conditions(obj) if c.get("type") == type_), {})


def observed(obj: dict[str, Any]) -> bool:
    return obj.get("status", {}).get("observed_generation") == obj.get("metadata", {}).get("generation")


def is_ready(obj: dict[str, Any]) -> bool:
    return observed(obj) and _condition(obj, "Ready").get("status") == "True"


def failure(obj: dict[str, Any]) -> str | None:
    """Why the rollout of the object's current generation has failed, or None: Degraded, or no progress by the
    deadline. A condition of an older generation does not count."""
    if not observed(obj):
        return None
    degraded = _condition(obj, "Degraded")
    if degraded.get("status") == "True":
        return f"{degraded.get('reason') or 'Degraded'}: {degraded.get('message') or ''}".rstrip(": ")
    progressing = _condition(obj, "Progressing")
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return f"ProgressDeadlineExceeded: {progressing.get('message') or ''}".rstrip(": ")
    return None


def release_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object's progressive release of its current generation (status `release`), or None."""
    release = obj.get("status", {}).get("release")
    generation = obj.get("metadata", {}).get("generation")
    return release if isinstance(release, dict) and release.get("generation") == generation else None


def release_line(obj: dict[str, Any]) -> str | None:
    """`release Progressing, step 2 of 3 (50 %): weights stable 50, canary 50` — what a release is doing."""
    release = release_of(obj)
    if release is None:
        return None
    steps = release.get("steps") or []
    step = int(release.get("step") or 0)
    text = f"release {release.get('phase')}, step {step} of {len(steps)}"
    if 0 < step <= len(steps):
        text += f" ({steps[step - 1]:g} %)"
    weights = release.get("weights")
    if isinstance(weights, dict):
        text += ": weights " + ", ".join(f"{k} {float(v):g}" for k, v in weights.items())
    elif release.get("share") is not None:
        text += f": revision {release.get('revision')} takes {float(release['share']):g} %"
    if release.get("reason"):
        text += f"; {_show(release['reason'])}"
    return text


def _scalars(record: dict[str, Any], skip: frozenset[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _VOLATILE and k not in skip
            and (v is None or isinstance(v, (str, int, float, bool)))}


def _show(value: Any) -> str:
    return " ".join(str(value).split())  # one line, whatever the value holds


def deployment_summary(dep: dict[str, Any]) -> str:
    """One line of everything a deployment's status says, generically (see the module docstring)."""
    meta, st = dep.get("metadata", {}), dep.get("status", {})
    parts = [f"generation {st.get('observed_generation', 0)}/{meta.get('generation', '?')}"]
    roles = st.get("roles") or {}
    for name, role in roles.items():
        if not isinstance(role, dict):
            continue
        label = "" if len(roles) == 1 else f"{name} "
        text = f"{label}{role.get('ready', 0)}/{role.get('desired', '?')} ready"
        if role.get("updated") is not None and role.get("updated") != role.get("desired"):
            text += f", {role['updated']} updated"
        for key, value in _scalars(role, (*_ROLE_COUNTS, "restarts")).items():
            if value not in (None, 0, False, ""):
                text += f", {key.replace('_', ' ')} {_show(value)}"
        instances = [i for i in role.get("instances") or [] if isinstance(i, dict)]
        restarts = role.get("restarts") if isinstance(role.get("restarts"), int) else \
            sum(i.get("restarts") or 0 for i in instances if isinstance(i.get("restarts"), int))
        if restarts:
            text += f", {restarts} restart{'s' if restarts != 1 else ''}"
        phases: dict[str, int] = {}
        for inst in instances:
            phase = inst.get("phase")
            if phase and phase != "running":
                phases[str(phase)] = phases.get(str(phase), 0) + 1
        text += "".join(f", {n} {phase}" for phase, n in phases.items())
        parts.append(text)
    conds = []
    for c in _conditions(dep):
        text = f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
        healthy = _GOOD.get(str(c.get("type")))
        if c.get("message") and healthy is not None and c.get("status") != healthy:
            text += f": {_show(c['message'])}"
        conds.append(text)
    if conds:
        parts.append(", ".join(conds))
    return "; ".join(parts)


def instance_states(dep: dict[str, Any]) -> dict[str, str]:
    """Instance id -> one line of its state (phase, ready, restarts, and whatever else it carries)."""
    out: dict[str, str] = {}
    for role in (dep.get("status", {}).get("roles") or {}).values():
        for inst in (role or {}).get("instances") or []:
            if not isinstance(inst, dict) or not inst.get("id"):
                continue
            fields = _scalars(inst)
            text = str(fields.pop("phase", "") or "")
            if fields.pop("ready", False):
                text += ", ready"
            restarts = fields.pop("restarts", 0)
            if restarts:
                text += f", {restarts} restart{'s' if restarts != 1 else ''}"
            message = fields.pop("message", None)
            for key, value in fields.items():
                if value not in (None, "", False):
                    text += f", {key.replace('_', ' ')} {_show(value)}"
            if message:
                text += f": {_show(message)}"
            out[str(inst["id"])] = text.lstrip(", ")
    return out


# --- following -------------------------------------------------------------------------------------------------

@dataclass
class _Seen:
    summaries: dict[str, str] = field(default_factory=dict)
    instances: dict[str, dict[str, str]] = field(default_factory=dict)


def _changes(key: str, dep: dict[str, Any], seen: _Seen, first: bool) -> Iterator[str]:
    """The progress lines of one deployment since the last read (none when nothing changed)."""
    summary = deployment_summary(dep)
    line = release_line(dep)
    if line:
        summary += f"; {line}"
    if seen.summaries.get(key) != summary:
        seen.summaries[key] = summary
        yield f"{key}: {summary}"
    states = instance_states(dep)
    before = seen.instances.get(key)
    seen.instances[key] = states
    if before is None and first:
        return  # what already ran when following began is in the summary line
    before = before or {}
    for iid, state in states.items():
        if before.get(iid) != state:
            yield f"{key} {iid}: {state}"
    for iid in before:
        if iid not in states:
            yield f"{key} {iid}: gone"


def _live_table(rows: list[tuple[str, dict[str, Any]]]) -> Any:
    out = table("Deployment", "Ready", "Generation", "State", title="Rollout")
    for key, dep in rows:
        st = dep.get("status", {})
        roles = st.get("roles") or {}
        ready = ", ".join(f"{'' if len(roles) == 1 else name + ' '}{r.get('ready', 0)}/{r.get('desired', '?')}"
                          for name, r in roles.items() if isinstance(r, dict)) or "-"
        problem = failure(dep)
        if is_ready(dep):
            state = Text("Ready", style="green")
        elif problem:
            state = Text(problem, style="red")
        else:
            state = Text(_condition(dep, "Progressing").get("reason") or "Pending", style="yellow")
        gen = f"{st.get('observed_generation', 0)}/{dep.get('metadata', {}).get('generation', '?')}"
        out.add_row(key, ready, gen, state)
    return out


@contextmanager
def _display(quiet: bool) -> Iterator[tuple[Console, Live | None]]:
    """Where progress lines go, and the live table on a terminal (None elsewhere)."""
    if quiet or not on_terminal():
        yield console, None
        return
    with Live(console=console, refresh_per_second=8, transient=False, redirect_stdout=False) as live:
        yield live.console, live


def follow(client: PlatformClient, services: list[str], timeout: float, quiet: bool = False) -> FollowResult:
    """Follow `services` until every deployment and traffic object is observed and Ready (READY), one is Degraded
    (DEGRADED), `timeout` seconds pass (TIMEOUT), or Ctrl-C (INTERRUPTED). `quiet`: no progress output (for
    `--format json`); failures are still said on stderr."""
    started = time.monotonic()
    deadline = started + timeout
    seen = _Seen()
    result = FollowResult(Outcome.TIMEOUT)
    first = True
    try:
        with _display(quiet) as (out, live):
            while True:
                rows: list[tuple[str, dict[str, Any]]] = []
                done = True
                for svc in services:
                    traffic = client.get_traffic(svc)
                    result.generations[f"{svc}/traffic"] = traffic["metadata"]["generation"]
                    # Ready, not only observed: a progressive traffic shift is observed at its first step
                    done = done and observed(client.get_service(svc)) and observed(traffic) and \
                        (is_ready(traffic) or not release_of(traffic))
                    problem = failure(traffic)
                    if problem:
                        result.problems.append(f"{svc}/traffic: {problem}")
                    line = release_line(traffic)
                    if line and not quiet and seen.summaries.get(f"{svc}/traffic") != line:
                        seen.summaries[f"{svc}/traffic"] = line
                        out.print(f"{clock()} {svc}/traffic: {line}", highlight=False, markup=False, soft_wrap=True)
                    for dep in client.list_deployments(svc):
                        key = f"{svc}/{dep['metadata']['key']}"
                        result.generations[key] = dep["metadata"]["generation"]
                        rows.append((key, dep))
                        done = done and is_ready(dep)
                        problem = failure(dep)
                        if problem:
                            result.problems.append(f"{key}: {problem}")
                for key, dep in rows:
                    for line in ([] if quiet else _changes(key, dep, seen, first)):
                        out.print(f"{clock()} {line}", highlight=False, markup=False, soft_wrap=True)
                first = False
                if live is not None:
                    live.update(_live_table(rows))
                if done:
                    result.outcome = Outcome.READY
                    if live is None and not quiet:
                        out.print(f"{clock()} Ready: {', '.join(k for k, _ in rows) or 'nothing to roll out'} "
                                  f"after {time.monotonic() - started:.1f}s", highlight=False, markup=False)
                    return result
                if result.problems:
                    result.outcome = Outcome.DEGRADED
                    return result
                if time.monotonic() > deadline:
                    return result
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        result.outcome = Outcome.INTERRUPTED
        return result


def say_outcome(result: FollowResult, services: list[str], timeout: float) -> None:
    """On stderr: why the wait ended without Ready, and that what was written stays written."""
    see = " or ".join(f"`inferstack status {s}`" for s in services) or "`inferstack status`"
    if result.outcome is Outcome.DEGRADED:
        for line in result.problems:
            err_console.print(Text.assemble(("degraded", "red"), f" {line}"), soft_wrap=True)
        err_console.print(f"{result.written()} but is not Ready — see {see}", highlight=False, markup=False,
                          soft_wrap=True)
    elif result.outcome is Outcome.TIMEOUT:
        err_console.print(Text.assemble(("timeout", "red"), f" not every deployment was Ready after {timeout:g}s; "
                                        f"{result.written()} and the rollout continues — see {see}"),
                          soft_wrap=True)
    elif result.outcome is Outcome.INTERRUPTED:
        err_console.print(f"stopped following; {result.written()} and the rollout continues — see {see}",
                          highlight=False, markup=False, soft_wrap=True)
