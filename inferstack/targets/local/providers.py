"""Pulumi dynamic providers over the embedded platform's HTTP API: the contract with the engine.

One provider per kind of platform object: `ServiceProvider` (service fields only), `DeploymentProvider` (one
deployment, no weight), `TrafficProvider` (the service's traffic object) and `InventoryProvider` (one inventory
object). The engine runs them in its `python -m pulumi.dynamic` process after unpickling them from `__provider`
(so these classes stay importable here: existing state names them). Providers hold no state at all: `__provider`
stays byte-identical across runs; the connection comes from `configure` (`connection.py`), a client is made per call.

- `check` runs the spec's rules one object decides; cross-object rules are the platform's (a violating write gets a
  422 naming the rule ids). It prints nothing: the program states deferred rules once, as info.
- `diff` compares the program's inputs with the live object whenever the platform answers (normalised by
  `inferstack.plan.diff_object`, as `inferstack plan` does): drift made behind Pulumi's back, or a change written by
  an update whose readiness wait failed (the engine then keeps the old state), shows in the preview and is undone by
  `up`. Status-owned values (autoscaled counts, generations) are not spec and never drift. Platform unreachable: it
  compares with the last known state and says so. Identity properties (keys) replace, deleting first. For `Default`
  of a legacy service it also tells the legacy conversion (`inferstack.plan.legacy`) that `up` will carry out.
- `create` never takes over an object: it writes with `If-None-Match: *`, and an object that exists fails the create
  with a message naming it and how to bring it under the stack — adopt it (`inferstack:adopt`), or delete it first.
  A create whose readiness wait fails removes what it wrote (checked by uid), so nothing is left behind and the next
  `up` creates it afresh; an adopted object is never removed.
- `create`/`update` (with `inferstack:waitForReady`, default true) wait until the platform observed the generation
  and, for deployments, they are Ready; Degraded fails at once with the platform's reason; `inferstack:readyTimeout`
  bounds the wait. `waitForReady: false`: they return once the platform accepted the write.
- A progressive release (`progressive` on the traffic object or a deployment): `up` waits for its outcome (Ready),
  bounded by `inferstack:readyTimeout`, and fails with the gate that failed; a release that rolled back or paused
  leaves the live object's spec as declared, so the next preview shows no change — it says instead what is live and
  why, and that only a change (e.g. raising `progressive.retry`) tries again.
- `read` maps live state back (refresh shows weights edited through the API); given only an id, it reads the whole
  object and returns inputs too.
- Deleting a deployment that still takes traffic first moves its weight to the others, then deletes it.
- Errors are one message for a person (`provider_errors.py`), never a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any

from pulumi import dynamic

from .connection import DIFF_TIMEOUT_S, Connection, configure, connection_of
from .convergence import ConvergenceError, status_summary, wait_converged
from .provider_errors import (
    PlatformApplyError,
    PlatformObject,
    install_plain_errors,
    paths_for_write,
    refusal,
    unreachable_text,
)
from .pulumi_glue import (
    DEPLOYMENT,
    INVENTORY_KINDS,
    OUTPUT_PROPS,
    PROVIDER_KEY,
    SERVICE,
    TRAFFIC,
    ObjectKind,
    check_failure_reason,
    diff_answer,
    inventory_kind,
    live_base,
    live_props,
    live_release_note,
    live_spec,
    object_findings,
    unknown_paths,
    weights_without,
)

__all__ = ["Connection", "DeploymentProvider", "InventoryProvider", "PlatformApplyError", "PlatformProvider",
           "ServiceProvider", "TrafficProvider"]

install_plain_errors()  # in the engine's provider process: our errors without the servicer's traceback

_GONE: Any = object()  # the live object does not exist
_NOTED: set[str] = set()


def note(message: str, *, once: bool = False) -> None:
    """A line for the person running Pulumi: the engine shows a dynamic provider's stderr as info."""
    if once:
        if message in _NOTED:
            return
        _NOTED.add(message)
    print(f"inferstack: {message}", file=sys.stderr, flush=True)


def _platform_errors(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn platform errors into one clear message: the operation, the user's object, what to do."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(self: PlatformProvider, *args: Any) -> Any:
            from .client import PlatformError

            try:
                return fn(self, *args)
            except PlatformError as exc:
                obj = self.platform_object(*self.ids(args[0]))
                if exc.findings:
                    obj = PlatformObject(obj.label, obj.path, self.write_places(*self.ids(args[0])))
                raise PlatformApplyError(refusal(what, obj, exc)) from None
            except ConvergenceError as exc:
                raise PlatformApplyError(f"{what} {exc}") from None
        return run
    return wrap


class PlatformProvider(dynamic.ResourceProvider):
    """What every platform object's provider shares: configuration, check, diff, create, read. No state."""

    kind: ObjectKind  # a class constant in each subclass

    # --- what each kind says about itself ---------------------------------------------------------------------

    def ids(self, id_or_props: str | Mapping[str, Any]) -> tuple[str, ...]:
        """The object's identity on the platform, from its id or its properties."""
        raise NotImplementedError

    def platform_object(self, *ids: str) -> PlatformObject:
        raise NotImplementedError

    def fetch(self, client: Any, *ids: str) -> Mapping[str, Any]:
        """The live object (GET)."""
        raise NotImplementedError

    def identity_props(self, client: Any, *ids: str) -> dict[str, Any]:
        """The non-spec inputs of an object read by id alone."""
        return {}

    def write_places(self, *ids: str) -> dict[str, str]:
        """How the platform names the objects of a write of this object in its findings (best effort)."""
        return {}

    # --- the engine's calls ---------------------------------------------------------------------------------------

    def configure(self, req: dynamic.ConfigureRequest) -> None:
        configure(self, req.config.get)

    @property
    def connection(self) -> Connection:
        return connection_of(self)

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        findings = object_findings(self.kind, news)
        failures = [dynamic.CheckFailure(f.path, check_failure_reason(f))
                    for f in findings if f.severity.value == "error"]
        return dynamic.CheckResult(dict(news), failures)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        from ...plan import diff_object

        ids = self.ids(id_)
        obj = self.platform_object(*ids)
        live = self.live_for_diff(obj, ids)
        base = olds
        if live is not None and live is not _GONE:
            try:
                base = live_base(self.kind, olds, live.get("spec") or {})
            except ValueError as exc:  # pydantic: a live spec this version cannot read (a newer platform?)
                note(f"{obj.label}: the live object does not read as this version's spec, so the preview compares "
                     f"with the state Pulumi last recorded ({' '.join(str(exc).split())[:200]})")
        answer = diff_answer(self.kind, base, news, diff_object)
        changes = answer.changes
        if isinstance(live, Mapping):
            said = live_release_note(obj.path, live)
            if said:
                note(said)
        if live is _GONE:
            note(f"{obj.label} no longer exists on the platform (deleted outside this stack?): `up` writes it again")
            changes = True
        changes = self.more_changes(ids, olds, news, live, changes)
        return dynamic.DiffResult(changes=changes, replaces=list(answer.replaces), stables=list(answer.stables),
                                  delete_before_replace=answer.delete_before_replace)

    def more_changes(self, ids: tuple[str, ...], olds: Mapping[str, Any], news: Mapping[str, Any],
                     live: Any, changes: bool) -> bool:
        """A kind's own reasons to change beyond the spec (the legacy conversion of `Default`)."""
        return changes

    def live_for_diff(self, obj: PlatformObject, ids: tuple[str, ...]) -> Any:
        """The live object, `_GONE`, or None when the platform cannot be reached (then diff uses the last state)."""
        from .client import PlatformError

        try:
            with self.connection.client(timeout=DIFF_TIMEOUT_S) as client:
                return self.fetch(client, *ids)
        except PlatformError as exc:
            if exc.status_code == 404:
                return _GONE
            if exc.status_code == 0:
                note(f"previews compare with the state Pulumi last recorded, not with the live objects: "
                     f"{unreachable_text(exc)}", once=True)
                return None
            raise PlatformApplyError(refusal("diff", obj, exc)) from None

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

    def create_new(self, obj: PlatformObject, put: Callable[..., Mapping[str, Any]],
                   fetch: Callable[[], Mapping[str, Any]], *, require_ready: bool = False,
                   remove: Callable[[], Any] | None = None, wait: bool = True) -> Mapping[str, Any]:
        """Create an object that must not exist yet (`If-None-Match: *`), or adopt it when `inferstack:adopt` names
        it; then wait. A created object whose wait fails is removed again (`remove`), so nothing is left behind."""
        from .client import PlatformError

        try:
            written = put(create_only=True)
            adopted = False
        except PlatformError as exc:
            if exc.status_code != 412 or obj.path not in self.connection.adopt:
                raise
            current, written = self._adopt(put, fetch)
            note(f"{obj.label} existed and is adopted, as `inferstack:adopt` asks: it now has this stack's spec and "
                 f"is managed by this stack (uid {(current.get('metadata') or {}).get('uid')})")
            adopted = True
        if not wait:
            return written
        try:
            return self.converge(written, fetch, obj.label, require_ready=require_ready)
        except ConvergenceError as exc:
            if adopted or remove is None:
                raise
            raise PlatformApplyError(f"create {exc}. {self._remove_created(obj, written, fetch, remove)}") from None

    @staticmethod
    def _adopt(put: Callable[..., Mapping[str, Any]],
               fetch: Callable[[], Mapping[str, Any]]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """Write the program's spec over the object as read (If-Match: its resource version, which status writes
        move too — read again on a conflict)."""
        from .client import PlatformError

        for attempt in range(8):
            current = fetch()
            try:
                return current, put(if_match=(current.get("metadata") or {}).get("resource_version"))
            except PlatformError as exc:
                if exc.status_code != 409 or attempt == 7:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _remove_created(obj: PlatformObject, written: Mapping[str, Any], fetch: Callable[[], Mapping[str, Any]],
                        remove: Callable[[], Any]) -> str:
        """Undo a create whose wait failed, when the live object is still the one written (same uid)."""
        from .client import PlatformError

        uid = (written.get("metadata") or {}).get("uid")
        try:
            if (fetch().get("metadata") or {}).get("uid") != uid:
                return "It was replaced meanwhile by another writer and is left as it is."
            remove()
        except PlatformError as exc:
            if exc.status_code == 404:
                return "It is gone already: nothing is left behind."
            return (f"Removing it again failed ({' '.join(str(exc).split())}): it is left on the platform — delete it "
                    f"(DELETE /v1/{obj.path}) or adopt it (`inferstack:adopt`) before the next `up`.")
        return "It was removed again, so nothing is left behind: fix the cause and run `pulumi up` again."

    @_platform_errors("read")
    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        """Refresh (old outputs given): the live values where they differ. By id alone: the whole live object,
        returned as inputs too."""
        from ...plan import diff_object
        from .client import PlatformError

        ids = self.ids(id_)
        with self.connection.client() as client:
            try:
                obj = self.fetch(client, *ids)
            except PlatformError as exc:
                if exc.status_code == 404:
                    return dynamic.ReadResult("", {})  # gone: the engine drops it from state
                raise
            if any(k in props for k in self.kind.fields):
                return dynamic.ReadResult(id_, self.outputs(live_props(self.kind, props, obj.get("spec") or {},
                                                                       diff_object), obj))
            inputs = {**self.identity_props(client, *ids), **live_spec(self.kind, {}, obj.get("spec") or {})}
        return dynamic.ReadResult(id_, self.outputs(inputs, obj), inputs=inputs)


class ServiceProvider(PlatformProvider):
    """A service's own fields on the platform (`/v1/services/{key}`); its id is the key."""

    kind = SERVICE

    def ids(self, id_or_props: str | Mapping[str, Any]) -> tuple[str, ...]:
        return (id_or_props if isinstance(id_or_props, str) else str(id_or_props.get("key")),)

    def platform_object(self, *ids: str) -> PlatformObject:
        return PlatformObject(f"service '{ids[0]}'", f"services/{ids[0]}")

    def fetch(self, client: Any, *ids: str) -> Mapping[str, Any]:
        return client.get_service(ids[0])

    def write_places(self, *ids: str) -> dict[str, str]:
        return paths_for_write(ids[0], None, _deployment_keys(self.connection, ids[0]))

    def outputs(self, props: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
        outs = super().outputs(props, obj)
        outs["gateway_url"] = (obj.get("status") or {}).get("gateway_url")
        return outs

    @_platform_errors("create")
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        key = props["key"]
        spec = self.platform_spec(props)
        with self.connection.client() as client:
            obj = self.create_new(self.platform_object(key),
                                  lambda **pre: client.put_service(key, spec, **pre), lambda: client.get_service(key),
                                  remove=lambda: client.delete_service(key))
        return dynamic.CreateResult(key, self.outputs(props, obj))

    @_platform_errors("update")
    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        with self.connection.client() as client:
            written = client.put_service(id_, self.platform_spec(news))
            obj = self.converge(written, lambda: client.get_service(id_), f"service '{id_}'", require_ready=False)
        return dynamic.UpdateResult(self.outputs(news, obj))

    @_platform_errors("delete")
    def delete(self, id_: str, props: dict[str, Any]) -> None:
        from .client import PlatformError

        try:
            with self.connection.client() as client:
                client.delete_service(id_)
        except PlatformError as exc:
            if exc.status_code != 404:
                raise


class DeploymentProvider(PlatformProvider):
    """One deployment (`/v1/services/{service}/deployments/{key}`); its id is `service/key`. Created at weight 0."""

    kind = DEPLOYMENT

    @staticmethod
    def split(id_: str) -> tuple[str, str]:
        service, _, key = id_.partition("/")
        return service, key

    def ids(self, id_or_props: str | Mapping[str, Any]) -> tuple[str, ...]:
        if isinstance(id_or_props, str):
            return self.split(id_or_props)
        return str(id_or_props.get("service_key")), str(id_or_props.get("key"))

    def platform_object(self, *ids: str) -> PlatformObject:
        return PlatformObject(f"deployment '{ids[0]}/{ids[1]}'", f"services/{ids[0]}/deployments/{ids[1]}")

    def fetch(self, client: Any, *ids: str) -> Mapping[str, Any]:
        return client.get_deployment(ids[0], ids[1])

    def identity_props(self, client: Any, *ids: str) -> dict[str, Any]:
        return {"service_key": ids[0]}

    def write_places(self, *ids: str) -> dict[str, str]:
        return paths_for_write(ids[0], ids[1], _deployment_keys(self.connection, ids[0]))

    def more_changes(self, ids: tuple[str, ...], olds: Mapping[str, Any], news: Mapping[str, Any],
                     live: Any, changes: bool) -> bool:
        """`Default` of a legacy service not converted yet: the first added deployment or the first edit of
        `Default` redeploys it once (`inferstack.plan.legacy`) — say so, and show it as a change."""
        from ...plan.legacy import REASON, conversion_trigger
        from ...spec import DEFAULT_KEY

        if ids[1] != DEFAULT_KEY or live is _GONE:
            return changes
        siblings = news.get("service_deployment_keys")
        if not isinstance(siblings, list) or unknown_paths(siblings):
            return changes
        if live is None:  # offline: only what the last `up` saw
            before = olds.get("service_deployment_keys")
            old_keys = list(before) if before == [DEFAULT_KEY] else None
        else:
            old_keys = self._unconverted_keys(ids[0])
        trigger = conversion_trigger(old_keys, siblings, changes) if old_keys is not None else None
        if trigger is None:
            return changes
        note(f"deployment '{ids[0]}/{ids[1]}' redeploys Default ({REASON}: {trigger}); later edits follow the "
             f"usual rules")
        return True

    def _unconverted_keys(self, service: str) -> list[str] | None:
        """The live deployment keys of `service` when it is legacy and not converted yet, else None."""
        from ...plan.legacy import legacy_shape
        from .client import PlatformError

        try:
            with self.connection.client(timeout=DIFF_TIMEOUT_S) as client:
                svc = client.get_service(service)
                if (svc.get("status") or {}).get("converted"):
                    return None
                deployments = [(d["metadata"]["key"], (d.get("spec") or {}).get("name"))
                               for d in client.list_deployments(service)]
        except PlatformError:
            return None
        if not legacy_shape(bool((svc.get("spec") or {}).get("legacy_form")), deployments):
            return None
        return [k for k, _ in deployments]

    @_platform_errors("create")
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        service, key = props["service_key"], props["key"]
        spec = self.platform_spec(props)
        with self.connection.client() as client:
            obj = self.create_new(self.platform_object(service, key),
                                  lambda **pre: client.put_deployment(service, key, spec, **pre),
                                  lambda: client.get_deployment(service, key), require_ready=True,
                                  remove=lambda: self._delete(client, service, key))
        return dynamic.CreateResult(f"{service}/{key}", self.outputs(props, obj))

    @_platform_errors("update")
    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        service, key = self.split(id_)
        with self.connection.client() as client:
            written = client.put_deployment(service, key, self.platform_spec(news))
            obj = self.converge(written, lambda: client.get_deployment(service, key), f"deployment '{id_}'",
                                require_ready=True)
        return dynamic.UpdateResult(self.outputs(news, obj))

    @_platform_errors("delete")
    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Delete; when the platform still routes traffic to it (409), move its weight to the others first."""
        service, key = self.split(id_)
        with self.connection.client() as client:
            self._delete(client, service, key, self.connection.timeout_s)

    @classmethod
    def _delete(cls, client: Any, service: str, key: str, timeout_s: float = 300.0) -> None:
        from .client import PlatformError

        for attempt in range(5):
            try:
                client.delete_deployment(service, key)
                return
            except PlatformError as exc:
                if exc.status_code == 404:
                    return
                if exc.status_code != 409 or attempt == 4:
                    raise
            cls._shift_traffic_away(client, service, key, timeout_s)

    @staticmethod
    def _shift_traffic_away(client: Any, service: str, key: str, timeout_s: float = 300.0) -> None:
        """Weight 0 for `key`, its share spread over the service's other deployments; header rules and the mirror
        that name it dropped. Written with If-Match; read again when the service changed meanwhile (409: someone
        wrote the traffic first; 422: a deployment read a moment ago is gone — e.g. a parallel destroy). Under a
        progressive policy the weights move in gated steps: wait for the shift's outcome (a failed one keeps the
        deployment, saying which gate failed)."""
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
            except PlatformError as exc:
                if exc.status_code not in (409, 422) or attempt == 7:
                    raise
                continue
            if spec.get("progressive") is not None:
                wait_converged(lambda: client.get_traffic(service), f"traffic of service '{service}'",
                               timeout=timeout_s, require_ready=True)
            return


class TrafficProvider(PlatformProvider):
    """The service's traffic object (`/v1/services/{service}/traffic`), written atomically; its id is the service
    key. Its inputs name the deployments (keys, uids, ids) so that it changes after they exist and are Ready, and
    again whenever one is replaced. It exists as long as its service: its create writes it."""

    kind = TRAFFIC

    def ids(self, id_or_props: str | Mapping[str, Any]) -> tuple[str, ...]:
        return (id_or_props if isinstance(id_or_props, str) else str(id_or_props.get("service_key")),)

    def platform_object(self, *ids: str) -> PlatformObject:
        return PlatformObject(f"traffic of service '{ids[0]}'", f"services/{ids[0]}/traffic")

    def fetch(self, client: Any, *ids: str) -> Mapping[str, Any]:
        return client.get_traffic(ids[0])

    def identity_props(self, client: Any, *ids: str) -> dict[str, Any]:
        keys = [d["metadata"]["key"] for d in client.list_deployments(ids[0])]
        return {"service_key": ids[0], "deployment_keys": keys}

    def write_places(self, *ids: str) -> dict[str, str]:
        return paths_for_write(ids[0], None, _deployment_keys(self.connection, ids[0]))

    @_platform_errors("create")
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        service = props["service_key"]
        return dynamic.CreateResult(service, self._write(service, props))

    @_platform_errors("update")
    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(self._write(id_, news))

    def _write(self, service: str, props: Mapping[str, Any]) -> dict[str, Any]:
        spec = self.platform_spec(props)
        with self.connection.client() as client:
            written = client.put_traffic(service, spec)
            # A progressive shift is Ready once it succeeded; a failed one is Degraded with the gate that failed.
            obj = self.converge(written, lambda: client.get_traffic(service), f"traffic of service '{service}'",
                                require_ready=spec.get("progressive") is not None)
        return self.outputs(props, obj)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Nothing to delete: the traffic object lives as long as its service. Deployments leave it one by one
        (each moves its own weight away before it goes)."""


_INVENTORY_LABELS = {"vpcs": "VPC", "resource_groups": "resource group", "queues": "queue",
                     "compute_specs": "compute spec", "subnets": "subnet", "security_groups": "security group",
                     "images": "image"}


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

    def ids(self, id_or_props: str | Mapping[str, Any]) -> tuple[str, ...]:
        return (id_or_props if isinstance(id_or_props, str) else str(id_or_props.get("name")),)

    def platform_object(self, *ids: str) -> PlatformObject:
        return PlatformObject(f"{_INVENTORY_LABELS[self.inventory]} '{ids[0]}'", f"{self.path}/{ids[0]}")

    def fetch(self, client: Any, *ids: str) -> Mapping[str, Any]:
        return client.get_inventory(self.path, ids[0])

    def identity_props(self, client: Any, *ids: str) -> dict[str, Any]:
        return {"kind": self.inventory}

    def write_places(self, *ids: str) -> dict[str, str]:
        from .client import PlatformError

        places = {f"inventory.{self.inventory}[0]": self.platform_object(*ids).label}
        try:
            with self.connection.client(timeout=DIFF_TIMEOUT_S) as client:
                services = [s["metadata"]["key"] for s in client.list_services()]
        except PlatformError:
            return places
        return {**paths_for_write(None, None, [], services), **places}

    @_platform_errors("create")
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        name = props["name"]
        spec = self.platform_spec(props)
        with self.connection.client() as client:
            obj = self.create_new(self.platform_object(name),
                                  lambda **pre: client.put_inventory(self.path, name, spec, **pre),
                                  lambda: client.get_inventory(self.path, name), wait=False)
        return dynamic.CreateResult(name, self.outputs(props, obj))

    @_platform_errors("update")
    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        with self.connection.client() as client:
            obj = client.put_inventory(self.path, id_, self.platform_spec(news))
        return dynamic.UpdateResult(self.outputs(news, obj))

    @_platform_errors("delete")
    def delete(self, id_: str, props: dict[str, Any]) -> None:
        from .client import PlatformError

        try:
            with self.connection.client() as client:
                client.delete_inventory(self.path, id_)
        except PlatformError as exc:
            if exc.status_code != 404:
                raise


def _deployment_keys(connection: Connection, service: str) -> list[str]:
    """The service's deployment keys in the platform's order (best effort: [] when it cannot be read)."""
    from .client import PlatformError

    try:
        with connection.client(timeout=DIFF_TIMEOUT_S) as client:
            return [d["metadata"]["key"] for d in client.list_deployments(service)]
    except PlatformError:
        return []

