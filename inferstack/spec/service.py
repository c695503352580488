"""An inference service (推理服务), its deployments (部署) and its one traffic object (分流策略).

The models hold structure and single-field rules; rules across fields and objects live in `validate.py`, so that
all violations are reported at once with their exact paths."""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_serializer, model_validator
from pydantic_core import PydanticCustomError

from . import limits as L
from .findings import SECRET_MASK
from .progressive import Progressive
from .types import (
    KEY_RE,
    AbsPath,
    Command,
    Count,
    Cron,
    Description,
    EnvName,
    EnvValue,
    GracePeriod,
    HeaderName,
    HeaderValue,
    HttpPath,
    ImageName,
    Key,
    Label,
    MetricTarget,
    MirrorPercent,
    Model,
    MountSource,
    Name,
    Percent,
    Port,
    PositiveSeconds,
    Priority,
    Ref,
    Retries,
    RoleName,
    Seconds,
    SecretValue,
    Threshold,
    Timeout,
    TimeZone,
    Weight,
    check,
    max_items,
)

NetworkType = Literal["public_gateway", "private_gateway", "clb"]
Strategy = Literal["weighted", "by_instance_count"]
InferenceMode = Literal["standard", "multi_role"]
Metric = Literal["qps", "cpu", "gpu", "in_flight", "latency_p99_ms"]

DEFAULT_KEY = "default"
DEFAULT_NAME = "Default"
WEIGHT_PRECISION = 0.01
"""Weights are percentages compared at 0.01 percentage points: two splits of a service mean the same when every
deployment's share differs by less than that, and any change of a share by 0.01 points or more is a change (it
reaches the platform and shows in plans, previews and refreshes)."""
STANDARD_ROLE = "main"


# --- traffic ---------------------------------------------------------------------------------------------------

class HeaderRule(Model):
    """Requests whose header equals the value go to the deployment (evaluated first, in order)."""

    header: HeaderName = Field(description="Header name (case-insensitive).", examples=["x-canary"])
    value: HeaderValue = Field(description="Exact header value that matches.", examples=["1"])
    deployment: Key = Field(description="Key of the deployment that takes matching requests.")


class Mirror(Model):
    """Copies of a share of requests go to a deployment; its answers are discarded."""

    deployment: Key = Field(description="Key of the deployment receiving the copies.")
    percent: MirrorPercent = Field(description="Share of requests copied, in percent.")


class ConsistentHash(Model):
    """Requests with the same header value stick to one instance within the chosen deployment."""

    header: HeaderName = Field(description="Header whose value is hashed.", examples=["x-user-id"])


class Traffic(Model):
    """How the gateway splits the service's traffic. One object per service, written atomically."""

    strategy: Strategy = Field("weighted", description="`weighted` by weights, or `by_instance_count`: every ready "
                                                       "instance takes an equal share (按实例数自动分流).")
    weights: dict[Key, Weight] = Field(default_factory=dict,
                                       description="Share per deployment key (only with `weighted`); must sum to 100. "
                                                   "Deployments not named get 0. Shares are compared at 0.01 "
                                                   "percentage points.",
                                       examples=[{"stable": 90, "canary": 10}])
    header_rules: Annotated[list[HeaderRule], max_items(L.MAX_HEADER_RULES, "header rules")] = Field(
        default_factory=list, description="Evaluated first, in order.")
    mirror: Mirror | None = Field(None, description="Copy a share of requests to a deployment.")
    consistent_hash: ConsistentHash | None = Field(None, description="Sticky routing within the chosen "
                                                                        "deployment.")
    timeout_s: Timeout = Field(60.0, description="Per-request timeout at the gateway, in seconds.")
    retries: Retries = Field(1, description="Retries on another instance, only when a connection is refused.")
    progressive: Progressive | None = Field(None, description="Shift weights in gated steps when they change "
                                                                 "(a progressive release; see `Progressive`).")

    def normalised_weights(self, keys: list[str]) -> dict[str, float]:
        """Weights as percent shares over `keys` (missing keys get 0): 90/10 and 9/1 give the same shares. Compare
        them at `WEIGHT_PRECISION` (the plan does), so that 33.33/33.33/33.34 means thirds."""
        total = sum(self.weights.get(k, 0.0) for k in keys)
        if total <= 0:
            return {k: 0.0 for k in keys}
        return {k: 100 * self.weights.get(k, 0.0) / total for k in keys}


# --- deployment parts ------------------------------------------------------------------------------------------

class Image(Model):
    """Exactly one of preset, custom or url (镜像)."""

    preset: ImageName | None = Field(None, description="A preset image of the catalogue (预置镜像).",
                                  examples=["inferstack/echo"])
    custom: ImageName | None = Field(None, description="An image from your registry (自定义镜像).",
                                  examples=["registry.example.com/team/llm:1.4"])
    url: ImageName | None = Field(None, description="An image URL (镜像 URL).")

    @property
    def reference(self) -> str:
        return self.preset or self.custom or self.url or ""


class ModelSource(Model):
    """The model served (模型): a registry reference with a version, or a path on a mount."""

    registry: Label | None = Field(None, description="Model registry reference.", examples=["qwen2-7b"])
    version: Label | None = Field(None, description="Version of the registry reference.", examples=["3"])
    path: AbsPath | None = Field(None, description="Path of the model on one of the deployment's mounts.")


class Mount(Model):
    """A shared file system mount (共享文件系统挂载); its data outlives instances."""

    source: MountSource = Field(description="File system (volume) name. Locally: a directory under the platform's "
                                            "data dir (one name, no '/': a mount cannot leave it).")
    path: AbsPath = Field(description="Absolute mount path inside the instance.")
    read_only: bool = Field(False, description="Mount read-only.")


class EnvVar(Model):
    """An environment variable: a plain value or a secret (never shown in errors, logs, plans or rendered files)."""

    name: EnvName = Field(description="Variable name.")
    value: EnvValue | None = Field(None, description="Plain value.")
    secret: SecretValue | None = Field(None, description="Secret value.")

    @field_serializer("secret", when_used="always")
    def _dump_secret(self, secret: SecretStr | None, info: Any) -> str | None:
        if secret is None:
            return None
        if info.context and info.context.get("reveal_secrets"):
            return secret.get_secret_value()
        return SECRET_MASK


EnvList = Annotated[list[EnvVar], max_items(L.MAX_ENV_VARS, "env entries")]


class RollingUpdate(Model):
    """Rolling update (滚动更新) in percent of replicas: surge rounds up, unavailable rounds down (Kubernetes)."""

    max_unavailable: Percent = Field(25.0, description="Instances that may be unavailable during an update, % "
                                                       "(rounded down).")
    max_surge: Percent = Field(25.0, description="Instances above the replica count during an update, % "
                                                 "(rounded up).")

    def bounds(self, replicas: int) -> tuple[int, int]:
        """(max unavailable, max surge) in instances for `replicas`, Kubernetes rounding; never both 0."""
        return rolling_bounds(replicas, self.max_unavailable, self.max_surge)


@functools.lru_cache(maxsize=4096)  # pure, and exact decimal arithmetic is slow: admission asks it per deployment
def rolling_bounds(replicas: int, max_unavailable_pct: float, max_surge_pct: float) -> tuple[int, int]:
    """Kubernetes rounding of a rolling update's percentages at `replicas`: (max unavailable rounded down, max surge
    rounded up); when both come out 0, one instance may be unavailable. Exact decimal arithmetic (25 % of 4 is 1)."""
    surge = math.ceil(Fraction(str(max_surge_pct)) * replicas / 100)
    unavailable = math.floor(Fraction(str(max_unavailable_pct)) * replicas / 100)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return unavailable, surge


class Schedule(Model):
    """A window of the day with its own instance count or bounds (cron start/end in a time zone)."""

    name: Label | None = Field(None, description="Label of the window.")
    start: Cron = Field(description="Cron expression opening the window.", examples=["0 9 * * 1-5"])
    end: Cron = Field(description="Cron expression closing the window.", examples=["0 18 * * 1-5"])
    timezone: TimeZone = Field("UTC", description="IANA time zone of the cron expressions.",
                               examples=["Asia/Shanghai"])
    replicas: Count | None = Field(None, description="Instances during the window.")
    min: Count | None = Field(None, description="Lower bound during the window (with max).")
    max: Count | None = Field(None, description="Upper bound during the window (with min).")


class MetricRule(Model):
    """Scale on a metric towards a target per instance."""

    metric: Metric = Field(description="Metric: qps, cpu (%), gpu (%), in_flight, latency_p99_ms.")
    target: MetricTarget = Field(description="Target value per instance.")
    min: Count = Field(1, description="Fewest instances.")
    max: Count = Field(description="Most instances.")


class Autoscaling(Model):
    """Autoscaling (自动扩缩容) by schedule and/or metric. The autoscaler's count lives in status, never in spec."""

    schedules: Annotated[list[Schedule], max_items(L.MAX_SCHEDULES, "schedules")] = Field(
        default_factory=list, description="Time windows.")
    metrics: Annotated[list[MetricRule], max_items(L.MAX_METRIC_RULES, "metric rules")] = Field(
        default_factory=list, description="Metric rules.")

    @property
    def floor(self) -> int:
        """The fewest instances autoscaling keeps outside any window."""
        mins = [m.min for m in self.metrics]
        return min(mins) if mins else 1

    @property
    def ceiling(self) -> int:
        values = [m.max for m in self.metrics] + [s.replicas or s.max or 1 for s in self.schedules]
        return max(values) if values else 1


class HttpAction(Model):
    path: HttpPath = Field("/healthz", description="Path requested with GET.")
    port: Port | None = Field(None, description="Port; defaults to the listen port.")


class TcpAction(Model):
    port: Port | None = Field(None, description="Port; defaults to the listen port.")


class Probe(Model):
    """A health check (健康检查): exactly one of http, tcp or command. Fractions of a second are allowed."""

    http: HttpAction | None = Field(None, description="HTTP GET; 2xx/3xx is success.")
    tcp: TcpAction | None = Field(None, description="TCP connect.")
    command: Command | None = Field(None, description="argv run in the instance; exit 0 is success.")
    initial_delay_s: Seconds = Field(0.0, description="Delay before the first probe.")
    period_s: PositiveSeconds = Field(10.0, description="Time between probes.")
    timeout_s: PositiveSeconds = Field(1.0, description="Time a probe may take.")
    success_threshold: Threshold = Field(1, description="Consecutive successes to pass.")
    failure_threshold: Threshold = Field(3, description="Consecutive failures to fail.")


class Probes(Model):
    startup: Probe | None = Field(None, description="Holds the other probes until it succeeds.")
    readiness: Probe | None = Field(None, description="Only ready instances take traffic.")
    liveness: Probe | None = Field(None, description="Failing instances are restarted.")


class DeploymentPorts(Model):
    listen: Port = Field(8080, description="Port the process listens on (locally: assigned per instance).")
    call: Annotated[list[Port], max_items(L.MAX_PORTS, "call ports")] = Field(
        default_factory=list, description="Extra ports callers use.")


ROLE_FIELDS = ("compute_spec", "replicas", "autoscaling", "command", "env", "probes", "rolling_update")


class Role(Model):
    """One role of a multi_role deployment (e.g. prefill / decode), or the single role of a standard one."""

    name: RoleName = Field(description="Role name.", examples=["prefill", "decode"])
    entry: bool = Field(False, description="The entry role takes the service's traffic (exactly one).")
    compute_spec: Ref = Field(description="Compute spec of the role's instances (offered by the queue).")
    replicas: Count | None = Field(None, description="Instance count; required unless autoscaling is set.")
    autoscaling: Autoscaling | None = Field(None, description="Autoscaling of the role.")
    command: Command | None = Field(None, description="argv entry command (入口命令), never run by a shell.")
    env: EnvList = Field(default_factory=list, description="Environment of the role (added to the deployment's).")
    probes: Probes = Field(default_factory=Probes, description="Health checks.")
    rolling_update: RollingUpdate = Field(description="Rolling update policy (required).")

    @property
    def starting_replicas(self) -> int:
        """Replicas the role starts with: its replicas, else the autoscaling floor."""
        if self.replicas is not None:
            return self.replicas
        return self.autoscaling.floor if self.autoscaling else 1


class Deployment(Model):
    """One deployment (部署) of a service: its own image, queue, spec, network and policies."""

    name: Name = Field(description="Deployment name (names may repeat).", examples=["stable"])
    key: Key | None = Field(None, description="Identity, unique per service; defaults to the name when the name "
                                                 "is a valid key.")
    image: Image = Field(description="Image (镜像): exactly one of preset, custom or url.")
    model: ModelSource | None = Field(None, description="Model (模型).")
    queue: Ref = Field(description="Queue (所属队列) in the service's resource group; fixes the zone.")
    mounts: Annotated[list[Mount], max_items(L.MAX_MOUNTS, "mounts")] = Field(
        default_factory=list, description="Shared file systems (data outlives instances).")
    inference_mode: InferenceMode = Field("standard", description="`standard` (one role, fields inline) or "
                                                                  "`multi_role` (多角色分离: `roles`).")
    roles: Annotated[list[Role], max_items(L.MAX_ROLES, "roles")] | None = Field(
        None, description="Roles of a multi_role deployment (2+).")
    compute_spec: Ref | None = Field(None, description="Compute spec (standard mode).")
    replicas: Count | None = Field(None, description="Instances (standard mode); required unless autoscaling.")
    autoscaling: Autoscaling | None = Field(None, description="Autoscaling (standard mode).")
    command: Command | None = Field(None, description="argv entry command (standard mode).")
    env: EnvList = Field(default_factory=list, description="Environment (all roles).")
    probes: Probes | None = Field(None, description="Health checks (standard mode).")
    rolling_update: RollingUpdate | None = Field(None, description="Rolling update policy (standard mode; "
                                                                      "required).")
    graceful_shutdown_s: GracePeriod = Field(30.0, description="Time a leaving instance has for its in-flight "
                                                               "requests (优雅关闭时间).")
    subnet: Ref = Field(description="Subnet in the service's VPC, in the queue's zone.")
    security_group: Ref = Field(description="Security group in the service's VPC; must allow the ports.")
    ports: DeploymentPorts = Field(default_factory=DeploymentPorts, description="Listen and call ports.")
    priority: Priority = Field(5, description="1-9; higher preempts lower when capacity is short.")
    use_idle: bool = Field(False, description="Borrow spare capacity of lending queues; may be preempted at any "
                                              "time (使用闲时资源).")
    numa_affinity: bool = Field(False, description="Prefer NUMA-aligned placement (a preference, not a "
                                                   "requirement).")
    accept_traffic: bool | None = Field(None, description="Only with network_type clb and by_instance_count: "
                                                             "off = no traffic from the load balancer (default on).")
    progressive: Progressive | None = Field(None, description="Redeploy as a gated canary: new-revision instances "
                                                                 "take a step share of this deployment's traffic "
                                                                 "before the rolling update goes on (see "
                                                                 "`Progressive`).")

    @model_validator(mode="after")
    def _default_key(self) -> Deployment:
        if self.key is None and KEY_RE.match(self.name):
            self.key = self.name
        return self

    @property
    def accepts_traffic(self) -> bool:
        return self.accept_traffic is not False

    def effective_roles(self) -> list[Role]:
        """The roles to run: the inline fields as role `main` (standard), or `roles` (multi_role)."""
        if self.inference_mode == "multi_role" or self.roles:
            roles = self.roles or []
            return [r.model_copy(update={"env": _merge_env(self.env, r.env)}) for r in roles]
        return [Role.model_construct(
            name=STANDARD_ROLE, entry=True, compute_spec=self.compute_spec, replicas=self.replicas,
            autoscaling=self.autoscaling, command=self.command, env=list(self.env),
            probes=self.probes or Probes(), rolling_update=self.rolling_update or RollingUpdate(),
        )]

    def entry_role(self) -> Role:
        roles = self.effective_roles()
        return next((r for r in roles if r.entry), roles[0])


def _merge_env(base: list[EnvVar], extra: list[EnvVar]) -> list[EnvVar]:
    names = {e.name for e in extra}
    return [e for e in base if e.name not in names] + list(extra)


# --- service ---------------------------------------------------------------------------------------------------

DEPLOYMENT_FIELDS: frozenset[str] = frozenset()  # set after Service: deployment fields a service does not have


class Service(Model):
    """An inference service: several deployments behind one gateway."""

    name: Name = Field(description="Service name (服务名称), unique per resource group.", examples=["chat"])
    key: Key | None = Field(None, description="Identity used in URLs, Pulumi and Kubernetes names; never changes. "
                                                 "Defaults to the name when the name is a valid key.")
    description: Description | None = Field(None, description="Service description (服务描述).")
    resource_group: Ref = Field(description="Resource group (资源组) of every deployment's queue.")
    vpc: Ref = Field(description="VPC of the service.")
    network_type: NetworkType = Field("public_gateway", description="public_gateway (default), private_gateway or "
                                                                    "clb.")
    ports: Annotated[list[Port], max_items(L.MAX_PORTS, "call ports")] = Field(
        default_factory=lambda: [8000], description="Call port(s) of the service.")
    traffic: Traffic = Field(default_factory=Traffic, description="The traffic object.")
    deployments: Annotated[list[Deployment], check(
        "service.deployments_max", lambda v: len(v) <= L.MAX_DEPLOYMENTS_PER_SERVICE,
        f"a service has at most {L.MAX_DEPLOYMENTS_PER_SERVICE} deployments",
        maxItems=L.MAX_DEPLOYMENTS_PER_SERVICE)] = Field(default_factory=list, description="Deployments (may be empty).")
    legacy_form: bool = Field(False, description="Set when the service was written in the flat single-deployment "
                                                 "form (its deployment is `default` / `Default`).")

    @model_validator(mode="before")
    @classmethod
    def _expand_sugar(cls, data: Any) -> Any:
        """Flat legacy form → one deployment `default`; `weight:` on a deployment → traffic.weights."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        inline = {k: data[k] for k in list(data) if k in DEPLOYMENT_FIELDS}
        if inline:
            if "deployments" in data:
                raise PydanticCustomError(
                    "service.legacy_and_list_form",
                    "deployment fields ({fields}) are inline while `deployments:` is also given; move them into a "
                    "deployment", {"fields": ", ".join(sorted(inline))})
            for k in inline:
                del data[k]
            weight = data.pop("weight", None)
            deployment = {"name": DEFAULT_NAME, "key": DEFAULT_KEY, **inline}
            if weight is not None:
                deployment["weight"] = weight
            data["deployments"] = [deployment]
            data["legacy_form"] = True
        deployments = data.get("deployments")
        if isinstance(deployments, list) and any(isinstance(d, dict) and "weight" in d for d in deployments):
            traffic = dict(data.get("traffic") or {})
            weights = dict(traffic.get("weights") or {})
            expanded = []
            for d in deployments:
                if isinstance(d, dict) and "weight" in d:
                    d = dict(d)
                    weight = d.pop("weight")
                    key = d.get("key") if d.get("key") is not None else d.get("name")
                    if not isinstance(key, str) or not KEY_RE.match(key):
                        expanded.append(d)  # no usable key: the deployment's key problem is reported where it is
                        continue
                    if key in weights:
                        raise PydanticCustomError(
                            "traffic.weight_given_twice",
                            "deployment '{key}' has `weight:` and is also in traffic.weights; give it once",
                            {"key": key})
                    weights[key] = weight
                expanded.append(d)
            traffic["weights"] = weights
            data["traffic"] = traffic
            data["deployments"] = expanded
        return data

    @model_validator(mode="after")
    def _defaults(self) -> Service:
        if self.key is None and KEY_RE.match(self.name):
            self.key = self.name
        # One deployment and no weights at all: it takes all the traffic (the single-deployment case).
        t = self.traffic
        if t.strategy == "weighted" and not t.weights and len(self.deployments) == 1 and self.deployments[0].key:
            t.weights = {self.deployments[0].key: 100.0}
        return self

    def deployment(self, key: str) -> Deployment | None:
        return next((d for d in self.deployments if d.key == key), None)

    def deployment_keys(self) -> list[str]:
        return [d.key for d in self.deployments if d.key]


# In the flat legacy form these keys on a service belong to its one deployment (`ports` stays the service's).
DEPLOYMENT_FIELDS = frozenset(Deployment.model_fields) - frozenset(Service.model_fields)
