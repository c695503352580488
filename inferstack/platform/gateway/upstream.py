"""The instance side of the proxy: pooled keep-alive connections, and responses read off them.

Response heads are read header by header (httptools callbacks): measured, that is cheaper in CPython than keeping
the head's bytes and finding the special headers with one regular-expression pass. A header name's kind is looked
up once per spelling (`_RESPONSE_KINDS`), so the common header costs one dict lookup and one list extend.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import TYPE_CHECKING, Any

from httptools import HttpParserError, HttpResponseParser

from .wire import CHUNKED, LAST_CHUNK, NO_BODY, RAW, log_if_ours

if TYPE_CHECKING:
    from .routing import Instance

IDLE_POOL_SIZE = 128
IDLE_MAX_AGE_S = 4.0  # below the common 5 s keep-alive of servers, so an idle socket is never reused as it closes

# Kinds of response headers: forwarded as they are, or needing more. Content-Length and Transfer-Encoding decide the
# framing; the others are hop-by-hop, or the gateway's own (it names deployment and instance itself). All but
# Content-Length are dropped (Transfer-Encoding too: the body is re-framed for the client).
_FORWARD, _LENGTH, _CHUNKED_BODY, _DROP = range(4)
_RESPONSE_SPECIAL = {
    b"content-length": _LENGTH,
    b"transfer-encoding": _CHUNKED_BODY,
    b"connection": _DROP,
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"upgrade": _DROP,
    b"x-inferstack-deployment": _DROP,
    b"x-inferstack-instance": _DROP,
}
# Header name as the instance spelled it -> its kind; bounded, so that odd spellings cannot grow it without end.
_RESPONSE_KINDS: dict[bytes, int] = {}
_RESPONSE_KINDS_LIMIT = 4096


def _response_kind(name: bytes) -> int:
    kind = _RESPONSE_SPECIAL.get(name.lower(), _FORWARD)
    if len(_RESPONSE_KINDS) < _RESPONSE_KINDS_LIMIT:
        _RESPONSE_KINDS[name] = kind
    return kind


class InstancePool:
    """Idle keep-alive connections to one instance (LIFO, bounded), and the opening of new ones."""

    __slots__ = ("closed", "idle", "instance", "loop", "tag")

    def __init__(self, instance: Instance, loop: asyncio.AbstractEventLoop) -> None:
        self.instance = instance
        self.loop = loop
        self.idle: list[UpstreamConnection] = []
        self.closed = False
        # Ends every response head this instance answers.
        self.tag = b"\r\nX-Inferstack-Deployment: %s\r\nX-Inferstack-Instance: %s\r\n\r\n" % (
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
    """One keep-alive connection to an instance; parses responses and hands them to its current client.

    The client (a ClientConnection or a MirrorCopy) is told: `response_head(conn, status)` once the head is read —
    `conn.out` then holds the forwarded headers, `b"\\r\\nName", b": ", value` each, for the client to complete — and
    `response_data(conn)` after each read, with the bytes for its client in `conn.out` (the client sets
    `conn.framing` at the head).
    """

    __slots__ = ("chunked", "client", "done", "framing", "head_done", "idle_since", "interim", "keep_alive",
                 "length_known", "no_body", "out", "parser", "pool", "reading_paused", "transport")

    def __init__(self, pool: InstancePool) -> None:
        self.pool = pool
        self.transport: Any = None
        self.parser = HttpResponseParser(self)
        self.client: Any = None  # a ClientConnection or a MirrorCopy while an exchange uses this connection
        self.idle_since = 0.0
        self.reading_paused = False
        self.out: list[bytes] = []  # response bytes for the client, flushed after each read
        self.framing = NO_BODY  # how the body goes into `out`; the client decides at the response head
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
            log_if_ours(exc)
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
        self.framing = NO_BODY
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
            if self.framing == CHUNKED:
                self.out.append(LAST_CHUNK)
            return True
        return False

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = _RESPONSE_KINDS.get(name)
        if kind is None:
            kind = _response_kind(name)
        if kind == _FORWARD:
            self.out += (b"\r\n", name, b": ", value)
        elif kind == _LENGTH:
            self.length_known = True
            self.out += (b"\r\n", name, b": ", value)
        elif kind == _CHUNKED_BODY:
            self.chunked = True

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            # 100 Continue and friends: the client got its own 100 from the gateway; the real answer follows.
            self.interim = True
            self.out = [b""]
            self.length_known = self.chunked = False
            return
        self.head_done = True
        self.keep_alive = parser.should_keep_alive()  # only meaningful before the message completes
        self.client.response_head(self, status)
        if self.no_body:
            self.done = True

    def on_body(self, data: bytes) -> None:
        framing = self.framing
        if framing == RAW:
            self.out.append(data)
        elif framing == CHUNKED:
            self.out += (b"%x\r\n" % len(data), data, b"\r\n")

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.done = True
        if self.framing == CHUNKED:
            self.out.append(LAST_CHUNK)
