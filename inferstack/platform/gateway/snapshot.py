"""The routing snapshot the platform pushes to the gateway: pydantic models, validated as a whole."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NetworkType = Literal["public_gateway", "private_gateway", "clb"]


def _not_negative(what: str, value: dict[str, float]) -> dict[str, float]:
    negative = sorted(key for key, weight in value.items() if weight < 0)
    if negative:
        raise ValueError(f"{what} must be >= 0: {', '.join(negative)}")
    return value


class _Model(BaseModel):
    # Finite numbers only: a timeout of Infinity or a NaN weight must never reach the routing decisions.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Listener(_Model):
    """One logical port of a service, bound by the gateway on 127.0.0.1."""

    port: int = Field(ge=1, le=65535, description="Logical port of the service.", examples=[8000])
    bind_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port to bind on 127.0.0.1; 0 = any free port. A taken port falls back to a free one.",
        examples=[0, 18000],
    )


class AllowedSource(_Model):
    """A private-gateway rule: peers in `cidr` may call the logical ports from_port..to_port."""

    cidr: str = Field(description="IPv4 or IPv6 network of allowed callers.", examples=["127.0.0.2/32"])
    from_port: int = Field(ge=1, le=65535, description="First logical port covered.", examples=[8000])
    to_port: int = Field(ge=1, le=65535, description="Last logical port covered (inclusive).", examples=[8000])

    @field_validator("cidr")
    @classmethod
    def _cidr_is_a_network(cls, value: str) -> str:
        ipaddress.ip_network(value, strict=False)
        return value

    @model_validator(mode="after")
    def _ports_are_ordered(self) -> AllowedSource:
        if self.from_port > self.to_port:
            raise ValueError(f"from_port {self.from_port} is above to_port {self.to_port}")
        return self


class HeaderRule(_Model):
    """Requests whose `header` equals `value` exactly go to `deployment`."""

    header: str = Field(min_length=1, description="Header name (case-insensitive).", examples=["x-canary"])
    value: str = Field(description="Exact header value to match.", examples=["1"])
    deployment: str = Field(description="Deployment key the matching requests go to.", examples=["canary"])


class Mirror(_Model):
    """Copy `percent` % of the routed requests to `deployment`; its answers are discarded."""

    deployment: str = Field(description="Deployment key receiving the copies.", examples=["shadow"])
    percent: float = Field(ge=0, le=100, description="Share of requests copied, in percent.", examples=[5])


class ConsistentHash(_Model):
    """Requests with the same value of `header` stick to the same instance of the chosen deployment."""

    header: str = Field(min_length=1, description="Header whose value is hashed.", examples=["x-user-id"])


class Traffic(_Model):
    """How a service's requests are split between its deployments."""

    strategy: Literal["weighted", "by_instance_count"] = Field(
        default="weighted",
        description="`weighted`: shares from `weights`; `by_instance_count`: every ready instance an equal share.",
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Share of each deployment (weighted only); need not sum to 100. Missing keys weigh 0.",
        examples=[{"stable": 90, "canary": 10}],
    )
    header_rules: list[HeaderRule] = Field(default_factory=list, description="Evaluated first, in order.")
    mirror: Mirror | None = Field(default=None, description="Traffic copy after the routing choice, or null.")
    consistent_hash: ConsistentHash | None = Field(
        default=None, description="Sticky instance choice within the chosen deployment, or null."
    )
    timeout_s: float = Field(default=60, gt=0, description="Time allowed for the upstream's answer.", examples=[60])
    retries: int = Field(
        default=1, ge=0, le=10, description="Retries on another instance when a connection cannot be established."
    )

    @field_validator("weights")
    @classmethod
    def _weights_are_not_negative(cls, value: dict[str, float]) -> dict[str, float]:
        return _not_negative("weights", value)


class Instance(_Model):
    """A ready instance of a deployment."""

    id: str = Field(min_length=1, description="Instance id, unique in the snapshot.", examples=["chat-stable-main-1"])
    host: str = Field(default="127.0.0.1", description="Address the instance listens on.", examples=["127.0.0.1"])
    port: int = Field(ge=1, le=65535, description="Port the instance listens on.", examples=[40001])
    revision: str = Field(default="", max_length=64, description="Revision of its deployment it runs (the split "
                                                                 "of `revision_weights` reads it).",
                          examples=["3f2a9c1b0e"])


class Deployment(_Model):
    """A deployment of a service with its ready instances."""

    key: str = Field(min_length=1, description="Deployment key; the value of the direct-call header.", examples=["stable"])
    accept_traffic: bool = Field(default=True, description="False: reachable only by direct call or header rule.")
    instances: list[Instance] = Field(default_factory=list, description="Ready instances only.")
    revision_weights: dict[str, float] = Field(
        default_factory=dict,
        description="A canary redeploy: the share of this deployment's requests each revision takes (need not sum "
                    "to 100; a revision without ready instances is skipped). Empty: every ready instance alike.",
        examples=[{"3f2a9c1b0e": 90, "8d01c2aa47": 10}],
    )

    @field_validator("revision_weights")
    @classmethod
    def _revision_weights_are_not_negative(cls, value: dict[str, float]) -> dict[str, float]:
        return _not_negative("revision weights", value)


class Service(_Model):
    """One service: its listeners, who may call it, and how its traffic is split."""

    key: str = Field(min_length=1, description="Service key.", examples=["chat"])
    network_type: NetworkType = Field(default="public_gateway", description="How callers reach the service.")
    listeners: list[Listener] = Field(default_factory=list, description="Logical ports and where they are bound.")
    invocation_key_hashes: list[str] = Field(
        default_factory=list,
        description="sha256 hex digests of the invocation keys (public_gateway and clb).",
    )
    allowed_sources: list[AllowedSource] = Field(default_factory=list, description="private_gateway callers.")
    upstream_token: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_-]{0,128}$",
        description="Sent to the instances as X-Inferstack-Upstream-Token on every request (they answer nothing "
        "without it); empty: no header.",
    )
    traffic: Traffic = Field(default_factory=Traffic, description="The traffic split.")
    deployments: list[Deployment] = Field(default_factory=list, description="Deployments with their ready instances.")

    @field_validator("invocation_key_hashes")
    @classmethod
    def _hashes_are_sha256_hex(cls, value: list[str]) -> list[str]:
        bad = [h for h in value if len(h) != 64 or any(c not in "0123456789abcdefABCDEF" for c in h)]
        if bad:
            raise ValueError(f"not sha256 hex digests: {bad}")
        return [h.lower() for h in value]

    @model_validator(mode="after")
    def _keys_are_unique(self) -> Service:
        # References to deployments that are not listed (weights, rules, mirror) are not errors: the platform may
        # push a snapshot between removing a deployment and editing the traffic. They route nowhere (503) instead.
        keys = [d.key for d in self.deployments]
        problems = [f"deployment {k!r} appears twice" for k in sorted({k for k in keys if keys.count(k) > 1})]
        ports = [listener.port for listener in self.listeners]
        problems += [f"listener port {p} appears twice" for p in sorted({p for p in ports if ports.count(p) > 1})]
        ids = [i.id for d in self.deployments for i in d.instances]
        problems += [f"instance {i!r} appears twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Snapshot(_Model):
    """Everything the gateway routes by; replaced as a whole, never patched."""

    version: int = Field(ge=0, description="Monotonic version; a lower version than the current one is rejected.")
    services: list[Service] = Field(default_factory=list, description="All services served by the gateway.")

    @model_validator(mode="after")
    def _service_keys_are_unique(self) -> Snapshot:
        keys = [s.key for s in self.services]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"service keys appear twice: {', '.join(dup)}")
        return self
