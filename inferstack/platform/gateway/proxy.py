"""The proxy: asyncio protocols with httptools parsers on both sides, pooled keep-alive upstream connections.

Hot-path rules (see architecture.md, "Performance notes for the gateway"): one protocol object per connection holds
the state of its current request (no per-request objects beyond what parsing yields), everything is a callback (no
per-request task; a task only to open a new upstream connection), and writes are gathered and flushed once per
`data_received`.

A client connection serves one exchange at a time. Pipelined requests are parsed ahead, and their parser events are
held back (`deferred`) and replayed when the current response is complete.
"""

from __future__ import annotations

import asyncio
import json
import logging
from bisect import bisect_left
from http import HTTPStatus
from time import monotonic
from typing import TYPE_CHECKING, Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
    HttpResponseParser,
)

from inferstack import images
from inferstack.openai_errors import error_body

from .metrics import (
    CLIENT_ABORT,
    CONNECT,
    LATENCY_BUCKETS,
    MIRROR,
    TIMEOUT,
    UNAVAILABLE,
    UPSTREAM,
    WINDOW_BOUNDS,
    RouteStats,
)
from .routing import Instance, RoutingError, RoutingTable

if TYPE_CHECKING:
    from .access import AccessPolicy
    from .routing import ServiceRouter

log = logging.getLogger("inferstack.gateway")

IDLE_POOL_SIZE = 128
IDLE_MAX_AGE_S = 4.0  # below the common 5 s keep-alive of servers, so an idle socket is never reused as it closes
BUFFER_LIMIT = 256 * 1024  # request bytes held while the upstream connection is being opened
MIRROR_BUFFER_LIMIT = 1024 * 1024

# The instances answer only requests that carry their service's token (see ServiceEntry.upstream).
UPSTREAM_TOKEN_HEADER = images.UPSTREAM_TOKEN_HEADER.encode()
# Kinds of request headers that need more than forwarding.
_AUTH, _HOP, _EXPECT, _XFF, _TRANSFER = range(5)
_REQUEST_SPECIAL = {
    b"authorization": _AUTH,
    b"connection": _HOP,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
    b"te": _HOP,
    b"trailer": _HOP,
    b"upgrade": _HOP,
    b"expect": _EXPECT,
    b"x-forwarded-for": _XFF,
    b"transfer-encoding": _TRANSFER,
    UPSTREAM_TOKEN_HEADER.lower(): _HOP,  # a client's is dropped: only the gateway's own reaches the instance
}
# Kinds of response headers that need more than forwarding.
_LENGTH, _CHUNKED_BODY, _DROP = range(3)
_RESPONSE_SPECIAL = {
    b"content-length": _LENGTH,
    b"transfer-encoding": _CHUNKED_BODY,  # dropped: the body is re-framed for the client
    b"connection": _DROP,
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"upgrade": _DROP,
    b"x-inferstack-deployment": _DROP,
    b"x-inferstack-instance": _DROP,
}
# How the response body is framed towards the client.
_NO_BODY, _RAW, _CHUNKED = range(3)

# Reason phrases are the canonical ones: they carry no meaning (RFC 9112 4) and reading the upstream's would cost a
# parser callback per response.
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class ServiceEntry:
    """What the proxy needs of one service in one snapshot."""

    __slots__ = ("access", "key", "router", "stats", "upstream")

    def __init__(self, key: str, router: ServiceRouter, access: AccessPolicy, stats: RouteStats,
                 upstream_token: str = "") -> None:
        self.key = key
        self.router = router
        self.access = access
        self.stats = stats  # answers of the gateway itself (no deployment chosen)
        # The header line that proves a request came through the gateway, added to every upstream request head
        # (mirror copies and retries reuse the head: one token per service, so it fits every instance of it).
        self.upstream = UPSTREAM_TOKEN_HEADER + b": " + upstream_token.encode() + b"\r\n" if upstream_token else b""


class ProxyState:
    """One snapshot as the proxy uses it; replaced by a single reference assignment."""

    __slots__ = ("services", "table", "version")

    def __init__(self, version: int, table: RoutingTable, services: dict[str, ServiceEntry]) -> None:
        self.version = version
        self.table = table
        self.services = services


def error_response(
    status: int, message: str, code: str, service: str | None, deployment: str | None, instance: str | None,
    close: bool,
) -> bytes:
    """A complete error response of the gateway itself, OpenAI-shaped (`openai_errors`) so that OpenAI clients show
    `message`; `service` and `deployment` (and `instance` when one was chosen) say where it stopped."""
    fields: dict[str, Any] = {**error_body(status, message, code), "service": service, "deployment": deployment}
    if instance is not None:
        fields["instance"] = instance
    body = json.dumps(fields).encode()
    return b"".join(
        [
            _STATUS_LINES[status],
            b"Content-Type: application/json\r\n",
            b"Content-Length: %d\r\n" % len(body),
            b"X-Inferstack-Deployment: %s\r\n" % (deployment or "-").encode(),
            b"X-Inferstack-Instance: %s\r\n" % (instance or "-").encode(),
            b"Connection: close\r\n" if close else b"",
            b"\r\n",
            body,
        ]
    )


def _log_if_ours(exc: HttpParserError) -> None:
    """A callback of ours failed inside the parser: a bug, not bad input; keep serving but say so."""
    if isinstance(exc, HttpParserCallbackError):
        log.error("proxy callback failed", exc_info=exc.__context__ or exc)


class InstancePool:
    """Idle keep-alive connections to one instance (LIFO, bounded), and the opening of new ones."""

    __slots__ = ("closed", "idle", "instance", "loop", "tag")

    def __init__(self, instance: Instance, loop: asyncio.AbstractEventLoop) -> None:
        self.instance = instance
        self.loop = loop
        self.idle: list[UpstreamConnection] = []
        self.closed = False
        # Ends every response head this instance answers.
        self.tag = b"X-Inferstack-Deployment: %s\r\nX-Inferstack-Instance: %s\r\n\r\n" % (
            instance.deployment.encode(),
            instance.id.encode(),
        )

    def acquire(self, now: float) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.transport.is_closing() or now - conn.idle_since > IDLE_MAX_AGE_S:
                conn.transport.close()
                continue
            return conn
        return None

    def release(self, conn: UpstreamConnection, now: float) -> None:
        conn.client = None
        if self.closed or len(self.idle) >= IDLE_POOL_SIZE or conn.transport.is_closing():
            conn.transport.close()
            return
        if conn.reading_paused:
            conn.reading_paused = False
            conn.transport.resume_reading()
        conn.idle_since = now
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def open(self, conn: UpstreamConnection) -> None:
        """Open `conn` in the background; the outcome arrives as connection_made or connect_failed."""
        self.loop.create_task(self._open(conn))

    async def _open(self, conn: UpstreamConnection) -> None:
        try:
            await self.loop.create_connection(lambda: conn, self.instance.host, self.instance.port)
        except OSError as exc:
            conn.connect_failed(exc)

    def close_aged(self, now: float) -> None:
        keep = []
        for conn in self.idle:
            if now - conn.idle_since > IDLE_MAX_AGE_S:
                conn.transport.close()
            else:
                keep.append(conn)
        self.idle[:] = keep

    def close(self) -> None:
        """The instance left the snapshot: no more reuse; connections in use close when their exchange ends."""
        self.closed = True
        for conn in self.idle:
            conn.transport.close()
        self.idle.clear()


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an instance; parses responses and hands them to its current client."""

    def __init__(self, pool: InstancePool) -> None:
        self.pool = pool
        self.transport: Any = None
        self.parser = HttpResponseParser(self)
        self.client: Any = None  # a ClientConnection or a MirrorCopy while an exchange uses this connection
        self.idle_since = 0.0
        self.reading_paused = False
        self.out: list[bytes] = []  # response bytes for the client, flushed after each read
        self.framing = _NO_BODY  # how the body goes into `out`; the client decides at the response head
        self.length_known = False
        self.chunked = False
        self.head_done = False
        self.done = False
        self.interim = False
        self.keep_alive = False
        self.no_body = False  # the request was HEAD: the response has no body whatever its headers say

    # -- asyncio.Protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        client = self.client
        if client is None:
            self.pool.release(self, monotonic())
        else:
            client.upstream_connected(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.discard(self)
        client = self.client
        if client is not None:
            self.client = None
            client.upstream_lost(self)

    def connect_failed(self, exc: OSError) -> None:
        client = self.client
        self.client = None
        if client is not None:
            client.upstream_connect_failed(self, exc)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # nothing was asked: the connection is out of step
            self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except HttpParserError as exc:
            _log_if_ours(exc)
            self.client = None
            self.transport.close()
            client.upstream_lost(self)
            return
        client.response_data(self)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.upstream_resume_writing()

    # -- exchange

    def attach(self, client: Any, no_body: bool) -> None:
        """Start an exchange on this connection (replaces an on_message_begin callback per response)."""
        self.client = client
        self.no_body = no_body
        self.out = [b""]  # [0] becomes the status line
        self.framing = _NO_BODY
        self.length_known = self.chunked = self.head_done = self.done = self.interim = False

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def reusable(self) -> bool:
        return self.done and self.keep_alive and not self.no_body

    def ended_by_close(self) -> bool:
        """At connection loss: True when that loss is the end of a read-until-close body (the response is whole)."""
        if self.head_done and not self.done and not (self.length_known or self.chunked or self.no_body):
            self.done = True
            if self.framing == _CHUNKED:
                self.out.append(_LAST_CHUNK)
            return True
        return False

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = _RESPONSE_SPECIAL.get(name.lower())
        if kind is None:
            self.out += (name, b": ", value, b"\r\n")
        elif kind == _LENGTH:
            self.length_known = True
            self.out += (name, b": ", value, b"\r\n")
        elif kind == _CHUNKED_BODY:
            self.chunked = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            # 100 Continue and friends: the client got its own 100 from the gateway; the real answer follows.
            self.interim = True
            self.out = [b""]
            self.length_known = self.chunked = False
            return
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful before the message completes
        self.client.response_head(self, status)
        if self.no_body:
            self.done = True

    def on_body(self, data: bytes) -> None:
        framing = self.framing
        if framing == _RAW:
            self.out.append(data)
        elif framing == _CHUNKED:
            self.out += (b"%x\r\n" % len(data), data, b"\r\n")

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.done = True
        if self.framing == _CHUNKED:
            self.out.append(_LAST_CHUNK)


class ClientConnection(asyncio.Protocol):
    """One client connection on a listener: parses requests, routes them, relays the responses."""

    def __init__(self, gateway: Any, listener: Any) -> None:
        self.gateway = gateway
        self.loop: asyncio.AbstractEventLoop = gateway.loop
        self.listener = listener
        self.service_key: str = listener.service_key
        self.logical_port: int = listener.logical_port
        self.transport: Any = None
        self.parser = HttpRequestParser(self)
        self.peer_ip = ""
        self.peer_ip_bytes = b""
        self.xff_line = b""
        self.allowed_by: AccessPolicy | None = None  # the last policy that let this connection's requests pass
        self.allowed_key: bytes | None = None  # with this Authorization value
        self.closing = False
        self.busy = False  # an exchange is in progress
        self.deferred: list[tuple[Any, tuple]] | None = None  # parser events of pipelined requests
        self.paused_for_upstream = False
        self.paused_for_pipeline = False
        self.writing_paused = False
        self.last_active = 0.0
        # One timer per connection, re-armed lazily: an exchange only sets `deadline` (see _on_timer).
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.deadline = 0.0
        self.timeout_s = 0.0
        self.entry: ServiceEntry | None = None
        self.watched: frozenset[bytes] = frozenset()
        self.hparts: list[bytes] = []
        self.keep_alive = True
        self.is_head = False
        self.instance: Instance | None = None
        self.upstream: UpstreamConnection | None = None
        self.obuf: list[bytes] = []
        self.status = 0
        self.t0 = 0.0
        self._reset()

    def _reset(self) -> None:
        """Per-request fields that are read before the request sets them."""
        self.url = b""
        self.picked: dict[bytes, bytes] | None = None
        self.authorization: bytes | None = None
        self.xff_in: bytes | None = None
        self.expect_continue = False
        self.keep_alive_asked = False
        self.chunked_in = False
        self.tried: list[Instance] | None = None
        self.mirror: MirrorCopy | None = None
        self.upstream_ready = False
        self.obuf_size = 0
        self.request_done = False
        self.response_started = False
        self.response_done = False

    # -- asyncio.Protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        self.peer_ip_bytes = self.peer_ip.encode()
        self.xff_line = b"X-Forwarded-For: " + self.peer_ip_bytes + b"\r\n"
        self.last_active = monotonic()
        self.gateway.connections.add(self)
        self.listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.gateway.connections.discard(self)
        self.listener.connections.discard(self)
        self.deferred = None
        if self.busy and not self.response_done:
            self._abandon(CLIENT_ABORT)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self.keep_alive = False  # protocol upgrades are not relayed; the plain answer ends the connection
        except HttpParserError as exc:
            _log_if_ours(exc)
            if self.closing:
                return
            if self.busy and (self.response_started or self.request_done):
                # A response is on its way (the garbage followed a complete request): it cannot be interleaved.
                self._abandon(None)
                self._close()
                return
            self._abandon(None)  # a request cut short by garbage: the upstream got part of it at most
            self._answer_and_close(400, "malformed HTTP request", "bad_request")
            return
        if self.upstream_ready and self.obuf:
            self.upstream.transport.write(b"".join(self.obuf))  # type: ignore[union-attr]
            self.obuf = []

    def eof_received(self) -> bool:
        # Like nginx (without proxy_ignore_client_abort): a client that hangs up abandons its request, and the
        # upstream exchange is dropped with it, freeing the instance (which may be busy generating tokens for it).
        return False

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.upstream is not None:
            self.upstream.resume_reading()

    # -- httptools callbacks (request side)

    def on_url(self, url: bytes) -> None:
        """The first callback of every request (it stands in for on_message_begin, one callback less)."""
        if self.busy:
            if self.request_done or self.deferred is not None:  # a pipelined request: after the current answer
                self._defer(self.on_url, (url,))
            else:
                self.url += url  # the URL came in pieces
            return
        self.busy = True
        self.t0 = monotonic()
        self.url = url
        # The snapshot in use now serves this request to its end, whatever is swapped in meanwhile.
        entry = self.entry = self.gateway.state.services.get(self.service_key)
        if entry is not None:
            self.watched = entry.router.watched
        self.hparts = [b"", b" ", b"", b" HTTP/1.1\r\n"]

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.deferred is not None:
            self._defer(self.on_header, (name, value))
            return
        lname = name.lower()
        kind = _REQUEST_SPECIAL.get(lname)
        if kind is None:
            self.hparts += (name, b": ", value, b"\r\n")
            if lname in self.watched:
                if self.picked is None:
                    self.picked = {lname: value}
                else:
                    self.picked[lname] = value
        elif kind == _AUTH:
            self.authorization = value
            if self.entry is None or not self.entry.access.needs_key:
                self.hparts += (name, b": ", value, b"\r\n")
        elif kind == _TRANSFER:
            self.chunked_in = True
            self.hparts += (name, b": ", value, b"\r\n")
        elif kind == _XFF:
            self.xff_in = value if self.xff_in is None else self.xff_in + b", " + value
        elif kind == _HOP:
            if lname == b"connection" and b"keep-alive" in value.lower():
                self.keep_alive_asked = True
        elif kind == _EXPECT:
            self.expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        if self.deferred is not None:
            self._defer(self.on_headers_complete, ())
            return
        parser = self.parser
        self.keep_alive = parser.should_keep_alive()
        method = parser.get_method()
        self.is_head = method == b"HEAD"
        entry = self.entry
        if entry is None:
            self._answer(404, f"service '{self.service_key}' is not served by this gateway (deleted?)",
                         "service_not_found", None)
            return
        access = entry.access
        # A connection's source never changes, and clients repeat the same key: check again only on a change.
        if access is not self.allowed_by or self.authorization != self.allowed_key:
            if access.needs_key and not access.check_key(self.authorization):
                self._answer(401, "missing or invalid invocation key: send `Authorization: Bearer <key>` "
                             f"(`inferstack keys show {self.service_key}`)", "invalid_api_key", None)
                return
            if access.checks_source and not access.check_source(self.peer_ip, self.logical_port):
                self._answer(403, f"source {self.peer_ip} is not allowed by the security groups of service "
                             f"'{self.service_key}'", "source_not_allowed", None)
                return
            self.allowed_by = access
            self.allowed_key = self.authorization
        router = entry.router
        try:
            instance = router.route(self.picked, self.t0)
        except RoutingError as exc:
            self._answer(exc.status, exc.message, exc.code, exc.deployment)
            return
        hparts = self.hparts
        hparts[0] = method
        hparts[2] = self.url
        if self.xff_in is None:
            hparts.append(self.xff_line)
        else:
            hparts += (b"X-Forwarded-For: ", self.xff_in, b", ", self.peer_ip_bytes, b"\r\n")
        hparts += (entry.upstream, b"\r\n")
        self.obuf = hparts
        if self.expect_continue:
            self.expect_continue = False  # from here on: the client is not waiting for a 100 any more
            self.transport.write(_CONTINUE)
        timeout = self.timeout_s = router.timeout_s
        deadline = self.deadline = self.t0 + timeout
        if self.timer is None or deadline < self.timer_at:
            self._arm(deadline)
        if router.mirror is not None:
            target = router.mirror_target(instance, self.t0)
            if target is not None:
                self.mirror = MirrorCopy(self, target, list(hparts), timeout)
        self._dispatch(instance)

    def on_body(self, data: bytes) -> None:
        if self.deferred is not None:
            self._defer(self.on_body, (data,))
            return
        if self.response_done or self.closing:
            return  # answered already: the rest of the body is read and dropped
        if self.chunked_in:
            parts: tuple[bytes, ...] = (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            parts = (data,)
        if self.mirror is not None:
            self.mirror.send(parts)
        self.obuf += parts
        if not self.upstream_ready:
            self.obuf_size += len(data)
            if self.obuf_size > BUFFER_LIMIT and not self.paused_for_upstream:
                self.paused_for_upstream = True
                self._update_reading()

    def on_message_complete(self) -> None:
        if self.deferred is not None:
            self._defer(self.on_message_complete, ())
            return
        self.request_done = True
        if self.response_done:
            self._finish()
            return
        if self.chunked_in:
            self.obuf.append(_LAST_CHUNK)
            if self.mirror is not None:
                self.mirror.send((_LAST_CHUNK,))
        if self.mirror is not None:
            self.mirror.request_complete()

    # -- pipelining

    def _defer(self, callback: Any, args: tuple) -> None:
        if self.deferred is None:
            self.deferred = []
            self.paused_for_pipeline = True
            self._update_reading()
        self.deferred.append((callback, args))

    def _replay(self) -> None:
        events, self.deferred = self.deferred or [], None
        for index, (callback, args) in enumerate(events):
            if self.closing:
                break
            if self.deferred is not None:  # the next pipelined request began: wait for its answer
                self.deferred.extend(events[index:])
                break
            callback(*args)
        if self.deferred is None:
            self.paused_for_pipeline = False
            self._update_reading()
        if self.upstream_ready and self.obuf:
            self._flush_upstream()

    def _update_reading(self) -> None:
        if self.closing:
            return
        if self.paused_for_pipeline or self.paused_for_upstream:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # -- timeouts

    def _arm(self, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.loop.call_later(max(at - monotonic(), 0.001), self._on_timer)

    def _on_timer(self) -> None:
        """The connection's timer: re-armed while the current exchange's deadline is still ahead."""
        self.timer = None
        if not self.busy or not self.deadline or self.response_done or self.closing:
            return
        if self.response_started:  # a stream that still moves gets more time
            due = self.last_active + self.timeout_s
        else:
            due = self.deadline
        if monotonic() < due:
            self._arm(due)
            return
        self._timed_out()

    def _timed_out(self) -> None:
        instance = self.instance
        assert instance is not None
        instance.stats.errors[TIMEOUT] += 1
        if self.response_started:
            instance.stats.unanswered += 1  # it broke off: a failed request no answer counts
            self._abandon(None)
            self._close()
            return
        self._drop_upstream()
        self._release_instance(instance)
        self._answer(504, f"instance {instance.id} did not answer within the timeout ({self.timeout_s:g} s)",
                     "upstream_timeout", instance.deployment, instance.id, stats=instance.stats)

    # -- upstream side

    def _dispatch(self, instance: Instance) -> None:
        self.instance = instance
        stats = instance.stats
        instance.in_flight += 1
        stats.in_flight += 1
        pool: InstancePool = instance.upstream
        if pool.idle:
            conn = pool.acquire(self.t0)
            if conn is not None:
                conn.attach(self, self.is_head)
                self.upstream = conn
                self.upstream_ready = True  # the request is flushed at the end of this read from the client
                if self.writing_paused:
                    conn.pause_reading()
                return
        conn = UpstreamConnection(pool)
        conn.attach(self, self.is_head)
        self.upstream = conn
        self.upstream_ready = False
        pool.open(conn)

    def _flush_upstream(self) -> None:
        self.upstream.transport.write(b"".join(self.obuf))  # type: ignore[union-attr]
        self.obuf = []
        self.obuf_size = 0

    def upstream_connected(self, conn: UpstreamConnection) -> None:
        self.upstream_ready = True
        if self.writing_paused:
            conn.pause_reading()
        if self.obuf:
            self._flush_upstream()
        if self.paused_for_upstream:
            self.paused_for_upstream = False
            self._update_reading()

    def upstream_connect_failed(self, conn: UpstreamConnection, exc: OSError) -> None:
        instance = self.instance
        assert instance is not None and self.entry is not None
        self._release_instance(instance)
        instance.stats.errors[CONNECT] += 1
        self.upstream = None
        router = self.entry.router
        tried = self.tried = (self.tried or []) + [instance]
        if len(tried) <= router.retries:
            retry = router.retry_instance(instance, tried, self.picked, monotonic())
            if retry is not None:
                instance.stats.unanswered += 1  # a failed try of this instance, answered by another
                self._dispatch(retry)
                if self.upstream_ready:  # a pooled connection: nothing else will flush the request now
                    self._flush_upstream()
                return
        self.deadline = 0.0
        self._answer(502, f"cannot connect to instance {instance.id}", "upstream_connection_failed",
                     instance.deployment, instance.id, stats=instance.stats)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The upstream connection closed (or spoke garbage) during this exchange."""
        if conn.ended_by_close():
            self.response_data(conn)
            return
        if self.response_done:
            return
        instance = self.instance
        assert instance is not None
        instance.stats.errors[UPSTREAM] += 1
        if not self.response_started:
            self.upstream = None
            self._release_instance(instance)
            self.deadline = 0.0
            self._answer(502, f"instance {instance.id} closed the connection before answering",
                         "upstream_closed", instance.deployment, instance.id, stats=instance.stats)
        else:
            instance.stats.unanswered += 1  # it broke off: a failed request no answer counts
            self._abandon(None)
            self._close()

    def upstream_pause_writing(self) -> None:
        if not self.paused_for_upstream:
            self.paused_for_upstream = True
            self._update_reading()

    def upstream_resume_writing(self) -> None:
        if self.paused_for_upstream:
            self.paused_for_upstream = False
            self._update_reading()

    def response_head(self, conn: UpstreamConnection, status: int) -> None:
        """The upstream's head is parsed (into conn.out): complete it for the client and choose the body framing."""
        self.status = status
        self.response_started = True
        out = conn.out
        out[0] = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
        if self.is_head or status == 204 or status == 304:
            conn.framing = _NO_BODY
        elif conn.length_known:
            conn.framing = _RAW
        elif self.parser.get_http_version() == "1.1":
            conn.framing = _CHUNKED
            out.append(b"Transfer-Encoding: chunked\r\n")
        else:
            conn.framing = _RAW  # an HTTP/1.0 client reads until the connection closes
            self.keep_alive = False
        if not self.keep_alive:
            out.append(b"Connection: close\r\n")
        elif self.keep_alive_asked and self.parser.get_http_version() == "1.0":
            out.append(b"Connection: keep-alive\r\n")
        out.append(conn.pool.tag)

    def response_data(self, conn: UpstreamConnection) -> None:
        """End of one read from the upstream: forward what it produced; settle the exchange if it is complete."""
        out = conn.out
        if out:
            self.transport.write(b"".join(out))
            out.clear()
        if conn.done:
            self._response_complete(conn)
        else:
            self.last_active = monotonic()

    def _response_complete(self, conn: UpstreamConnection) -> None:
        now = monotonic()
        self.response_done = True
        self.deadline = 0.0
        instance = self.instance
        assert instance is not None
        stats = instance.stats
        elapsed = now - self.t0
        stats.codes[self.status // 100 if self.status < 600 else 0] += 1
        stats.buckets[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        stats.fine[bisect_left(WINDOW_BOUNDS, elapsed)] += 1
        stats.latency_sum += elapsed
        instance.in_flight -= 1
        stats.in_flight -= 1
        self.upstream = None
        if self.request_done and conn.keep_alive and not conn.no_body:
            conn.pool.release(conn, now)
        else:
            conn.client = None
            if conn.transport is not None:
                conn.transport.close()
        if self.request_done:
            self._finish(now)

    def _release_instance(self, instance: Instance) -> None:
        instance.in_flight -= 1
        instance.stats.in_flight -= 1

    def _drop_upstream(self) -> None:
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.client = None
            if conn.transport is not None:
                conn.transport.close()

    def _abandon(self, error_kind: int | None) -> None:
        """The exchange cannot complete (client gone, stream stalled): release everything it holds."""
        self.deadline = 0.0
        instance = self.instance
        if instance is not None and self.upstream is not None:
            self._release_instance(instance)
            if error_kind is not None:
                instance.stats.errors[error_kind] += 1
        self._drop_upstream()
        self.response_done = True

    # -- answers of the gateway itself

    def _answer(
        self,
        status: int,
        message: str,
        code: str,
        deployment: str | None,
        instance: str | None = None,
        stats: RouteStats | None = None,
    ) -> None:
        if self.response_started:
            self._close()
            return
        entry = self.entry
        # A client waiting for "100 Continue" may or may not send its body now: closing is the only safe end.
        close = not self.keep_alive or (not self.request_done and self.expect_continue)
        self.transport.write(
            error_response(status, message, code, entry.key if entry else self.service_key, deployment, instance,
                           close)
        )
        if stats is None:
            stats = entry.stats if entry is not None else self.gateway.stats_for(self.service_key)
        stats.observe(status, monotonic() - self.t0)
        if status == 503:
            stats.errors[UNAVAILABLE] += 1
        self.status = status
        self.deadline = 0.0
        self.response_started = self.response_done = True
        if close:
            self.keep_alive = False
            self._finish()
        elif self.request_done:
            self._finish()

    def _answer_and_close(self, status: int, message: str, code: str) -> None:
        self.keep_alive = False
        self.transport.write(error_response(status, message, code, self.service_key, None, None, True))
        self._close()

    def _finish(self, now: float = 0.0) -> None:
        """The exchange is over on both sides: next request, or close."""
        if self.mirror is not None and not self.request_done:
            self.mirror.abort()
        self._reset()
        self.busy = False
        self.last_active = now or monotonic()
        if not self.keep_alive or self.listener.closed or self.gateway.draining:
            self._close()
            return
        if self.deferred is not None:
            self._replay()

    def _close(self) -> None:
        if not self.closing:
            self.closing = True
            self.deferred = None
            self.transport.close()

    def close_if_idle(self) -> None:
        """Used when draining: an idle keep-alive connection closes now, a busy one after its exchange."""
        if not self.busy:
            self._close()

    def close_if_stale(self, now: float, idle_s: float) -> None:
        """Close a connection that waits on nobody but its client and has heard nothing from it for `idle_s`.

        Covers idle keep-alive connections and clients that stall in the middle of a request; an exchange waiting on
        its upstream is the timer's business instead.
        """
        if not self.deadline and now - max(self.last_active, self.t0) > idle_s:
            if self.busy and not self.response_done:
                self._abandon(CLIENT_ABORT)
            self._close()


class MirrorCopy:
    """Sends a copy of one request to a mirror instance and discards the answer.

    It never slows the main exchange: bytes it cannot send promptly are dropped together with the copy.
    """

    __slots__ = ("aborted", "conn", "instance", "loop", "obuf", "ready", "request_done", "size", "status", "timer")

    def __init__(self, client: ClientConnection, instance: Instance, head: list[bytes], timeout_s: float) -> None:
        self.loop = client.loop
        self.instance = instance
        self.obuf = head
        self.size = 0
        self.ready = False
        self.request_done = False
        self.status = 0
        self.aborted = False
        instance.in_flight += 1
        instance.stats.in_flight += 1
        self.timer = self.loop.call_later(timeout_s, self.abort)
        pool: InstancePool = instance.upstream
        conn = pool.acquire(monotonic())
        if conn is None:
            conn = UpstreamConnection(pool)
            conn.attach(self, client.is_head)
            self.conn = conn
            pool.open(conn)
        else:
            conn.attach(self, client.is_head)
            self.conn = conn
            self.upstream_connected(conn)

    def send(self, parts: tuple[bytes, ...]) -> None:
        if self.aborted:
            return
        if self.ready:
            transport = self.conn.transport
            if transport.get_write_buffer_size() > MIRROR_BUFFER_LIMIT:
                self.abort()
            else:
                transport.writelines(parts)
            return
        self.obuf += parts
        self.size += sum(len(p) for p in parts)
        if self.size > MIRROR_BUFFER_LIMIT:
            self.abort()

    def request_complete(self) -> None:
        self.request_done = True

    def _end(self, failed: bool) -> None:
        if self.aborted:
            return
        self.aborted = True
        self.timer.cancel()
        self.instance.in_flight -= 1
        stats = self.instance.stats
        stats.in_flight -= 1
        if failed:
            stats.errors[MIRROR] += 1
        else:
            stats.mirrored[self.status // 100 if 100 <= self.status < 600 else 0] += 1

    def abort(self) -> None:
        if not self.aborted:
            self._end(failed=True)
            self.conn.client = None
            if self.conn.transport is not None:
                self.conn.transport.close()

    # -- the UpstreamConnection's client interface

    def upstream_connected(self, conn: UpstreamConnection) -> None:
        if self.aborted:
            conn.client = None
            conn.pool.release(conn, monotonic())
            return
        self.ready = True
        conn.transport.writelines(self.obuf)
        self.obuf = []

    def upstream_connect_failed(self, conn: UpstreamConnection, exc: OSError) -> None:
        self._end(failed=True)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        if conn.ended_by_close():
            self.response_data(conn)
            return
        self._end(failed=True)

    def upstream_pause_writing(self) -> None:
        pass  # send() sees the buffer grow and gives up on the copy

    def upstream_resume_writing(self) -> None:
        pass

    def response_head(self, conn: UpstreamConnection, status: int) -> None:
        self.status = status
        conn.framing = _NO_BODY  # the body is read and dropped

    def response_data(self, conn: UpstreamConnection) -> None:
        conn.out.clear()
        if not conn.done:
            return
        self._end(failed=False)
        if self.request_done and conn.reusable():
            conn.pool.release(conn, monotonic())
        else:
            conn.client = None
            conn.transport.close()
