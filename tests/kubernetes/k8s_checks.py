"""Offline validation of rendered Kubernetes objects, shared by the kubernetes target's tests (`import k8s_checks`).

- Core kinds: `kubernetes-validate`, strict, at the newest Kubernetes version the installed package ships.
- Gateway API, KEDA and Flagger kinds: `jsonschema` against the CRD schemas in `../shared/schemas/` (relative to the repository;
  `INFERSTACK_SCHEMAS_DIR` overrides), the newest releases. A structural CRD schema prunes unknown fields silently, so
  the schemas are made strict here (`additionalProperties: false` wherever properties are listed): a field the API
  server would drop is a rendering bug. Tests that need them skip, with the reason, where the folder is absent; CI
  always has it.
- HTTPRoutes rendered for an older Gateway API (`gateway_api_version`, default v1.2) are also validated against that
  release's CRD, vendored in `schemas/gateway-api-v1.2.1/` (an older CRD would reject or drop newer fields).
- What neither schema checks but an API server rejects (names, label values, quantities, port names, ...):
  `api_server_findings`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parent / "golden"
SCHEMAS = Path(os.environ.get("INFERSTACK_SCHEMAS_DIR") or ROOT.parent / "shared" / "schemas")
K8S_VERSION = kubernetes_validate.utils.latest_version()

# kubernetes-validate re-reads its schema files (a 1.8 MB definitions file) on every call; they never change, so
# cache them: validation itself is unchanged, and ~8 times faster.
if not hasattr(kubernetes_validate.utils.schema_contents, "cache_info"):
    kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
        kubernetes_validate.utils.schema_contents)

CRDS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway-api/httproutes.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda/scaledobjects.yaml",
    ("flagger.app/v1beta1", "Canary"): "flagger/crd.yaml",
}
VENDORED = Path(__file__).resolve().parent / "schemas"
OLDER_HTTPROUTE = {2: VENDORED / "gateway-api-v1.2.1" / "httproutes.yaml"}
"""Gateway API minor release → its vendored HTTPRoute CRD (validated besides the newest)."""

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$")
_PERCENT = re.compile(r"^[0-9]+%$")


def schemas_available() -> bool:
    return all((SCHEMAS / path).is_file() for path in CRDS.values())


def require_schemas() -> None:
    if not schemas_available():
        pytest.skip(f"CRD schemas not found in {SCHEMAS} (Gateway API, KEDA): this clone has no ../shared/schemas; "
                    f"CI always has it (or set INFERSTACK_SCHEMAS_DIR)")


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validator(api_version: str, kind: str, path: Path | None = None) -> jsonschema.protocols.Validator:
    group_version = api_version.split("/")
    # A file may hold several CRDs (Flagger's: Canary, MetricTemplate, AlertProvider): the one of this kind.
    crd = next(d for d in yaml.safe_load_all((path or SCHEMAS / CRDS[(api_version, kind)]).read_text())
               if d and d["spec"]["names"]["kind"] == kind)
    assert crd["spec"]["group"] == group_version[0] and crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["name"] == group_version[1])
    assert version["served"], f"{api_version} {kind} is not served by the CRD"
    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft202012Validator(schema)


def schema_errors(obj: dict[str, Any], gateway_api_minor: int = 2) -> list[str]:
    """Schema violations of one rendered object (empty when valid). An HTTPRoute rendered for Gateway API
    v1.<gateway_api_minor> is also checked against that release's CRD when it is vendored."""
    key = (obj["apiVersion"], obj["kind"])
    where = f"{obj['kind']} {obj['metadata'].get('name')}"
    if key in CRDS:
        out = []
        older = OLDER_HTTPROUTE.get(gateway_api_minor) if obj["kind"] == "HTTPRoute" else None
        if older is not None:
            out += [f"{where} (Gateway API v1.{gateway_api_minor}): {'.'.join(map(str, e.absolute_path))}: "
                    f"{e.message}" for e in crd_validator(*key, older).iter_errors(obj)]
        if not schemas_available():
            return out  # `problems` skips the test once everything else has passed
        return out + [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                      for e in crd_validator(*key).iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {exc}"]
    return []


def api_server_findings(obj: dict[str, Any]) -> list[str]:
    """What the API server (or a CRD's CEL rules) would reject although the JSON schemas pass."""
    out: list[str] = []
    meta = obj["metadata"]
    where = f"{obj['kind']} {meta.get('name')}"
    if not _DNS_LABEL.match(meta["name"]) or len(meta["name"]) > 63:
        out.append(f"{where}: name is not a DNS-1035 label of at most 63 characters")
    labels = dict(meta.get("labels", {}))
    spec = obj.get("spec", {})
    template = spec.get("template", {}) if obj["kind"] == "Deployment" else {}
    labels.update(template.get("metadata", {}).get("labels", {}))
    for selector in (spec.get("selector", {}).get("matchLabels", {}), spec.get("podSelector", {}).get(
            "matchLabels", {}), spec.get("selector", {}) if obj["kind"] == "Service" else {}):
        labels.update(selector)
    for k, v in labels.items():
        if not _LABEL_VALUE.match(v) or len(v) > 63:
            out.append(f"{where}: label value {k}={v!r} is not valid")
        if not _LABEL_NAME.match(k.rsplit("/", 1)[-1]) or len(k.rsplit("/", 1)[-1]) > 63:
            out.append(f"{where}: label key {k!r} is not valid")
    if obj["kind"] == "Deployment":
        out += _pod_findings(where, spec)
    if obj["kind"] == "Service":
        names = [p.get("name") for p in spec["ports"]]
        numbers = [p["port"] for p in spec["ports"]]
        if len(set(names)) != len(names) or len(set(numbers)) != len(numbers):
            out.append(f"{where}: port names or numbers repeat")
        out += [f"{where}: port name {n!r} too long" for n in names if n and len(n) > 15]
    pdb_percent = spec.get("maxUnavailable") if obj["kind"] == "PodDisruptionBudget" else None
    if isinstance(pdb_percent, str) and not _PERCENT.match(pdb_percent):
        out.append(f"{where}: maxUnavailable {pdb_percent!r} is not a whole percent")
    if obj["kind"] == "HTTPRoute":
        out += _route_findings(where, spec)
    return out


def _pod_findings(where: str, spec: dict[str, Any]) -> list[str]:
    out = []
    ru = spec["strategy"]["rollingUpdate"]
    for field in ("maxSurge", "maxUnavailable"):
        if not (isinstance(ru[field], int) and ru[field] >= 0) and not _PERCENT.match(str(ru[field])):
            out.append(f"{where}: {field} {ru[field]!r} is neither a count nor a whole percent")
    if str(ru["maxSurge"]).rstrip("%") == "0" and str(ru["maxUnavailable"]).rstrip("%") == "0":
        out.append(f"{where}: maxSurge and maxUnavailable are both 0")
    selector = spec["selector"]["matchLabels"]
    pod_labels = spec["template"]["metadata"]["labels"]
    if any(pod_labels.get(k) != v for k, v in selector.items()):
        out.append(f"{where}: the selector does not match the pod template")
    pod = spec["template"]["spec"]
    volume_names = [v["name"] for v in pod.get("volumes", [])]
    if len(set(volume_names)) != len(volume_names):
        out.append(f"{where}: volume names repeat")
    for c in pod["containers"]:
        env = [e["name"] for e in c.get("env", [])]
        if len(set(env)) != len(env):
            out.append(f"{where}: env names repeat")
        ports = [p["name"] for p in c.get("ports", [])]
        if len(set(ports)) != len(ports) or any(len(p) > 15 for p in ports):
            out.append(f"{where}: container port names repeat or are too long")
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        if len(set(paths)) != len(paths) or any(m["name"] not in volume_names for m in c.get("volumeMounts", [])):
            out.append(f"{where}: volume mounts repeat a path or name no volume")
        for side in ("requests", "limits"):
            for name, q in c["resources"].get(side, {}).items():
                if not _QUANTITY.match(q):
                    out.append(f"{where}: {side}.{name} {q!r} is not a quantity")
        sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep")
        if sleep and not 0 < sleep["seconds"] <= pod.get("terminationGracePeriodSeconds", 30):
            out.append(f"{where}: preStop sleep must be positive and within terminationGracePeriodSeconds")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if p and (p["periodSeconds"] < 1 or p["timeoutSeconds"] < 1):
                out.append(f"{where}: {probe} period and timeout must be at least 1 second")
        sc = c["securityContext"]
        restricted = (sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
                      and sc["readOnlyRootFilesystem"] is True)
        if not restricted or pod["securityContext"]["seccompProfile"]["type"] != "RuntimeDefault" \
                or pod["securityContext"]["runAsNonRoot"] is not True:
            out.append(f"{where}: not within the restricted Pod Security Standard")
    return out


def _route_findings(where: str, spec: dict[str, Any]) -> list[str]:
    out = []
    rule_names = [r["name"] for r in spec["rules"] if "name" in r]
    if len(set(rule_names)) != len(rule_names):
        out.append(f"{where}: rule names repeat")
    for r in spec["rules"]:
        for m in r.get("matches", []):
            if not m["path"]["value"].startswith("/") or "//" in m["path"]["value"]:
                out.append(f"{where}: path match {m['path']['value']!r} is not a clean absolute path")
            for h in m.get("headers", []):
                if not 1 <= len(h["value"]) <= 4096:
                    out.append(f"{where}: header value length")
        for f in r.get("filters", []):
            mirror = f.get("requestMirror")
            if mirror and "percent" in mirror and "fraction" in mirror:
                out.append(f"{where}: a mirror has at most one of percent or fraction (neither: 100 %)")
            if mirror and "fraction" in mirror and mirror["fraction"]["numerator"] > mirror["fraction"]["denominator"]:
                out.append(f"{where}: mirror fraction above 1")
            ref = (mirror or {}).get("backendRef")
            if ref is not None and "port" not in ref:
                out.append(f"{where}: a Service backendRef needs a port")
        for ref in r.get("backendRefs", []):
            if "port" not in ref:
                out.append(f"{where}: a Service backendRef needs a port")
    return out


def problems(objects: list[dict[str, Any]], gateway_api_minor: int = 2) -> list[str]:
    """Every schema error and API-server finding over `objects` (HTTPRoutes rendered for Gateway API
    v1.<gateway_api_minor>). Without the CRD schemas, a clean result skips the test (its HTTPRoutes and ScaledObjects
    could not be checked against the newest releases); errors in the other objects still fail it."""
    out = []
    for obj in objects:
        out += schema_errors(obj, gateway_api_minor)
        out += api_server_findings(obj)
    if not out and any((o["apiVersion"], o["kind"]) in CRDS for o in objects):
        require_schemas()
    return out


# --- semantics: what the API server and controllers would do with the objects -----------------------------------

def _labels_match(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels / matchExpressions In, NotIn, Exists, DoesNotExist) over `labels`; `{}` matches
    everything."""
    if selector is None:
        return False
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions", []):
        op, key, values = e["operator"], e["key"], e.get("values", [])
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Source:
    """Who opens a connection: a pod (namespace + labels + IP) or an address outside the cluster."""

    ip: str
    namespace: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def pod(cls, namespace: str, labels: dict[str, str], ip: str = "10.244.7.7") -> Source:
        return cls(ip, namespace, tuple(sorted(labels.items())))


def ingress_allowed(objects: list[dict[str, Any]], namespace: str, pod_labels: dict[str, str], port: int,
                    source: Source, protocol: str = "TCP") -> bool:
    """NetworkPolicy semantics (networking.k8s.io/v1): a connection to a pod is allowed when no ingress policy
    selects the pod, or when some rule of a selecting policy admits the source on the port."""
    selecting = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == namespace
                 and _labels_match(o["spec"]["podSelector"], pod_labels)
                 and "Ingress" in o["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    src_labels = dict(source.labels)
    ns_labels = {"kubernetes.io/metadata.name": source.namespace} if source.namespace else {}

    def peer_ok(peer: dict[str, Any]) -> bool:
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            ip = ipaddress.ip_address(source.ip)
            net = ipaddress.ip_network(block["cidr"])
            return ip.version == net.version and ip in net and not any(
                ip in ipaddress.ip_network(x) for x in block.get("except", []))
        if source.namespace is None:
            return False  # selectors pick pods; an outside address is only ever admitted by an ipBlock
        if "namespaceSelector" in peer:
            if not _labels_match(peer["namespaceSelector"], ns_labels):
                return False
        elif source.namespace != namespace:
            return False  # a pod selector alone means the policy's own namespace
        return _labels_match(peer.get("podSelector", {}), src_labels)

    def port_ok(ports: list[dict[str, Any]] | None) -> bool:
        if not ports:
            return True
        return any(p.get("protocol", "TCP") == protocol and (
            "port" not in p or p["port"] == port or (p["port"] <= port <= p.get("endPort", p["port"])))
            for p in ports)

    return any(port_ok(rule.get("ports")) and (not rule.get("from") or any(peer_ok(x) for x in rule["from"]))
               for policy in selecting for rule in policy["spec"].get("ingress", []))


def pdb_allowed_disruptions(pdb: dict[str, Any], healthy: int) -> int:
    """Evictions a PodDisruptionBudget allows with `healthy` healthy pods out of `healthy` expected (the disruption
    controller: percentages of minAvailable and maxUnavailable round up)."""
    spec = pdb["spec"]

    def scaled(value: int | str) -> int:
        if isinstance(value, str):
            return math.ceil(int(value.rstrip("%")) * healthy / 100)
        return value

    if "minAvailable" in spec:
        return max(0, healthy - scaled(spec["minAvailable"]))
    return max(0, scaled(spec["maxUnavailable"]))


def rolling_max_unavailable(deployment: dict[str, Any], replicas: int) -> int:
    """Pods a Deployment's rolling update may take down at `replicas` (maxSurge rounds up, maxUnavailable down; both
    0 → 1, as the deployment controller resolves them)."""
    ru = deployment["spec"]["strategy"]["rollingUpdate"]

    def scaled(value: int | str, rounding) -> int:
        return rounding(int(value.rstrip("%")) * replicas / 100) if isinstance(value, str) else value

    surge, unavailable = scaled(ru["maxSurge"], math.ceil), scaled(ru["maxUnavailable"], math.floor)
    return 1 if surge == 0 and unavailable == 0 else unavailable
