"""The kubernetes target as the spec sees it: its options (the stack's `kubernetes:` block), the object names derived
from keys, and the rules that hold only when a stack is rendered to Kubernetes. Pure: no I/O.

Names (architecture.md, Identity): `<service-key>-<deployment-key>[-<role>]`. Keys match `^[a-z][a-z0-9-]{0,39}$`,
so a joined name can reach 102 characters and a key may end with `-` — neither is a valid DNS label. A joined name
that is a valid DNS-1035 label (what Service names need: lowercase letter first, `[a-z0-9-]`, alphanumeric last, at
most 63) is used as is; any other keeps a readable prefix and ends in 8 hex characters of the SHA-256 of the full
joined name, so two different inputs never share a name by truncation and the same input always gets the same name.
Joining is still ambiguous (`a-b` + `c` and `a` + `b-c` both give `a-b-c`): `object_name_findings` reports that at
validate time (rule `kubernetes.object_name_unique`), `route_path_findings` two stacks whose HTTPRoutes claim one
path on one Gateway (rule `kubernetes.route_path_unique`).

When these rules run: the `kubernetes.*` rules are part of validating a stack whose `target` is `kubernetes`
(`validate_stack`); `inferstack render` applies them to any stack it renders; `inferstack validate A B ...` checks
route paths across the kubernetes stacks it is given (one stack cannot see another namespace's routes)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from .findings import Finding, Severity
from .rules import RULES
from .service import Deployment, Service
from .types import GracePeriod, ImageName, Model, Number, Ref, check

MAX_NAME_LENGTH = 63
HASH_LENGTH = 8
DNS_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_INVALID = re.compile(r"[^a-z0-9-]")
GATEWAY_API_VERSION_RE = re.compile(r"^v?1\.(0|[1-9][0-9]?)(\.(0|[1-9][0-9]?))?$")
DEFAULT_GATEWAY_API_VERSION = "v1.2"
"""A widely installed Gateway API release: rule `timeouts` are standard since v1.2; mirror `percent`/`fraction`
need v1.3 and rule `name` v1.4 (see targets/kubernetes/routes.py)."""
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
"""The label GEP-1762 asks implementations to put on the pods they deploy for a Gateway (Istio, Envoy Gateway's
merged mode, NGINX Gateway Fabric, ...): the default data-plane selector."""


def _label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return (0 < len(name) <= MAX_NAME_LENGTH and bool(_LABEL_NAME_RE.match(name))
            and (not prefix or (len(prefix) <= 253 and bool(_LABEL_PREFIX_RE.match(prefix)))))


LabelKey = Annotated[str, check("field.invalid", _label_key_ok,
                                "must be a Kubernetes label key: [prefix/]name, name 1-63 characters of "
                                "[A-Za-z0-9-_.] starting and ending alphanumeric",
                                pattern=r"^(?:(?=[^/]{1,253}/)[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*"
                                        r"[a-z0-9])?)*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")]
LabelValue = Annotated[str, check("field.invalid", lambda v: len(v) <= MAX_NAME_LENGTH
                                  and bool(LABEL_VALUE_RE.match(v)),
                                  "must be a Kubernetes label value: at most 63 characters of [A-Za-z0-9-_.], "
                                  "starting and ending alphanumeric",
                                  pattern=r"^(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")]
Namespace = Annotated[str, check("field.invalid", lambda v: len(v) <= MAX_NAME_LENGTH and bool(DNS_LABEL_RE.match(v)),
                                 "must be a Kubernetes namespace name (a DNS label: lowercase letters, digits and "
                                 "'-', at most 63 characters)", pattern=r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")]
ObjectName = Annotated[str, check("field.invalid", lambda v: len(v) <= 253 and bool(_LABEL_PREFIX_RE.match(v)),
                                  "must be a Kubernetes object name (a DNS subdomain: lowercase letters, digits, '-' "
                                  "and '.', at most 253 characters)", maxLength=253,
                                  pattern=_LABEL_PREFIX_RE.pattern)]
# OCI image references are visible ASCII; stated as that class (not \S, which Python and ECMA-262 read differently).
ImageReference = Annotated[str, check("field.invalid", lambda v: bool(re.fullmatch(r"[!-~]{1,1024}", v)),
                                      "must be an image reference such as registry.example.com/team/llm:1.4 or "
                                      "...@sha256:<digest> (visible ASCII, no spaces, at most 1024 characters)",
                                      pattern=r"^[!-~]{1,1024}$")]
GatewayApiVersion = Annotated[str, check("field.invalid", lambda v: bool(GATEWAY_API_VERSION_RE.match(v)),
                                         "must be a Gateway API release such as v1.2 or v1.4.1",
                                         pattern=GATEWAY_API_VERSION_RE.pattern)]
# A cap on a whole response at the cluster's Gateway: any positive duration (rendered up to the Gateway API's
# largest, 99999h); unlike the embedded gateway's timeout (traffic.timeout_max) it arms no local timer.
ResponseCap = Annotated[Number, check("traffic.timeout_positive", lambda v: v > 0, "must be greater than 0 seconds",
                                      exclusiveMinimum=0)]
PathPrefix = Annotated[str, check("field.invalid", lambda v: v == "" or bool(re.fullmatch(r"(/[a-z0-9][a-z0-9._-]*)+", v)),
                                  "must be empty or an absolute path of lowercase segments such as /team-a "
                                  "(no trailing '/')", pattern=r"^(?:(?:/[a-z0-9][a-z0-9._-]*)+)?$")]


# --- options ---------------------------------------------------------------------------------------------------

class DataPlane(Model):
    """The pods that carry a Gateway's traffic: the NetworkPolicies admit them to the instances."""

    namespace: Namespace | None = Field(None, description="Namespace of the data-plane pods (default: the Gateway's "
                                                          "namespace, else the stack's).",
                                        examples=["envoy-gateway-system"])
    pod_labels: dict[LabelKey, LabelValue] | None = Field(
        None, description=f"Labels of the data-plane pods (default: `{GATEWAY_NAME_LABEL}: <gateway name>`, set by "
                          f"implementations that follow GEP-1762).",
        examples=[{"gateway.envoyproxy.io/owning-gateway-name": "public"}])


class GatewayRef(Model):
    name: ObjectName = Field("inferstack", description="Gateway API Gateway the HTTPRoutes attach to.")
    namespace: Namespace | None = Field(None, description="Namespace of that Gateway (default: the stack's).")
    data_plane: DataPlane = Field(default_factory=DataPlane, description="Where the Gateway's data-plane pods run "
                                                                         "(admitted by the NetworkPolicies).")


class Gateways(Model):
    """A Gateway per network type: private services must not share the public Gateway."""

    public: GatewayRef | None = Field(None, description="Gateway of `public_gateway` services (and `clb` ones "
                                                        "routed by weight). Default: `gateway`.")
    private: GatewayRef | None = Field(None, description="Gateway of `private_gateway` services. Default: `gateway`, "
                                                         "with a warning (private services then share it).")


class Monitoring(Model):
    """The Prometheus that scrapes the instances (metric autoscaling reads what it collects)."""

    namespace: Namespace = Field(description="Namespace of the Prometheus pods.", examples=["monitoring"])
    pod_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict,
                                                   description="Labels of the Prometheus pods (empty: every pod of "
                                                               "the namespace).",
                                                   examples=[{"app.kubernetes.io/name": "prometheus"}])
    pod_monitor: bool = Field(False, description="Also render a Prometheus Operator PodMonitor per deployment that "
                                                 "scrapes `/metrics` on the listen port and keeps the pods' "
                                                 "`inferstack.io/*` labels (what the KEDA queries select on).")


class KubernetesOptions(Model):
    """Options of the kubernetes target."""

    namespace: Namespace = Field("default", description="Namespace of the rendered objects.")
    gateway: GatewayRef = Field(default_factory=GatewayRef, description="Parent Gateway of the HTTPRoutes (every "
                                                                        "network type unless `gateways` says "
                                                                        "otherwise).")
    gateways: Gateways = Field(default_factory=Gateways, description="A Gateway per network type.")
    gateway_api_version: GatewayApiVersion = Field(
        DEFAULT_GATEWAY_API_VERSION, description="Gateway API release installed in the cluster: fields newer than "
                                                 "it are not rendered (rule names need v1.4, mirror percentages "
                                                 "v1.3, timeouts v1.2).")
    path_prefix: PathPrefix = Field("", description="Path under which this stack's services sit on a shared Gateway "
                                                    "(`<path_prefix>/<service-key>`), e.g. `/team-a`.")
    storage_class: Ref | None = Field(None, description="Unused unless claims are rendered.")
    cluster_bootstrap: bool = Field(False, description="Also render cluster-wide objects (PriorityClasses).")
    prestop_delay_s: GracePeriod = Field(5.0, description="Seconds a terminating pod keeps serving before it gets "
                                                          "SIGTERM, so the Gateway stops sending to it first "
                                                          "(added to the graceful period; 0: none).")
    response_timeout_s: ResponseCap | None = Field(None, description="Cap on a whole response at the Gateway "
                                                                  "(`timeouts.request`; long streams are cut there). "
                                                                  "Default: no cap.")
    monitoring: Monitoring | None = Field(None, description="The Prometheus that scrapes the instances.")
    preset_images: dict[ImageName, ImageReference] = Field(default_factory=dict,
                                          description="Image reference per preset, e.g. a digest "
                                                      "(`registry/inferstack/echo@sha256:...`); default: the "
                                                      "preset's own pinned release.")

    @property
    def gateway_api_minor(self) -> int:
        match = GATEWAY_API_VERSION_RE.match(self.gateway_api_version)
        return int(match.group(1)) if match else 0

    def gateway_for(self, network_type: str) -> GatewayRef:
        """The Gateway a service of `network_type` attaches to."""
        chosen = self.gateways.private if network_type == "private_gateway" else self.gateways.public
        return chosen or self.gateway


# --- names -----------------------------------------------------------------------------------------------------

def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def object_name(*parts: str) -> str:
    """`parts` joined by `-` as a DNS-1035 label; hashed (prefix + `-` + 8 hex) when too long or not valid."""
    joined = "-".join(parts)
    if len(joined) <= MAX_NAME_LENGTH and DNS_LABEL_RE.match(joined):
        return joined
    prefix = _INVALID.sub("-", joined.lower())[: MAX_NAME_LENGTH - HASH_LENGTH - 1].rstrip("-")
    if not prefix or not prefix[0].isalpha():
        prefix = "x" + prefix[: MAX_NAME_LENGTH - HASH_LENGTH - 2]
    return f"{prefix}-{_digest(joined)}"


def workload_name(service_key: str, deployment_key: str, role: str | None = None) -> str:
    """`<service-key>-<deployment-key>[-<role>]`: a Deployment (per role), its PDB, HPA or ScaledObject."""
    return object_name(service_key, deployment_key, *([role] if role else []))


def label_value(value: str) -> str:
    """`value` when it is a valid label value, else its hashed form (a key ending in `-` is not a valid value)."""
    if len(value) <= MAX_NAME_LENGTH and LABEL_VALUE_RE.match(value):
        return value
    return object_name(value)


def is_multi_role(dep: Deployment) -> bool:
    return dep.inference_mode == "multi_role" or bool(dep.roles)


def has_secrets(dep: Deployment) -> bool:
    return any(e.secret is not None for e in dep.env) or any(
        e.secret is not None for r in (dep.roles or []) for e in r.env)


def autoscaled(autoscaling: object) -> bool:
    """An autoscaler owns the role's replica count (an HPA or a ScaledObject is rendered for it)."""
    return autoscaling is not None and bool(getattr(autoscaling, "schedules", None)
                                            or getattr(autoscaling, "metrics", None))


def service_objects(svc: Service, pod_monitor: bool = False) -> Iterator[tuple[str, str, str]]:
    """(kind, name, what) of every namespaced object rendered for `svc`; `what` is the deployment key (or '')
    that derives the name. The render (targets/kubernetes) produces exactly these."""
    skey = svc.key or ""
    for dep in svc.deployments:
        dkey = dep.key or ""
        base = workload_name(skey, dkey)
        yield "Service", base, dkey
        yield "NetworkPolicy", base, dkey
        if pod_monitor:
            yield "PodMonitor", base, dkey
        if has_secrets(dep):
            yield "Secret", object_name(skey, dkey, "env"), dkey
        multi = is_multi_role(dep)
        for role in dep.effective_roles():
            name = workload_name(skey, dkey, role.name if multi else None)
            yield "Deployment", name, dkey
            yield "PodDisruptionBudget", name, dkey
            if multi:
                yield "Service", name, dkey
            if autoscaled(role.autoscaling):
                yield ("ScaledObject" if role.autoscaling.schedules else "HorizontalPodAutoscaler"), name, dkey
    if not svc.deployments:
        return
    if svc.traffic.strategy == "by_instance_count":
        yield "Service", object_name(skey), ""
    if not (svc.network_type == "clb" and svc.traffic.strategy == "by_instance_count"):
        yield "HTTPRoute", object_name(skey), ""


# --- rules -----------------------------------------------------------------------------------------------------

def _finding(rule: str, path: str, value: object, message: str) -> Finding:
    assert rule in RULES, rule
    return Finding(rule=rule, path=path, value=value, message=message, severity=RULES[rule].severity)


def object_name_findings(services: Sequence[Service], paths: Sequence[str],
                         options: KubernetesOptions | None = None) -> list[Finding]:
    """Two objects of one kind would get one name (`a-b`/`c` and `a`/`b-c` both give `a-b-c`): reported at the later
    deployment's (or service's) key, naming the earlier one."""
    pod_monitor = bool(options and options.monitoring and options.monitoring.pod_monitor)
    seen: dict[tuple[str, str], str] = {}
    out: list[Finding] = []
    for svc, path in zip(services, paths):
        if svc.key is None:
            continue
        keys = [d.key for d in svc.deployments]
        for kind, name, dkey in service_objects(svc, pod_monitor):
            where = f"{path}.deployments[{keys.index(dkey)}]" if dkey else path
            if (kind, name) in seen:
                if seen[(kind, name)] == where:
                    continue
                out.append(_finding("kubernetes.object_name_unique", f"{where}.key", dkey or svc.key,
                                    f"the Kubernetes {kind} '{name}' of {where} is also the {kind} of "
                                    f"{seen[(kind, name)]}: names join keys with '-' ('a-b'+'c' = 'a'+'b-c'); "
                                    f"change a key"))
            else:
                seen[(kind, name)] = where
    return out


@dataclass(frozen=True)
class RouteClaim:
    """An HTTPRoute's path on a Gateway."""

    gateway: tuple[str, str]  # (namespace, name)
    path: str
    namespace: str
    source: str  # the stack file
    service_path: str  # `services[0]`

    @property
    def where(self) -> str:
        return f"{self.source}: {self.service_path}"


def route_claims(services: Iterable[Service], paths: Iterable[str], options: KubernetesOptions | None,
                 source: str) -> list[RouteClaim]:
    """The paths the services' HTTPRoutes claim, on which Gateway."""
    k = options or KubernetesOptions()
    out = []
    for svc, path in zip(services, paths):
        if not svc.key or not svc.deployments or (svc.network_type == "clb"
                                                  and svc.traffic.strategy == "by_instance_count"):
            continue
        gw = k.gateway_for(svc.network_type)
        out.append(RouteClaim((gw.namespace or k.namespace, gw.name), f"{k.path_prefix}/{svc.key}", k.namespace,
                              source, path))
    return out


def route_path_findings(claims_by_stack: Sequence[Sequence[RouteClaim]]) -> list[list[Finding]]:
    """Per stack, its HTTPRoutes that claim a path another stack claims on the same Gateway (the Gateway would
    serve only one of them)."""
    first: dict[tuple[tuple[str, str], str], RouteClaim] = {}
    out: list[list[Finding]] = [[] for _ in claims_by_stack]
    for i, claims in enumerate(claims_by_stack):
        for claim in claims:
            key = (claim.gateway, claim.path)
            other = first.get(key)
            if other is None:
                first[key] = claim
                continue
            same_ns = "the same namespace" if other.namespace == claim.namespace else \
                f"namespaces '{other.namespace}' and '{claim.namespace}'"
            out[i].append(_finding(
                "kubernetes.route_path_unique", f"{claim.service_path}.key", claim.path.rsplit("/", 1)[1],
                f"path '{claim.path}' on Gateway '{claim.gateway[0]}/{claim.gateway[1]}' is also claimed by "
                f"{other.where} ({same_ns}); only one HTTPRoute would get it: set `kubernetes.path_prefix` (e.g. "
                f"/{claim.namespace}) or use another service key"))
    return out


def kubernetes_findings(services: Sequence[Service], paths: Sequence[str],
                        options: KubernetesOptions | None) -> list[Finding]:
    """The rules that hold when the stack is rendered to Kubernetes (one stack)."""
    return object_name_findings(services, paths, options)


__all__ = [
    "DEFAULT_GATEWAY_API_VERSION", "GATEWAY_NAME_LABEL", "DataPlane", "GatewayRef", "Gateways", "KubernetesOptions",
    "Monitoring", "RouteClaim", "Severity", "autoscaled", "has_secrets", "is_multi_role", "kubernetes_findings",
    "label_value", "object_name", "object_name_findings", "route_claims", "route_path_findings", "service_objects",
    "workload_name",
]
