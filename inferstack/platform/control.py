"""The control plane's write rules: `Platform` holds the store, the change hook and every write.

Every write goes the same way: load the desired state, change it in memory, validate *all* services with the change
against the stored inventory (`inferstack.spec.validate`: one rule set on both sides), let `inferstack.plan.diff`
say what the change means, then write exactly the plan's objects in one SQLite transaction. `?dry_run=true` stops
after the plan. A write whose plan is empty writes nothing.

Finding paths are in stack-file terms with the object written first: a service write validates its service as
`services[0]`, a deployment write its deployment as `services[0].deployments[0]`, a traffic write
`services[0].traffic`, an inventory write its object as `inventory.<kind>[0]`; `POST /v1/apply` keeps the file's own
indices (`services[2].deployments[1].env[0].name`, `inventory.queues[0]`)."""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import Route

from inferstack.plan import Plan, PlanContext, diff
from inferstack.spec import (
    Deployment,
    Finding,
    Inventory,
    Service,
    StackFile,
    Traffic,
    validate,
    validate_stack,
)
from inferstack.spec.service import DEPLOYMENT_FIELDS
from inferstack.spec.validate import parse

from .objects import (
    DEPLOYMENT,
    INVENTORY_BY_FIELD,
    INVENTORY_KINDS,
    SERVICE,
    SERVICE_FIELDS,
    TRAFFIC,
    envelope,
    initial_status,
    object_path,
    owning_service,
)
from .state import (
    ServiceState,
    State,
    _finding,
    _restore_secrets,
    split_service,
    without_preexisting,
)
from .store import Row, Store, Tx

log = logging.getLogger("inferstack.platform")

FAULT_ENV = "INFERSTACK_FAULT"
FAULT_APPLY_AFTER_FIRST_ROW = "apply_after_first_row"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# --- errors ------------------------------------------------------------------------------------------------------

class ApiError(Exception):
    """A refused request: HTTP status, a stable `error` word, a message a person can read, maybe findings."""

    def __init__(self, status_code: int, error: str, message: str, findings: list[dict] | None = None,
                 **extra: Any):
        super().__init__(message)
        self.status_code, self.error, self.message = status_code, error, message
        self.body: dict[str, Any] = {"error": error, "message": message, **extra}
        if findings is not None:
            self.body["findings"] = findings


def _invalid(findings: list[Finding], what: str = "the change") -> ApiError:
    errors = [f for f in findings if f.severity.value == "error"]
    shown = "; ".join(f"{f.path}: {f.message} ({f.rule})" for f in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return ApiError(422, "invalid", f"{what} breaks {len(errors)} rule(s): {shown}{more}",
                    findings=[f.to_dict() for f in findings])




def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist")


def _check_version(row: Row | None, if_match: str | None, what: str) -> None:
    if if_match is None or if_match == "*" and row is not None:
        return
    if row is None:
        raise ApiError(409, "conflict", f"{what} does not exist, so If-Match: {if_match} cannot hold")
    if str(row.resource_version) != if_match:
        raise ApiError(409, "conflict", f"{what} is at resource_version {row.resource_version}, not {if_match}: "
                                        f"it changed since you read it; read it again and retry",
                       resource_version=str(row.resource_version))

def _check_absent(row: Row | None, ctx: WriteContext, what: str) -> None:
    """`If-None-Match: *`: the write may only create; an object that exists is left exactly as it is (412)."""
    if ctx.create_only and row is not None:
        raise ApiError(412, "exists", f"{what} already exists (uid {row.uid}, created {row.created_at}); "
                                      f"If-None-Match: * only creates, so nothing was written",
                       uid=row.uid, resource_version=str(row.resource_version))

# --- the platform ------------------------------------------------------------------------------------------------

@dataclass
class WriteContext:
    """What a request says about its write: its id (in events), dry run, and its preconditions (If-Match,
    If-None-Match: *)."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    dry_run: bool = False
    if_match: str | None = None
    create_only: bool = False
    """`If-None-Match: *`: refuse (412) to write an object that already exists."""


@dataclass
class Outcome:
    """A write's answer: HTTP status, body, and the services whose desired state changed (for `on_change`)."""

    status_code: int
    body: Any
    services: set[str] = field(default_factory=set)


@dataclass
class _RowOp:
    kind: str
    key: str
    parent: str
    action: str  # create | update | replace | delete | redeploy (same spec, new generation) | convert
    spec: dict[str, Any] | None = None
    legacy_redeploy: bool = False  # the legacy conversion redeploys `Default` at this write (`plan.legacy`)

    @property
    def path(self) -> str:
        return object_path(self.kind, self.key, self.parent)


ChangeHook = Callable[[str], Awaitable[None]]


class Platform:
    """The embedded platform in one process: the store, the write rules, and hooks for the controllers.

    A reconciler subscribes with `platform.subscribe(async_fn)`: it is called with a service key after every
    committed write that changed the service's desired state (or, for inventory writes, every service's). It reads
    the store and writes status with `store.write_status`. `on_startup` / `on_shutdown` hold async callables run by
    the server's lifespan; `routes` holds extra starlette routes (e.g. `/metrics`) added to the API."""

    def __init__(self, store: Store, *, fault: str | None = None):
        self.store = store
        self.fault = fault if fault is not None else os.environ.get(FAULT_ENV)
        self.subscribers: list[ChangeHook] = []
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.routes: list[Route] = []
        self.runtime: Any | None = None  # the reconciler, when instances run (`embedded.attach`)

    def subscribe(self, hook: ChangeHook) -> None:
        self.subscribers.append(hook)

    async def on_change(self, service_key: str) -> None:
        """Tell every subscriber that a service's desired state changed (a subscriber's failure is logged)."""
        for hook in list(self.subscribers):
            try:
                await hook(service_key)
            except Exception:
                log.exception("change hook %r failed for service %s", hook, service_key)

    # --- reads ---------------------------------------------------------------------------------------------------

    def get(self, kind: str, key: str, parent: str = "") -> dict[str, Any]:
        row = self.store.get(kind, key, parent)
        if row is None:
            raise _not_found(object_path(kind, key, parent))
        return envelope(row)

    def get_service(self, key: str) -> dict[str, Any]:
        return self.get(SERVICE, key)

    def require_service(self, key: str) -> Row:
        row = self.store.get(SERVICE, key)
        if row is None:
            raise _not_found(f"services/{key}")
        return row

    # --- writes --------------------------------------------------------------------------------------------------

    def put_service(self, key: str, body: Any, ctx: WriteContext) -> Outcome:
        with self.store.locked():
            row = self.store.get(SERVICE, key)
            _check_version(row, ctx.if_match, f"services/{key}")
            _check_absent(row, ctx, f"services/{key}")
            data = _require_object(body, "services[0]")
            problems = []
            for k in data:
                if k in SERVICE_FIELDS:
                    continue
                where = ("deployments have their own objects: PUT /v1/services/{key}/deployments/{dkey}, or POST "
                         "/v1/apply" if k in DEPLOYMENT_FIELDS or k in ("deployments", "weight")
                         else "the traffic object has its own route: PUT /v1/services/{key}/traffic"
                         if k == "traffic" else "a typo?")
                problems.append(_finding("field.unknown", f"services[0].{k}", None,
                                         f"unknown key '{k}' in a service write ({where})"))
            problems += _key_matches(data, "key", key, "services[0].key")
            if problems:
                raise _invalid(problems)
            old = State.load(self.store)
            new = old.copy()
            if key in new.services:
                new.services[key].fields = data
            else:
                new.services[key] = ServiceState(data)
            new.first(key)
            return self._write(old, new, ctx, services=[key], primary=(SERVICE, key, ""))

    def delete_service(self, key: str, ctx: WriteContext) -> Outcome:
        with self.store.locked():
            _check_version(self.require_service(key), ctx.if_match, f"services/{key}")
            old = State.load(self.store)
            new = old.copy()
            del new.services[key]
            return self._write(old, new, ctx, services=[key], primary=None)

    def put_deployment(self, svc: str, key: str, body: Any, ctx: WriteContext) -> Outcome:
        with self.store.locked():
            self.require_service(svc)
            row = self.store.get(DEPLOYMENT, key, svc)
            _check_version(row, ctx.if_match, object_path(DEPLOYMENT, key, svc))
            _check_absent(row, ctx, object_path(DEPLOYMENT, key, svc))
            path = "services[0].deployments[0]"
            data = _require_object(body, path)
            data.setdefault("key", key)
            dep, problems = parse(Deployment, data, path)
            if dep is None:
                raise _invalid(problems)
            problems = _key_matches({"key": dep.key}, "key", key, f"{path}.key")
            problems += _restore_secrets(dep, row.spec if row else None, path)
            if problems:
                raise _invalid(problems)
            old = State.load(self.store)
            new = old.copy()
            state = new.services[svc]
            creating = key not in state.deployments
            if creating and state.traffic.get("strategy", "weighted") == "weighted":
                # A new deployment starts at weight 0; the first one of a service takes all the traffic.
                weights = dict(state.traffic.get("weights") or {})
                weights.setdefault(key, 0.0 if state.deployments else 100.0)
                state.traffic = {**state.traffic, "weights": weights}
            state.deployments[key] = dep.to_data()
            new.first(svc, key)
            return self._write(old, new, ctx, services=[svc], primary=(DEPLOYMENT, key, svc),
                               forced=[(TRAFFIC, svc)])

    def delete_deployment(self, svc: str, key: str, ctx: WriteContext) -> Outcome:
        with self.store.locked():
            self.require_service(svc)
            row = self.store.get(DEPLOYMENT, key, svc)
            if row is None:
                raise _not_found(object_path(DEPLOYMENT, key, svc))
            _check_version(row, ctx.if_match, row.path)
            old = State.load(self.store)
            state = old.services[svc]
            traffic = Traffic.model_validate(state.traffic)
            holds = []
            if traffic.weights.get(key, 0) > 0 and len(state.deployments) > 1:
                holds.append(f"weight {traffic.weights[key]:g}")
            elif (live := _live_weight(self.store.get(TRAFFIC, svc, svc), key)) > 0 and len(state.deployments) > 1:
                holds.append(f"live weight {live:g} (a progressive release has not moved it yet, or rolled back)")
            holds += [f"header rule {i}" for i, r in enumerate(traffic.header_rules) if r.deployment == key]
            if traffic.mirror and traffic.mirror.deployment == key:
                holds.append("mirror")
            if holds:
                raise ApiError(409, "conflict", f"deployment '{key}' of service '{svc}' still takes traffic "
                                                f"({', '.join(holds)}): shift traffic away first with PUT "
                                                f"/v1/services/{svc}/traffic, then delete it")
            new = old.copy()
            state = new.services[svc]
            del state.deployments[key]
            weights = {k: w for k, w in (state.traffic.get("weights") or {}).items() if k != key}
            state.traffic = {**state.traffic, "weights": weights}
            new.first(svc)
            return self._write(old, new, ctx, services=[svc], primary=None, forced=[(TRAFFIC, svc)])

    def put_traffic(self, svc: str, body: Any, ctx: WriteContext) -> Outcome:
        with self.store.locked():
            self.require_service(svc)
            row = self.store.get(TRAFFIC, svc, svc)
            _check_version(row, ctx.if_match, f"services/{svc}/traffic")
            _check_absent(row, ctx, f"services/{svc}/traffic")
            data = _require_object(body, "services[0].traffic")
            traffic, problems = parse(Traffic, data, "services[0].traffic")
            if traffic is None:
                raise _invalid(problems)
            old = State.load(self.store)
            new = old.copy()
            new.services[svc].traffic = traffic.to_data()
            new.first(svc)
            return self._write(old, new, ctx, services=[svc], primary=(TRAFFIC, svc, svc))

    def put_inventory(self, url_kind: str, name: str, body: Any, ctx: WriteContext) -> Outcome:
        kind = INVENTORY_KINDS[url_kind]
        with self.store.locked():
            row = self.store.get(kind.field, name)
            _check_version(row, ctx.if_match, f"{url_kind}/{name}")
            _check_absent(row, ctx, f"{url_kind}/{name}")
            path = f"inventory.{kind.field}[0]"
            data = _require_object(body, path)
            data.setdefault("name", name)
            obj, problems = parse(kind.model, data, path)
            if obj is None:
                raise _invalid(problems)
            problems = _key_matches({"name": obj.name}, "name", name, f"{path}.name")
            if problems:
                raise _invalid(problems)
            old = State.load(self.store)
            new = old.copy()
            new.inventory[kind.field][name] = obj.to_data()
            new.first(inventory=(kind.field, name))
            return self._write(old, new, ctx, inventory=[(kind.field, name)], primary=(kind.field, name, ""))

    def delete_inventory(self, url_kind: str, name: str, ctx: WriteContext) -> Outcome:
        kind = INVENTORY_KINDS[url_kind]
        with self.store.locked():
            row = self.store.get(kind.field, name)
            if row is None:
                raise _not_found(f"{url_kind}/{name}")
            _check_version(row, ctx.if_match, f"{url_kind}/{name}")
            old = State.load(self.store)
            new = old.copy()
            del new.inventory[kind.field][name]
            return self._write(old, new, ctx, inventory=[(kind.field, name)], primary=None)

    def apply(self, body: Any, ctx: WriteContext) -> Outcome:
        """A whole stack file in one transaction: its inventory objects and services; others are left alone."""
        with self.store.locked():
            data = _require_object(body, "")
            old = State.load(self.store)
            stack, problems = parse(StackFile, data, "")
            if stack is None:
                loaded = validate_stack(data, "<request>", old.inventory_model())
                raise _invalid(loaded.report.findings, "the stack file")
            for i, svc in enumerate(stack.services):
                stored = old.services.get(svc.key or "")
                for j, dep in enumerate(svc.deployments):
                    before = stored.deployments.get(dep.key or "") if stored else None
                    problems += _restore_secrets(dep, before, f"services[{i}].deployments[{j}]")
            if problems:
                raise _invalid(problems, "the stack file")
            new = old.copy()
            inv_names = [(kind, o.name) for kind in Inventory.KINDS for o in getattr(stack.inventory, kind)]
            for kind in Inventory.KINDS:
                objs = {o.name: o.to_data() for o in getattr(stack.inventory, kind)}
                new.inventory[kind] = {**objs, **{k: v for k, v in new.inventory[kind].items() if k not in objs}}
            keys = [s.key for s in stack.services]
            # The whole result as the file writes it (its own indices in paths): its services, then the others.
            others = [s.data() for k, s in old.services.items() if k not in keys]
            report = validate([s.to_data() for s in stack.services] + others, new.inventory_data(),
                              check_inventory=True, admitted=old.admitted())
            report = without_preexisting(report, keys + [k for k in old.services if k not in keys], old, set(keys))
            faithful = None not in keys and len(set(keys)) == len(keys) and all(
                None not in (ks := [d.key for d in s.deployments]) and len(set(ks)) == len(ks)
                for s in stack.services)
            if not report.ok and not faithful:
                raise _invalid(report.findings, "the stack file")
            files_services = {}
            for svc in stack.services:
                fields, deployments, traffic = split_service(svc)
                before = old.services.get(svc.key)
                files_services[svc.key] = ServiceState(fields, deployments, traffic,
                                                       before.converted if before else False)
            new.services = {**files_services, **{k: v for k, v in new.services.items() if k not in files_services}}
            if not report.ok:
                raise _invalid(report.findings, "the stack file")
            return self._write(old, new, ctx, services=keys, inventory=inv_names, primary=None, whole_file=True)

    # --- the one write path --------------------------------------------------------------------------------------

    def _write(self, old: State, new: State, ctx: WriteContext, *, services: Iterable[str] = (),
               inventory: Iterable[tuple[str, str]] = (), primary: tuple[str, str, str] | None,
               forced: Iterable[tuple[str, str]] = (), whole_file: bool = False) -> Outcome:
        services, inventory = list(services), list(inventory)
        report = validate(new.services_data(), new.inventory_data(), check_inventory=bool(inventory),
                          admitted=old.admitted())
        report = without_preexisting(report, list(new.services), old, set(services))
        if not report.ok:
            raise _invalid(report.findings, "the stack file" if whole_file else "the change")
        _canonical(new, services)
        context = PlanContext(inventory=new.inventory_model(), current_replicas=old.replicas,
                              converted={k for k, s in old.services.items() if s.converted},
                              others=old.sharing_capacity(services, new), instances=old.instances,
                              releases=old.releases)
        plan = diff(old.stack(services, inventory), new.stack(services, inventory), context)
        ops = _row_ops(plan, old, new, services, forced)
        warnings = [f.to_dict() for f in report.findings if f.severity.value == "warning"
                    and any(f.path.startswith(f"services[{i}]") for i in range(len(services)))]
        changed = [{"object": op.path, "action": op.action} for op in ops]
        if ctx.dry_run:
            return Outcome(200, {"dry_run": True, "plan": plan.to_dict(), "plan_text": plan.to_text(),
                                 "changed": changed, "writes": 0, "warnings": warnings})
        created = False
        if ops:
            after_row = None
            if whole_file and self.fault == FAULT_APPLY_AFTER_FIRST_ROW:
                def after_row(n: int) -> None:
                    if n == 1:
                        os._exit(1)
            with self.store.transaction(ctx.request_id, after_row=after_row) as tx:
                for op in ops:
                    _run(tx, op, new)
                    created = created or (primary is not None and op.action in ("create", "replace")
                                          and (op.kind, op.key, op.parent) == primary)
                writes = tx.writes
        else:
            writes = 0
        touched = {owning_service(op.kind, op.key, op.parent) for op in ops}
        if any(op.kind in INVENTORY_BY_FIELD for op in ops):
            touched |= set(new.services)
        touched.discard("")
        body: Any
        if whole_file:
            body = {"plan": plan.to_dict(), "plan_text": plan.to_text(), "writes": writes, "changed": changed,
                    "warnings": warnings}
        elif primary is None:
            body = {"writes": writes, "changed": changed}
        else:
            body = self.get(*primary)
            if warnings:
                body["warnings"] = warnings
        return Outcome(201 if created else 200, body, touched)


def _live_weight(traffic: Row | None, key: str) -> float:
    """A deployment's weight at the gateway when a progressive release routes other weights than declared."""
    live = traffic.status.get("live_weights") if traffic is not None and traffic.spec.get("progressive") else None
    value = live.get(key, 0) if isinstance(live, dict) else 0
    return float(value) if isinstance(value, (int, float)) else 0.0


def _require_object(body: Any, path: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _invalid([_finding("field.type", path, type(body).__name__, "the body must be a JSON object")])
    return dict(body)


def _key_matches(data: dict[str, Any], field_name: str, expected: str, path: str) -> list[Finding]:
    given = data.get(field_name)
    if given is None:
        data[field_name] = expected
        return []
    if given != expected:
        return [_finding("field.invalid", path, given,
                         f"{field_name} '{given}' differs from '{expected}' in the URL (an object's identity never "
                         f"changes)")]
    return []


def _canonical(state: State, services: list[str]) -> None:
    """Replace written data by the models' dump (defaults filled), as the store keeps it."""
    for key in services:
        if key in state.services:
            svc = Service.model_validate(state.services[key].data())
            s = state.services[key]
            s.fields, s.deployments, s.traffic = split_service(svc)


def _row_ops(plan: Plan, old: State, new: State, services: list[str],
             forced: Iterable[tuple[str, str]]) -> list[_RowOp]:
    """The rows to write: exactly the plan's changes, plus the platform's own bookkeeping (a deleted service's
    traffic object, the legacy conversion flag, weights of deployments added or removed one at a time)."""
    ops: list[_RowOp] = []
    converting: list[str] = []
    for c in plan.changes:
        if c.kind == "inventory":
            kind = c.id.split("/", 1)[0]
            ops.append(_RowOp(kind, c.key, "", c.action, new.inventory[kind].get(c.key)))
        elif c.kind == "service":
            if c.action == "delete" and not any(op.kind == TRAFFIC and op.parent == c.key for op in ops):
                ops.insert(_first_of(ops, c.key), _RowOp(TRAFFIC, c.key, c.key, "delete"))
            spec = new.services[c.key].fields if c.action != "delete" else None
            ops.append(_RowOp(SERVICE, c.key, "", c.action, spec))
        elif c.kind == "deployment":
            svc = c.service or ""
            spec = new.services[svc].deployments[c.key] if c.action != "delete" else None
            # An update that changes nothing is the legacy conversion redeploying `Default`: a new generation.
            same = c.action == "update" and spec == old.services[svc].deployments.get(c.key)
            ops.append(_RowOp(DEPLOYMENT, c.key, svc, "redeploy" if same else c.action, spec,
                              legacy_redeploy=c.legacy_conversion is not None))
            if c.legacy_conversion is not None and svc in new.services:
                converting.append(svc)
        elif c.kind == "traffic":
            svc = c.service or ""
            ops.append(_RowOp(TRAFFIC, svc, svc, c.action, new.services[svc].traffic))
    for kind, svc in forced:
        if any(op.kind == kind and op.parent == svc for op in ops) or svc not in new.services:
            continue
        before, after = old.services[svc].traffic, new.services[svc].traffic
        if before != after:
            ops.append(_RowOp(TRAFFIC, svc, svc, "update", after))
    for key in converting:  # the plan's legacy conversions: recorded once, so `Default` redeploys only then
        new.services[key].converted = True
        ops.append(_RowOp(SERVICE, key, "", "convert"))
    return ops


def _first_of(ops: list[_RowOp], service: str) -> int:
    """Index of the first op on a service's deployments (its traffic goes away before them)."""
    return next((i for i, op in enumerate(ops) if op.kind == DEPLOYMENT and op.parent == service), len(ops))


def _run(tx: Tx, op: _RowOp, new: State) -> None:
    if op.action == "delete":
        tx.delete(op.kind, op.key, op.parent)
    elif op.action == "convert":
        tx.patch_status(SERVICE, op.key, {"converted": True}, action="convert")
    else:
        assert op.spec is not None
        status = None
        if op.action in ("create", "replace"):
            status = initial_status(op.kind, op.spec)
            if op.kind == SERVICE:
                status["converted"] = new.services[op.key].converted
            if op.action == "replace":
                tx.delete(op.kind, op.key, op.parent)
        row = tx.put(op.kind, op.key, op.spec, parent=op.parent, status=status,
                     bump_generation=op.action == "redeploy", action=op.action)
        if op.kind == DEPLOYMENT and _redeploys_default(op):
            # The reconciler rolls `Default` out again at this generation even where the template is unchanged.
            tx.patch_status(DEPLOYMENT, op.key, {"redeploy_generation": row.generation}, parent=op.parent,
                            action=None)


def _redeploys_default(op: _RowOp) -> bool:
    """The legacy rule (`inferstack.plan.legacy`): the conversion — the first added deployment or the first edit of
    `Default`, whichever comes first — redeploys `Default` once; afterwards it follows the usual rules."""
    return op.legacy_redeploy
