"""What the platform offers: VPCs, resource groups, queues, compute specs, subnets, security groups, preset images."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from . import limits as L
from .types import (
    Capacity,
    Cidr,
    Cpu,
    Currency,
    Description,
    GpuCount,
    ImageCommand,
    ImageName,
    MemoryGib,
    Model,
    Port,
    Price,
    Ref,
    max_entries,
    max_items,
)

Billing = Literal["prepaid", "postpaid"]
GroupBilling = Literal["prepaid", "postpaid", "mixed"]


class Vpc(Model):
    """A private network (私有网络). A service and its deployments' subnets and security groups live in one."""

    name: Ref = Field(description="Name of the VPC, unique in the inventory.", examples=["vpc-main"])
    cidr: Cidr | None = Field(None, description="Address range of the VPC.", examples=["10.0.0.0/16"])
    description: Description | None = Field(None, description="Free text.")


class ResourceGroup(Model):
    """A pool of capacity (资源组); it holds queues. A service is bound to exactly one."""

    name: Ref = Field(description="Name of the resource group, unique in the inventory.", examples=["rg-main"])
    billing: GroupBilling = Field("mixed", description="Billing of the group's queues: `prepaid` or `postpaid` "
                                                       "holds only queues of that billing type; `mixed` (default) "
                                                       "holds both, so one service can use prepaid and "
                                                       "pay-as-you-go capacity.")
    description: Description | None = Field(None, description="Free text.")


class Queue(Model):
    """Where instances are scheduled (所属队列): one zone, one billing type, capacity per compute spec."""

    name: Ref = Field(description="Name of the queue, unique in the inventory.", examples=["q-prepaid-a"])
    resource_group: Ref = Field(description="Resource group holding this queue.")
    zone: Ref = Field(description="Availability zone of the queue; a deployment's subnet must be in it.",
                      examples=["zone-a"])
    billing: Billing = Field(description="`prepaid` (capacity held, stable base load) or `postpaid` "
                                         "(pay-as-you-go, elastic).")
    capacity: Annotated[dict[Ref, Capacity], max_entries(L.MAX_CAPACITY_ENTRIES, "compute specs per queue")] = Field(
        default_factory=dict, examples=[{"cpu-2c4g": 8}],
        description="Instances the queue holds, per compute spec name. A spec not listed is not offered by this queue.")
    lends_idle: bool = Field(False, description="Spare capacity may be borrowed by idle-resource deployments "
                                                "(支持空闲资源出借).")


class Machine(Model):
    """The machine a compute spec is cut from (for the NUMA rule)."""

    cpu: Cpu = Field(description="CPUs of the whole machine.")
    gpu: GpuCount = Field(0, description="GPUs of the whole machine.")


class Prices(Model):
    """Price per instance-hour, in `currency`."""

    prepaid: Price = Field(0.0, description="Price per hour of held prepaid capacity.")
    postpaid: Price = Field(0.0, description="Price per hour of a running pay-as-you-go instance.")
    currency: Currency = Field("USD", description="ISO 4217 code of the prices' currency; plans show cost in it.",
                               examples=["USD", "CNY"])


class ComputeSpec(Model):
    """A compute spec (计算规格): the size of one instance."""

    name: Ref = Field(description="Name of the spec, unique in the inventory.", examples=["gpu-a10-1"])
    cpu: Cpu = Field(description="CPUs per instance (fractions allowed).")
    memory_gib: MemoryGib = Field(description="Memory per instance in GiB.")
    gpu_type: Ref | None = Field(None, description="GPU model, when the spec has GPUs.", examples=["A10"])
    gpu_count: GpuCount = Field(0, description="GPUs per instance.")
    machine: Machine = Field(description="Size of the whole machine the spec is cut from.")
    price_per_hour: Prices = Field(default_factory=Prices, description="Prices per instance-hour.")

    def exceeds_half_machine(self) -> bool:
        """NUMA affinity has no policy past half the machine's CPUs or GPUs (domain.md)."""
        return self.gpu_count > self.machine.gpu / 2 or self.cpu > self.machine.cpu / 2


class Subnet(Model):
    """A subnet (子网): one VPC, one zone."""

    name: Ref = Field(description="Name of the subnet, unique in the inventory.")
    vpc: Ref = Field(description="VPC of the subnet.")
    zone: Ref = Field(description="Availability zone of the subnet.")
    cidr: Cidr | None = Field(None, description="Address range of the subnet.")


class IngressRule(Model):
    """One allowed inbound flow."""

    protocol: Literal["tcp", "udp", "all"] = Field("tcp", description="Protocol allowed.")
    from_port: Port = Field(description="First port of the range.")
    to_port: Port | None = Field(None, description="Last port of the range; defaults to from_port.")
    source: Cidr = Field(description="Source network allowed, e.g. 10.0.0.0/8 or 127.0.0.2/32.")

    @property
    def last_port(self) -> int:
        return self.to_port if self.to_port is not None else self.from_port

    def allows(self, port: int) -> bool:
        return self.protocol in ("tcp", "all") and self.from_port <= port <= self.last_port


class SecurityGroup(Model):
    """A security group (安全组): one VPC and its ingress rules."""

    name: Ref = Field(description="Name of the security group, unique in the inventory.")
    vpc: Ref = Field(description="VPC of the security group.")
    ingress: Annotated[list[IngressRule], max_items(L.MAX_INGRESS_RULES, "ingress rules")] = Field(
        default_factory=list, description="Allowed inbound flows.")

    def allows(self, port: int) -> bool:
        return any(rule.allows(port) for rule in self.ingress)


class PresetImage(Model):
    """A preset image (预置镜像) of the catalogue. Locally it maps to a runnable argv."""

    name: ImageName = Field(description="Image name as deployments reference it (an image reference: segments "
                                        "separated by '/', an optional ':tag').", examples=["inferstack/echo"])
    command: ImageCommand = Field(default_factory=list,
                                  description="argv that runs the image locally; `{python}` is replaced by the "
                                           "platform's Python interpreter. Empty: not runnable locally.")
    description: Description | None = Field(None, description="Free text.")


def _objects(what: str) -> Any:
    return max_items(L.MAX_INVENTORY_OBJECTS, what)


class Inventory(Model):
    """Everything services reference by name."""

    vpcs: Annotated[list[Vpc], _objects("VPCs")] = Field(default_factory=list, description="VPCs.")
    resource_groups: Annotated[list[ResourceGroup], _objects("resource groups")] = Field(
        default_factory=list, description="Resource groups.")
    queues: Annotated[list[Queue], _objects("queues")] = Field(
        default_factory=list, description="Queues of the resource groups.")
    compute_specs: Annotated[list[ComputeSpec], _objects("compute specs")] = Field(
        default_factory=list, description="Compute specs.")
    subnets: Annotated[list[Subnet], _objects("subnets")] = Field(default_factory=list, description="Subnets.")
    security_groups: Annotated[list[SecurityGroup], _objects("security groups")] = Field(
        default_factory=list, description="Security groups.")
    images: Annotated[list[PresetImage], _objects("preset images")] = Field(
        default_factory=list, description="Preset images (and local mappings of custom images).")

    KINDS: ClassVar[tuple[str, ...]] = ("vpcs", "resource_groups", "queues", "compute_specs", "subnets", "security_groups",
                              "images")

    def index(self, kind: str) -> dict[str, Model]:
        """Objects of one kind by name (the last wins on duplicates; duplicates are reported by validate)."""
        return {obj.name: obj for obj in getattr(self, kind)}

    def merged(self, other: Inventory) -> Inventory:
        """This inventory with `other`'s objects added or replacing those of the same kind and name."""
        data = {}
        for kind in self.KINDS:
            by_name = {o.name: o for o in getattr(self, kind)}
            by_name.update({o.name: o for o in getattr(other, kind)})
            data[kind] = list(by_name.values())
        return Inventory(**data)
