"""The control plane's REST API (starlette): bearer auth, routes onto `Platform`, `/openapi.json`."""

from __future__ import annotations

import logging
import math
import re
import traceback
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
from inferstack.spec.types import IMAGE_PATTERN, KEY_PATTERN, REF_PATTERN, exact_mapping_keys

from .control import _REQUEST_ID_RE, ApiError, Outcome, Platform, State, WriteContext
from .inputs import MAX_QUERY_INT, bool_param, int_param, only_params, read_json
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

MAX_EVENTS_PAGE = 10_000


class ApiJSON(JSONResponse):
    """Strict JSON (no NaN, valid UTF-8). A value that strict JSON cannot carry — which validation keeps out of the
    store, so only a bug or an older data dir could hold one — is rendered as close as it can be (a non-finite float
    as null, a lone surrogate as U+FFFD) rather than failing the whole answer with a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (ValueError, UnicodeEncodeError):
            return super().render(_strict(content))


def _strict(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_strict(str(k)): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


class LastResort:
    """The outermost guard: an exception no handler took becomes a generic 500 that echoes nothing of the request.
    Its message is not logged either — a message may quote the input (a secret, say): the log gets the exception's
    type and the frames where it was raised. The goal is that no input ever reaches this; the hostile-input suite
    (tests/platform/test_hostile_input.py) checks that none does."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 -- the last resort, by definition
            log.error("%s %s failed: %s raised at\n%s", scope.get("method"), str(scope.get("path"))[:200],
                      type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)).rstrip())
            if not started:
                response = ApiJSON({"error": "internal", "message": "the platform failed on this request; nothing "
                                    "of it is echoed here: see the platform log for where it failed"}, 500)
                await response(scope, receive, send)

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
                response = ApiJSON({"error": "unauthorized", "message": f"{message}: send Authorization: "
                                         f"Bearer <token> (the token is in the data dir's `token` file)"},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _context(request: Request) -> WriteContext:
    only_params(request, ("dry_run",))
    given = request.headers.get("x-request-id", "")
    if_match = request.headers.get("if-match")
    if if_match is not None:
        if_match = if_match.strip().removeprefix("W/").strip('"')
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and (if_none_match.strip() != "*" or request.method != "PUT"):
        raise ApiError(400, "bad_request", f"If-None-Match: {if_none_match[:100]!r} is not supported on {request.method}; "
                                           f"send `If-None-Match: *` with a PUT to create an object only if it does "
                                           f"not exist")
    ctx = WriteContext(dry_run=bool_param(request, "dry_run"), if_match=if_match, create_only=if_none_match is not None)
    if _REQUEST_ID_RE.match(given):
        ctx.request_id = given
    return ctx


def _respond(data: Any, status_code: int = 200, request_id: str | None = None) -> JSONResponse:
    headers = {}
    if request_id:
        headers["X-Request-Id"] = request_id
    if isinstance(data, dict) and isinstance(data.get("metadata"), dict) and "resource_version" in data["metadata"]:
        headers["ETag"] = f'"{data["metadata"]["resource_version"]}"'
    return ApiJSON(data, status_code=status_code, headers=headers)


def _reads(request: Request) -> bool:
    """GET and HEAD read; they never write, whatever body they carry (starlette routes HEAD to a GET route)."""
    return request.method in ("GET", "HEAD")


def create_app(platform: Platform, token: str) -> Starlette:
    """The REST API of `platform`, guarded by `token`."""

    async def finish(ctx: WriteContext, outcome: Outcome) -> Response:
        for key in sorted(outcome.services):
            await platform.on_change(key)
        return _respond(outcome.body, outcome.status_code, ctx.request_id)

    async def write(request: Request, op: Callable[[WriteContext], Outcome]) -> Response:
        return await finish(ctx := _context(request), op(ctx))

    async def write_body(request: Request, op: Callable[[WriteContext, Any], Outcome]) -> Response:
        """A write with a JSON body: the query string and headers are checked, then the body is read and parsed
        (`inputs.read_json`), then `op` runs. Anything refused before `op` has stored nothing."""
        ctx = _context(request)
        return await finish(ctx, op(ctx, await read_json(request)))

    async def healthz(request: Request) -> Response:
        """200 while every part serves; 503 naming the part and why (e.g. the gateway is down or restarting)."""
        parts = platform.runtime.health() if platform.runtime is not None else {}
        ok = all(part.get("ok", True) for part in parts.values())
        body = {"ok": ok, "runtime": platform.runtime is not None,
                **{name: {k: part.get(k) for k in ("ok", "state", "reason", "restarts")} for name, part in parts.items()}}
        return ApiJSON(body, status_code=200 if ok else 503)

    async def openapi(request: Request) -> Response:
        return ApiJSON(openapi_document())

    async def inventory_all(request: Request) -> Response:
        return _respond(State.load(platform.store).inventory_data())

    async def inventory_list(request: Request) -> Response:
        kind = _kind(request)
        return _respond({"items": [envelope(r) for r in platform.store.list(kind.field)]})

    async def inventory_object(request: Request) -> Response:
        kind, name = _kind(request), request.path_params["name"]
        if _reads(request):
            return _respond(platform.get(kind.field, name))
        if request.method == "DELETE":
            return await write(request, lambda ctx: platform.delete_inventory(kind.url, name, ctx))
        return await write_body(request, lambda ctx, body: platform.put_inventory(kind.url, name, body, ctx))

    async def services(request: Request) -> Response:
        return _respond({"items": [envelope(r) for r in platform.store.list(SERVICE)]})

    async def service(request: Request) -> Response:
        key = request.path_params["key"]
        if _reads(request):
            return _respond(platform.get_service(key))
        if request.method == "DELETE":
            return await write(request, lambda ctx: platform.delete_service(key, ctx))
        return await write_body(request, lambda ctx, body: platform.put_service(key, body, ctx))

    async def deployments(request: Request) -> Response:
        key = request.path_params["key"]
        platform.require_service(key)
        return _respond({"items": [envelope(r) for r in platform.store.list(DEPLOYMENT, key)]})

    async def deployment(request: Request) -> Response:
        svc, key = request.path_params["key"], request.path_params["dkey"]
        if _reads(request):
            return _respond(platform.get(DEPLOYMENT, key, svc))
        if request.method == "DELETE":
            return await write(request, lambda ctx: platform.delete_deployment(svc, key, ctx))
        return await write_body(request, lambda ctx, body: platform.put_deployment(svc, key, body, ctx))

    async def traffic(request: Request) -> Response:
        svc = request.path_params["key"]
        if _reads(request):
            platform.require_service(svc)
            return _respond(platform.get(TRAFFIC, svc, svc))
        return await write_body(request, lambda ctx, body: platform.put_traffic(svc, body, ctx))

    async def apply(request: Request) -> Response:
        return await write_body(request, lambda ctx, body: platform.apply(body, ctx))

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

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return ApiJSON(exc.body, status_code=exc.status_code)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        word = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiJSON({"error": word, "message": f"{request.method} {request.url.path[:200]}: {exc.detail}"},
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

    return Starlette(routes=routes, middleware=[Middleware(LastResort), Middleware(BearerAuth, token=token)],
                     exception_handlers={ApiError: api_error, HTTPException: http_error}, lifespan=lifespan)


def _kind(request: Request) -> Any:
    url = request.url.path.split("/")[2]
    return INVENTORY_KINDS[url]


def _paging(request: Request) -> dict[str, Any]:
    """`since` (an event seq) and `limit` (a page size): bounded whole numbers, else 400."""
    return {"since": int_param(request, "since", 0, 0, MAX_QUERY_INT),
            "limit": int_param(request, "limit", None, 1, MAX_EVENTS_PAGE)}


# --- /openapi.json -------------------------------------------------------------------------------------------------

_ERRORS = {
    "400": "`bad_json`: the body is not JSON, not UTF-8, nested deeper than 32 levels, holds a duplicate key or a "
           "lone surrogate (the message names the path); `bad_request`: no body, or a query parameter that is "
           "unknown, given twice or out of its range. Nothing is stored.",
    "401": "No or a wrong bearer token.",
    "404": "The object (or its service) does not exist.",
    "409": "`conflict`: If-Match names a stale resource_version, or a deployment still takes traffic.",
    "412": "`exists`: If-None-Match: * and the object already exists (its uid and resource_version are in the "
           "body). Nothing is written.",
    "413": "`payload_too_large`: the body is over 1 MiB (1048576 bytes). Nothing is stored.",
    "415": "`unsupported_media_type`: a body not sent as `Content-Type: application/json` (UTF-8). Nothing is "
           "stored.",
    "422": "`invalid`: the change breaks rules; `findings` lists each with rule, path, value, message, severity. "
           "Nothing is stored.",
}

_DESCRIPTION = """Declarative API: PUT desired spec, read status. Every write goes through the same rules as \
`inferstack validate`, with every violation at once.

Input rules. A request body is JSON (UTF-8, `Content-Type: application/json`, else 415) of at most 1 MiB (else \
413), nested at most 32 levels, without duplicate keys or lone surrogates (else 400). Types are strict: an integer \
field takes a JSON integer (an integral number such as `3.0` too), never `"3"` or `true`; numbers are finite (NaN, \
Infinity and `1e400` get 422 `number.finite` naming the field). Writes take one query parameter, `dry_run` \
(`true`/`false`); any other gets 400. GET and HEAD never write. A refused request stores nothing and records no \
event, and no answer ever carries a secret value.

Schemas. Each body schema states every single-field rule: patterns, lengths, ranges, item counts, and \
`additionalProperties: false` (unknown keys are errors). A body the schema accepts passes every single-field rule \
(a cron expression and a CIDR are checked further than their pattern: croniter and ipaddress must read them). \
Rules across fields and objects cannot be said in a schema and answer 422 by design: references to inventory \
objects and deployments, uniqueness of names, keys and ports, weights summing to 100, exactly-one choices \
(image, probe action, env value or secret), min <= max, capacity, the total size of an environment, and the \
counts over a whole platform (at most 500 services and 2000 deployments)."""

_PATH_PATTERNS = {"key": KEY_PATTERN, "dkey": KEY_PATTERN, "name": REF_PATTERN}
_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "since": {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_INT,
              "description": "Only events with a larger seq."},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_PAGE, "description": "At most this many."},
    "object": {"type": "string", "description": "An object path such as services/chat/traffic."},
    "service": {"type": "string", "description": "A service key."},
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
        image = path.startswith("/v1/images/")
        params = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "string", "pattern": IMAGE_PATTERN if image and p == "name"
                              else _PATH_PATTERNS.get(p, ".*")},
                   **({"description": "The image reference, '/' sent as %2F."} if image else {})}
                  for p in re.findall(r"{(\w+)}", path)]
        params += [{"name": q, "in": "query", "schema": _QUERY_SCHEMAS[q]} for q in query]
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
        codes = ("401", "404") + (("400",) if write or query else ()) + (("409", "422") if write else ()) + \
            (("413", "415") if body is not None else ()) + (("412",) if method == "put" else ())
        for code in codes:
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
                 "description": _DESCRIPTION},
        "paths": dict(paths),
        "components": {"schemas": exact_mapping_keys(components),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
