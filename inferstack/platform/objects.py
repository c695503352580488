"""The platform's objects as the API shows them: kinds, URL paths, envelopes (`kind`, `metadata`, `spec`, `status`)
and status conditions. Plain data; the store keeps rows, this module says what a row looks like on the wire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inferstack.spec import (
    SECRET_MASK,
    ComputeSpec,
    Deployment,
    Model,
    PresetImage,
    Queue,
    ResourceGroup,
    SecurityGroup,
    Subnet,
    Traffic,
    Vpc,
)

SERVICE = "service"
DEPLOYMENT = "deployment"
TRAFFIC = "traffic"
STABLE_REVISION = "stable_revision"
"""Private rows (never served by the API): the spec of the revision a canary redeploy measures against and rolls back
to, kept per deployment (parent the service) while a release needs it (`canary.py`)."""

# A service's own fields: what `PUT /v1/services/{key}` carries (deployments and traffic have their own objects).
SERVICE_FIELDS: tuple[str, ...] = ("name", "key", "description", "resource_group", "vpc", "network_type", "ports",
                                   "legacy_form")

CONDITION_TYPES: tuple[str, ...] = ("Ready", "Progressing", "Degraded", "Available")  # Available: deployments


@dataclass(frozen=True)
class InventoryKind:
    """One kind of inventory object: its URL segment, its `Inventory` attribute (also the store's kind) and model."""

    url: str
    field: str
    model: type[Model]
    title: str

    @property
    def wire_kind(self) -> str:
        return self.model.__name__


INVENTORY_KINDS: dict[str, InventoryKind] = {k.url: k for k in (
    InventoryKind("vpcs", "vpcs", Vpc, "VPC"),
    InventoryKind("resource-groups", "resource_groups", ResourceGroup, "resource group"),
    InventoryKind("queues", "queues", Queue, "queue"),
    InventoryKind("compute-specs", "compute_specs", ComputeSpec, "compute spec"),
    InventoryKind("subnets", "subnets", Subnet, "subnet"),
    InventoryKind("security-groups", "security_groups", SecurityGroup, "security group"),
    InventoryKind("images", "images", PresetImage, "preset image"),
)}
INVENTORY_BY_FIELD: dict[str, InventoryKind] = {k.field: k for k in INVENTORY_KINDS.values()}

_WIRE_KINDS = {SERVICE: "Service", DEPLOYMENT: "Deployment", TRAFFIC: "Traffic",
               **{k.field: k.wire_kind for k in INVENTORY_KINDS.values()}}


def now() -> str:
    """UTC timestamp as the API writes it (ISO 8601, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def object_path(kind: str, key: str, parent: str = "") -> str:
    """The object's name in events and `changed` lists: its API path below `/v1/`."""
    if kind == SERVICE:
        return f"services/{key}"
    if kind == DEPLOYMENT:
        return f"services/{parent}/deployments/{key}"
    if kind == TRAFFIC:
        return f"services/{parent}/traffic"
    if kind == STABLE_REVISION:
        return f"services/{parent}/deployments/{key}/stable-revision"
    return f"{INVENTORY_BY_FIELD[kind].url}/{key}"


def owning_service(kind: str, key: str, parent: str = "") -> str:
    """Key of the service an object belongs to ('' for inventory objects)."""
    if kind == SERVICE:
        return key
    return parent if kind in (DEPLOYMENT, TRAFFIC, STABLE_REVISION) else ""


# --- conditions ------------------------------------------------------------------------------------------------

def condition(type_: str, status: bool | None, reason: str, message: str = "",
              observed_generation: int = 0, at: str | None = None) -> dict[str, Any]:
    """One condition, Kubernetes style: status is "True", "False" or "Unknown"."""
    assert type_ in CONDITION_TYPES, type_
    return {"type": type_, "status": "Unknown" if status is None else ("True" if status else "False"),
            "reason": reason, "message": message, "observed_generation": observed_generation,
            "last_transition_time": at or now()}


def set_condition(conditions: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Conditions with `new` replacing the one of its type; the transition time moves only when the status does."""
    out = []
    replaced = False
    for c in conditions:
        if c.get("type") == new["type"]:
            if c.get("status") == new["status"]:
                new = {**new, "last_transition_time": c.get("last_transition_time", new["last_transition_time"])}
            out.append(new)
            replaced = True
        else:
            out.append(c)
    return out if replaced else [*out, new]


def get_condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of `type_` in an object's (or a status') conditions, or None."""
    status = obj.get("status", obj)
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def pending_conditions(generation: int, what: str) -> list[dict[str, Any]]:
    """Conditions of an object no controller has looked at yet."""
    at = now()
    return [
        condition("Ready", False, "Pending", f"the platform has not acted on generation {generation} of this {what} "
                                             f"yet", 0, at),
        condition("Progressing", True, "NewGeneration", f"generation {generation} waits for the platform", 0, at),
        condition("Degraded", False, "AsExpected", "", 0, at),
    ]


def initial_status(kind: str, spec: dict[str, Any], *, converted: bool = True) -> dict[str, Any]:
    """Status of a newly created object. Controllers own status from then on (`Store.write_status`)."""
    base: dict[str, Any] = {"observed_generation": 0}
    if kind == SERVICE:
        return {**base, "converted": converted, "gateway_url": None, "gateway_urls": {},
                "conditions": pending_conditions(1, "service")}
    if kind == DEPLOYMENT:
        dep = Deployment.model_validate(spec)
        roles = {r.name: {"desired": r.starting_replicas, "ready": 0, "updated": 0, "instances": []}
                 for r in dep.effective_roles()}
        conditions = [*pending_conditions(1, "deployment"),
                      condition("Available", False, "Pending", "no instance runs yet")]
        return {**base, "roles": roles, "conditions": conditions}
    if kind == TRAFFIC:
        return {**base, "conditions": pending_conditions(1, "traffic object")}
    return {}


# --- envelopes -------------------------------------------------------------------------------------------------

def public_spec(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the API shows it: secret values masked (a PUT of the mask keeps the stored secret)."""
    if kind != DEPLOYMENT:
        return spec
    return _mask_secrets(spec)


def _mask_secrets(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: (SECRET_MASK if k == "secret" and v is not None else _mask_secrets(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [_mask_secrets(v) for v in data]
    return data


def envelope(row: Any) -> dict[str, Any]:
    """`{kind, metadata, spec, status}` of a store row."""
    meta: dict[str, Any] = {}
    if row.kind in (SERVICE, DEPLOYMENT, TRAFFIC):
        if row.kind != SERVICE:
            meta["service"] = row.parent
        if row.kind != TRAFFIC:
            meta["key"] = row.key
    else:
        meta["name"] = row.key
    meta.update(uid=row.uid, generation=row.generation, resource_version=str(row.resource_version),
                created_at=row.created_at, updated_at=row.updated_at)
    return {"kind": _WIRE_KINDS[row.kind], "metadata": meta, "spec": public_spec(row.kind, row.spec),
            "status": row.status}


def traffic_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two traffic specs mean the same: weights compared normalised (90/10 equals 9/1; 0 equals absent)."""
    ta, tb = Traffic.model_validate(a), Traffic.model_validate(b)
    keys = sorted(set(ta.weights) | set(tb.weights))
    return (ta.normalised_weights(keys) == tb.normalised_weights(keys)
            and ta.model_copy(update={"weights": {}}) == tb.model_copy(update={"weights": {}}))
