"""Pulumi glue of the kubernetes target: rendered objects registered as typed pulumi-kubernetes resources.

`InferenceService` (in `inferstack/components.py`) calls this when the stack's target is `kubernetes`:

    from inferstack.targets.kubernetes.component import register_service
    children = register_service(service, stack, parent=self)

- The objects are exactly those of `render_service` (see `render.py`): one resource per object, typed
  (`apps.v1.Deployment`, `core.v1.Service`, `autoscaling.v2.HorizontalPodAutoscaler`, `policy.v1.PodDisruptionBudget`,
  `networking.v1.NetworkPolicy`, `core.v1.Secret`, `scheduling.v1.PriorityClass`) and `apiextensions.CustomResource`
  for the HTTPRoute and the KEDA ScaledObject (their CRDs must be installed in the cluster).
- Logical names are `<kind>-<object name>` (e.g. `deployment-chat-stable`): stable, derived from keys only, unique in a
  stack. Every resource gets `parent=parent` (provider and protect flow down from it) and `opts` merged in.
- Secrets: by default the Secret is rendered with the values and passed as a Pulumi secret (`stringData` encrypted in
  the state, never shown in previews). Pass `RenderOptions(include_secrets=False)` to leave it to the cluster's owner.
  A Deployment depends on the Secret it reads.
- Autoscaled Deployments: registered with `replicas` = the role's starting count and `ignore_changes=["spec.replicas"]`
  (`RenderOptions.keep_autoscaled_replicas`): a new Deployment starts at that count, and turning autoscaling on for a
  running one keeps its current count (Pulumi keeps the old input; under server-side apply it stops managing the
  field) until the HPA / KEDA owns it — where plain manifests would reset it to 1.
- Cluster-wide PriorityClasses are not per service (two services would register the same one):
  `register_cluster_objects(stack, parent)` registers them once per stack, and only with cluster bootstrap on.
- Render warnings go to the Pulumi log, on the parent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from ...spec import Service, StackFile
from .render import RenderOptions, cluster_objects, render_service

_SPEC_KINDS: dict[tuple[str, str], Callable[..., pulumi.CustomResource]] = {
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("v1", "Service"): k8s.core.v1.Service,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.autoscaling.v2.HorizontalPodAutoscaler,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
}
_CUSTOM_KINDS = {("gateway.networking.k8s.io/v1", "HTTPRoute"), ("keda.sh/v1alpha1", "ScaledObject")}


def logical_name(obj: dict[str, Any]) -> str:
    """`<kind>-<name>`: the Pulumi logical name of a rendered object."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}"


def register_service(service: Service, stack: StackFile, parent: pulumi.Resource,
                     options: RenderOptions | None = None,
                     opts: pulumi.ResourceOptions | None = None) -> list[pulumi.Resource]:
    """Register the Kubernetes objects of one service as children of `parent`; returns them in apply order."""
    result = render_service(service, stack, options or RenderOptions(include_secrets=True,
                                                                     keep_autoscaled_replicas=True))
    for warning in result.warnings:
        pulumi.log.warn(warning, resource=parent)
    return register_objects(result.objects, parent, opts)


def register_cluster_objects(stack: StackFile, parent: pulumi.Resource, options: RenderOptions | None = None,
                             opts: pulumi.ResourceOptions | None = None) -> list[pulumi.Resource]:
    """Register the stack's cluster-wide objects (PriorityClasses) once, as children of `parent` — only when
    cluster bootstrap is on (`options.cluster_bootstrap`, else the stack's `kubernetes.cluster_bootstrap`)."""
    return register_objects(cluster_objects(stack, options), parent, opts)


def register_objects(objects: list[dict[str, Any]], parent: pulumi.Resource,
                     opts: pulumi.ResourceOptions | None = None) -> list[pulumi.Resource]:
    """One typed pulumi-kubernetes resource per rendered object, each with `parent=parent`."""
    base = pulumi.ResourceOptions.merge(opts or pulumi.ResourceOptions(), pulumi.ResourceOptions(parent=parent))
    secrets: dict[str, pulumi.Resource] = {}
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in objects
              if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")}
    out: list[pulumi.Resource] = []
    for obj in objects:  # rendered in apply order: Secrets come before the Deployments that read them
        reads = [secrets[n] for n in _secret_refs(obj) if n in secrets]
        extra = pulumi.ResourceOptions(depends_on=reads)
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] in scaled:
            extra.ignore_changes = ["spec.replicas"]  # the autoscaler owns the count once the object exists
        resource = _resource(obj, pulumi.ResourceOptions.merge(base, extra))
        if obj["kind"] == "Secret":
            secrets[obj["metadata"]["name"]] = resource
        out.append(resource)
    return out


def _resource(obj: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    name = logical_name(obj)
    key = (obj["apiVersion"], obj["kind"])
    if key in _SPEC_KINDS:
        return _SPEC_KINDS[key](name, metadata=obj["metadata"], spec=obj["spec"], opts=opts)
    if key in _CUSTOM_KINDS:
        return k8s.apiextensions.CustomResource(name, api_version=obj["apiVersion"], kind=obj["kind"],
                                                metadata=obj["metadata"], spec=obj["spec"], opts=opts)
    if key == ("v1", "Secret"):
        return k8s.core.v1.Secret(name, metadata=obj["metadata"], type=obj.get("type"),
                                  string_data=pulumi.Output.secret(obj.get("stringData", {})), opts=opts)
    if key == ("scheduling.k8s.io/v1", "PriorityClass"):
        return k8s.scheduling.v1.PriorityClass(name, metadata=obj["metadata"], value=obj["value"],
                                               global_default=obj.get("globalDefault"),
                                               preemption_policy=obj.get("preemptionPolicy"),
                                               description=obj.get("description"), opts=opts)
    raise ValueError(f"no pulumi-kubernetes type for {obj['apiVersion']} {obj['kind']}")


def _secret_refs(obj: dict[str, Any]) -> list[str]:
    if obj["kind"] != "Deployment":
        return []
    names = []
    for container in obj["spec"]["template"]["spec"]["containers"]:
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] not in names:
                names.append(ref["name"])
    return names
