"""Autoscaling (自动扩缩容) as an `autoscaling/v2` HorizontalPodAutoscaler or a KEDA ScaledObject, with the bounds
the embedded platform's autoscaler uses (platform/autoscaler.py) wherever Kubernetes can express them.

- Metric rules only → an HPA; any schedule → one ScaledObject (cron triggers, plus the metric rules as triggers) and
  no HPA. Both are named like the Deployment they scale.
- **Bounds.** Locally each rule is clamped to its own min/max and the highest ask wins, so the count never goes below
  the *largest* rule minimum: that is `minReplicas` / `minReplicaCount`. The maximum is the largest maximum (a
  per-rule maximum cannot be expressed: warned when the rules' maxima differ). With schedules only, the count
  outside every window is the role's starting count (`replicas`, else 1): KEDA's `minReplicaCount`, since KEDA falls
  back to it when no cron window is active.
- **Windows.** A window's count (`replicas`, or `min` of `min`/`max`) is KEDA's cron `desiredReplicas`. KEDA takes
  the highest trigger, so with metric rules a window's `replicas` is only a minimum (locally it fixes the count), a
  window never goes below `minReplicaCount`, and one `maxReplicaCount` holds for all hours — each warned.
- **Scale-down** is stabilised over 30 s, as locally (`AutoscalerSettings.down_stabilisation_s`); scale-up at once;
  the 10 % tolerance is the HPA's default, as locally.
- **Metrics.** `cpu` → resource utilization. `qps`, `in_flight`, `latency_p99_ms`, `gpu` → per-pod series
  `inferstack_requests_per_second`, `inferstack_in_flight_requests`, `inferstack_latency_p99_ms`,
  `DCGM_FI_DEV_GPU_UTIL` with `namespace` and `pod` labels. The HPA reads them from the custom metrics API (e.g.
  prometheus-adapter); KEDA queries Prometheus at `prometheus_url`, selecting the role's pods by their
  `inferstack.io/*` labels through kube-state-metrics' `kube_pod_labels` (never by pod name: Kubernetes cuts pod
  names of long Deployment names, so a name pattern would miss or mix pods). What exports the `inferstack_*` series
  in a cluster is the model server's business (README, "Kubernetes: metrics"): warned where a rule needs one.
- **Switching HPA ↔ KEDA.** The ScaledObject names its HPA like ours and carries
  `scaledobject.keda.sh/transfer-hpa-ownership: "true"`: turning schedules on adopts the existing HPA (KEDA's webhook
  would otherwise reject the ScaledObject, the HPA already scaling the Deployment), so nothing is left behind. The
  other way round KEDA's HPA belongs to the ScaledObject: delete the ScaledObject first (the plan says so)."""

from __future__ import annotations

from typing import Any

from ...spec import Deployment, Role, Service
from ...spec.kubernetes import autoscaled
from .context import Context, metadata
from .names import label_value
from .units import cpu, decimal

# metric → (per-pod metric name, PromQL aggregation over pods, KEDA metricType)
POD_METRICS = {
    "qps": ("inferstack_requests_per_second", "sum", "AverageValue"),
    "in_flight": ("inferstack_in_flight_requests", "sum", "AverageValue"),
    "latency_p99_ms": ("inferstack_latency_p99_ms", "avg", "Value"),
    "gpu": ("DCGM_FI_DEV_GPU_UTIL", "avg", "Value"),
}
DOWN_STABILISATION_S = 30
"""The embedded platform's scale-down stabilisation window (platform/autoscaler.py AutoscalerSettings)."""
TRANSFER_HPA_ANNOTATION = "scaledobject.keda.sh/transfer-hpa-ownership"


def autoscaler(svc: Service, dep: Deployment, role: Role, role_label: str | None, name: str, ctx: Context,
               where: str) -> list[dict[str, Any]]:
    a = role.autoscaling
    if a is None or not autoscaled(a):
        return []
    pod_metrics = sorted({POD_METRICS[m.metric][0] for m in a.metrics if m.metric in POD_METRICS})
    if pod_metrics:
        ctx.warn(where, f"metric autoscaling reads the per-pod series {', '.join(pod_metrics)}: something in the "
                        f"cluster must export them (see the README, 'Kubernetes: metrics')")
    maxima = sorted({m.max for m in a.metrics})
    if len(maxima) > 1:
        ctx.warn(where, f"the metric rules' maxima differ ({', '.join(map(str, maxima))}): Kubernetes has one "
                        f"maximum for all rules, {max(maxima)}")
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    meta = metadata(ctx, name, svc, dep, role_label)
    behavior = {"scaleDown": {"stabilizationWindowSeconds": DOWN_STABILISATION_S}}
    if not a.schedules:
        return [{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta,
                 "spec": {"scaleTargetRef": target, "minReplicas": max(m.min for m in a.metrics),
                          "maxReplicas": max(maxima), "metrics": [_hpa_metric(m.metric, m.target)
                                                                   for m in a.metrics],
                          "behavior": behavior}}]
    return [_scaled_object(svc, dep, role, name, meta, target, behavior, ctx, where)]


def _hpa_metric(metric: str, target: float) -> dict[str, Any]:
    if metric == "cpu":
        return {"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": max(1, round(target))}}}
    return {"type": "Pods", "pods": {"metric": {"name": POD_METRICS[metric][0]},
                                     "target": {"type": "AverageValue", "averageValue": cpu(target)}}}


def _scaled_object(svc: Service, dep: Deployment, role: Role, name: str, meta: dict[str, Any],
                   target: dict[str, Any], behavior: dict[str, Any], ctx: Context, where: str) -> dict[str, Any]:
    a = role.autoscaling
    assert a is not None
    floor = max(m.min for m in a.metrics) if a.metrics else role.starting_replicas
    windows = [(s, s.replicas if s.replicas is not None else (s.min or 1)) for s in a.schedules]
    ceiling = max([floor, *(m.max for m in a.metrics), *(s.max or count for s, count in windows)])
    below = [f"{s.name or s.start} ({count})" for s, count in windows if count < floor]
    if below:
        ctx.warn(where, f"KEDA never scales below minReplicaCount {floor}: window(s) {', '.join(below)} keep "
                        f"{floor} instances (locally a window sets the count)")
    if a.metrics and any(s.replicas is not None for s, _ in windows):
        ctx.warn(where, "with metric rules a window's `replicas` is only a minimum in KEDA (it takes the highest "
                        "trigger); locally the window fixes the count")
    bounded = sorted({s.max for s, _ in windows if s.max is not None} | {m.max for m in a.metrics})
    if len(bounded) > 1:
        ctx.warn(where, f"KEDA has one maximum for all hours: {ceiling} (the windows' and metric rules' maxima "
                        f"{', '.join(map(str, bounded))} cannot differ by time)")
    triggers: list[dict[str, Any]] = [
        {"type": "cron", "metadata": {"timezone": s.timezone, "start": s.start, "end": s.end,
                                      "desiredReplicas": str(count)}} for s, count in windows]
    for m in a.metrics:
        if m.metric == "cpu":
            triggers.append({"type": "cpu", "metricType": "Utilization",
                             "metadata": {"value": str(max(1, round(m.target)))}})
            continue
        metric, aggregate, metric_type = POD_METRICS[m.metric]
        triggers.append({"type": "prometheus", "metricType": metric_type,
                         "metadata": {"serverAddress": ctx.prometheus_url,
                                      "query": pod_query(metric, aggregate, svc, dep, role, ctx.namespace),
                                      "threshold": decimal(m.target)}})
    meta = {**meta, "annotations": {**meta["annotations"], TRANSFER_HPA_ANNOTATION: "true"}}
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta,
            "spec": {"scaleTargetRef": target, "minReplicaCount": floor, "maxReplicaCount": ceiling,
                     "advanced": {"horizontalPodAutoscalerConfig": {"name": name, "behavior": behavior}},
                     "triggers": triggers}}


def pod_query(metric: str, aggregate: str, svc: Service, dep: Deployment, role: Role, namespace: str) -> str:
    """PromQL: `metric` over the role's pods, matched by their labels (kube-state-metrics `kube_pod_labels`, which
    exports `inferstack.io/service` as `label_inferstack_io_service`), never by pod name."""
    pods = (f'kube_pod_labels{{namespace="{namespace}",label_inferstack_io_service="{label_value(svc.key or "")}",'
            f'label_inferstack_io_deployment="{label_value(dep.key or "")}",'
            f'label_inferstack_io_role="{label_value(role.name)}"}}')
    return (f'{aggregate}({metric}{{namespace="{namespace}"}} * on(namespace, pod) group_left() '
            f'max by (namespace, pod) ({pods}))')
