"""The default inventory: what a new embedded platform offers, and what stack files may reference unchanged."""

from __future__ import annotations

from .inventory import Inventory

_MACHINE_CPU = {"cpu": 32}
_MACHINE_GPU = {"cpu": 64, "gpu": 8}

DEFAULT_INVENTORY_DATA: dict = {
    "vpcs": [{"name": "vpc-default", "cidr": "10.0.0.0/16", "description": "Default VPC"}],
    "resource_groups": [{"name": "rg-default", "description": "Default resource group"}],
    "queues": [
        {"name": "q-prepaid-a", "resource_group": "rg-default", "zone": "zone-a", "billing": "prepaid",
         "capacity": {"cpu-small": 16, "cpu-large": 4, "gpu-a10": 4, "gpu-a10x4": 2}, "lends_idle": True},
        {"name": "q-postpaid-a", "resource_group": "rg-default", "zone": "zone-a", "billing": "postpaid",
         "capacity": {"cpu-small": 64, "cpu-large": 16, "gpu-a10": 16, "gpu-a10x4": 4}},
        {"name": "q-prepaid-b", "resource_group": "rg-default", "zone": "zone-b", "billing": "prepaid",
         "capacity": {"cpu-small": 16, "cpu-large": 4, "gpu-a10": 4}},
        {"name": "q-postpaid-b", "resource_group": "rg-default", "zone": "zone-b", "billing": "postpaid",
         "capacity": {"cpu-small": 64, "cpu-large": 16, "gpu-a10": 16}},
    ],
    "compute_specs": [
        {"name": "cpu-small", "cpu": 1, "memory_gib": 2, "machine": _MACHINE_CPU,
         "price_per_hour": {"prepaid": 0.03, "postpaid": 0.05}},
        {"name": "cpu-large", "cpu": 8, "memory_gib": 32, "machine": _MACHINE_CPU,
         "price_per_hour": {"prepaid": 0.24, "postpaid": 0.40}},
        {"name": "gpu-a10", "cpu": 8, "memory_gib": 30, "gpu_type": "A10", "gpu_count": 1, "machine": _MACHINE_GPU,
         "price_per_hour": {"prepaid": 0.90, "postpaid": 1.50}},
        {"name": "gpu-a10x4", "cpu": 32, "memory_gib": 120, "gpu_type": "A10", "gpu_count": 4,
         "machine": _MACHINE_GPU, "price_per_hour": {"prepaid": 3.60, "postpaid": 6.00}},
    ],
    "subnets": [
        {"name": "subnet-a", "vpc": "vpc-default", "zone": "zone-a", "cidr": "10.0.1.0/24"},
        {"name": "subnet-b", "vpc": "vpc-default", "zone": "zone-b", "cidr": "10.0.2.0/24"},
    ],
    "security_groups": [
        {"name": "sg-default", "vpc": "vpc-default",
         "ingress": [{"protocol": "tcp", "from_port": 1024, "to_port": 65535, "source": "0.0.0.0/0"}]},
        {"name": "sg-loopback", "vpc": "vpc-default",
         "ingress": [{"protocol": "tcp", "from_port": 1024, "to_port": 65535, "source": "127.0.0.1/32"}]},
    ],
    "images": [
        {"name": "inferstack/echo", "command": ["{python}", "-m", "inferstack.images.echo"],
         "description": "Deterministic toy model server (predict, completions, streaming)"},
    ],
}


def default_inventory() -> Inventory:
    return Inventory.model_validate(DEFAULT_INVENTORY_DATA)
