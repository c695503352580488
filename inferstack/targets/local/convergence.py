"""Waiting for the platform to act on a write: the generation observed, not Degraded and, when asked, Ready.

What the local target's Pulumi providers wait for after `create` and `update` (`inferstack:waitForReady`): the
platform's status is the truth, so a Degraded condition at the current generation fails at once with its reason, and a
timeout names the last conditions seen. Kept apart from the providers so it can be tested without Pulumi."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any


class ConvergenceError(RuntimeError):
    """The platform reports the object degraded, or it did not converge in time."""


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def _is_true(c: Mapping[str, Any] | None) -> bool:
    return c is not None and str(c.get("status")).lower() == "true"


def converged(obj: Mapping[str, Any], require_ready: bool) -> bool:
    """`observed_generation == generation`, not Degraded and, when asked, Ready."""
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observed_generation")
    if generation is not None and observed != generation:
        return False
    if _is_true(condition(obj, "Degraded")):
        return False
    return _is_true(condition(obj, "Ready")) if require_ready else True


def describe(obj: Mapping[str, Any]) -> str:
    """Conditions as a person reads them: `Ready=False (Pending: waiting for capacity)`."""
    parts = []
    for c in (obj.get("status") or {}).get("conditions") or []:
        why = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
        parts.append(f"{c.get('type')}={c.get('status')}" + (f" ({why})" if why else ""))
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observed_generation")
    if generation is not None and observed != generation:
        parts.append(f"observed generation {observed} of {generation}")
    return ", ".join(parts) or "no status yet"


def wait_converged(fetch: Callable[[], Mapping[str, Any]], what: str, *, timeout: float, require_ready: bool,
                   interval: float = 0.1, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> Mapping[str, Any]:
    """Poll `fetch` until the object converged; fail at once when the current generation is Degraded."""
    deadline = clock() + timeout
    while True:
        obj = fetch()
        generation = (obj.get("metadata") or {}).get("generation")
        observed = (obj.get("status") or {}).get("observed_generation")
        degraded = condition(obj, "Degraded")
        if _is_true(degraded) and (generation is None or observed == generation):
            raise ConvergenceError(f"{what} is degraded: {describe(obj)}")
        if converged(obj, require_ready):
            return obj
        if clock() >= deadline:
            wanted = "Ready" if require_ready else "observed"
            raise ConvergenceError(f"{what} was not {wanted} after {timeout:g}s: {describe(obj)}")
        sleep(min(interval, max(deadline - clock(), 0)))
        interval = min(interval * 1.5, 2.0)


def status_summary(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an object's status kept as a resource output: stable across polls, no counters."""
    ready = condition(obj, "Ready")
    out: dict[str, Any] = {"ready": _is_true(ready)}
    if ready is not None and ready.get("reason"):
        out["reason"] = ready["reason"]
    return out
