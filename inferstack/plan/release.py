"""What a plan says about progressive releases (`inferstack.spec.progressive`): how a change will be released, and
where what is live differs from what is declared because an earlier release failed or is still under way.

- A traffic change that moves weights of a service with `traffic.progressive` is a **traffic shift**: the plan
  names its steps from the weights live now (the platform's, else the old declared ones) to the new ones.
- A redeploy of a deployment with `progressive` is a **canary redeploy**: the plan names its steps and gates.
- A release that rolled back or paused leaves the declared spec as written and the live weights (or revision) as they
  were: the plan says so on every plan of that service — also an empty one — with the gate that failed, and that
  applying the same spec does not retry it (a change does, or `progressive.retry`, or `inferstack apply --retry-release`).
- On the kubernetes target a traffic shift between deployments has no Flagger equivalent: warned (a deployment's
  canary redeploy renders as a Flagger `Canary`).

Pure: the live release states come in `PlanContext.releases` (what the platform's status says)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inferstack.spec import Deployment, Progressive, Service, Traffic

from .model import Change, PlanContext

FAILED_PHASES = ("RolledBack", "Paused")
"""Release phases that leave what is live different from what is declared until a change or a retry."""
RETRY_HINT = ("applying the same spec does not retry it: change the spec, raise `progressive.retry`, or run "
              "`inferstack apply --retry-release`")


def num(value: float) -> str:
    """A percentage or duration as people write it: 10, 0.5, 33.33."""
    return f"{round(float(value), 2):g}"


def weights_text(weights: Mapping[str, float]) -> str:
    """`stable 90, canary 10` (deployments at 0 included, in the order given)."""
    return ", ".join(f"{k} {num(v)}" for k, v in weights.items()) or "no weights"


def gates_text(policy: Progressive) -> str:
    g = policy.gates
    parts = []
    if g.max_error_rate is not None:
        parts.append(f"error rate ≤ {num(g.max_error_rate)} %")
    if g.max_p99_ms is not None:
        parts.append(f"p99 ≤ {num(g.max_p99_ms)} ms")
    if g.max_p99_ratio is not None:
        parts.append(f"p99 ≤ {num(g.max_p99_ratio)} × the baseline's")
    return f"{', '.join(parts)}; at least {g.min_requests} request(s) per step"


def _policy_text(policy: Progressive, what: str) -> str:
    failure = "a failed gate rolls back" if policy.on_failure == "rollback" else "a failed gate pauses the release"
    return (f"{what} in steps of {', '.join(num(s) for s in policy.steps)} % (each baked {num(policy.bake_time_s)} s; "
            f"gates: {gates_text(policy)}); {failure}")


def shift_shares(weights: Mapping[str, float], keys: list[str]) -> dict[str, float]:
    """Weights as percent shares over `keys` (absent = 0), the way the gateway splits them."""
    return Traffic(weights={k: float(v) for k, v in weights.items() if k in keys}).normalised_weights(keys)


def traffic_release(change: Change, new: Service, live: Mapping[str, float] | None) -> None:
    """Note on a traffic change how its weights will move (a progressive traffic shift), when they do."""
    policy = new.traffic.progressive
    if policy is None or new.traffic.strategy != "weighted" or change.action == "delete":
        return
    if not any(p.path.startswith("weights") for p in change.properties) and live is None:
        return
    keys = new.deployment_keys()
    old = change.old.get("weights") if change.old else None
    before = shift_shares(live if live is not None else (old or {}), keys)
    after = shift_shares(new.traffic.weights, keys)
    if all(abs(before[k] - after[k]) < 0.01 for k in keys):
        return
    source = "live" if live is not None else "declared"
    change.release = _policy_text(policy, f"shifts from the {source} weights {weights_text(before)} to "
                                          f"{weights_text(after)}")


def redeploy_release(change: Change, dep: Deployment) -> None:
    """Note on a redeploying deployment change that it rolls out as a gated canary."""
    policy = dep.progressive
    if policy is None or not change.redeploy:
        return
    below = [s for s in policy.steps if s < 100]
    change.release = _policy_text(policy, "redeploys as a canary: new-revision instances take "
                                          f"{', '.join(num(s) for s in below)} % of its requests before the rolling "
                                          f"update goes on,") if below else None


def live_release_warnings(context: PlanContext, services: list[Service], changes: list[Change]) -> list[str]:
    """What each service's failed (or unfinished) releases leave live, from `context.releases`."""
    out: list[str] = []
    for svc in services:
        key = svc.key or ""
        for obj, state in sorted((k, v) for k, v in context.releases.items() if k.split("/", 1)[0] == key):
            changed = any(c.id == obj and c.action in ("update", "replace") for c in changes)
            text = release_state_text(obj, state)
            if text is None:
                continue
            if changed:
                text += "; this change starts a new release from what is live"
            elif state.get("phase") in FAILED_PHASES:
                text += f"; {RETRY_HINT}"
            out.append(text)
    return out


def release_state_text(obj: str, state: Mapping[str, Any]) -> str | None:
    """One line on a live release (None when it left nothing to say): `chat/traffic: the release of generation 4
    rolled back at step 1 of 3 (10 %): ...; live: stable 100, canary 0; declared: stable 0, canary 100`."""
    phase = state.get("phase")
    if phase not in (*FAILED_PHASES, "Progressing"):
        return None
    step, steps = state.get("step") or 0, state.get("steps") or []
    where = f"step {step} of {len(steps)}" + (f" ({num(steps[step - 1])} %)" if 0 < step <= len(steps) else "")
    verb = {"RolledBack": "rolled back at", "Paused": "paused at", "Progressing": "is at"}[str(phase)]
    text = f"{obj}: the release of generation {state.get('generation')} {verb} {where}"
    if state.get("reason"):
        text += f": {state['reason']}"
    if state.get("kind") == "traffic":
        live, declared = state.get("live_weights"), state.get("to")
        if isinstance(live, Mapping) and isinstance(declared, Mapping):
            text += f"; live weights {weights_text(live)}, declared {weights_text(declared)}"
    elif state.get("stable_revision"):
        text += (f"; live revision {state.get('stable_revision')}, declared {state.get('revision')}"
                 if phase in FAILED_PHASES else "")
    return text


def kubernetes_release_warnings(changes: list[Change], new_services: Mapping[str, Service]) -> None:
    """On the kubernetes target: a traffic shift between deployments has no Flagger equivalent."""
    for change in changes:
        svc = new_services.get(change.service or "")
        if svc is None or change.kind != "traffic" or change.action not in ("create", "update", "replace"):
            continue
        if svc.traffic.progressive is not None:
            change.warnings.append(
                f"{change.id}: traffic.progressive (a gated shift between deployments) has no Flagger equivalent: "
                f"a cluster applies the weights at once; gate redeploys with `progressive` on a deployment (a "
                f"Flagger Canary), or shift the weights by hand")
