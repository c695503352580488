"""The control plane's REST API (starlette): bearer auth, routes onto `Platform`, `/openapi.json`."""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from hmac import compare_digest
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from inferstack.spec import (
    Deployment,
    Service,
    StackFile,
    Traffic,
)

from .control import _REQUEST_ID_RE, ApiError, Outcome, Platform, State, WriteContext
from .objects import (
    DEPLOYMENT,
    INVENTORY_KINDS,
    SERVICE,
    SERVICE_FIELDS,
    TRAFFIC,
    envelope,
)

log = logging.getLogger("inferstack.platform")


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
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and (if_none_match.strip() != "*" or request.method != "PUT"):
        raise ApiError(400, "bad_request", f"If-None-Match: {if_none_match!r} is not supported on {request.method}; "
                                           f"send `If-None-Match: *` with a PUT to create an object only if it does "
                                           f"not exist")
    ctx = WriteContext(dry_run=dry, if_match=if_match, create_only=if_none_match is not None)
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
        """200 while every part serves; 503 naming the part and why (e.g. the gateway is down or restarting)."""
        parts = platform.runtime.health() if platform.runtime is not None else {}
        ok = all(part.get("ok", True) for part in parts.values())
        body = {"ok": ok, "runtime": platform.runtime is not None,
                **{name: {k: part.get(k) for k in ("ok", "state", "reason", "restarts")} for name, part in parts.items()}}
        return JSONResponse(body, status_code=200 if ok else 503)

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
    "412": "`exists`: If-None-Match: * and the object already exists (its uid and resource_version are in the "
           "body). Nothing is written.",
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
            "status": {"type": "object", "description": "observed_generation, observed_routing_generation, "
                                                        "conditions (Ready, Progressing, Degraded; deployments also "
                                                        "Available); services: converted, gateway_url(s); "
                                                        "deployments: roles with desired/ready/updated/restarts/"
                                                        "instances (reason, exit_code, log_tail …)."},
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
                            "changes", "uid", "type", "reason", "message", "count", "first_time")}}}}},
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
            if method == "put":
                params.append({"name": "If-None-Match", "in": "header", "schema": {"const": "*"},
                               "description": "`*`: create only; an object that exists gets 412."})
        responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
        if created:
            responses["201"] = {"description": "Created", "content": {"application/json": {"schema": ok}}}
        for code in ("401", "404") + (("400", "409", "422") if write else ()) + (("412",) if method == "put" else ()):
            responses[code] = {"description": _ERRORS[code],
                               "content": {"application/json": {"schema": ref("Error")}}}
        entry: dict[str, Any] = {"summary": summary, "parameters": params, "responses": responses}
        if body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths[path][method] = entry

    paths["/healthz"]["get"] = {"summary": "Health (no token needed): `ok`, and per runtime part (`gateway`) its "
                                           "state, the reason it is not serving and its restarts.", "security": [],
                                "responses": {"200": {"description": "Every part serves"},
                                              "503": {"description": "A part is down (e.g. the gateway is "
                                                                     "restarting): `reason` says why"}}}
    op("/v1/gateway", "get", "The gateway's supervision (state, pid, restarts, the last restart's cause) and, per "
       "service, the routing it has acknowledged: fresh, or kept from its last good parts and why.",
       {"type": "object"})
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
    op("/v1/events", "get", "Events, of one object (`object=services/chat/traffic`) or one service; `since=<seq>` "
       "returns only newer ones (poll it to follow; an aggregated repeat reappears with its count).", ref("Events"),
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
