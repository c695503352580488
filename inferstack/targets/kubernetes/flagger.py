"""A deployment's progressive policy (a canary redeploy) as a Flagger `Canary` on the Gateway API provider.

Locally the platform drives a canary redeploy itself (`inferstack/platform/releases.py`); in a cluster Flagger does:
it copies the Deployment to `<name>-primary` (which serves), scales the Deployment itself to 0, and on every change of
its pod template runs the new revision as the canary, shifting the requests of the HTTPRoute it manages (named
`<name>`, like the Deployment) by the analysis' step weights, then promotes or rolls back. Decisions:

- **Selection.** Flagger selects pods by a label it finds in the Deployment's selector (`app` by default) and makes
  `<value>-primary` of it: a canaried Deployment's pods get `app: <name>` in their labels and selector (unique per
  deployment). Adding or removing the policy therefore replaces the Deployment (its selector is immutable) — the plan
  warns.
- **Services.** Flagger owns the apex Service `<name>` (it selects the primary pods) and creates `<name>-primary` and
  `<name>-canary`: the render leaves out its own Service of that name. The apex carries the first call port
  (`service.port`), to the container port `http`.
- **Routes.** Flagger's HTTPRoute attaches to the service's Gateway and matches the direct calls of the deployment
  (`X-Inferstack-Deployment: <key>` on the service's path prefix, rewritten to `/`); when the deployment takes all of
  the service's weighted traffic it matches the service's path prefix too, and the service's own HTTPRoute leaves its
  default rule out (Flagger's route is then the default: Gateway API precedence picks the rules with header matches
  first, so direct calls and header rules of the service's route still win). Otherwise the split between deployments
  stays on the service's route and reaches only the primary pods: warned (a shift between deployments has no Flagger
  equivalent; `traffic.progressive` is warned by the plan and the route).
- **Analysis.** `stepWeights` are the steps below 100 (100 is the promotion), `maxWeight` the largest, `interval` the
  bake time in whole seconds, `threshold: 1` (the first failed check rolls back, as locally). The gates become
  Flagger's builtin metrics: `request-success-rate` ≥ 100 − max_error_rate and `request-duration` (p99, ms) ≤
  max_p99_ms, each over max(bake time, 60 s). With the Gateway API provider Flagger reads them from the pods'
  `http_request_duration_seconds` (its HttpObserver): the pods must export it, or the metrics be replaced by
  MetricTemplates of the Gateway implementation — warned. `max_p99_ratio`, `min_requests` and `on_failure: pause`
  have no Flagger field: warned, not rendered.
- **Autoscaling.** An HPA or ScaledObject of the deployment is the Canary's `autoscalerRef` (Flagger makes the
  primary's)."""

from __future__ import annotations

import math
from typing import Any

from ...spec import Deployment, Progressive, Service
from ...spec.kubernetes import autoscaled
from .context import Context, metadata
from .names import workload_name
from .networking import call_ports

FLAGGER_API = "flagger.app/v1beta1"
PROVIDER = "gatewayapi:v1"
SELECTOR_LABEL = "app"
"""The pod label Flagger selects on (its default `-selector-labels` starts with it)."""
DIRECT_CALL_HEADER = "X-Inferstack-Deployment"
MIN_METRIC_INTERVAL_S = 60


def canaried(dep: Deployment) -> bool:
    """The deployment's redeploys run as a Flagger canary (a progressive policy on a standard deployment)."""
    return dep.progressive is not None and not (dep.inference_mode == "multi_role" or dep.roles)


def takes_whole_split(svc: Service, dep: Deployment) -> bool:
    """The deployment gets every weighted request of its service (then Flagger's route is the service's default)."""
    t = svc.traffic
    if t.strategy != "weighted":
        return False
    weighted = [k for k in svc.deployment_keys() if t.weights.get(k, 0.0) > 0]
    return weighted == [dep.key]


def canary(svc: Service, dep: Deployment, ctx: Context, where: str) -> dict[str, Any]:
    """The Flagger Canary of a canaried deployment (see the module docstring)."""
    policy = dep.progressive
    assert policy is not None
    name = workload_name(svc.key or "", dep.key or "")
    prefix = f"{ctx.options.path_prefix}/{svc.key}"
    match: list[dict[str, Any]] = [{"uri": {"prefix": prefix}, "headers": {DIRECT_CALL_HEADER: {"exact": dep.key}}}]
    if takes_whole_split(svc, dep):
        match.append({"uri": {"prefix": prefix}})
    elif svc.traffic.strategy == "weighted" and svc.traffic.weights.get(dep.key or "", 0.0) > 0:
        ctx.warn(where, f"Flagger shifts only the requests of the HTTPRoute it manages ('{name}': this deployment's "
                        f"direct calls): the service's split sends its weighted share to the primary pods (Service "
                        f"'{name}'), so a redeploy is analysed on direct calls only; make it the only weighted "
                        f"deployment for a full canary")
    elif svc.traffic.strategy == "by_instance_count":
        ctx.warn(where, "by_instance_count: the service's instance-share Service sends requests to primary and canary "
                        "pods alike, by count; Flagger's route carries this deployment's direct calls only")
    ports = call_ports(svc)
    if len(ports) > 1 or dep.ports.call:
        ctx.warn(where, f"Flagger's apex Service '{name}' carries call port {ports[0]} only")
    gw = ctx.gateway(svc)
    gateway_ref: dict[str, Any] = {"name": gw.name}
    if gw.namespace:
        gateway_ref["namespace"] = gw.namespace
    spec: dict[str, Any] = {
        "provider": PROVIDER,
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
    }
    role = dep.entry_role()
    if role.autoscaling is not None and autoscaled(role.autoscaling):
        spec["autoscalerRef"] = ({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": name}
                                 if role.autoscaling.schedules else
                                 {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": name})
    spec["service"] = {"name": name, "port": ports[0], "targetPort": "http", "gatewayRefs": [gateway_ref],
                       "match": match, "rewrite": {"uri": "/", "type": "ReplacePrefixMatch"}}
    spec["analysis"] = analysis(policy, ctx, where)
    return {"apiVersion": FLAGGER_API, "kind": "Canary", "metadata": metadata(ctx, name, svc, dep), "spec": spec}


def analysis(policy: Progressive, ctx: Context, where: str) -> dict[str, Any]:
    """The Canary's analysis from the policy's steps and gates (what has no Flagger field is warned)."""
    interval = max(1, math.ceil(policy.bake_time_s))
    if interval != policy.bake_time_s:
        ctx.warn(where, f"bake_time_s {policy.bake_time_s:g} becomes Flagger's interval of {interval}s (whole "
                        f"seconds)")
    steps = [_number(s) for s in policy.steps if s < 100]
    window = f"{max(interval, MIN_METRIC_INTERVAL_S)}s"
    metrics: list[dict[str, Any]] = []
    gates = policy.gates
    if gates.max_error_rate is not None:
        metrics.append({"name": "request-success-rate", "interval": window,
                        "thresholdRange": {"min": _number(100 - gates.max_error_rate)}})
    if gates.max_p99_ms is not None:
        metrics.append({"name": "request-duration", "interval": window,
                        "thresholdRange": {"max": _number(gates.max_p99_ms)}})
    if metrics:
        ctx.warn(where, "Flagger's builtin request-success-rate and request-duration read the pods' "
                        "http_request_duration_seconds with the Gateway API provider: export it from the pods, or "
                        "replace them with MetricTemplates of your Gateway implementation")
    missing = [f for f, v in (("gates.max_p99_ratio", gates.max_p99_ratio),
                              ("gates.min_requests", gates.min_requests if "min_requests" in gates.model_fields_set
                               else None)) if v is not None]
    if policy.on_failure == "pause":
        missing.append("on_failure: pause (Flagger rolls back)")
    if missing:
        ctx.warn(where, f"no Flagger equivalent, not rendered: {', '.join(missing)}")
    return {"interval": f"{interval}s", "threshold": 1, "maxWeight": max(steps), "stepWeights": steps,
            "metrics": metrics}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(float(value), 4)
