"""The local target's platform objects as Pulumi resources: one `pulumi.dynamic.Resource` class per kind, each with
the provider of `providers.py`. Outputs are the inputs plus what the platform computed (`uid`, `status`, and a
service's `gateway_url`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pulumi
from pulumi import dynamic

from .providers import DeploymentProvider, InventoryProvider, PlatformProvider, ServiceProvider, TrafficProvider


class _PlatformResource(dynamic.Resource):
    """A platform object as a Pulumi resource; outputs are its inputs plus `uid` and `status`."""

    uid: pulumi.Output[str]
    status: pulumi.Output[dict]

    def __init__(self, provider: PlatformProvider, name: str, props: Mapping[str, Any],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(provider, name, {**props, "uid": None, "status": None}, opts)


class ServiceResource(_PlatformResource, module="inferstack", name="Service"):
    """`pulumi-python:dynamic/inferstack:Service` — a service's own fields (no deployments, no weights)."""

    gateway_url: pulumi.Output[str]

    def __init__(self, name: str, props: Mapping[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(ServiceProvider(), name, {**props, "gateway_url": None}, opts)


class DeploymentResource(_PlatformResource, module="inferstack", name="Deployment"):
    """`pulumi-python:dynamic/inferstack:Deployment` — `service_key` + one deployment's data (no weight)."""

    def __init__(self, name: str, props: Mapping[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(DeploymentProvider(), name, props, opts)


class TrafficResource(_PlatformResource, module="inferstack", name="Traffic"):
    """`pulumi-python:dynamic/inferstack:Traffic` — `service_key` + traffic data + the deployments it spans."""

    def __init__(self, name: str, props: Mapping[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(TrafficProvider(), name, props, opts)


class InventoryResource(_PlatformResource):
    """One inventory object the stack declares; the type token names its kind
    (`pulumi-python:dynamic/inferstack:Queue`, ...). Use `inventory_resource(kind, ...)`."""

    inventory: ClassVar[str]

    def __init__(self, name: str, props: Mapping[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(InventoryProvider(self.inventory), name, {"kind": self.inventory, **props}, opts)


def _inventory_resource(inventory: str, name: str) -> type[InventoryResource]:
    """`<Name>Resource` with type token `pulumi-python:dynamic/inferstack:<Name>`."""
    return type(f"{name}Resource", (InventoryResource,), {"inventory": inventory, "__module__": __name__,
                                                          "__doc__": f"A declared {inventory} object."},
                module="inferstack", name=name)


INVENTORY_RESOURCES: dict[str, type[InventoryResource]] = {
    kind: _inventory_resource(kind, name) for kind, name in (
        ("vpcs", "Vpc"), ("resource_groups", "ResourceGroup"), ("queues", "Queue"), ("compute_specs", "ComputeSpec"),
        ("subnets", "Subnet"), ("security_groups", "SecurityGroup"), ("images", "Image"))
}
"""The resource class of each inventory kind (field of `Inventory` → class)."""
