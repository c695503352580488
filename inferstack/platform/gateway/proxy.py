"""The proxy's client side: one asyncio protocol per client connection, httptools parsing, routing, relaying.

Hot-path rules (see architecture.md, "Performance notes for the gateway"; measured by bench/gateway_bench.py and
bench/platform_bench.py): one protocol object per connection holds the state of its current request (no
per-request objects beyond what parsing yields), everything is a callback (no per-request task; a task only to open
a new upstream connection), each direction's bytes are joined and written once per read, a request header's kind
is looked up once per spelling of its name, and the common case — a known header kind, a pooled connection, a
response that arrives whole — takes the fewest calls. The instance side lives in `upstream.py`, mirroring in
`mirror.py`.

A client connection serves one exchange at a time. Pipelined requests are parsed ahead, and their parser events are
held back (`deferred`) and replayed when the current response is complete.
"""

from __future__ import annotations

import asyncio
import json
from bisect import bisect_left
from time import monotonic
from typing import TYPE_CHECKING, Any

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from inferstack import images
from inferstack.openai_errors import error_body

from .metrics import (
    CLIENT_ABORT,
    CONNECT,
    LATENCY_BUCKETS,
    TIMEOUT,
    UNAVAILABLE,
    UPSTREAM,
    WINDOW_BOUNDS,
    RouteStats,
)
from .mirror import MirrorCopy
from .routing import Instance, RoutingError, RoutingTable
from .upstream import InstancePool, UpstreamConnection
from .wire import CHUNKED, CONTINUE, HEAD_END, LAST_CHUNK, NO_BODY, RAW, STATUS_LINES, log_if_ours, status_line

if TYPE_CHECKING:
    from .access import AccessPolicy
    from .routing import ServiceRouter

BUFFER_LIMIT = 256 * 1024  # request bytes held while the upstream connection is being opened
# A request head (request line and headers) is at most this large and has at most this many headers, like Envoy's
# defaults (60 KiB, 100): a larger one is a 431 and the connection closes — the parser would otherwise buffer a
# header of any size. A head must arrive within HEAD_TIMEOUT_S of its first byte (nginx's client_header_timeout is
# 60 s): a client trickling a head (slowloris) gets a 408 and the connection closes.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 128
HEAD_TIMEOUT_S = 30.0
# After an answer that ends a connection whose client may still be sending (a refused head, a malformed request),
# the gateway stops writing and reads and drops what comes for up to LINGER_S before it closes — closing a socket with
# unread data sends a reset, which can destroy the answer before the client reads it (nginx's lingering close).
LINGER_S = 2.0

# The instances answer only requests that carry their service's token (see ServiceEntry.upstream).
UPSTREAM_TOKEN_HEADER = images.UPSTREAM_TOKEN_HEADER.encode()

# Kinds of request headers: forwarded as they are, or needing more.
_PLAIN, _AUTH, _HOP, _EXPECT, _XFF, _TRANSFER = range(6)
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
# Header name as the client spelled it -> (kind, lower-cased name). Clients use a handful of spellings, so this
# saves a lower() and a lookup per header; bounded so that odd spellings cannot grow it without end.
_HEADER_KINDS: dict[bytes, tuple[int, bytes]] = {}
_HEADER_KINDS_LIMIT = 4096


def _header_kind(name: bytes) -> tuple[int, bytes]:
    lname = name.lower()
    found = (_REQUEST_SPECIAL.get(lname, _PLAIN), lname)
    if len(_HEADER_KINDS) < _HEADER_KINDS_LIMIT:
        _HEADER_KINDS[name] = found
    return found


class ServiceEntry:
    """What the proxy needs of one service in one snapshot."""

    __slots__ = ("access", "key", "router", "stats", "upstream")

    def __init__(self, key: str, router: ServiceRouter, access: AccessPolicy, stats: RouteStats,
                 upstream_token: str = "") -> None:
        self.key = key
        self.router = router
        self.access = access
        self.stats = stats  # answers of the gateway itself (no deployment chosen)
        # The header piece that proves a request came through the gateway, added to every upstream request head
        # (mirror copies and retries reuse the head: one token per service, so it fits every instance of it).
        self.upstream = b"\r\n" + UPSTREAM_TOKEN_HEADER + b": " + upstream_token.encode() if upstream_token else b""


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
            status_line(status),
            b"\r\nContent-Type: application/json",
            b"\r\nContent-Length: %d" % len(body),
            b"\r\nX-Inferstack-Deployment: %s" % (deployment or "-").encode(),
            b"\r\nX-Inferstack-Instance: %s" % (instance or "-").encode(),
            b"\r\nConnection: close" if close else b"",
            HEAD_END,
            body,
        ]
    )


class ClientConnection(asyncio.Protocol):
    """One client connection on a listener: parses requests, routes them, relays the responses."""

    # Slots: a smaller object per connection, and attribute access measured ~15 % faster on the hot path.
    __slots__ = ("allowed_by", "allowed_key", "authorization", "busy", "chunked_in", "closing", "deadline",
                 "deferred", "entry", "expect_continue", "gateway", "head_bytes", "header_bytes", "headers",
                 "hparts", "in_head", "instance", "is_head", "keep_alive", "keep_alive_asked", "last_active",
                 "lingering", "listener", "logical_port", "loop", "mirror", "obuf", "obuf_size", "parser",
                 "paused_for_pipeline", "paused_for_upstream", "peer_ip", "peer_ip_bytes", "picked", "request_done",
                 "response_done", "response_started", "service_key", "status", "t0", "timeout_s", "timer",
                 "timer_at", "transport", "tried", "unusual", "upstream", "upstream_ready", "url", "watched",
                 "writing_paused", "xff_in", "xff_line")

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
        self.lingering = False  # answered and half-closed: what the client still sends is dropped
        self.in_head = True  # reading a request head (or waiting for the next one)
        self.head_bytes = 0  # bytes received while a head is still incomplete (the parser buffers them)
        self.headers = self.header_bytes = 0  # the current head's header count and size
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
        # Per-request fields that are read before the request sets them (reset by _finish).
        self.url = b""
        self.picked: dict[bytes, bytes] | None = None
        self.authorization: bytes | None = None
        self.unusual = False  # a header set one of the fields below (cleared only then: the common request sets none)
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
        self.xff_line = b"\r\nX-Forwarded-For: " + self.peer_ip_bytes
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
        if self.lingering:
            return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self.keep_alive = False  # protocol upgrades are not relayed; the plain answer ends the connection
        except HttpParserError as exc:
            log_if_ours(exc)
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
        if self.in_head and self.busy and not self.closing:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._head_too_large(f"the request head is over {MAX_HEAD_BYTES // 1024} KiB")
                return
        if self.upstream_ready and self.obuf:
            self.upstream.transport.write(b"".join(self.obuf))  # type: ignore[union-attr]
            self.obuf = []
            self.obuf_size = 0

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
        self.head_bytes = self.headers = self.header_bytes = 0
        # The snapshot in use now serves this request to its end, whatever is swapped in meanwhile.
        entry = self.entry = self.gateway.state.services.get(self.service_key)
        if entry is not None:
            self.watched = entry.router.watched
        self.hparts = [b"", b" ", b"", b" HTTP/1.1"]

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.deferred is not None:
            self._defer(self.on_header, (name, value))
            return
        self.headers += 1
        self.header_bytes += len(name) + len(value)
        kind, lname = _HEADER_KINDS.get(name) or _header_kind(name)
        if kind == _PLAIN:
            self.hparts += (b"\r\n", name, b": ", value)
            if lname in self.watched:
                self.unusual = True
                if self.picked is None:
                    self.picked = {lname: value}
                else:
                    self.picked[lname] = value
        elif kind == _AUTH:
            self.authorization = value
            if self.entry is None or not self.entry.access.needs_key:
                self.hparts += (b"\r\n", name, b": ", value)
        else:
            self.unusual = True
            if kind == _TRANSFER:
                self.chunked_in = True
                self.hparts += (b"\r\n", name, b": ", value)
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
        self.in_head = False
        if self.headers > MAX_HEADERS or self.header_bytes + len(self.url) > MAX_HEAD_BYTES:
            self._head_too_large(f"{self.headers} headers (at most {MAX_HEADERS})" if self.headers > MAX_HEADERS
                                 else f"the request head is over {MAX_HEAD_BYTES // 1024} KiB")
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
        t0 = self.t0
        try:
            instance = router.route(self.picked, t0)
        except RoutingError as exc:
            self._answer(exc.status, exc.message, exc.code, exc.deployment)
            return
        hparts = self.hparts
        hparts[0] = method
        hparts[2] = self.url
        if self.xff_in is None:
            hparts += (self.xff_line, entry.upstream, HEAD_END)
        else:
            hparts += (b"\r\nX-Forwarded-For: ", self.xff_in, b", ", self.peer_ip_bytes, entry.upstream, HEAD_END)
        self.obuf = hparts
        if self.expect_continue:
            self.expect_continue = False  # from here on: the client is not waiting for a 100 any more
            self.transport.write(CONTINUE)
        timeout = self.timeout_s = router.timeout_s
        deadline = self.deadline = t0 + timeout
        if self.timer is None or deadline < self.timer_at:
            self._arm(deadline)
        if router.mirror is not None:
            target = router.mirror_target(instance, t0)
            if target is not None:
                self.unusual = True
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
            self.unusual = True
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
            self.obuf.append(LAST_CHUNK)
            if self.mirror is not None:
                self.mirror.send((LAST_CHUNK,))
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
        instance.in_flight += 1
        instance.stats.in_flight += 1
        pool: InstancePool = instance.upstream
        conn = pool.acquire(self.t0) if pool.idle else None
        if conn is None:
            conn = UpstreamConnection(pool)
            conn.attach(self, self.is_head)
            self.upstream = conn
            self.upstream_ready = False
            pool.open(conn)
            return
        conn.attach(self, self.is_head)
        self.upstream = conn
        self.upstream_ready = True  # the request is flushed at the end of this read from the client
        if self.writing_paused:
            conn.pause_reading()

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
        self.unusual = True
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
        out[0] = STATUS_LINES.get(status) or status_line(status)
        if self.is_head or status == 204 or status == 304:
            conn.framing = NO_BODY
        elif conn.length_known:
            conn.framing = RAW
        elif self.parser.get_http_version() == "1.1":
            conn.framing = CHUNKED
            out.append(b"\r\nTransfer-Encoding: chunked")
        else:
            conn.framing = RAW  # an HTTP/1.0 client reads until the connection closes
            self.keep_alive = False
        if not self.keep_alive:
            out.append(b"\r\nConnection: close")
        elif self.keep_alive_asked and self.parser.get_http_version() == "1.0":
            out.append(b"\r\nConnection: keep-alive")
        out.append(conn.pool.tag)

    def response_data(self, conn: UpstreamConnection) -> None:
        """End of one read from the upstream: forward what it produced; settle the exchange if it is complete."""
        out = conn.out
        if out:
            self.transport.write(b"".join(out))
            out.clear()
        if not conn.done:
            self.last_active = monotonic()
            return
        # The exchange is complete on the upstream side.
        now = monotonic()
        self.response_done = True
        self.deadline = 0.0
        instance = self.instance
        assert instance is not None
        stats = instance.stats
        elapsed = now - self.t0
        status = self.status
        stats.codes[status // 100 if status < 600 else 0] += 1
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

    def _head_too_large(self, why: str) -> None:
        """431: the head is refused before anything is routed (nothing reached an instance); the connection closes,
        as the rest of the head (or its body) cannot be skipped safely."""
        self.in_head = False
        stats = self.entry.stats if self.entry is not None else self.gateway.stats_for(self.service_key)
        stats.observe(431, monotonic() - self.t0)
        self._answer_and_close(431, f"request header fields too large: {why}", "request_header_fields_too_large")

    def _answer_and_close(self, status: int, message: str, code: str) -> None:
        self.keep_alive = False
        self.transport.write(error_response(status, message, code, self.service_key, None, None, True))
        if self.closing or not self.transport.can_write_eof():
            self._close()
            return
        # Lingering close: the answer goes out, then the client's remaining bytes are read and dropped until it
        # closes (eof_received closes at once) or LINGER_S passes.
        self.lingering = True
        self.deferred = None
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self._close)

    def _finish(self, now: float = 0.0) -> None:
        """The exchange is over on both sides: next request, or close."""
        if self.mirror is not None and not self.request_done:
            self.mirror.abort()
        # Back to the per-request defaults of __init__.
        self.url = b""
        self.authorization = None
        self.upstream_ready = False
        self.request_done = self.response_started = self.response_done = False
        if self.unusual:
            self.unusual = False
            self.picked = None
            self.xff_in = None
            self.expect_continue = self.keep_alive_asked = self.chunked_in = False
            self.tried = None
            self.mirror = None
            self.obuf_size = 0
        self.busy = False
        self.in_head = True
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
        if self.in_head and self.busy and not self.closing and now - self.t0 > HEAD_TIMEOUT_S:
            self.in_head = False
            self._answer_and_close(408, f"the request head did not arrive within {HEAD_TIMEOUT_S:g} s",
                                   "request_timeout")
            return
        if not self.deadline and now - max(self.last_active, self.t0) > idle_s:
            if self.busy and not self.response_done:
                self._abandon(CLIENT_ABORT)
            self._close()


__all__ = ["BUFFER_LIMIT", "ClientConnection", "InstancePool", "ProxyState", "ServiceEntry", "UpstreamConnection",
           "error_response"]
