"""A role as a Kubernetes workload: its `apps/v1` Deployment (pods that start, serve and drain like local instances)
and its PodDisruptionBudget.

- **Replicas.** `replicas` is left out where an autoscaler owns the count (else every apply would reset it); see
  `RenderOptions.keep_autoscaled_replicas` for tools that stop managing the field once the object exists.
- **Rolling update.** A fixed replica count gets the instance counts of `RollingUpdate.bounds` (exact decimal
  arithmetic: surge up, unavailable down, never both 0), the same numbers the local runtime uses. An autoscaled role
  (its count moves) gets whole percentages: surge rounded up, unavailable down (if both end at 0, unavailable becomes
  1 %, which Kubernetes resolves to one instance).
- **Images.** `preset: inferstack/echo` → `<preset_registry>/inferstack/echo:<release>` (the release the preset was
  published with: never `:latest`); `kubernetes.preset_images` overrides it per preset, e.g. with a digest. `custom`
  and `url` are used as they are. Pull policy: `IfNotPresent` for a digest (it cannot change), `Always` for a tag
  (a tag can be pushed again; the pod runs what the tag names now).
- **Probes** as the embedded platform runs them: the stack's own, else the local defaults — readiness HTTP
  `GET <readiness_path>` for presets (`/healthz`) and a TCP connect to the listen port for other images; presets also
  get their liveness path (`/livez`). Kubernetes has no sub-second probe timings: they are rounded up to whole
  seconds (with a warning for the stack's own probes).
- **Draining.** Endpoint removal and SIGTERM are concurrent in Kubernetes; locally an instance leaves routing before
  it is stopped. So pods get a `preStop` sleep of `kubernetes.prestop_delay_s` (default 5 s: time for the Gateway to
  stop sending), and `terminationGracePeriodSeconds` = that delay + `graceful_shutdown_s` (rounded up).
- **Environment.** `PORT` (always the listen port: the probes and Services target it, as locally the platform sets
  it), `HOST=0.0.0.0`, `HOME=/tmp` and `XDG_CACHE_HOME=/tmp/.cache` (the root file system is read-only),
  `INFERSTACK_{SERVICE,DEPLOYMENT,ROLE,INSTANCE}` and, for a model, `INFERSTACK_MODEL_{REGISTRY,VERSION,PATH}`; a
  user env var of the same name wins, except `PORT` (warned).
- **Pod security** (restricted standard): non-root (uid/gid/fsGroup 65532, `fsGroupChangePolicy: OnRootMismatch` so
  large model volumes are not re-chowned at every start), no privilege escalation, all capabilities dropped,
  RuntimeDefault seccomp, read-only root filesystem with an emptyDir at `/tmp` (unless a mount is there), no service
  account token. Mounts are PersistentVolumeClaims named by the mount's `source`.
- **Resources.** requests = limits = the compute spec (CPU, memory, `nvidia.com/gpu`): an instance is the size of its
  spec. With `numa_affinity` CPUs are rounded up to whole ones (Guaranteed QoS, exclusive cores under the static CPU
  manager), with a warning when rounded.
- **Disruption.** A PodDisruptionBudget per role that allows exactly the evictions the rolling update takes down, never
  more (PDB percentages round *up*, rolling-update ones down, so a plain copy of the percentage allowed more): a fixed
  count gets `maxUnavailable: ⌊u % × replicas⌋` (an integer); an autoscaled role `minAvailable: <100 − u>%`, which the
  disruption controller rounds up, so evictions allowed = replicas − ⌈(100 − u) % × replicas⌉ = ⌊u % × replicas⌋ at
  whatever count the autoscaler sets. A role whose rolling update takes none down lets no voluntary eviction through:
  a single instance is never stopped by a drain; the drain waits (warned). Unhealthy pods are always evictable
  (`unhealthyPodEvictionPolicy: AlwaysAllow`), so a broken pod never blocks a drain."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

from ...images import PRESET_IMAGES
from ...spec import ComputeSpec, Deployment, Probe, Queue, Role, Service
from ...spec.kubernetes import autoscaled
from .context import LABEL_PREFIX, Context, labels, metadata, selector
from .flagger import SELECTOR_LABEL, canaried
from .names import env_role_suffix, object_name, workload_name
from .scheduling import affinity, numa_fits, priority_class_name, tolerations
from .units import cpu, memory, round_down, round_up, whole

CONTAINER_NAME = "inference"
POD_USER = 65532
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def rolling_percents(role: Role) -> tuple[int, int]:
    """(max surge %, max unavailable %) in whole percent, never both 0 (for roles whose count moves)."""
    ru = role.rolling_update
    surge, unavailable = round_up(ru.max_surge), round_down(ru.max_unavailable)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def rolling_update(role: Role) -> dict[str, int | str]:
    """The Deployment's `rollingUpdate`: instance counts at a fixed replica count, else whole percentages."""
    if autoscaled(role.autoscaling):
        surge, unavailable = rolling_percents(role)
        return {"maxSurge": f"{surge}%", "maxUnavailable": f"{unavailable}%"}
    unavailable_n, surge_n = role.rolling_update.bounds(role.starting_replicas)
    return {"maxSurge": surge_n, "maxUnavailable": unavailable_n}


def workload(svc: Service, dep: Deployment, role: Role, roles: list[Role], multi: bool, queue: Queue,
             spec: ComputeSpec, secret_name: str, name: str, ctx: Context, where: str) -> dict[str, Any]:
    role_label = role.name if multi else None
    entry = role.name == dep.entry_role().name
    pod_labels = {**labels(svc, name, dep, role.name),
                  f"{LABEL_PREFIX}traffic": "on" if entry and dep.accepts_traffic else "off"}
    matching = selector(svc, dep, role.name)
    if canaried(dep):  # Flagger selects by this label and names the primary's pods `<name>-primary` by it
        pod_labels[SELECTOR_LABEL] = matching[SELECTOR_LABEL] = name
    deployment_spec: dict[str, Any] = {}
    if not autoscaled(role.autoscaling) or ctx.keep_autoscaled_replicas:
        deployment_spec["replicas"] = role.starting_replicas
    deployment_spec.update({
        "selector": {"matchLabels": matching},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling_update(role)},
        "template": {"metadata": {"labels": pod_labels},
                     "spec": pod_spec(svc, dep, role, roles, multi, queue, spec, secret_name, ctx, where)},
    })
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(ctx, name, svc, dep, role_label),
            "spec": deployment_spec}


def pod_spec(svc: Service, dep: Deployment, role: Role, roles: list[Role], multi: bool, queue: Queue,
             spec: ComputeSpec, secret_name: str, ctx: Context, where: str) -> dict[str, Any]:
    numa = dep.numa_affinity and numa_fits(spec, ctx, where)
    volumes, mounts = _volumes(dep, ctx, where)
    reference = image(dep, ctx, where)
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": reference,
                                 "imagePullPolicy": "IfNotPresent" if "@" in reference else "Always"}
    if role.command:
        container["command"] = list(role.command)
    container["ports"] = [{"name": "http", "containerPort": dep.ports.listen, "protocol": "TCP"}] + [
        {"name": f"call-{p}", "containerPort": p, "protocol": "TCP"} for p in dep.ports.call]
    container["env"] = _env(svc, dep, role, roles, multi, secret_name, ctx, where)
    container["resources"] = _resources(spec, numa, ctx, where)
    container.update(_probes(dep, role, ctx, where))
    delay = round_up(ctx.options.prestop_delay_s)
    if delay > 0:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": delay}}}
    if mounts:
        container["volumeMounts"] = mounts
    container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "privileged": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True}
    pod: dict[str, Any] = {}
    priority = priority_class_name(dep.use_idle, dep.priority)
    if priority is not None:
        pod["priorityClassName"] = priority
    pod.update({
        "terminationGracePeriodSeconds": round_up(dep.graceful_shutdown_s + delay),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": POD_USER, "runAsGroup": POD_USER, "fsGroup": POD_USER,
                            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}},
        "affinity": affinity(dep, queue, spec, numa, ctx),
    })
    tols = tolerations(dep, spec)
    if tols:
        pod["tolerations"] = tols
    pod["containers"] = [container]
    pod["volumes"] = volumes
    return pod


def image(dep: Deployment, ctx: Context, where: str) -> str:
    """The container image: a preset's pinned release (or the stack's override), else the image as given."""
    preset = dep.image.preset
    if not preset:
        return dep.image.custom or dep.image.url or ""
    override = ctx.options.preset_images.get(preset)
    if override:
        return override
    if "@" in preset or ":" in preset.rsplit("/", 1)[-1]:
        return f"{ctx.preset_registry}/{preset}"
    release = PRESET_IMAGES.get(preset, {}).get("release")
    if release is None:
        ctx.warn(where, f"preset '{preset}' has no published release to pin: rendered as '{ctx.preset_registry}/"
                        f"{preset}' (the registry's latest); pin it with kubernetes.preset_images")
        return f"{ctx.preset_registry}/{preset}"
    return f"{ctx.preset_registry}/{preset}:{release}"


def _env(svc: Service, dep: Deployment, role: Role, roles: list[Role], multi: bool, secret_name: str,
         ctx: Context, where: str) -> list[dict[str, Any]]:
    port = {"name": "PORT", "value": str(dep.ports.listen)}
    injected: list[dict[str, Any]] = [
        {"name": "HOST", "value": "0.0.0.0"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
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
        if e.name == "PORT":
            ctx.warn(where, f"env PORT is the listen port ({dep.ports.listen}), set by the platform as locally (the "
                            f"probes and Services target it): the stack's PORT is not rendered; set ports.listen")
            continue
        if e.secret is not None:
            ref = {"name": secret_name, "key": _secret_key(dep, role, e.name, multi)}
            user.append({"name": e.name, "valueFrom": {"secretKeyRef": ref}})
        else:
            user.append({"name": e.name, "value": e.value or ""})
    names = {e["name"] for e in user}
    return [port, *(e for e in injected if e["name"] not in names), *user]


def _secret_key(dep: Deployment, role: Role, name: str, multi: bool) -> str:
    own = next((r for r in dep.roles or [] if r.name == role.name), None) if multi else None
    if own is not None and any(e.name == name and e.secret is not None for e in own.env):
        return f"{role.name}.{name}"
    return name


def _resources(spec: ComputeSpec, numa: bool, ctx: Context, where: str) -> dict[str, Any]:
    cpus = spec.cpu
    if numa and whole(cpus) is None:
        cpus = float(math.ceil(cpus))
        ctx.warn(where, f"NUMA affinity needs whole CPUs: {spec.cpu:g} CPU rounded up to {cpus:g} (Guaranteed QoS)")
    requests = {"cpu": cpu(cpus), "memory": memory(spec.memory_gib)}
    limits = dict(requests)
    if spec.gpu_count:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec.gpu_count)
    return {"requests": requests, "limits": limits}


def _default_probes(dep: Deployment) -> dict[str, dict[str, Any]]:
    """The probes the embedded platform runs when the stack sets none (platform/reconciler.py `_probes`,
    runtime/probes.py DEFAULT_READINESS), in Kubernetes form."""
    preset = PRESET_IMAGES.get(dep.image.preset or "", {})
    out: dict[str, dict[str, Any]] = {}
    if preset.get("readiness_path"):
        out["readiness"] = {"httpGet": {"path": preset["readiness_path"], "port": "http"}, "initialDelaySeconds": 0,
                            "periodSeconds": 1, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 2}
    else:
        out["readiness"] = {"tcpSocket": {"port": "http"}, "initialDelaySeconds": 0, "periodSeconds": 1,
                            "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3}
    if preset.get("liveness_path"):
        out["liveness"] = {"httpGet": {"path": preset["liveness_path"], "port": "http"}, "initialDelaySeconds": 0,
                           "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3}
    return out


def _probes(dep: Deployment, role: Role, ctx: Context, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rounded = False
    defaults = _default_probes(dep)
    for kind in ("startup", "readiness", "liveness"):
        probe: Probe | None = getattr(role.probes, kind)
        if probe is None:
            if kind in defaults:
                out[f"{kind}Probe"] = defaults[kind]
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
            rounded |= whole(value) is None
            rendered[key] = max(round_up(value), 0 if key == "initialDelaySeconds" else 1)
        rendered["successThreshold"] = probe.success_threshold
        rendered["failureThreshold"] = probe.failure_threshold
        out[f"{kind}Probe"] = rendered
    if rounded:
        ctx.warn(where, "probe timings rounded up to whole seconds (Kubernetes has no sub-second probes)")
    return out


def _volumes(dep: Deployment, ctx: Context, where: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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


# --- disruption ------------------------------------------------------------------------------------------------

def pdb(svc: Service, dep: Deployment, role: Role, role_label: str | None, name: str, ctx: Context,
        where: str) -> dict[str, Any]:
    budget: dict[str, int | str]
    if autoscaled(role.autoscaling):
        budget = {"minAvailable": f"{100 - round_down(role.rolling_update.max_unavailable)}%"}
    else:
        count = role.starting_replicas
        allowed = math.floor(Fraction(str(role.rolling_update.max_unavailable)) * count / 100)
        budget = {"maxUnavailable": allowed}
        if allowed == 0:
            ctx.warn(where, f"PodDisruptionBudget '{name}' lets no voluntary eviction through at {count} "
                            f"instance(s) (max_unavailable {role.rolling_update.max_unavailable:g} % rounds to 0, as "
                            f"in a rolling update): a node drain waits until the role has more instances")
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(ctx, name, svc, dep, role_label),
            "spec": {**budget, "selector": {"matchLabels": selector(svc, dep, role.name)},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"}}
