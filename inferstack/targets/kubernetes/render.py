"""The spec rendered to Kubernetes objects: `render(stack) -> RenderResult` (pure: no I/O, no pulumi, no globals).

`RenderResult.objects` is a list of plain dicts, sorted by apply order (kind) then name; the same stack always
renders byte-identical YAML (`to_yaml`, `to_documents`), file names included (`file_name`). `warnings` lists what
Kubernetes cannot express exactly. The caller passes a *valid* stack (`load_file` / `validate_stack` first); a missing
inventory reference raises `RenderError`, and so do two objects of one kind with one name.

Decisions (the README's mapping table summarises them):

- **Options.** `RenderOptions` fields left `None` come from the stack's `kubernetes:` block (namespace, gateway,
  cluster_bootstrap). Queues, compute specs and security groups are looked up in `options.inventory` (default:
  `default_inventory()`) merged with the stack's own inventory, as `load_file(path, default_inventory())` does.
- **Names** (`names.py`): `<service-key>-<deployment-key>[-<role>]` (the role only for multi_role deployments),
  hashed down to 63 characters; service-level objects (HTTPRoute, the per-instance Service) are `<service-key>`.
  Labels: `app.kubernetes.io/{name,instance,component,managed-by}` and `inferstack.io/{service,deployment,role}`;
  display names (which may repeat and hold CJK) go to annotations `inferstack.io/{service,deployment}-name`.
- **Images.** `preset: inferstack/echo` → `<preset_registry>/inferstack/echo:latest` (`preset_registry` defaults to
  `ghcr.io`; a preset with its own tag or digest keeps it). `custom` and `url` are used as they are.
- **Workloads.** One `apps/v1` Deployment per role. `replicas` is omitted when an autoscaler owns it. Rolling update
  in whole percent: surge rounded up, unavailable down (if both end at 0, unavailable becomes 1 %, which Kubernetes
  resolves to one instance, as `RollingUpdate.bounds` does). Probes: Kubernetes has no sub-second probe timings, so
  they are rounded up to whole seconds (with a warning); so is `terminationGracePeriodSeconds`. Instances get `PORT`,
  `HOST=0.0.0.0`, `INFERSTACK_{SERVICE,DEPLOYMENT,ROLE,INSTANCE}` and, for a model,
  `INFERSTACK_MODEL_{REGISTRY,VERSION,PATH}`; a user env var of the same name wins.
- **Pod security** (restricted standard): non-root (uid/gid/fsGroup 65532), no privilege escalation, all capabilities
  dropped, RuntimeDefault seccomp, read-only root filesystem with an emptyDir at `/tmp` (unless a mount is there), no
  service account token. Mounts are PersistentVolumeClaims named by the mount's `source`.
- **Placement.** Node labels the cluster provides: `inferstack.io/queue`, `topology.kubernetes.io/zone`,
  `inferstack.io/billing` (`prepaid` | `postpaid`), `inferstack.io/gpu-type` (GPU specs), `inferstack.io/numa-aligned`
  (`"true"` on pools with the static CPU manager and a topology manager policy). Nodes of idle (preemptible) capacity
  carry the taint `inferstack.io/idle=true:NoSchedule`. A regular deployment *requires* its queue, zone and billing;
  a `use_idle` one requires its zone and one of its own queue or the queues lending idle capacity in that zone,
  prefers the lenders, and tolerates the idle taint. GPU specs tolerate `nvidia.com/gpu:NoSchedule`.
- **Priority.** `priorityClassName: inferstack-priority-<1..9>` (value 1000 × priority); `use_idle` deployments get
  `inferstack-idle-<1..9>` (value = priority, below every regular class, `preemptionPolicy: Never`), so they are the
  first to go. The PriorityClass objects are cluster-wide: rendered only with `cluster_bootstrap`, for the classes
  the stack uses.
- **Resources.** requests = the compute spec (CPU, memory, `nvidia.com/gpu`); limits = memory and GPUs. With
  `numa_affinity`: Guaranteed QoS (requests = limits, CPUs rounded up to an integer, with a warning when rounded) and
  a *preferred* affinity to `inferstack.io/numa-aligned=true`; past half the machine's CPUs or GPUs there is no NUMA
  policy: a warning, and the role is rendered as without NUMA.
- **Secrets.** The secret env values of a deployment live in one `v1/Secret` `<service-key>-<deployment-key>-env`;
  keys are the env names (`<role>.<NAME>` for a role's own env in multi_role deployments); containers read them with
  `secretKeyRef`. The Secret is rendered only with `include_secrets` (as `stringData`); otherwise a warning names it
  and its keys, and the user creates it.
- **Multi-role.** Every role gets a headless Service `<service>-<deployment>-<role>`; each role's instances get
  `INFERSTACK_ROLE_<ROLE>_ENDPOINTS=<that Service>.<namespace>.svc:<listen port>` for every other role (DNS resolves to
  the role's instances). Only the entry role is selected by the deployment's Service and so takes traffic.
- **Services.** Every deployment has a ClusterIP Service `<service>-<deployment>` selecting its entry role: the
  service's call ports (named `http`, `http-<port>`) → the container port `http` (the listen port); the deployment's
  call ports pass through. Pods carry `inferstack.io/traffic: "on"` (entry role of a deployment that accepts traffic)
  or `"off"`; toggling `accept_traffic` changes the pod template, so it rolls the pods.
- **Traffic.** `by_instance_count` → a Service `<service-key>` selecting `inferstack.io/traffic=on` pods of the
  service (every ready instance an equal share): type LoadBalancer with `clb` (no HTTPRoute: a load balancer cannot
  do header rules, mirroring or timeouts — warned when set), ClusterIP behind the HTTPRoute otherwise. Every other
  case → one Gateway API `HTTPRoute` `<service-key>` attached to the stack's one Gateway (`kubernetes.gateway`, for
  `public_gateway` and `private_gateway` alike: which Gateway is private is the cluster's choice), matching path prefix
  `/<service-key>` (stripped by a URLRewrite filter, so one Gateway serves many services). Its rules, in precedence
  order: direct calls (`X-Inferstack-Deployment: <key>`, one rule per deployment), header rules, then the weighted
  split (`backendRefs` weights = shares × 10 000, deployments at weight 0 left out, or the per-instance Service). A
  mirror is a `RequestMirror` filter on every rule (`percent`, or `fraction` for non-integer percents); the timeout
  is `timeouts.request`. An HTTPRoute holds at most 16 rules: header rules past 15, then direct-call rules, are left
  out with a warning; so is a header rule that is no valid header match (name not an HTTP token, empty value). `consistent_hash` and `retries` have no standard-channel field: warned, not rendered.
  `clb` with `weighted` routes through the Gateway (a load balancer cannot weight), with a warning.
- **Autoscaling.** Metric rules only → `autoscaling/v2` HPA; any schedule → one KEDA `ScaledObject` (cron triggers,
  plus the metric rules as triggers) and no HPA. Metrics: `cpu` → resource utilization; `qps`, `in_flight`,
  `latency_p99_ms`, `gpu` → per-pod metrics `inferstack_requests_per_second`, `inferstack_in_flight_requests`,
  `inferstack_latency_p99_ms`, `DCGM_FI_DEV_GPU_UTIL` (HPA: from the custom metrics API; KEDA: Prometheus at
  `prometheus_url`). A window with `min`/`max` raises the count to `min` (KEDA's cron `desiredReplicas`); KEDA has
  one `maxReplicaCount` for all hours (the largest maximum), warned when the maxima differ.
- **Disruption and network.** A PodDisruptionBudget per role: `maxUnavailable` = the rolling update's max
  unavailable (whole percent, rounded down; 0 becomes 1 instance, since a budget of 0 blocks node drains forever).
  A NetworkPolicy per deployment from its security group: one ingress rule per security-group rule (ipBlock of the
  source CIDR, TCP/UDP/SCTP port ranges), plus traffic between the roles of a multi_role deployment.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ...spec import (
    ComputeSpec,
    Deployment,
    Inventory,
    KubernetesOptions,
    Queue,
    Role,
    SecurityGroup,
    Service,
    StackFile,
    default_inventory,
)
from ...spec.service import Probe
from .names import env_role_suffix, label_value, object_name, workload_name

LABEL_PREFIX = "inferstack.io/"
DIRECT_CALL_HEADER = "X-Inferstack-Deployment"
IDLE_TAINT_KEY = "inferstack.io/idle"
NUMA_LABEL = "inferstack.io/numa-aligned"
CONTAINER_NAME = "inference"
POD_USER = 65532
DEFAULT_CALL_PORT = 8000
MAX_ROUTE_RULES = 16
MAX_BACKEND_REFS = 16
GATEWAY_GROUP = "gateway.networking.k8s.io"

# Apply order: what others reference comes first; the file name prefix is this rank, so names stay stable.
KIND_ORDER = ("PriorityClass", "Secret", "NetworkPolicy", "Service", "Deployment", "PodDisruptionBudget",
              "HorizontalPodAutoscaler", "ScaledObject", "HTTPRoute")

# metric → (per-pod metric name, PromQL aggregation over pods, KEDA metricType)
POD_METRICS = {
    "qps": ("inferstack_requests_per_second", "sum", "AverageValue"),
    "in_flight": ("inferstack_in_flight_requests", "sum", "AverageValue"),
    "latency_p99_ms": ("inferstack_latency_p99_ms", "avg", "Value"),
    "gpu": ("DCGM_FI_DEV_GPU_UTIL", "avg", "Value"),
}

_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_EPS = 1e-9


class RenderError(ValueError):
    """The stack cannot be rendered: a reference is missing from the inventory, or two objects share a name."""


@dataclass(frozen=True)
class RenderOptions:
    """How to render. Fields left `None` come from the stack's `kubernetes:` options."""

    namespace: str | None = None
    gateway_name: str | None = None
    gateway_namespace: str | None = None
    include_secrets: bool = False
    cluster_bootstrap: bool | None = None
    inventory: Inventory | None = None  # base inventory (default: default_inventory()); the stack's is merged in
    preset_registry: str = "ghcr.io"
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"


@dataclass
class RenderResult:
    """Rendered objects in stable order, and what could not be rendered exactly."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def files(self) -> list[tuple[str, str]]:
        """(file name, YAML text) per object, in order."""
        return [(file_name(obj), to_yaml(obj)) for obj in self.objects]

    def to_documents(self) -> str:
        """All objects as one multi-document YAML stream, each headed by its file name."""
        return "".join(f"---\n# {name}\n{text}" for name, text in self.files())


# --- public entry points ---------------------------------------------------------------------------------------

def render(stack: StackFile, options: RenderOptions | None = None) -> RenderResult:
    """Every object of every service of `stack` (and the cluster-wide ones with `cluster_bootstrap`)."""
    ctx = _Context.of(stack, options)
    objects: list[dict[str, Any]] = []
    for svc in stack.services:
        objects += _service_objects(svc, ctx)
    objects += cluster_objects(stack, options)
    return RenderResult(_ordered(objects), ctx.warnings)


def render_service(service: Service, stack: StackFile, options: RenderOptions | None = None) -> RenderResult:
    """The namespaced objects of one service; `stack` supplies the options and the inventory."""
    ctx = _Context.of(stack, options)
    return RenderResult(_ordered(_service_objects(service, ctx)), ctx.warnings)


def cluster_objects(stack: StackFile, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """The cluster-wide objects (PriorityClasses the stack uses) when cluster bootstrap is on (`options`, else the
    stack's `kubernetes.cluster_bootstrap`); else none."""
    flag = options.cluster_bootstrap if options is not None else None
    if flag is None:
        flag = (stack.kubernetes or KubernetesOptions()).cluster_bootstrap
    return priority_class_objects(stack) if flag else []


def priority_class_objects(stack: StackFile) -> list[dict[str, Any]]:
    """The cluster-wide PriorityClasses the stack's deployments use, by name."""
    used = {(dep.use_idle, dep.priority) for svc in stack.services for dep in svc.deployments}
    return sorted((_priority_class(idle, priority) for idle, priority in used), key=lambda o: o["metadata"]["name"])


def file_name(obj: dict[str, Any]) -> str:
    """`NN-<kind>-<name>.yaml`, NN the kind's apply rank: stable when objects are added or removed."""
    return f"{KIND_ORDER.index(obj['kind']):02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors or aliases, whatever the dicts share."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(obj: dict[str, Any]) -> str:
    """One object as YAML, keys in the order rendered (byte-identical for equal objects)."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096)


# --- context ---------------------------------------------------------------------------------------------------

@dataclass
class _Context:
    namespace: str
    gateway_name: str
    gateway_namespace: str | None
    include_secrets: bool
    preset_registry: str
    prometheus_url: str
    inventory: Inventory
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, stack: StackFile, options: RenderOptions | None) -> _Context:
        o = options or RenderOptions()
        k = stack.kubernetes or KubernetesOptions()
        base = o.inventory if o.inventory is not None else default_inventory()
        return cls(
            namespace=o.namespace or k.namespace,
            gateway_name=o.gateway_name or k.gateway.name,
            gateway_namespace=o.gateway_namespace or k.gateway.namespace,
            include_secrets=o.include_secrets,
            preset_registry=o.preset_registry.rstrip("/"),
            prometheus_url=o.prometheus_url,
            inventory=base.merged(stack.inventory),
        )

    def lookup(self, kind: str, name: str, what: str, where: str) -> Any:
        found = self.inventory.index(kind).get(name)
        if found is None:
            raise RenderError(f"{where}: {what} '{name}' is not in the inventory (validate the stack first)")
        return found

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where}: {message}")


def _ordered(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], int] = {}
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        seen[key] = seen.get(key, 0) + 1
    clashes = sorted(f"{kind} '{name}'" for (kind, name), n in seen.items() if n > 1)
    if clashes:
        raise RenderError(f"two objects would share a name: {', '.join(clashes)} — `<service-key>-<deployment-key>` "
                          f"is ambiguous here; change a key")
    return sorted(objects, key=lambda o: (KIND_ORDER.index(o["kind"]), o["metadata"]["name"]))


# --- metadata and labels ---------------------------------------------------------------------------------------

def _selector(svc: Service, dep: Deployment | None = None, role: str | None = None) -> dict[str, str]:
    labels = {f"{LABEL_PREFIX}service": label_value(svc.key or "")}
    if dep is not None:
        labels[f"{LABEL_PREFIX}deployment"] = label_value(dep.key or "")
    if role is not None:
        labels[f"{LABEL_PREFIX}role"] = label_value(role)
    return labels


def _labels(svc: Service, instance: str, dep: Deployment | None = None, role: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": label_value(svc.key or ""), "app.kubernetes.io/instance": instance}
    if role is not None:
        labels["app.kubernetes.io/component"] = label_value(role)
    labels["app.kubernetes.io/managed-by"] = "inferstack"
    return {**labels, **_selector(svc, dep, role)}


def _metadata(ctx: _Context, name: str, svc: Service, dep: Deployment | None = None,
              role: str | None = None) -> dict[str, Any]:
    annotations = {f"{LABEL_PREFIX}service-name": svc.name}
    if dep is not None:
        annotations[f"{LABEL_PREFIX}deployment-name"] = dep.name
    return {"name": name, "namespace": ctx.namespace, "labels": _labels(svc, name, dep, role),
            "annotations": annotations}


# --- quantities and units --------------------------------------------------------------------------------------

def _whole(value: float) -> int | None:
    """`value` as an int when it is a whole number (within float noise), else None."""
    return round(value) if abs(value - round(value)) < _EPS else None


def _cpu(value: float) -> str:
    """A Kubernetes quantity: whole numbers plain, else thousandths (`500m`)."""
    whole = _whole(value)
    return str(whole) if whole is not None else f"{max(1, round(value * 1000))}m"


def _memory(gib: float) -> str:
    whole = _whole(gib)
    return f"{whole}Gi" if whole is not None else f"{max(1, round(gib * 1024))}Mi"


def _round_up(value: float) -> int:
    """Whole seconds, surge percent: up, ignoring float noise (25.000000001 stays 25)."""
    return math.ceil(value - _EPS)


def _round_down(value: float) -> int:
    """Unavailable percent: down, ignoring float noise."""
    return math.floor(value + _EPS)


def _duration(seconds: float) -> str:
    """Gateway API duration (`1h2m3s4ms`, each number at most 5 digits); at least 1ms, since 0s means no timeout."""
    ms = min(max(1, math.ceil(seconds * 1000 - _EPS)), 99999 * 3_600_000)
    out = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out += f"{n}{unit}"
    return out


def _call_ports(svc: Service) -> list[int]:
    return list(svc.ports) or [DEFAULT_CALL_PORT]


def _call_service_ports(svc: Service) -> list[dict[str, Any]]:
    """The service's call ports on a Service, each to the container port named `http` (the listen port)."""
    return [{"name": "http" if i == 0 else f"http-{p}", "port": p, "targetPort": "http", "protocol": "TCP"}
            for i, p in enumerate(_call_ports(svc))]


# --- per service -----------------------------------------------------------------------------------------------

def _service_objects(svc: Service, ctx: _Context) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for dep in svc.deployments:
        objects += _deployment_objects(svc, dep, ctx)
    if svc.deployments:
        objects += _traffic_objects(svc, ctx)
    return objects


def _is_multi(dep: Deployment) -> bool:
    return dep.inference_mode == "multi_role" or bool(dep.roles)


def _deployment_objects(svc: Service, dep: Deployment, ctx: _Context) -> list[dict[str, Any]]:
    where = f"{svc.key}/{dep.key}"
    queue: Queue = ctx.lookup("queues", dep.queue, "queue", where)
    multi = _is_multi(dep)
    roles = dep.effective_roles()
    secrets = _secret_values(dep, multi)
    secret_name = object_name(svc.key or "", dep.key or "", "env")
    objects = [_service(svc, dep, ctx), _network_policy(svc, dep, ctx, multi)]
    if secrets:
        if ctx.include_secrets:
            objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": _metadata(ctx, secret_name, svc, dep),
                            "type": "Opaque", "stringData": dict(sorted(secrets.items()))})
        else:
            ctx.warn(where, f"Secret '{secret_name}' (keys: {', '.join(sorted(secrets))}) is referenced but not "
                            f"rendered: create it in namespace '{ctx.namespace}', or render with --include-secrets")
    for role in roles:
        role_label = role.name if multi else None
        rwhere = f"{where}/{role.name}" if multi else where
        spec: ComputeSpec = ctx.lookup("compute_specs", role.compute_spec, "compute spec", rwhere)
        name = workload_name(svc.key or "", dep.key or "", role_label)
        objects.append(_workload(svc, dep, role, roles, multi, queue, spec, secret_name, name, ctx, rwhere))
        if multi:
            objects.append(_role_service(svc, dep, role.name, name, ctx))
        objects.append(_pdb(svc, dep, role, role_label, name, ctx))
        objects += _autoscaler(svc, dep, role, role_label, name, ctx, rwhere)
    return objects


def _secret_values(dep: Deployment, multi: bool) -> dict[str, str]:
    """Secret key → value: env name for the deployment's env, `<role>.<NAME>` for a multi_role role's own env."""
    values = {e.name: e.secret.get_secret_value() for e in dep.env if e.secret is not None}
    for role in (dep.roles or []) if multi else []:
        values.update({f"{role.name}.{e.name}": e.secret.get_secret_value() for e in role.env if e.secret is not None})
    return values


def _secret_key(dep: Deployment, role: Role, name: str, multi: bool) -> str:
    own = next((r for r in dep.roles or [] if r.name == role.name), None) if multi else None
    if own is not None and any(e.name == name and e.secret is not None for e in own.env):
        return f"{role.name}.{name}"
    return name


# --- the workload ----------------------------------------------------------------------------------------------

def _image(dep: Deployment, ctx: _Context) -> str:
    preset = dep.image.preset
    if not preset:
        return dep.image.custom or dep.image.url or ""
    tagged = "@" in preset or ":" in preset.rsplit("/", 1)[-1]
    return f"{ctx.preset_registry}/{preset}" + ("" if tagged else ":latest")


def _workload(svc: Service, dep: Deployment, role: Role, roles: list[Role], multi: bool, queue: Queue,
              spec: ComputeSpec, secret_name: str, name: str, ctx: _Context, where: str) -> dict[str, Any]:
    role_label = role.name if multi else None
    entry = role.name == dep.entry_role().name
    ru = role.rolling_update
    surge, unavailable = _round_up(ru.max_surge), _round_down(ru.max_unavailable)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    pod_labels = {**_labels(svc, name, dep, role.name),
                  f"{LABEL_PREFIX}traffic": "on" if entry and dep.accepts_traffic else "off"}
    deployment_spec: dict[str, Any] = {}
    if not _autoscaled(role):
        deployment_spec["replicas"] = role.replicas if role.replicas is not None else 1
    deployment_spec.update({
        "selector": {"matchLabels": _selector(svc, dep, role.name)},
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": f"{surge}%", "maxUnavailable": f"{unavailable}%"}},
        "template": {"metadata": {"labels": pod_labels},
                     "spec": _pod_spec(svc, dep, role, roles, multi, queue, spec, secret_name, ctx, where)},
    })
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(ctx, name, svc, dep, role_label),
            "spec": deployment_spec}


def _pod_spec(svc: Service, dep: Deployment, role: Role, roles: list[Role], multi: bool, queue: Queue,
              spec: ComputeSpec, secret_name: str, ctx: _Context, where: str) -> dict[str, Any]:
    numa = dep.numa_affinity and _numa_fits(spec, ctx, where)
    volumes, mounts = _volumes(dep, ctx, where)
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": _image(dep, ctx)}
    if role.command:
        container["command"] = list(role.command)
    container["ports"] = [{"name": "http", "containerPort": dep.ports.listen, "protocol": "TCP"}] + [
        {"name": f"call-{p}", "containerPort": p, "protocol": "TCP"} for p in dep.ports.call]
    container["env"] = _env(svc, dep, role, roles, multi, secret_name, ctx)
    container["resources"] = _resources(spec, numa, ctx, where)
    container.update(_probes(role, ctx, where))
    if mounts:
        container["volumeMounts"] = mounts
    container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "privileged": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True}
    pod: dict[str, Any] = {
        "priorityClassName": _priority_class_name(dep.use_idle, dep.priority),
        "terminationGracePeriodSeconds": _round_up(dep.graceful_shutdown_s),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": POD_USER, "runAsGroup": POD_USER, "fsGroup": POD_USER,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "affinity": _affinity(dep, queue, spec, numa, ctx),
    }
    tolerations = _tolerations(dep, spec)
    if tolerations:
        pod["tolerations"] = tolerations
    pod["containers"] = [container]
    pod["volumes"] = volumes
    return pod


def _env(svc: Service, dep: Deployment, role: Role, roles: list[Role], multi: bool, secret_name: str,
         ctx: _Context) -> list[dict[str, Any]]:
    injected: list[dict[str, Any]] = [
        {"name": "PORT", "value": str(dep.ports.listen)},
        {"name": "HOST", "value": "0.0.0.0"},
        {"name": "INFERSTACK_SERVICE", "value": svc.key},
        {"name": "INFERSTACK_DEPLOYMENT", "value": dep.key},
        {"name": "INFERSTACK_ROLE", "value": role.name},
        {"name": "INFERSTACK_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if dep.model is not None:
        for suffix, value in (("REGISTRY", dep.model.registry), ("VERSION", dep.model.version),
                              ("PATH", dep.model.path)):
            if value is not None:
                injected.append({"name": f"INFERSTACK_MODEL_{suffix}", "value": value})
    if multi:
        for other in roles:
            if other.name != role.name:
                host = workload_name(svc.key or "", dep.key or "", other.name)
                injected.append({"name": f"INFERSTACK_ROLE_{env_role_suffix(other.name)}_ENDPOINTS",
                                 "value": f"{host}.{ctx.namespace}.svc:{dep.ports.listen}"})
    user: list[dict[str, Any]] = []
    for e in role.env:
        if e.secret is not None:
            ref = {"name": secret_name, "key": _secret_key(dep, role, e.name, multi)}
            user.append({"name": e.name, "valueFrom": {"secretKeyRef": ref}})
        else:
            user.append({"name": e.name, "value": e.value or ""})
    names = {e["name"] for e in user}
    return [e for e in injected if e["name"] not in names] + user


def _numa_fits(spec: ComputeSpec, ctx: _Context, where: str) -> bool:
    if spec.exceeds_half_machine():
        ctx.warn(where, f"NUMA affinity skipped: '{spec.name}' ({spec.cpu:g} CPU, {spec.gpu_count} GPU) exceeds half "
                        f"its machine ({spec.machine.cpu:g} CPU, {spec.machine.gpu} GPU)")
        return False
    return True


def _resources(spec: ComputeSpec, numa: bool, ctx: _Context, where: str) -> dict[str, Any]:
    cpu = spec.cpu
    if numa and _whole(cpu) is None:
        cpu = float(math.ceil(cpu))
        ctx.warn(where, f"NUMA affinity needs whole CPUs: {spec.cpu:g} CPU rounded up to {cpu:g} (Guaranteed QoS)")
    requests = {"cpu": _cpu(cpu), "memory": _memory(spec.memory_gib)}
    limits = {"cpu": _cpu(cpu), "memory": _memory(spec.memory_gib)} if numa else {"memory": _memory(spec.memory_gib)}
    if spec.gpu_count:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec.gpu_count)
    return {"requests": requests, "limits": limits}


def _probes(role: Role, ctx: _Context, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rounded = False
    for kind in ("startup", "readiness", "liveness"):
        probe: Probe | None = getattr(role.probes, kind)
        if probe is None:
            continue
        rendered: dict[str, Any] = {}
        if probe.http is not None:
            rendered["httpGet"] = {"path": probe.http.path, "port": probe.http.port or "http"}
        elif probe.tcp is not None:
            rendered["tcpSocket"] = {"port": probe.tcp.port or "http"}
        elif probe.command is not None:
            rendered["exec"] = {"command": list(probe.command)}
        timings = {"initialDelaySeconds": probe.initial_delay_s, "periodSeconds": probe.period_s,
                   "timeoutSeconds": probe.timeout_s}
        for key, value in timings.items():
            whole = _round_up(value)
            rounded |= _whole(value) is None
            rendered[key] = max(whole, 0 if key == "initialDelaySeconds" else 1)
        rendered["successThreshold"] = probe.success_threshold
        rendered["failureThreshold"] = probe.failure_threshold
        out[f"{kind}Probe"] = rendered
    if rounded:
        ctx.warn(where, "probe timings rounded up to whole seconds (Kubernetes has no sub-second probes)")
    return out


def _volumes(dep: Deployment, ctx: _Context, where: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if not any(m.path.rstrip("/") == "/tmp" for m in dep.mounts):
        volumes.append({"name": "tmp", "emptyDir": {}})
        mounts.append({"name": "tmp", "mountPath": "/tmp"})
    claimed: dict[str, str] = {}
    for m in dep.mounts:
        if m.source not in claimed:
            claimed[m.source] = object_name("data", m.source)
            if len(m.source) > 253 or not _SUBDOMAIN_RE.match(m.source):
                ctx.warn(where, f"mount source '{m.source}' is not a valid PersistentVolumeClaim name "
                                f"(lowercase DNS subdomain); rendered as is")
            volumes.append({"name": claimed[m.source], "persistentVolumeClaim": {"claimName": m.source}})
        mount: dict[str, Any] = {"name": claimed[m.source], "mountPath": m.path}
        if m.read_only:
            mount["readOnly"] = True
        mounts.append(mount)
    return volumes, mounts


def _affinity(dep: Deployment, queue: Queue, spec: ComputeSpec, numa: bool, ctx: _Context) -> dict[str, Any]:
    def expr(key: str, values: Iterable[str]) -> dict[str, Any]:
        return {"key": key, "operator": "In", "values": list(values)}

    required = [expr("topology.kubernetes.io/zone", [queue.zone])]
    preferred: list[dict[str, Any]] = []
    if dep.use_idle:
        lenders = sorted(q.name for q in ctx.inventory.queues if q.lends_idle and q.zone == queue.zone)
        required.append(expr(f"{LABEL_PREFIX}queue", sorted({queue.name, *lenders})))
        if lenders:
            preferred.append({"weight": 100, "preference": {"matchExpressions": [expr(f"{LABEL_PREFIX}queue",
                                                                                      lenders)]}})
    else:
        required += [expr(f"{LABEL_PREFIX}queue", [queue.name]), expr(f"{LABEL_PREFIX}billing", [queue.billing])]
    if spec.gpu_count and spec.gpu_type:
        required.append(expr(f"{LABEL_PREFIX}gpu-type", [spec.gpu_type]))
    if numa:
        preferred.append({"weight": 50, "preference": {"matchExpressions": [expr(NUMA_LABEL, ["true"])]}})
    node: dict[str, Any] = {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": required}]}}
    if preferred:
        node["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return {"nodeAffinity": node}


def _tolerations(dep: Deployment, spec: ComputeSpec) -> list[dict[str, Any]]:
    out = []
    if dep.use_idle:
        out.append({"key": IDLE_TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"})
    if spec.gpu_count:
        out.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    return out


def _priority_class_name(idle: bool, priority: int) -> str:
    return f"inferstack-idle-{priority}" if idle else f"inferstack-priority-{priority}"


def _priority_class(idle: bool, priority: int) -> dict[str, Any]:
    name = _priority_class_name(idle, priority)
    meta = {"name": name, "labels": {"app.kubernetes.io/managed-by": "inferstack"}}
    if idle:
        return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": meta, "value": priority,
                "globalDefault": False, "preemptionPolicy": "Never",
                "description": f"inferstack idle capacity, priority {priority}: preempted first, never preempts"}
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": meta, "value": 1000 * priority,
            "globalDefault": False, "preemptionPolicy": "PreemptLowerPriority",
            "description": f"inferstack deployment priority {priority} (1-9; higher preempts lower)"}


# --- services, disruption, network -----------------------------------------------------------------------------

def _service(svc: Service, dep: Deployment, ctx: _Context) -> dict[str, Any]:
    name = workload_name(svc.key or "", dep.key or "")
    entry = dep.entry_role().name
    ports = _call_service_ports(svc)
    ports += [{"name": f"call-{p}", "port": p, "targetPort": p, "protocol": "TCP"}
              for p in dep.ports.call if p not in _call_ports(svc)]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(ctx, name, svc, dep),
            "spec": {"type": "ClusterIP", "selector": _selector(svc, dep, entry), "ports": ports}}


def _role_service(svc: Service, dep: Deployment, role: str, name: str, ctx: _Context) -> dict[str, Any]:
    ports = [{"name": "http", "port": dep.ports.listen, "targetPort": "http", "protocol": "TCP"}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(ctx, name, svc, dep, role),
            "spec": {"clusterIP": "None", "selector": _selector(svc, dep, role), "ports": ports}}


def _pdb(svc: Service, dep: Deployment, role: Role, role_label: str | None, name: str,
         ctx: _Context) -> dict[str, Any]:
    percent = _round_down(role.rolling_update.max_unavailable)
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _metadata(ctx, name, svc, dep, role_label),
            "spec": {"maxUnavailable": f"{percent}%" if percent >= 1 else 1,
                     "selector": {"matchLabels": _selector(svc, dep, role.name)},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"}}


def _network_policy(svc: Service, dep: Deployment, ctx: _Context, multi: bool) -> dict[str, Any]:
    sg: SecurityGroup = ctx.lookup("security_groups", dep.security_group, "security group", f"{svc.key}/{dep.key}")
    protocols = {"tcp": ["TCP"], "udp": ["UDP"], "all": ["TCP", "UDP", "SCTP"]}
    ingress: list[dict[str, Any]] = []
    for rule in sg.ingress:
        ports = []
        for protocol in protocols[rule.protocol]:
            port: dict[str, Any] = {"protocol": protocol, "port": rule.from_port}
            if rule.last_port > rule.from_port:
                port["endPort"] = rule.last_port
            ports.append(port)
        cidr = str(ipaddress.ip_network(rule.source, strict=False))
        ingress.append({"from": [{"ipBlock": {"cidr": cidr}}], "ports": ports})
    if multi:
        ingress.append({"from": [{"podSelector": {"matchLabels": _selector(svc, dep)}}]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _metadata(ctx, workload_name(svc.key or "", dep.key or ""), svc, dep),
            "spec": {"podSelector": {"matchLabels": _selector(svc, dep)}, "policyTypes": ["Ingress"],
                     "ingress": ingress}}


# --- autoscaling -----------------------------------------------------------------------------------------------

def _autoscaled(role: Role) -> bool:
    """An autoscaler owns the role's replica count (then the Deployment leaves `replicas` out)."""
    return role.autoscaling is not None and bool(role.autoscaling.schedules or role.autoscaling.metrics)


def _autoscaler(svc: Service, dep: Deployment, role: Role, role_label: str | None, name: str, ctx: _Context,
                where: str) -> list[dict[str, Any]]:
    a = role.autoscaling
    if a is None or not _autoscaled(role):
        return []
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    meta = _metadata(ctx, name, svc, dep, role_label)
    if not a.schedules:
        metrics = []
        for m in a.metrics:
            if m.metric == "cpu":
                metrics.append({"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": max(1, round(m.target))}}})
            else:
                metrics.append({"type": "Pods", "pods": {
                    "metric": {"name": POD_METRICS[m.metric][0]},
                    "target": {"type": "AverageValue", "averageValue": _cpu(m.target)}}})
        return [{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta,
                 "spec": {"scaleTargetRef": target, "minReplicas": a.floor, "maxReplicas": a.ceiling,
                          "metrics": metrics}}]
    maxima = sorted({m.max for m in a.metrics} | {s.max for s in a.schedules if s.max is not None})
    if len(maxima) > 1:
        ctx.warn(where, f"KEDA has one maximum for all hours: {a.ceiling} (the windows' and metric rules' maxima "
                        f"{', '.join(map(str, maxima))} cannot differ by time)")
    triggers: list[dict[str, Any]] = []
    for s in a.schedules:
        desired = s.replicas if s.replicas is not None else s.min
        triggers.append({"type": "cron", "metadata": {"timezone": s.timezone, "start": s.start, "end": s.end,
                                                      "desiredReplicas": str(desired)}})
    for m in a.metrics:
        if m.metric == "cpu":
            triggers.append({"type": "cpu", "metricType": "Utilization",
                             "metadata": {"value": str(max(1, round(m.target)))}})
            continue
        metric, aggregate, metric_type = POD_METRICS[m.metric]
        query = f'{aggregate}({metric}{{namespace="{ctx.namespace}",pod=~"{name}-[a-z0-9]+-[a-z0-9]+"}})'
        triggers.append({"type": "prometheus", "metricType": metric_type,
                         "metadata": {"serverAddress": ctx.prometheus_url, "query": query,
                                      "threshold": _decimal(m.target)}})
    return [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta,
             "spec": {"scaleTargetRef": target, "minReplicaCount": a.floor, "maxReplicaCount": a.ceiling,
                      "triggers": triggers}}]


def _decimal(value: float) -> str:
    """A plain decimal (no exponent): KEDA reads thresholds as strings."""
    whole = _whole(value)
    return str(whole) if whole is not None else f"{value:.6f}".rstrip("0").rstrip(".")


# --- traffic ---------------------------------------------------------------------------------------------------

def _traffic_objects(svc: Service, ctx: _Context) -> list[dict[str, Any]]:
    t = svc.traffic
    where = str(svc.key)
    objects: list[dict[str, Any]] = []
    if t.strategy == "by_instance_count":
        objects.append(_instance_share_service(svc, ctx))
        if svc.network_type == "clb":
            dropped = [f for f in ("header_rules", "mirror", "consistent_hash", "timeout_s", "retries")
                       if f in t.model_fields_set and getattr(t, f)]
            if dropped:
                ctx.warn(where, f"not rendered with a clb load balancer (it routes connections, not requests): "
                                f"{', '.join(dropped)}; use a gateway network type for them")
            return objects
    elif svc.network_type == "clb":
        ctx.warn(where, f"clb with weighted traffic: a load balancer cannot weight, so traffic goes through Gateway "
                        f"'{ctx.gateway_name}' (an HTTPRoute); expose that Gateway through your load balancer")
    if t.consistent_hash is not None:
        ctx.warn(where, f"consistent_hash on header '{t.consistent_hash.header}' has no Gateway API standard-channel "
                        f"field: not rendered (configure session persistence in your Gateway implementation)")
    if "retries" in t.model_fields_set:
        ctx.warn(where, f"retries ({t.retries}) have no Gateway API standard-channel field: not rendered")
    objects.append(_http_route(svc, ctx, where))
    return objects


def _instance_share_service(svc: Service, ctx: _Context) -> dict[str, Any]:
    name = object_name(svc.key or "")
    ports = _call_service_ports(svc)
    selector = {**_selector(svc), f"{LABEL_PREFIX}traffic": "on"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(ctx, name, svc),
            "spec": {"type": "LoadBalancer" if svc.network_type == "clb" else "ClusterIP", "selector": selector,
                     "ports": ports}}


def _http_route(svc: Service, ctx: _Context, where: str) -> dict[str, Any]:
    t = svc.traffic
    port = _call_ports(svc)[0]
    prefix = f"/{svc.key}"

    def backend(dep_key: str) -> dict[str, Any]:
        return {"name": workload_name(svc.key or "", dep_key), "port": port}

    def rule(name: str, refs: list[dict[str, Any]], header: tuple[str, str] | None = None) -> dict[str, Any]:
        match: dict[str, Any] = {"path": {"type": "PathPrefix", "value": prefix}}
        if header is not None:
            match["headers"] = [{"type": "Exact", "name": header[0], "value": header[1]}]
        filters: list[dict[str, Any]] = [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
        if t.mirror is not None:
            percent = _whole(t.mirror.percent)
            share = ({"percent": percent} if percent is not None
                     else {"fraction": {"numerator": max(1, round(t.mirror.percent * 1000)), "denominator": 100000}})
            filters.append({"type": "RequestMirror", "requestMirror": {"backendRef": backend(t.mirror.deployment),
                                                                       **share}})
        return {"name": name, "matches": [match], "filters": filters, "backendRefs": refs,
                "timeouts": {"request": _duration(t.timeout_s)}}

    header_rules = []
    for i, hr in enumerate(t.header_rules):
        if not _HEADER_NAME_RE.match(hr.header) or not 1 <= len(hr.value) <= 4096:
            ctx.warn(where, f"header rule {i} ({hr.header!r}) is not a valid HTTPRoute header match "
                            f"(name an HTTP token, value 1-4096 characters): left out")
            continue
        header_rules.append(rule(f"header-{i}", [backend(hr.deployment)], (hr.header, hr.value)))
    if len(header_rules) > MAX_ROUTE_RULES - 1:
        ctx.warn(where, f"an HTTPRoute holds {MAX_ROUTE_RULES} rules: header rules past the first "
                        f"{MAX_ROUTE_RULES - 1} are left out")
        header_rules = header_rules[: MAX_ROUTE_RULES - 1]
    keys = svc.deployment_keys()
    room = MAX_ROUTE_RULES - 1 - len(header_rules)
    if len(keys) > room:
        ctx.warn(where, f"an HTTPRoute holds {MAX_ROUTE_RULES} rules: no direct-call rule ({DIRECT_CALL_HEADER}) for "
                        f"{', '.join(keys[room:])}")
    direct = [rule(object_name("direct", k), [backend(k)], (DIRECT_CALL_HEADER, k)) for k in keys[:room]]

    if t.strategy == "by_instance_count":
        default_refs = [{"name": object_name(svc.key or ""), "port": port}]
    else:
        total = sum(t.weights.get(k, 0.0) for k in keys) or 1.0
        default_refs = [{**backend(k), "weight": max(1, round(t.weights[k] / total * 10000))}
                        for k in keys if t.weights.get(k, 0.0) > 0]
        if len(default_refs) > MAX_BACKEND_REFS:
            ctx.warn(where, f"an HTTPRoute rule holds {MAX_BACKEND_REFS} backends: weighted deployments past the "
                            f"first {MAX_BACKEND_REFS} are left out")
            default_refs = default_refs[:MAX_BACKEND_REFS]
    parent = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": ctx.gateway_name}
    if ctx.gateway_namespace:
        parent["namespace"] = ctx.gateway_namespace
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute",
            "metadata": _metadata(ctx, object_name(svc.key or ""), svc),
            "spec": {"parentRefs": [parent], "rules": [*direct, *header_rules, rule("default", default_refs)]}}
