"""Mirroring: a copy of a request sent to an instance of the mirror deployment, its answer read and dropped."""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING

from .metrics import MIRROR
from .upstream import InstancePool, UpstreamConnection
from .wire import NO_BODY

if TYPE_CHECKING:
    from .proxy import ClientConnection
    from .routing import Instance

MIRROR_BUFFER_LIMIT = 1024 * 1024


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
        conn.framing = NO_BODY  # the body is read and dropped

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
