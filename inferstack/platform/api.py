"""The control plane: `Platform` (the store, the write rules, the change hook) and its REST API (starlette).

Every write goes the same way: load the desired state, change it in memory, validate *all* services with the change
against the stored inventory (`inferstack.spec.validate`: one rule set on both sides), let `inferstack.plan.diff`
say what the change means, then write exactly the plan's objects in one SQLite transaction. `?dry_run=true` stops
after the plan. A write whose plan is empty writes nothing.

Finding paths are in stack-file terms with the object written first: a service write validates its service as
`services[0]`, a deployment write its deployment as `services[0].deployments[0]`, a traffic write
`services[0].traffic`, an inventory write its object as `inventory.<kind>[0]`; `POST /v1/apply` keeps the file's own
indices (`services[2].deployments[1].env[0].name`, `inventory.queues[0]`)."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from hmac import compare_digest
from typing import Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from inferstack.plan import Plan, PlanContext, diff
from inferstack.spec import (
    DEFAULT_KEY,
    DEFAULT_NAME,
    RULES,
    SECRET_MASK,
    Deployment,
    Finding,
    Inventory,
    Report,
    Service,
    StackFile,
    Traffic,
    validate,
    validate_stack,
)
from inferstack.spec.service import DEPLOYMENT_FIELDS
from inferstack.spec.validate import parse, prepaid_needs

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


def _finding(rule: str, path: str, value: Any, message: str) -> Finding:
    return Finding(rule, path, value, message, RULES[rule].severity)


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


# --- the desired state in memory -----------------------------------------------------------------------------------

@dataclass
class ServiceState:
    """One service as stored: its own fields, its deployments (by key, in order) and its traffic object."""

    fields: dict[str, Any]
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    traffic: dict[str, Any] = field(default_factory=lambda: Traffic().to_data())
    converted: bool = False

    def data(self) -> dict[str, Any]:
        """Input of `Service` (secrets revealed)."""
        return {**self.fields, "deployments": list(self.deployments.values()), "traffic": self.traffic}

    def is_legacy(self) -> bool:
        """Flat form not yet converted: the one `default` / `Default` deployment (the plan's rule too)."""
        if self.converted:
            return False
        only_default = list(self.deployments) == [DEFAULT_KEY] and \
            self.deployments[DEFAULT_KEY].get("name") == DEFAULT_NAME
        return bool(self.fields.get("legacy_form")) or only_default


def split_service(svc: Service) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """A parsed service as the store keeps it: own fields, deployments by key, traffic (secrets revealed)."""
    fields = svc.model_dump(mode="json", exclude_none=True, include=set(SERVICE_FIELDS))
    return fields, {d.key: d.to_data() for d in svc.deployments}, svc.traffic.to_data()


@dataclass
class State:
    """The whole desired state: inventory objects by kind and name, services by key (dict order = path order)."""

    inventory: dict[str, dict[str, dict[str, Any]]]
    services: dict[str, ServiceState]
    replicas: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @classmethod
    def load(cls, store: Store) -> State:
        inventory = {kind: {r.key: r.spec for r in store.list(kind)} for kind in Inventory.KINDS}
        deployments: dict[str, list[Row]] = defaultdict(list)
        for r in store.list(DEPLOYMENT):
            deployments[r.parent].append(r)
        traffic = {r.parent: r.spec for r in store.list(TRAFFIC)}
        services: dict[str, ServiceState] = {}
        replicas: dict[tuple[str, str, str], int] = {}
        for r in store.list(SERVICE):
            services[r.key] = ServiceState(dict(r.spec), {d.key: d.spec for d in deployments[r.key]},
                                           traffic.get(r.key, Traffic().to_data()),
                                           bool(r.status.get("converted")))
            for d in deployments[r.key]:
                for role, counts in (d.status.get("roles") or {}).items():
                    if isinstance(counts, dict) and isinstance(counts.get("desired"), int):
                        replicas[(r.key, d.key, role)] = counts["desired"]
        return cls(inventory, services, replicas)

    def copy(self) -> State:
        return copy.deepcopy(self)

    def first(self, service: str | None = None, deployment: str | None = None,
              inventory: tuple[str, str] | None = None) -> State:
        """Put the written objects first, so that findings name them at index 0."""
        if service is not None and service in self.services:
            self.services = _move_first(self.services, [service])
            if deployment is not None:
                svc = self.services[service]
                svc.deployments = _move_first(svc.deployments, [deployment])
        if inventory is not None:
            kind, name = inventory
            self.inventory[kind] = _move_first(self.inventory[kind], [name])
        return self

    def inventory_data(self) -> dict[str, list[dict[str, Any]]]:
        return {kind: list(objs.values()) for kind, objs in self.inventory.items()}

    def inventory_model(self) -> Inventory:
        return Inventory.model_validate(self.inventory_data())

    def services_data(self) -> list[dict[str, Any]]:
        return [s.data() for s in self.services.values()]

    def stack(self, services: Iterable[str], inventory: Iterable[tuple[str, str]]) -> StackFile:
        """The part of the state a plan compares: the named services and inventory objects that exist."""
        inv: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for kind, name in inventory:
            if name in self.inventory[kind]:
                inv[kind].append(self.inventory[kind][name])
        return StackFile.model_validate({"inventory": dict(inv), "services": [
            self.services[k].data() for k in services if k in self.services]})


def _move_first(d: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {**{k: d[k] for k in keys if k in d}, **{k: v for k, v in d.items() if k not in keys}}


def _restore_secrets(dep: Deployment, stored: dict[str, Any] | None, path: str) -> list[Finding]:
    """A secret given as the mask (`[secret]`, what GET shows) keeps the stored value of the same env name."""
    known: dict[tuple[str, str], str] = {}
    if stored:
        for e in stored.get("env") or []:
            if e.get("secret") is not None:
                known[("", e["name"])] = e["secret"]
        for r in stored.get("roles") or []:
            for e in r.get("env") or []:
                if e.get("secret") is not None:
                    known[(r["name"], e["name"])] = e["secret"]
    out: list[Finding] = []
    lists = [("", f"{path}.env", dep.env)] + [(r.name, f"{path}.roles[{i}].env", r.env)
                                                for i, r in enumerate(dep.roles or [])]
    for role, base, env in lists:
        for i, e in enumerate(env):
            if e.secret is not None and e.secret.get_secret_value() == SECRET_MASK:
                value = known.get((role, e.name))
                if value is None:
                    out.append(_finding("field.invalid", f"{base}[{i}].secret", SECRET_MASK,
                                        f"'{SECRET_MASK}' is how secrets are shown, not a value: env '{e.name}' has "
                                        f"no stored secret to keep, so give its value"))
                else:
                    e.secret = SecretStr(value)
    return out


def _prepaid_needs(services: list[Service], inv: Inventory, written: set[str]) -> dict[tuple[str, str], list[int]]:
    """Per (prepaid queue, spec): [instances the written services need, instances the other services hold]."""
    out: dict[tuple[str, str], list[int]] = {}
    for slot, by_service in prepaid_needs(services, inv).items():
        mine = sum(n for i, n in by_service.items() if services[i].key in written)
        out[slot] = [mine, sum(by_service.values()) - mine]
    return out


def _explain_capacity(report: Report, state: State, written: set[str]) -> list[Finding]:
    """Capacity findings restated for admission: the queue, the spec, what the change needs and what is free."""
    if "capacity.prepaid_fits" not in report.rules():
        return report.findings
    services = [s for s in (parse(Service, d, "")[0] for d in state.services_data()) if s is not None]
    inv = state.inventory_model()
    queues = inv.index("queues")
    over = [(slot, n) for slot, n in _prepaid_needs(services, inv, written).items()
            if sum(n) > queues[slot[0]].capacity.get(slot[1], sum(n))]
    out = []
    for f in report.findings:
        slot = next(((s, n) for s, n in over if s[0] == f.value), None) if f.rule == "capacity.prepaid_fits" else None
        if slot is None:
            out.append(f)
            continue
        over.remove(slot)
        (queue, spec), (mine, others) = slot
        capacity = queues[queue].capacity[spec]
        free = max(capacity - others, 0)
        out.append(Finding(f.rule, f.path, f.value,
                           f"prepaid queue '{queue}' cannot admit this: compute spec '{spec}' needs {mine} "
                           f"instance(s) (replicas or autoscaling min, plus max surge) but {free} are free "
                           f"({capacity} in the queue, {others} held by other services)", f.severity))
    return out


# --- the platform ------------------------------------------------------------------------------------------------

@dataclass
class WriteContext:
    """What a request says about its write: its id (in events), dry run, and the If-Match precondition."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    dry_run: bool = False
    if_match: str | None = None


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
                              check_inventory=True)
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
                raise _invalid(_explain_capacity(report, new, set(keys)), "the stack file")
            return self._write(old, new, ctx, services=keys, inventory=inv_names, primary=None, whole_file=True)

    # --- the one write path --------------------------------------------------------------------------------------

    def _write(self, old: State, new: State, ctx: WriteContext, *, services: Iterable[str] = (),
               inventory: Iterable[tuple[str, str]] = (), primary: tuple[str, str, str] | None,
               forced: Iterable[tuple[str, str]] = (), whole_file: bool = False) -> Outcome:
        services, inventory = list(services), list(inventory)
        report = validate(new.services_data(), new.inventory_data(), check_inventory=bool(inventory))
        if not report.ok:
            raise _invalid(_explain_capacity(report, new, set(services)),
                           "the stack file" if whole_file else "the change")
        _canonical(new, services)
        context = PlanContext(inventory=new.inventory_model(), current_replicas=old.replicas,
                              converted={k for k, s in old.services.items() if s.converted})
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
            ops.append(_RowOp(DEPLOYMENT, c.key, svc, "redeploy" if same else c.action, spec))
        elif c.kind == "traffic":
            svc = c.service or ""
            ops.append(_RowOp(TRAFFIC, svc, svc, c.action, new.services[svc].traffic))
    for kind, svc in forced:
        if any(op.kind == kind and op.parent == svc for op in ops) or svc not in new.services:
            continue
        before, after = old.services[svc].traffic, new.services[svc].traffic
        if before != after:
            ops.append(_RowOp(TRAFFIC, svc, svc, "update", after))
    for key in services:
        was, now_ = old.services.get(key), new.services.get(key)
        if was is None or now_ is None or not was.is_legacy() or DEFAULT_KEY not in was.deployments:
            continue
        if any(k not in was.deployments for k in now_.deployments):
            now_.converted = True
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
        if op.kind == DEPLOYMENT and _redeploys_default(op, new):
            # The reconciler rolls `Default` out again at this generation even where the template is unchanged.
            tx.patch_status(DEPLOYMENT, op.key, {"redeploy_generation": row.generation}, parent=op.parent,
                            action=None)


def _redeploys_default(op: _RowOp, new: State) -> bool:
    """The legacy rule: the conversion, or any edit of `Default` in a converted service, redeploys `Default`."""
    if op.action == "redeploy":
        return True
    svc = new.services.get(op.parent)
    return op.action == "update" and op.key == DEFAULT_KEY and svc is not None and svc.converted


# --- HTTP ----------------------------------------------------------------------------------------------------------

class BearerAuth:
    """Every route but `/healthz` needs `Authorization: Bearer <token>` (compared in constant time)."""

    def __init__(self, app: ASGIApp, token: str, open_paths: tuple[str, ...] = ("/healthz",)):
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not compare_digest(given, self.expected):
                message = "missing bearer token" if not given else "wrong bearer token"
                response = JSONResponse({"error": "unauthorized", "message": f"{message}: send Authorization: "
                                         f"Bearer <token> (the token is in the data dir's `token` file)"},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _context(request: Request) -> WriteContext:
    given = request.headers.get("x-request-id", "")
    if_match = request.headers.get("if-match")
    if if_match is not None:
        if_match = if_match.strip().removeprefix("W/").strip('"')
    dry = request.query_params.get("dry_run", "").lower() in ("1", "true", "yes")
    ctx = WriteContext(dry_run=dry, if_match=if_match)
    if _REQUEST_ID_RE.match(given):
        ctx.request_id = given
    return ctx


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "bad_request", "this write needs a JSON body")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from exc


def _respond(data: Any, status_code: int = 200, request_id: str | None = None) -> JSONResponse:
    headers = {}
    if request_id:
        headers["X-Request-Id"] = request_id
    if isinstance(data, dict) and isinstance(data.get("metadata"), dict) and "resource_version" in data["metadata"]:
        headers["ETag"] = f'"{data["metadata"]["resource_version"]}"'
    return JSONResponse(data, status_code=status_code, headers=headers)


def create_app(platform: Platform, token: str) -> Starlette:
    """The REST API of `platform`, guarded by `token`."""

    async def write(request: Request, op: Callable[[WriteContext], Outcome]) -> Response:
        ctx = _context(request)
        outcome = op(ctx)
        for key in sorted(outcome.services):
            await platform.on_change(key)
        return _respond(outcome.body, outcome.status_code, ctx.request_id)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "runtime": getattr(platform, "runtime", None) is not None})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def inventory_all(request: Request) -> Response:
        return _respond(State.load(platform.store).inventory_data())

    async def inventory_list(request: Request) -> Response:
        kind = _kind(request)
        return _respond({"items": [envelope(r) for r in platform.store.list(kind.field)]})

    async def inventory_object(request: Request) -> Response:
        kind, name = _kind(request), request.path_params["name"]
        if request.method == "GET":
            return _respond(platform.get(kind.field, name))
        if request.method == "DELETE":
            return await write(request, lambda ctx: platform.delete_inventory(kind.url, name, ctx))
        body = await _json(request)
        return await write(request, lambda ctx: platform.put_inventory(kind.url, name, body, ctx))

    async def services(request: Request) -> Response:
        return _respond({"items": [envelope(r) for r in platform.store.list(SERVICE)]})

    async def service(request: Request) -> Response:
        key = request.path_params["key"]
        if request.method == "GET":
            return _respond(platform.get_service(key))
        if request.method == "DELETE":
            return await write(request, lambda ctx: platform.delete_service(key, ctx))
        body = await _json(request)
        return await write(request, lambda ctx: platform.put_service(key, body, ctx))

    async def deployments(request: Request) -> Response:
        key = request.path_params["key"]
        platform.require_service(key)
        return _respond({"items": [envelope(r) for r in platform.store.list(DEPLOYMENT, key)]})

    async def deployment(request: Request) -> Response:
        svc, key = request.path_params["key"], request.path_params["dkey"]
        if request.method == "GET":
            return _respond(platform.get(DEPLOYMENT, key, svc))
        if request.method == "DELETE":
            return await write(request, lambda ctx: platform.delete_deployment(svc, key, ctx))
        body = await _json(request)
        return await write(request, lambda ctx: platform.put_deployment(svc, key, body, ctx))

    async def traffic(request: Request) -> Response:
        svc = request.path_params["key"]
        if request.method == "GET":
            platform.require_service(svc)
            return _respond(platform.get(TRAFFIC, svc, svc))
        body = await _json(request)
        return await write(request, lambda ctx: platform.put_traffic(svc, body, ctx))

    async def apply(request: Request) -> Response:
        body = await _json(request)
        return await write(request, lambda ctx: platform.apply(body, ctx))

    async def service_events(request: Request) -> Response:
        return _respond({"items": platform.store.events(service=request.path_params["key"], **_paging(request))})

    async def events(request: Request) -> Response:
        q = request.query_params
        return _respond({"items": platform.store.events(service=q.get("service"), object=q.get("object"),
                                                        **_paging(request))})

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/inventory", inventory_all, methods=["GET"]),
        Route("/v1/services", services, methods=["GET"]),
        Route("/v1/services/{key}", service, methods=["GET", "PUT", "DELETE"]),
        Route("/v1/services/{key}/deployments", deployments, methods=["GET"]),
        Route("/v1/services/{key}/deployments/{dkey}", deployment, methods=["GET", "PUT", "DELETE"]),
        Route("/v1/services/{key}/traffic", traffic, methods=["GET", "PUT"]),
        Route("/v1/services/{key}/events", service_events, methods=["GET"]),
        Route("/v1/events", events, methods=["GET"]),
        Route("/v1/apply", apply, methods=["POST"]),
        *platform.routes,
    ]
    for url in INVENTORY_KINDS:
        routes += [Route(f"/v1/{url}", inventory_list, methods=["GET"]),
                   Route(f"/v1/{url}/{{name:path}}", inventory_object, methods=["GET", "PUT", "DELETE"])]

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal", "message": f"the platform failed on this request: {exc!r}"},
                            status_code=500)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body, status_code=exc.status_code)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        word = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": word, "message": f"{request.method} {request.url.path}: {exc.detail}"},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for hook in platform.on_startup:
            await hook()
        try:
            yield
        finally:
            for hook in platform.on_shutdown:
                await hook()

    return Starlette(routes=routes, middleware=[Middleware(BearerAuth, token=token)],
                     exception_handlers={ApiError: api_error, HTTPException: http_error,
                                         Exception: internal_error}, lifespan=lifespan)


def _kind(request: Request) -> Any:
    url = request.url.path.split("/")[2]
    return INVENTORY_KINDS[url]


def _paging(request: Request) -> dict[str, Any]:
    q = request.query_params
    try:
        since = int(q.get("since", "0"))
        limit = int(q["limit"]) if "limit" in q else None
    except ValueError as exc:
        raise ApiError(400, "bad_request", "since and limit are integers") from exc
    return {"since": since, "limit": limit}


# --- /openapi.json -------------------------------------------------------------------------------------------------

_ERRORS = {
    "400": "The body is not JSON (`bad_json`) or is missing.",
    "401": "No or a wrong bearer token.",
    "404": "The object (or its service) does not exist.",
    "409": "`conflict`: If-Match names a stale resource_version, or a deployment still takes traffic.",
    "422": "`invalid`: the change breaks rules; `findings` lists each with rule, path, value, message, severity. "
           "Nothing is stored.",
}


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI 3.1 description, built from the same models the API validates with."""
    components: dict[str, Any] = {
        "Envelope": {"type": "object", "required": ["kind", "metadata", "spec", "status"], "properties": {
            "kind": {"type": "string"},
            "metadata": {"type": "object", "properties": {
                "key": {"type": "string"}, "name": {"type": "string"}, "service": {"type": "string"},
                "uid": {"type": "string"}, "generation": {"type": "integer", "description": "Bumped on every spec "
                                                                                             "change."},
                "resource_version": {"type": "string", "description": "Changes on every write; send it as If-Match."},
                "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
            "spec": {"type": "object"},
            "status": {"type": "object", "description": "observed_generation, conditions (Ready, Progressing, "
                                                        "Degraded); services: converted, gateway_url(s); "
                                                        "deployments: roles with desired/ready/updated/instances."},
        }},
        "List": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/"
                                                                                               "Envelope"}}}},
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string"}, "message": {"type": "string"},
            "findings": {"type": "array", "items": {"type": "object", "properties": {
                k: {} for k in ("rule", "path", "value", "message", "severity")}}}}},
        "WriteResult": {"type": "object", "description": "Dry runs, deletes and applies.", "properties": {
            "dry_run": {"type": "boolean"}, "plan": {"type": "object"}, "plan_text": {"type": "string"},
            "writes": {"type": "integer"}, "changed": {"type": "array", "items": {"type": "object"}},
            "warnings": {"type": "array", "items": {"type": "object"}}}},
        "Events": {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {
            k: {} for k in ("seq", "time", "object", "action", "request_id", "generation", "resource_version",
                            "changes", "uid")}}}}},
    }

    def model_ref(model: type, name: str, only: tuple[str, ...] | None = None) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        if only is not None:
            schema["properties"] = {k: v for k, v in schema["properties"].items() if k in only}
            schema["required"] = [k for k in schema.get("required", []) if k in only]
        components[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    paths: dict[str, dict[str, Any]] = defaultdict(dict)

    def op(path: str, method: str, summary: str, ok: dict[str, str], *, body: dict | None = None,
           write: bool = False, created: bool = False, query: tuple[str, ...] = ()) -> None:
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in re.findall(r"{(\w+)}", path)]
        params += [{"name": q, "in": "query", "schema": {"type": "string"}} for q in query]
        if write:
            params.append({"name": "dry_run", "in": "query", "schema": {"type": "boolean"},
                           "description": "Return the plan; store nothing."})
            if path != "/v1/apply":
                params.append({"name": "If-Match", "in": "header", "schema": {"type": "string"},
                               "description": "The resource_version you read; a stale one gets 409."})
        responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
        if created:
            responses["201"] = {"description": "Created", "content": {"application/json": {"schema": ok}}}
        for code in ("401", "404") + (("400", "409", "422") if write else ()):
            responses[code] = {"description": _ERRORS[code],
                               "content": {"application/json": {"schema": ref("Error")}}}
        entry: dict[str, Any] = {"summary": summary, "parameters": params, "responses": responses}
        if body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths[path][method] = entry

    paths["/healthz"]["get"] = {"summary": "Liveness (no token needed).", "security": [],
                                "responses": {"200": {"description": "OK"}}}
    op("/openapi.json", "get", "This document.", {"type": "object"})
    op("/v1/inventory", "get", "The whole inventory, in the stack file's `inventory:` shape.", {"type": "object"})
    service_body = model_ref(Service, "ServiceFields", SERVICE_FIELDS)
    op("/v1/services", "get", "List services.", ref("List"))
    op("/v1/services/{key}", "get", "Get a service (its own fields; status: converted, gateway_url).",
       ref("Envelope"))
    op("/v1/services/{key}", "put", "Create or replace a service's own fields (no deployments, no traffic).",
       ref("Envelope"), body=service_body, write=True, created=True)
    op("/v1/services/{key}", "delete", "Delete a service: its traffic first, then its deployments, then it.",
       ref("WriteResult"), write=True)
    op("/v1/services/{key}/deployments", "get", "List a service's deployments.", ref("List"))
    dep_body = model_ref(Deployment, "Deployment")
    op("/v1/services/{key}/deployments/{dkey}", "get", "Get a deployment (secrets masked).", ref("Envelope"))
    op("/v1/services/{key}/deployments/{dkey}", "put", "Create or replace one deployment. Never carries a weight: "
       "a new deployment starts at weight 0 (the first one of a service at 100).", ref("Envelope"), body=dep_body,
       write=True, created=True)
    op("/v1/services/{key}/deployments/{dkey}", "delete", "Delete a deployment that takes no traffic (else 409).",
       ref("WriteResult"), write=True)
    traffic_body = model_ref(Traffic, "Traffic")
    op("/v1/services/{key}/traffic", "get", "Get the service's traffic object.", ref("Envelope"))
    op("/v1/services/{key}/traffic", "put", "Replace the traffic object atomically (weights, header rules, "
       "mirror, consistent hash, timeout, retries).", ref("Envelope"), body=traffic_body, write=True)
    op("/v1/services/{key}/events", "get", "Events of a service, its deployments and its traffic.", ref("Events"),
       query=("since", "limit"))
    op("/v1/events", "get", "Events, of one object (`object=services/chat/traffic`) or one service.", ref("Events"),
       query=("object", "service", "since", "limit"))
    op("/v1/apply", "post", "Apply a whole stack file in one transaction (services not in it are left alone).",
       ref("WriteResult"), body=model_ref(StackFile, "StackFile"), write=True)
    for url, kind in INVENTORY_KINDS.items():
        body = model_ref(kind.model, kind.wire_kind)
        op(f"/v1/{url}", "get", f"List {kind.title}s.", ref("List"))
        op(f"/v1/{url}/{{name}}", "get", f"Get a {kind.title}.", ref("Envelope"))
        op(f"/v1/{url}/{{name}}", "put", f"Create or replace a {kind.title}.", ref("Envelope"), body=body,
           write=True, created=True)
        op(f"/v1/{url}/{{name}}", "delete", f"Delete a {kind.title} nothing references (else 422).",
           ref("WriteResult"), write=True)
    return {
        "openapi": "3.1.0",
        "info": {"title": "inferstack embedded platform", "version": "1",
                 "description": "Declarative API: PUT desired spec, read status. " + __doc__.split("\n\n")[-1]},
        "paths": dict(paths),
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
