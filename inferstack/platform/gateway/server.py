"""The gateway process's state: the snapshot in use, the listeners it implies, the connection pools, draining."""

from __future__ import annotations

import asyncio
import errno
import logging
from time import monotonic
from typing import Any

from .access import AccessPolicy
from .metrics import GatewayMetrics, RouteStats
from .proxy import ClientConnection, ProxyState, ServiceEntry
from .routing import Instance, RoutingTable
from .snapshot import Snapshot
from .upstream import InstancePool

log = logging.getLogger("inferstack.gateway")

HOST = "127.0.0.1"
CLIENT_IDLE_TIMEOUT_S = 120.0
HOUSEKEEPING_INTERVAL_S = 1.0


class StaleSnapshot(Exception):
    """A snapshot older than the one in use."""

    def __init__(self, offered: int, current: int) -> None:
        super().__init__(f"snapshot version {offered} is older than the current version {current}")
        self.offered = offered
        self.current = current


class Listener:
    """A bound logical port of a service."""

    def __init__(self, service_key: str, logical_port: int) -> None:
        self.service_key = service_key
        self.logical_port = logical_port
        self.server: asyncio.AbstractServer | None = None
        self.bound_port = 0
        self.closed = False
        self.connections: set[ClientConnection] = set()

    @property
    def name(self) -> str:
        return f"{self.service_key}/{self.logical_port}"

    def close(self) -> None:
        self.closed = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close_if_idle()


class Gateway:
    """Applies snapshots (one reference swap) and owns everything that outlives a snapshot."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: GatewayMetrics | None = None) -> None:
        self.loop = loop
        self.metrics = metrics or GatewayMetrics()
        self.state = ProxyState(-1, RoutingTable(-1, {}), {})
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self._apply_lock = asyncio.Lock()
        self._housekeeping: asyncio.TimerHandle | None = None
        self.metrics.add_gauge("client_connections", "Open client connections.", lambda: len(self.connections))
        self.metrics.add_gauge("idle_upstream_connections", "Pooled idle upstream connections.", self._idle_upstreams)

    def start(self) -> None:
        self._housekeeping = self.loop.call_later(HOUSEKEEPING_INTERVAL_S, self._housekeep)

    def stats_for(self, service: str) -> RouteStats:
        return self.metrics.stats(service)

    def listener_ports(self) -> dict[str, int]:
        return {listener.name: listener.bound_port for listener in self.listeners.values()}

    def _idle_upstreams(self) -> int:
        return sum(len(i.upstream.idle) for i in self.state.table.all_instances().values())

    async def apply(self, snapshot: Snapshot) -> dict[str, Any]:
        """Swap `snapshot` in; returns the version and the bound listeners. Raises StaleSnapshot."""
        async with self._apply_lock:
            old = self.state
            if snapshot.version < old.version:
                raise StaleSnapshot(snapshot.version, old.version)
            table = RoutingTable.build(snapshot.version, snapshot.services, old.table)
            old_instances = old.table.all_instances()
            new_instances = table.all_instances()
            for (service, *_), instance in new_instances.items():
                if instance.upstream is None:
                    self._adopt(service, instance)
            services = {
                s.key: ServiceEntry(s.key, table.services[s.key], AccessPolicy.of(s), self.metrics.stats(s.key),
                                    s.upstream_token)
                for s in snapshot.services
            }
            wanted = {(s.key, listener.port): listener.bind_port for s in snapshot.services for listener in s.listeners}
            opened = await self._open_listeners(wanted)
            self.state = ProxyState(snapshot.version, table, services)  # the swap
            self.metrics.snapshot_version = snapshot.version
            for key, listener in opened.items():
                replaced = self.listeners.get(key)
                self.listeners[key] = listener
                if replaced is not None:
                    replaced.close()
            for key in [k for k in self.listeners if k not in wanted]:
                self.listeners.pop(key).close()
            self._retire_departed(old_instances, new_instances)
            log.info("snapshot %d in use: %d services", snapshot.version, len(services))
            return {"version": snapshot.version, "listeners": self.listener_ports()}

    def _adopt(self, service: str, instance: Instance) -> None:
        """A new instance: its connection pool and its metrics."""
        instance.upstream = InstancePool(instance, self.loop)
        instance.stats = self.metrics.stats(service, instance.deployment, instance.id)

    def _retire_departed(self, old: dict[tuple, Instance], new: dict[tuple, Instance]) -> None:
        """Instances that left: no more pooled reuse (exchanges in flight finish), their series expire later."""
        now = monotonic()
        live = {(key[0], i.deployment, i.id) for key, i in new.items()}
        for identity, instance in old.items():
            if new.get(identity) is not instance:
                instance.upstream.close()
                labels = (identity[0], instance.deployment, instance.id)
                if labels not in live:  # an instance that moved to another port keeps its series
                    self.metrics.retire(labels, now)

    async def _open_listeners(self, wanted: dict[tuple[str, int], int]) -> dict[tuple[str, int], Listener]:
        """New listeners for `wanted` (key -> bind_port) that are not open yet, or that asked for another port."""
        opened: dict[tuple[str, int], Listener] = {}
        try:
            await self._open_missing(wanted, opened)
        except BaseException:
            for listener in opened.values():
                listener.close()
            raise
        return opened

    async def _open_missing(self, wanted: dict[tuple[str, int], int], opened: dict[tuple[str, int], Listener]) -> None:
        for key, bind_port in wanted.items():
            existing = self.listeners.get(key)
            if existing is not None and bind_port in (0, existing.bound_port):
                continue
            listener = Listener(*key)
            try:
                listener.server = await self._bind(listener, bind_port)
            except OSError as exc:
                if existing is not None:  # keep the socket we have rather than a random new port
                    log.warning("listener %s stays on %d: %s", listener.name, existing.bound_port, exc)
                    continue
                if bind_port == 0 or exc.errno != errno.EADDRINUSE:
                    raise
                listener.server = await self._bind(listener, 0)
            listener.bound_port = listener.server.sockets[0].getsockname()[1]
            opened[key] = listener

    async def _bind(self, listener: Listener, port: int) -> asyncio.AbstractServer:
        return await self.loop.create_server(
            lambda: ClientConnection(self, listener), HOST, port, backlog=2048, reuse_address=True
        )

    def _housekeep(self) -> None:
        now = monotonic()
        for instance in self.state.table.all_instances().values():
            instance.upstream.close_aged(now)
        for conn in list(self.connections):
            conn.close_if_stale(now, CLIENT_IDLE_TIMEOUT_S)
        self.metrics.forget_retired(now)
        self._housekeeping = self.loop.call_later(HOUSEKEEPING_INTERVAL_S, self._housekeep)

    async def drain(self, grace_s: float) -> None:
        """Stop accepting, let exchanges in progress finish (up to `grace_s`), then close everything."""
        self.draining = True
        for listener in self.listeners.values():
            listener.close()
        deadline = self.loop.time() + grace_s
        while self.connections and self.loop.time() < deadline:
            for conn in list(self.connections):
                conn.close_if_idle()
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for instance in self.state.table.all_instances().values():
            instance.upstream.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        for listener in self.listeners.values():
            if listener.server is not None:
                await listener.server.wait_closed()
