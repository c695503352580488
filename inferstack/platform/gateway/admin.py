"""The gateway's admin API (control plane, not the hot path): snapshots in, metrics out, bearer-token auth."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError

from .server import Gateway, StaleSnapshot
from .snapshot import Snapshot

MAX_BODY = 64 * 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error"}

Reply = tuple[int, bytes, str]
OnApplied = Callable[[bytes, dict[str, int]], None]  # (the snapshot's JSON body, its bound listeners)


def _json(status: int, payload: Any) -> Reply:
    return status, json.dumps(payload).encode(), "application/json"


class AdminServer:
    """HTTP/1.1 on 127.0.0.1: PUT/GET /snapshot, GET /metrics, GET /windows?service=S (per-instance totals for
    progressive releases' gates: `RouteStats.window`), GET /healthz (the only call without the token).

    `on_applied` runs after each snapshot swapped in (the gateway process persists it there)."""

    def __init__(self, gateway: Gateway, token: str, on_applied: OnApplied | None = None) -> None:
        self.gateway = gateway
        self.on_applied = on_applied
        self._expected = f"Bearer {token}".encode()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.started = time.time_ns()  # with the pid: which process' counters a window read (they restart at 0)

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port, limit=MAX_BODY)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, _, rest = request_line.decode("latin-1").partition(" ")
                path, _, query = rest.split(" ", 1)[0].partition("?")
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length > MAX_BODY:
                    status, body, content_type = _json(413, {"error": "body too large"})
                    keep_alive = False
                else:
                    payload = await reader.readexactly(length) if length else b""
                    status, body, content_type = await self._handle(method, path, headers, payload, query)
                    keep_alive = headers.get("connection", "").lower() != "close"
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
                    % (status, _REASONS.get(status, "").encode(), content_type.encode(), len(body),
                       b"" if keep_alive else b"Connection: close\r\n")
                    + body
                )
                await writer.drain()
                if not keep_alive:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        finally:
            writer.close()

    async def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes, query: str = "") -> Reply:
        if path == "/healthz":
            return _json(200, {"status": "ok", "version": self.gateway.state.version, "pid": os.getpid()})
        given = headers.get("authorization", "").encode("latin-1")
        if not hmac.compare_digest(given, self._expected):
            return _json(401, {"error": "missing or invalid admin token"})
        if path == "/snapshot":
            if method == "PUT":
                return await self._put_snapshot(body)
            if method == "GET":
                return _json(200, {"version": self.gateway.state.version, "listeners": self.gateway.listener_ports(),
                                   "pid": os.getpid()})
            return _json(405, {"error": f"{method} not allowed on {path}"})
        if path == "/windows":
            if method != "GET":
                return _json(405, {"error": f"{method} not allowed on {path}"})
            services = [v for k, v in parse_qsl(query) if k == "service"]
            return _json(200, {"pid": os.getpid(), "started": self.started, "bounds": "window-v1",
                               "instances": self.gateway.metrics.windows(services)})
        if path == "/metrics":
            if method != "GET":
                return _json(405, {"error": f"{method} not allowed on {path}"})
            return 200, self.gateway.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8"
        return _json(404, {"error": f"no such path {path}"})

    async def _put_snapshot(self, body: bytes) -> Reply:
        try:
            snapshot = Snapshot.model_validate_json(body)
        except ValidationError as exc:
            errors = [
                {"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors(include_url=False)
            ]
            return _json(400, {"error": "invalid snapshot", "details": errors})
        try:
            result = await self.gateway.apply(snapshot)
        except StaleSnapshot as exc:
            return _json(409, {"error": str(exc), "version": exc.current})
        except OSError as exc:
            return _json(500, {"error": f"cannot bind a listener: {exc}"})
        if self.on_applied is not None:
            self.on_applied(body, result["listeners"])
        return _json(200, {**result, "pid": os.getpid()})
