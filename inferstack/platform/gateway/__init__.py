"""The embedded platform's gateway: splits each service's traffic between its deployments, in its own process.

Process: `python -m inferstack.platform.gateway [--admin-port N] [--state-dir DIR] [--exit-with PID:START_TIME]`
with `INFERSTACK_GATEWAY_ADMIN_TOKEN` set; on uvloop. When ready it writes its record to the state dir (statedir.py)
and prints one JSON line, `{"admin_port": N, "pid": P}`. SIGTERM: stop accepting, finish what is in flight (up to
5 s), exit 0. It runs in a session of its own with no pipe to its starter: a crash of the platform leaves it serving.
`GatewayProcess` (process.py) starts, adopts, feeds and stops one; `GatewaySupervisor` (supervisor.py) keeps the
platform's one running — re-adoption after a platform restart, restarts with back-off, events.

Admin API on 127.0.0.1 (all but /healthz need `Authorization: Bearer <token>`):
  PUT /snapshot    a Snapshot (snapshot.py) -> {"version", "listeners": {"<service>/<logical port>": bound port},
                   "pid"}; 400 with every problem's path when invalid, 409 when older than the one in use
  GET /snapshot    the version in use, the listeners and the pid
  GET /metrics     Prometheus text, all names prefixed `inferstack_gateway_`
  GET /healthz     200 {"status": "ok", "version", "pid"}

Modules: snapshot (models), routing (pure decisions), access (keys, sources), proxy (the hot path: asyncio protocols
and httptools), server (snapshot swap, listeners, pools, draining), admin, metrics, statedir (the files a gateway
outlives its platform by), process, supervisor. The package imports its client side lazily, so that the gateway
process itself does not load httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .process import GatewayError, GatewayProcess, GatewayUnavailable, SnapshotRejected
    from .routing import RoutingTable, ServiceRouter, SmoothWeightedRoundRobin
    from .snapshot import Snapshot
    from .supervisor import GatewaySupervisor

_EXPORTS = {
    "GatewayError": "process", "GatewayProcess": "process", "GatewayUnavailable": "process",
    "SnapshotRejected": "process", "GatewaySupervisor": "supervisor", "RoutingTable": "routing",
    "ServiceRouter": "routing", "SmoothWeightedRoundRobin": "routing", "Snapshot": "snapshot",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


__all__ = [
    "GatewayError",
    "GatewayProcess",
    "GatewaySupervisor",
    "GatewayUnavailable",
    "RoutingTable",
    "ServiceRouter",
    "SmoothWeightedRoundRobin",
    "Snapshot",
    "SnapshotRejected",
]
