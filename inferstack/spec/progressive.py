"""Progressive delivery (a *release*): a weight change of a service's traffic, or a redeploy of one deployment, made
in steps that promote themselves while the gateway's metrics stay healthy and roll back on their own when not.

The policy is declared where the change is made:

- `traffic.progressive` — a **traffic shift**: when an apply changes the weights, the platform moves from the weights
  live at the gateway to the declared ones in `steps` (percent of the shift: from 100/0 to 0/100, step 10 routes
  90/10). Every step, the last included, bakes for `bake_time_s` and passes its gates before the next one.
- `deployments[].progressive` — a **canary redeploy**: a change that replaces the deployment's instances (image,
  command, env…) first starts new-revision instances beside the old ones (its rolling update's surge) and gives the new
  revision `steps`' share of *that deployment's* traffic (percent of its requests), each step baked and gated; the
  step of 100 is the promotion: the rolling update then replaces the old revision as usual.

Gates, judged over each step's window on the gateway's own per-deployment (per-revision) metrics, on the side that
gains traffic: the error rate (answers 5xx, the gateway's own 502/504 for it, and connections that failed) at most
`max_error_rate` percent; the p99 latency at most `max_p99_ms`, and at most `max_p99_ratio` times the baseline's (the
side losing traffic) over the same window. No gate passes before `min_requests` requests were seen in the step; a step
that has not seen them `step_timeout_s` after it began fails. An error rate already above its gate over
`min_requests` requests fails the step at once (errors do not improve by waiting); the other gates are read when the
bake time is over.

`on_failure: rollback` puts the weights (or the old revision) back where they were before the release; `pause` keeps
the step reached. Either way the declared spec stays as written — the release reports that what is live differs and
why — and applying the same spec again does not retry it: a change of the spec does, or `retry` (a counter: any new
value asks for a new attempt without another change)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from .findings import Finding
from .types import Integer, Model, Number, check, max_items

if TYPE_CHECKING:
    from .service import Deployment, Service

OnFailure = Literal["rollback", "pause"]

DEFAULT_STEPS = (10.0, 50.0, 100.0)
MAX_BAKE_S = 86400.0
STEP_TIMEOUT_FACTOR = 10
"""A step that sets no `step_timeout_s` may wait this many bake times for its minimum of requests."""

MAX_STEPS = 100
MAX_LATENCY_MS = 3_600_000
MAX_RATIO = 1000
MAX_COUNT = 1_000_000_000

# Numbers are finite and strict (types.Number / types.Integer: NaN, ±Infinity and 1e400 are `number.finite`).
StepPercent = Annotated[Number, check("progressive.step_range", lambda v: 0 < v <= 100,
                                      "must be a percentage greater than 0 and at most 100", exclusiveMinimum=0,
                                      maximum=100)]
BakeTime = Annotated[Number, check("progressive.bake_time_range", lambda v: 0 < v <= MAX_BAKE_S,
                                   f"must be more than 0 and at most {MAX_BAKE_S:g} seconds", exclusiveMinimum=0,
                                   maximum=MAX_BAKE_S)]
StepTimeout = Annotated[Number, check("progressive.step_timeout_range", lambda v: 0 < v <= 7 * MAX_BAKE_S,
                                      f"must be more than 0 and at most {7 * MAX_BAKE_S:g} seconds",
                                      exclusiveMinimum=0, maximum=7 * MAX_BAKE_S)]
ErrorRate = Annotated[Number, check("progressive.gate_range", lambda v: 0 <= v <= 100,
                                    "must be a percentage from 0 to 100", minimum=0, maximum=100)]
Latency = Annotated[Number, check("progressive.gate_range", lambda v: 0 < v <= MAX_LATENCY_MS,
                                  f"must be more than 0 and at most {MAX_LATENCY_MS} ms", exclusiveMinimum=0,
                                  maximum=MAX_LATENCY_MS)]
Ratio = Annotated[Number, check("progressive.gate_range", lambda v: 0 < v <= MAX_RATIO,
                                f"must be more than 0 and at most {MAX_RATIO}", exclusiveMinimum=0,
                                maximum=MAX_RATIO)]
MinRequests = Annotated[Integer, check("progressive.gate_range", lambda v: 1 <= v <= MAX_COUNT,
                                       f"must be from 1 to {MAX_COUNT}", minimum=1, maximum=MAX_COUNT)]
Retry = Annotated[Integer, check("progressive.retry_range", lambda v: 0 <= v <= MAX_COUNT,
                                 f"must be from 0 to {MAX_COUNT}", minimum=0, maximum=MAX_COUNT)]
Steps = Annotated[list[StepPercent], max_items(MAX_STEPS, "steps")]


class ReleaseGates(Model):
    """What a step must show before the release moves on (each gate left out is not checked)."""

    max_error_rate: ErrorRate | None = Field(1.0, description="Most failed requests allowed, in percent of the requests "
                                                          "of the side gaining traffic: answers 5xx (the gateway's own "
                                                          "502/504 included) and failed connections.",
                                         examples=[1])
    max_p99_ms: Latency | None = Field(None, description="Highest p99 latency allowed, in milliseconds.",
                                     examples=[500])
    max_p99_ratio: Ratio | None = Field(None, description="Highest p99 latency allowed relative to the baseline (the "
                                                          "side losing traffic) over the same window: 1.5 = at most "
                                                          "50 % slower.", examples=[1.5])
    min_requests: MinRequests = Field(20, description="Requests the side gaining traffic must answer in a step before any "
                                              "gate can pass.", examples=[100])

    def any(self) -> bool:
        return any(v is not None for v in (self.max_error_rate, self.max_p99_ms, self.max_p99_ratio))



class Progressive(Model):
    """A progressive release policy (see the module docstring): steps, bake time, gates, what a failure does."""

    steps: Steps = Field(default_factory=lambda: list(DEFAULT_STEPS),
                               description="Percentages of the change, strictly increasing, the last 100. Traffic: "
                                           "percent of the weight shift; a deployment: the new revision's percent of "
                                           "its requests (100: promote, the rolling update goes on).",
                               examples=[[5, 25, 50, 100]])
    bake_time_s: BakeTime = Field(60.0, description="Time each step runs before its gates are read, in seconds "
                                                 "(fractions allowed).", examples=[300])
    step_timeout_s: StepTimeout | None = Field(None, description="A step that has not seen `gates.min_requests` requests "
                                                           "this long after it began fails (default: "
                                                           f"{STEP_TIMEOUT_FACTOR} × bake_time_s).")
    gates: ReleaseGates = Field(default_factory=ReleaseGates, description="Gates every step must pass.")
    on_failure: OnFailure = Field("rollback", description="`rollback`: back to the weights (or revision) from before "
                                                          "the release; `pause`: stay at the step reached.")
    retry: Retry = Field(0, description="Any new value asks for a new attempt of a failed release without another "
                                      "change (applying the same spec again never retries).")

    def timeout_s(self) -> float:
        """How long a step may take to see its minimum of requests."""
        return self.step_timeout_s if self.step_timeout_s is not None else STEP_TIMEOUT_FACTOR * self.bake_time_s



def _finding(rule: str, path: str, value: object, message: str) -> Finding:
    from .validate import _finding as finding

    return finding(rule, path, value, message)


def policy_findings(policy: Progressive, path: str, *, redeploy: bool) -> Iterator[Finding]:
    """The policy's own cross-field rules (`redeploy`: a deployment's policy, whose step of 100 promotes)."""
    steps = policy.steps
    increasing = all(b > a for a, b in pairwise(steps))
    if not steps or not increasing or steps[-1] != 100 or (redeploy and len(steps) < 2):
        what = ("is empty" if not steps
                else "has no step below 100 (a canary needs at least one, e.g. [10, 100])" if redeploy and
                steps == [100] else "does not end at 100" if increasing else "does not increase strictly")
        yield _finding("progressive.steps_increasing", f"{path}.steps", list(steps),
                       f"steps {[_num(s) for s in steps]} {what}: give strictly increasing percentages ending at 100")
    if not policy.gates.any():
        yield _finding("progressive.gates_not_empty", f"{path}.gates", policy.gates.to_public(),
                       "no gate is set: give max_error_rate, max_p99_ms or max_p99_ratio (a release promotes itself "
                       "only on healthy metrics)")
    if policy.step_timeout_s is not None and policy.step_timeout_s < policy.bake_time_s:
        yield _finding("progressive.step_timeout_range", f"{path}.step_timeout_s", policy.step_timeout_s,
                       f"step_timeout_s {policy.step_timeout_s:g} is shorter than bake_time_s "
                       f"{policy.bake_time_s:g}: a step could never pass")


def traffic_policy_findings(svc: Service, path: str) -> Iterator[Finding]:
    """Rules of `traffic.progressive` (path: the traffic object's)."""
    policy = svc.traffic.progressive
    if policy is None:
        return
    if svc.traffic.strategy != "weighted":
        yield _finding("progressive.weighted_only", f"{path}.progressive", None,
                       f"a traffic shift moves weights, and strategy '{svc.traffic.strategy}' has none: use strategy "
                       f"'weighted', or put the policy on the deployments (canary redeploys)")
    yield from policy_findings(policy, f"{path}.progressive", redeploy=False)


def deployment_policy_findings(dep: Deployment, path: str) -> Iterator[Finding]:
    """Rules of `deployments[].progressive` (path: the deployment's)."""
    policy = dep.progressive
    if policy is None:
        return
    if dep.inference_mode == "multi_role" or dep.roles:
        yield _finding("progressive.standard_only", f"{path}.progressive", None,
                       "a canary redeploy is gated on the traffic of one role; a multi_role deployment's roles "
                       "redeploy together: progressive redeploys need inference_mode 'standard'")
    elif dep.rolling_update is not None and dep.rolling_update.max_surge <= 0:
        yield _finding("progressive.needs_surge", f"{path}.rolling_update.max_surge", dep.rolling_update.max_surge,
                       "a canary runs its new-revision instances beside the old ones, within the rolling update's "
                       "surge: set max_surge above 0")
    yield from policy_findings(policy, f"{path}.progressive", redeploy=True)


# --- production traffic: where the policy pack advises a policy --------------------------------------------------

PRODUCTION_NETWORK_TYPES = frozenset({"public_gateway", "clb"})


def takes_production_traffic(svc: Service) -> bool:
    """*Production traffic*, as the policy pack reads it: callers from outside the platform reach the service — its
    network type is `public_gateway` or `clb` (a `private_gateway` service serves only its VPC's allowed sources) —
    and it has more than one deployment, so that a change of weights, or a redeploy, moves live traffic between
    versions."""
    return svc.network_type in PRODUCTION_NETWORK_TYPES and len(svc.deployments) > 1


def advice_findings(services: Sequence[Service], paths: Sequence[str]) -> Iterator[Finding]:
    """`progressive.advised` for each production service (above) whose weight changes and redeploys are not gated: no
    `traffic.progressive`, and some deployment that takes traffic has no `progressive` of its own."""
    for svc, path in zip(services, paths):
        if not takes_production_traffic(svc) or svc.traffic.progressive is not None:
            continue
        t = svc.traffic
        ungated = [d.key for d in svc.deployments if d.progressive is None and d.key
                   and (t.strategy != "weighted" or t.weights.get(d.key, 0) > 0)]
        if not ungated:
            continue
        yield _finding("progressive.advised", f"{path}.traffic", None,
                       f"service '{svc.key or svc.name}' takes production traffic ({svc.network_type}) with "
                       f"{len(svc.deployments)} deployments, and weight changes and redeploys of "
                       f"{', '.join(map(str, ungated))} are applied at once: add `traffic.progressive` (weight "
                       f"shifts in gated steps) or `progressive` on those deployments (canary redeploys)")


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
