"""Pulumi dynamic providers over the embedded platform's HTTP API, and the resources that use them.

One provider per kind of platform object: `ServiceProvider` (service fields only), `DeploymentProvider` (one
deployment, no weight), `TrafficProvider` (the service's traffic object) and `InventoryProvider` (one inventory
object). The engine runs them in its `python -m pulumi.dynamic` process after unpickling them from `__provider`:

- The platform's URL and token come from `configure` (stack config `inferstack:platformUrl`,
  `inferstack:platformToken` (secret), or `inferstack:platformDataDir`, else the platform's default data dir) and are
  kept in a process-local table keyed by the provider object — never on the instance, so never pickled into
  `__provider` or state. Providers have no instance state at all: `__provider` stays byte-identical across runs.
- A client is created inside each call: nothing unpicklable, nothing shared between threads.
- `check` runs the spec's rules one object decides; cross-object rules are deferred to the platform, which answers a
  violating write with 422 and the rule ids (surfaced as the error message).
- `diff` is `inferstack.plan.diff_object`'s answer; identity properties (keys) replace, deleting first.
- `create`/`update` (with `inferstack:waitForReady`, default true) wait until the platform observed the new
  generation and, for deployments, they are Ready; a Degraded condition fails at once with the platform's reason,
  and `inferstack:readyTimeout` bounds the wait. With `waitForReady: false` they return once the platform accepted
  the write (validated and stored) — for a control-plane-only platform, which never reports Ready.
- `read` maps live state back (weights edited through the API show up on refresh).
- Deleting a deployment that still takes traffic first moves its weight to the others, then deletes it; draining
  its instances (graceful_shutdown_s) is the platform's.
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pulumi
from pulumi import dynamic

from .pulumi_glue import (
    DEPLOYMENT,
    INVENTORY_KINDS,
    OUTPUT_PROPS,
    PROVIDER_KEY,
    SERVICE,
    TRAFFIC,
    ConvergenceError,
    ObjectKind,
    check_failure_reason,
    diff_answer,
    inventory_kind,
    live_props,
    object_findings,
    status_summary,
    wait_converged,
    weights_without,
)

DEFAULT_TIMEOUT_S = 600.0


class PlatformApplyError(RuntimeError):
    """The platform refused a change or did not converge; the message says why (rule ids for 422s)."""


@dataclass(frozen=True)
class Connection:
    """How the providers reach the platform and how long they wait. Lives only in the provider process."""

    url: str | None = None
    token: str | None = None
    data_dir: str | None = None
    wait_for_ready: bool = True
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_config(cls, get: Callable[[str], Any]) -> Connection:
        """From stack config (fully qualified keys). Without a URL the client discovers the platform:
        `$INFERSTACK_URL`/`$INFERSTACK_TOKEN`, else the data dir's `platform.json` and `token`."""
        def value(key: str) -> Any:
            v = get(f"inferstack:{key}")
            return None if v in (None, "") else v

        timeout = value("readyTimeout")
        return cls(url=value("platformUrl"), token=value("platformToken"), data_dir=value("platformDataDir"),
                   wait_for_ready=_as_bool(value("waitForReady"), default=True),
                   timeout_s=float(timeout) if timeout is not None else DEFAULT_TIMEOUT_S)

    def client(self) -> Any:
        """A new client (close it: `with connection.client() as client`)."""
        from .client import PlatformClient

        if self.url:
            return PlatformClient(self.url, self.token or "")
        return PlatformClient.discover(self.data_dir)

    def __repr__(self) -> str:  # never show the token
        return f"Connection(url={self.url!r}, data_dir={self.data_dir!r}, wait_for_ready={self.wait_for_ready})"


def _as_bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


# Provider object → its connection, for this process only (a weak table: providers are never kept alive by it).
_CONNECTIONS: weakref.WeakKeyDictionary[dynamic.ResourceProvider, Connection] = weakref.WeakKeyDictionary()


def _platform_errors(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn platform errors into one clear message: the operation, the object, the status, the rules broken."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(self: PlatformProvider, *args: Any) -> Any:
            from .client import PlatformError

            try:
                return fn(self, *args)
            except PlatformError as exc:
                raise PlatformApplyError(_explain(f"{what} {self.kind.name}", exc)) from None
            except ConvergenceError as exc:
                raise PlatformApplyError(f"{what} {self.kind.name}: {exc}") from None
        return run
    return wrap


def _explain(action: str, exc: Any) -> str:
    status = getattr(exc, "status_code", "?")
    findings = list(getattr(exc, "findings", None) or [])
    if not findings:
        return f"{action}: the platform answered HTTP {status}: {_body_message(exc)}"
    lines = [f"{action}: the platform rejected the change (HTTP {status}):"]
    for f in findings:
        where = f" at {f.get('path')}" if f.get("path") else ""
        lines.append(f"  - {f.get('severity', 'error')} [{f.get('rule')}]{where}: {f.get('message')}")
    return "\n".join(lines)


def _body_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        return str(body.get("message") or body.get("detail") or body.get("error") or body)
    return str(body if body is not None else exc)


def _not_found(exc: Any) -> bool:
    return getattr(exc, "status_code", None) == 404


class PlatformProvider(dynamic.ResourceProvider):
    """What every platform object's provider shares: configuration, check, diff. Subclasses hold no state."""

    kind: ObjectKind  # a class constant in each subclass

    def configure(self, req: dynamic.ConfigureRequest) -> None:
        _CONNECTIONS[self] = Connection.from_config(req.config.get)

    @property
    def connection(self) -> Connection:
        conn = _CONNECTIONS.get(self)
        if conn is None:  # not configured (called outside the engine): environment, then the default data dir
            conn = _CONNECTIONS.setdefault(self, Connection.from_config(lambda _key: None))
        return conn

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        findings = object_findings(self.kind, news)
        failures = [dynamic.CheckFailure(f.path, check_failure_reason(f))
                    for f in findings if f.severity.value == "error"]
        deferred = sorted({f.rule for f in findings if f.severity.value == "deferred"})
        if deferred and not failures:
            # Plugin output is debug-level in the CLI; the program's preview states the same deferrals visibly.
            print(f"inferstack: {self.kind.name} {news.get('key') or news.get('name') or ''}: rules checked by "
                  f"the platform on apply: {', '.join(deferred)}", file=sys.stderr, flush=True)
        return dynamic.CheckResult(dict(news), failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        from ...plan import diff_object

        answer = diff_answer(self.kind, olds, news, diff_object)
        return dynamic.DiffResult(changes=answer.changes, replaces=list(answer.replaces),
                                  stables=list(answer.stables),
                                  delete_before_replace=answer.delete_before_replace)

    def platform_spec(self, props: Mapping[str, Any]) -> dict[str, Any]:
        """The body the platform gets: the model's data with defaults filled, nothing but spec fields."""
        return self.kind.spec(self.kind.model.model_validate(self.kind.spec(props)).to_data())

    def outputs(self, props: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
        """Inputs as given plus what the platform computed (uid, status)."""
        outs = {k: v for k, v in props.items() if k != PROVIDER_KEY and k not in OUTPUT_PROPS}
        outs["uid"] = (obj.get("metadata") or {}).get("uid")
        outs["status"] = status_summary(obj)
        return outs

    def converge(self, written: Mapping[str, Any], fetch: Callable[[], Mapping[str, Any]], what: str,
                 require_ready: bool) -> Mapping[str, Any]:
        """The object once the platform acted on the write: its generation observed, not Degraded and, for
        deployments, Ready. With `inferstack:waitForReady` false: the write as accepted (validated and stored)."""
        conn = self.connection
        if not conn.wait_for_ready:
            return written
        return wait_converged(fetch, what, timeout=conn.timeout_s, require_ready=require_ready)

    def read_live(self, id_: str, props: dict[str, Any], fetch: Callable[[], Mapping[str, Any]]) -> dynamic.ReadResult:
        from ...plan import diff_object
        from .client import PlatformError

        try:
            obj = fetch()
        except PlatformError as exc:
            if _not_found(exc):
                return dynamic.ReadResult("", {})  # gone: the engine drops it from state
            raise PlatformApplyError(_explain(f"read {self.kind.name}", exc)) from None
        return dynamic.ReadResult(id_, self.outputs(live_props(self.kind, props, obj.get("spec") or {}, diff_object),
                                                    obj))


class ServiceProvider(PlatformProvider):
    """A service's own fields on the platform (`/v1/services/{key}`); its id is the key."""

    kind = SERVICE

    def outputs(self, props: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
        outs = super().outputs(props, obj)
        outs["gateway_url"] = (obj.get("status") or {}).get("gateway_url")
        return outs

    @_platform_errors("create")
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        key = props["key"]
        with self.connection.client() as client:
            written = client.put_service(key, self.platform_spec(props))
            obj = self.converge(written, lambda: client.get_service(key), f"service '{key}'", require_ready=False)
        return dynamic.CreateResult(key, self.outputs(props, obj))

    @_platform_errors("update")
    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        with self.connection.client() as client:
            written = client.put_service(id_, self.platform_spec(news))
            obj = self.converge(written, lambda: client.get_service(id_), f"service '{id_}'", require_ready=False)
        return dynamic.UpdateResult(self.outputs(news, obj))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        with self.connection.client() as client:
            return self.read_live(id_, props, lambda: client.get_service(id_))

    @_platform_errors("delete")
    def delete(self, id_: str, props: dict[str, Any]) -> None:
        from .client import PlatformError

        try:
            with self.connection.client() as client:
                client.delete_service(id_)
        except PlatformError as exc:
            if not _not_found(exc):
                raise


class DeploymentProvider(PlatformProvider):
    """One deployment (`/v1/services/{service}/deployments/{key}`); its id is `service/key`. Created at weight 0."""

    kind = DEPLOYMENT

    @staticmethod
    def split(id_: str) -> tuple[str, str]:
        service, _, key = id_.partition("/")
        return service, key

    @_platform_errors("create")
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        service, key = props["service_key"], props["key"]
        with self.connection.client() as client:
            written = client.put_deployment(service, key, self.platform_spec(props))
            obj = self.converge(written, lambda: client.get_deployment(service, key), f"deployment '{service}/{key}'",
                                require_ready=True)
        return dynamic.CreateResult(f"{service}/{key}", self.outputs(props, obj))

    @_platform_errors("update")
    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        service, key = self.split(id_)
        with self.connection.client() as client:
            written = client.put_deployment(service, key, self.platform_spec(news))
            obj = self.converge(written, lambda: client.get_deployment(service, key), f"deployment '{id_}'",
                                require_ready=True)
        return dynamic.UpdateResult(self.outputs(news, obj))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        service, key = self.split(id_)
        with self.connection.client() as client:
            return self.read_live(id_, props, lambda: client.get_deployment(service, key))

    @_platform_errors("delete")
    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Delete; when the platform still routes traffic to it (409), move its weight to the others first."""
        from .client import PlatformError

        service, key = self.split(id_)
        with self.connection.client() as client:
            for attempt in range(5):
                try:
                    client.delete_deployment(service, key)
                    return
                except PlatformError as exc:
                    if _not_found(exc):
                        return
                    if exc.status_code != 409 or attempt == 4:
                        raise
                self._shift_traffic_away(client, service, key)

    @staticmethod
    def _shift_traffic_away(client: Any, service: str, key: str) -> None:
        """Weight 0 for `key`, its share spread over the service's other deployments; header rules and the mirror
        that name it dropped. Written with If-Match; read again when the service changed meanwhile (409: someone
        wrote the traffic first; 422: a deployment read a moment ago is gone — e.g. a parallel destroy)."""
        from .client import PlatformError

        for attempt in range(8):
            traffic = client.get_traffic(service)
            spec = dict(traffic.get("spec") or {})
            others = [d["metadata"]["key"] for d in client.list_deployments(service) if d["metadata"]["key"] != key]
            if spec.get("strategy", "weighted") == "weighted":
                spec["weights"] = weights_without(dict(spec.get("weights") or {}), key, others)
            spec["header_rules"] = [r for r in spec.get("header_rules") or [] if r.get("deployment") != key]
            if (spec.get("mirror") or {}).get("deployment") == key:
                spec.pop("mirror")
            try:
                client.put_traffic(service, spec, if_match=(traffic.get("metadata") or {}).get("resource_version"))
                return
            except PlatformError as exc:
                if exc.status_code not in (409, 422) or attempt == 7:
                    raise


class TrafficProvider(PlatformProvider):
    """The service's traffic object (`/v1/services/{service}/traffic`), written atomically; its id is the service
    key. Its inputs name the deployments (keys and uids) so that it changes after they exist and are Ready, and
    again whenever one is replaced."""

    kind = TRAFFIC

    @_platform_errors("create")
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        service = props["service_key"]
        return dynamic.CreateResult(service, self._write(service, props))

    @_platform_errors("update")
    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(self._write(id_, news))

    def _write(self, service: str, props: Mapping[str, Any]) -> dict[str, Any]:
        with self.connection.client() as client:
            written = client.put_traffic(service, self.platform_spec(props))
            obj = self.converge(written, lambda: client.get_traffic(service), f"traffic of '{service}'",
                                require_ready=False)
        return self.outputs(props, obj)

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        with self.connection.client() as client:
            return self.read_live(id_, props, lambda: client.get_traffic(id_))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Nothing to delete: the traffic object lives as long as its service. Deployments leave it one by one
        (each moves its own weight away before it goes)."""


class InventoryProvider(PlatformProvider):
    """One inventory object (`/v1/<kind>/{name}`) of one kind; its id is the name. Only objects the stack declares
    are managed. Its one attribute, the kind, is a constant: `__provider` stays stable."""

    def __init__(self, inventory: str):
        super().__init__()
        if inventory not in INVENTORY_KINDS:
            raise ValueError(f"unknown inventory kind {inventory!r} (one of {', '.join(INVENTORY_KINDS)})")
        self.inventory = inventory

    @property
    def kind(self) -> ObjectKind:  # type: ignore[override]
        return inventory_kind(self.inventory)

    @property
    def path(self) -> str:
        return INVENTORY_KINDS[self.inventory]

    @_platform_errors("create")
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        with self.connection.client() as client:
            obj = client.put_inventory(self.path, props["name"], self.platform_spec(props))
        return dynamic.CreateResult(props["name"], self.outputs(props, obj))

    @_platform_errors("update")
    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        with self.connection.client() as client:
            obj = client.put_inventory(self.path, id_, self.platform_spec(news))
        return dynamic.UpdateResult(self.outputs(news, obj))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        with self.connection.client() as client:
            return self.read_live(id_, props, lambda: client.get_inventory(self.path, id_))

    @_platform_errors("delete")
    def delete(self, id_: str, props: dict[str, Any]) -> None:
        from .client import PlatformError

        try:
            with self.connection.client() as client:
                client.delete_inventory(self.path, id_)
        except PlatformError as exc:
            if not _not_found(exc):
                raise


# --- resources ------------------------------------------------------------------------------------------------------

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


def type_token(cls: type[dynamic.Resource]) -> str:
    """The type token the engine sees for a dynamic resource class."""
    return f"pulumi-python:{cls._resource_type_name}"


KIND_OF_TYPE: dict[str, str] = {
    type_token(ServiceResource): SERVICE.name, type_token(DeploymentResource): DEPLOYMENT.name,
    type_token(TrafficResource): TRAFFIC.name,
    **{type_token(cls): f"inventory:{kind}" for kind, cls in INVENTORY_RESOURCES.items()},
}
"""Type token → object kind (`service`, `deployment`, `traffic`, `inventory:<kind>`)."""
