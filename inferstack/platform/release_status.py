"""How a progressive release shows in status: the `release` record both kinds persist, and the conditions it sets.

A release is recorded in its object's status — the traffic object's for a traffic shift, the deployment's for a
canary redeploy — as `status.release`:

| field | meaning |
|---|---|
| `kind` | `traffic` or `redeploy` |
| `attempt` | `[generation, progressive.retry, retries asked]`: what this release is an attempt at; a write that changes the spec, a new `retry` value or a retry asked through the API starts another one, nothing else does |
| `generation` | the object's generation it releases |
| `phase` | `Progressing`, `Succeeded`, `RolledBack`, `Paused` or `Superseded` (a newer change took over, or the policy went) |
| `steps`, `step` | the policy's steps and the 1-based step reached (0 before the first) |
| `from`, `to`, `weights` | traffic: the weights live before, the declared ones, and those of the step reached |
| `revision`, `stable_revision`, `share` | redeploy: the new and the earlier revision, and the new one's percent of the deployment's requests |
| `readings` | the latest readings of the step under way (per side: requests, failures, error rate, p99, the baseline's p99) |
| `history` | each step judged: step, percent, outcome, why, readings |
| `reason` | why it failed (the gate and its reading), or what it waits for |
| `started_at`, `step_started_at`, `finished_at` | timestamps |

A traffic object with a policy also carries `status.live_weights`: the weights the gateway routes (the routing book
routes by them; absent without a policy, when the spec's weights are routed as written).

Conditions (only while the release is of the current generation):

| object | condition | status | reason |
|---|---|---|---|
| traffic / deployment | Progressing | True | ReleaseProgressing |
| traffic / deployment | Ready | False | ReleaseProgressing (message: step, what it waits for) |
| traffic / deployment | Progressing, Ready | False | ReleaseRolledBack / ReleasePaused (message: the gate that failed) |
| traffic / deployment | Degraded | True | ReleaseRolledBack / ReleasePaused |

so `inferstack apply` and the Pulumi providers, which wait for Ready and fail on Degraded, wait for the release's
outcome and fail with the gate that failed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inferstack.spec import Progressive

from .objects import condition, set_condition

PROGRESSING, SUCCEEDED, ROLLED_BACK, PAUSED, SUPERSEDED = "Progressing", "Succeeded", "RolledBack", "Paused", \
    "Superseded"
FAILED = (ROLLED_BACK, PAUSED)
REASONS = {PROGRESSING: "ReleaseProgressing", ROLLED_BACK: "ReleaseRolledBack", PAUSED: "ReleasePaused"}
RELEASE_REASONS = frozenset(REASONS.values())


SHARE_EPSILON = 0.01  # percentage points: weights closer than the spec's precision are equal


def shares(weights: Mapping[str, Any] | None, keys: list[str]) -> dict[str, float]:
    """Weights as percent shares over `keys` (absent = 0; nothing at all: 0 everywhere), as the gateway splits."""
    clean = {k: float(v) for k, v in (weights or {}).items()
             if k in keys and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0}
    total = sum(clean.values())
    return {k: (100 * clean.get(k, 0.0) / total if total > 0 else 0.0) for k in keys}


def same_split(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two weight sets split alike (shares within the spec's precision)."""
    keys = sorted(set(a) | set(b))
    sa, sb = shares(a, keys), shares(b, keys)
    return all(abs(sa[k] - sb[k]) < SHARE_EPSILON for k in keys)


def pending_shift(spec: Mapping[str, Any], status: Mapping[str, Any], generation: int) -> dict[str, Any] | None:
    """A traffic object whose declared weights differ from the live ones while no release of its generation has
    started yet (the moment between a write and the release manager's start): a release record saying so."""
    live = status.get("live_weights")
    if spec.get("progressive") is None or not isinstance(live, Mapping) or \
            current(status.get("release"), generation) is not None:
        return None
    if same_split(live, spec.get("weights") or {}):
        return None
    return {"kind": "traffic", "phase": PROGRESSING, "generation": generation, "steps": [], "step": 0,
            "reason": "the release of the new weights is about to start"}


def attempt_key(generation: int, policy: Progressive, retries: int) -> list[int]:
    """What a release is an attempt at (see the module docstring)."""
    return [int(generation), int(policy.retry), int(retries)]


def current(release: Mapping[str, Any] | None, generation: int) -> Mapping[str, Any] | None:
    """The release when it is of `generation` (an older one does not speak for the current spec)."""
    if isinstance(release, Mapping) and release.get("generation") == generation:
        return release
    return None


def where(release: Mapping[str, Any]) -> str:
    """`step 2 of 3 (50 %)`."""
    steps = release.get("steps") or []
    step = int(release.get("step") or 0)
    if not steps:
        return "its start"
    if step == 0:
        return f"its start (before step 1 of {len(steps)})"
    text = f"step {step} of {len(steps)}"
    if 0 < step <= len(steps):
        text += f" ({steps[step - 1]:g} %)"
    return text


def summary(release: Mapping[str, Any]) -> str:
    """One line: where the release is and why (the conditions' message)."""
    phase = release.get("phase")
    what = "traffic shift" if release.get("kind") == "traffic" else "canary redeploy"
    reason = release.get("reason") or ""
    if phase == PROGRESSING:
        text = f"{what} at {where(release)}"
        return f"{text}: {reason}" if reason else text
    verb = {ROLLED_BACK: "rolled back", PAUSED: "paused"}.get(str(phase), str(phase).lower())
    text = f"{what} {verb} at {where(release)}: {reason}"
    if release.get("kind") == "traffic" and phase in FAILED:
        live = release.get("weights") if phase == PAUSED else release.get("from")
        text += f"; live weights {_weights(live)}, declared {_weights(release.get('to'))}"
    elif phase == ROLLED_BACK:
        text += f"; revision {release.get('stable_revision')} serves, declared {release.get('revision')}"
    return text


def _weights(weights: Any) -> str:
    if not isinstance(weights, Mapping):
        return "?"
    return ", ".join(f"{k} {float(v):g}" for k, v in weights.items())


def release_conditions(conditions: list[dict[str, Any]], release: Mapping[str, Any] | None,
                       observed: int) -> list[dict[str, Any]]:
    """`conditions` with a release's Progressing, Ready and Degraded applied (see the module docstring); a
    Degraded a release set is cleared once no release of the current generation has failed."""
    phase = release.get("phase") if release is not None else None
    if phase in REASONS:
        reason, message = REASONS[str(phase)], summary(release)  # type: ignore[arg-type]
        failed = phase in FAILED
        for new in (condition("Ready", False, reason, message, observed),
                    condition("Progressing", not failed, reason, message, observed),
                    condition("Degraded", failed, reason if failed else "AsExpected", message if failed else "",
                              observed)):
            conditions = set_condition(conditions, new)
        return conditions
    degraded = next((c for c in conditions if c.get("type") == "Degraded"), None)
    if degraded is not None and degraded.get("reason") in RELEASE_REASONS:
        conditions = set_condition(conditions, condition("Degraded", False, "AsExpected", "", observed))
    return conditions
