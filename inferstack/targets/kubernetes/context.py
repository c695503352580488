"""What every rendering step shares: the options resolved against the stack's `kubernetes:` block, the inventory,
the warnings collected so far, and the labels / metadata every object carries.

Labels: `app.kubernetes.io/{name,instance,component,managed-by}` and `inferstack.io/{service,deployment,role}` (the
selectors); display names (which may repeat and hold CJK) go to annotations `inferstack.io/{service,deployment}-name`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...spec import Deployment, Inventory, KubernetesOptions, Service, StackFile, default_inventory
from ...spec.kubernetes import GATEWAY_NAME_LABEL, GatewayRef
from .names import label_value

LABEL_PREFIX = "inferstack.io/"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server (1.22+)


class RenderError(ValueError):
    """The stack cannot be rendered: a reference is missing from the inventory, or two objects share a name."""


@dataclass(frozen=True)
class RenderOptions:
    """How to render. Fields left `None` come from the stack's `kubernetes:` options."""

    namespace: str | None = None
    gateway_name: str | None = None  # overrides `kubernetes.gateway.name` (the default Gateway)
    gateway_namespace: str | None = None
    gateway_api_version: str | None = None  # overrides `kubernetes.gateway_api_version`
    include_secrets: bool = False
    cluster_bootstrap: bool | None = None
    inventory: Inventory | None = None  # base inventory (default: default_inventory()); the stack's is merged in
    preset_registry: str = "ghcr.io"
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    keep_autoscaled_replicas: bool = False
    """Render `replicas` (the starting count) also where an autoscaler owns the count: for a tool that stops managing
    the field once the object exists (the Pulumi component sets `ignore_changes`), so turning autoscaling on never
    resets a running Deployment. Plain manifests leave it out: every `kubectl apply` would reset the count."""


@dataclass(frozen=True)
class ResolvedGateway:
    """A Gateway a route attaches to, and the pods that carry its traffic."""

    name: str
    namespace: str | None  # None: the stack's namespace
    data_plane_namespace: str
    data_plane_labels: dict[str, str]


@dataclass
class Context:
    namespace: str
    options: KubernetesOptions
    gateway_api_minor: int
    include_secrets: bool
    cluster_bootstrap: bool
    preset_registry: str
    prometheus_url: str
    keep_autoscaled_replicas: bool
    inventory: Inventory
    default_gateway: GatewayRef
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, stack: StackFile, options: RenderOptions | None) -> Context:
        o = options or RenderOptions()
        k = stack.kubernetes_options
        if o.gateway_api_version is not None:
            k = k.model_copy(update={"gateway_api_version": o.gateway_api_version})
        base = o.inventory if o.inventory is not None else default_inventory()
        gateway = k.gateway.model_copy(update={"name": o.gateway_name or k.gateway.name,
                                               "namespace": o.gateway_namespace or k.gateway.namespace})
        bootstrap = o.cluster_bootstrap if o.cluster_bootstrap is not None else k.cluster_bootstrap
        return cls(
            namespace=o.namespace or k.namespace, options=k, gateway_api_minor=k.gateway_api_minor,
            include_secrets=o.include_secrets, cluster_bootstrap=bootstrap,
            preset_registry=o.preset_registry.rstrip("/"), prometheus_url=o.prometheus_url,
            keep_autoscaled_replicas=o.keep_autoscaled_replicas, inventory=base.merged(stack.inventory),
            default_gateway=gateway,
        )

    def lookup(self, kind: str, name: str, what: str, where: str) -> Any:
        found = self.inventory.index(kind).get(name)
        if found is None:
            raise RenderError(f"{where}: {what} '{name}' is not in the inventory (validate the stack first)")
        return found

    def warn(self, where: str, message: str) -> None:
        if f"{where}: {message}" not in self.warnings:
            self.warnings.append(f"{where}: {message}")

    def gateway(self, svc: Service) -> ResolvedGateway:
        """The Gateway `svc`'s route attaches to (by network type) and where its data plane runs."""
        k = self.options
        chosen = k.gateways.private if svc.network_type == "private_gateway" else k.gateways.public
        ref = chosen or self.default_gateway
        plane = ref.data_plane
        labels = plane.pod_labels if plane.pod_labels is not None else {GATEWAY_NAME_LABEL: ref.name}
        return ResolvedGateway(ref.name, ref.namespace, plane.namespace or ref.namespace or self.namespace,
                               dict(sorted(labels.items())))

    def has_private_gateway(self) -> bool:
        return self.options.gateways.private is not None


def selector(svc: Service, dep: Deployment | None = None, role: str | None = None) -> dict[str, str]:
    labels = {f"{LABEL_PREFIX}service": label_value(svc.key or "")}
    if dep is not None:
        labels[f"{LABEL_PREFIX}deployment"] = label_value(dep.key or "")
    if role is not None:
        labels[f"{LABEL_PREFIX}role"] = label_value(role)
    return labels


def labels(svc: Service, instance: str, dep: Deployment | None = None, role: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": label_value(svc.key or ""), "app.kubernetes.io/instance": instance}
    if role is not None:
        out["app.kubernetes.io/component"] = label_value(role)
    out["app.kubernetes.io/managed-by"] = "inferstack"
    return {**out, **selector(svc, dep, role)}


def metadata(ctx: Context, name: str, svc: Service, dep: Deployment | None = None,
             role: str | None = None) -> dict[str, Any]:
    annotations = {f"{LABEL_PREFIX}service-name": svc.name}
    if dep is not None:
        annotations[f"{LABEL_PREFIX}deployment-name"] = dep.name
    return {"name": name, "namespace": ctx.namespace, "labels": labels(svc, name, dep, role),
            "annotations": annotations}


def peer(namespace: str, pod_labels: dict[str, str], own_namespace: str) -> dict[str, Any]:
    """A NetworkPolicy peer: pods with `pod_labels` in `namespace` (the namespace selector only when it is not the
    policy's own namespace, where a pod selector alone already means "this namespace")."""
    out: dict[str, Any] = {"podSelector": {"matchLabels": dict(pod_labels)} if pod_labels else {}}
    if namespace != own_namespace:
        out = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}, **out}
    return out
