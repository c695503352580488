"""The embedded platform's gateway: splits each service's traffic between its deployments, in its own process.

Process: `python -m inferstack.platform.gateway [--admin-port N]` with `INFERSTACK_GATEWAY_ADMIN_TOKEN` set; on uvloop.
When ready it prints one JSON line, `{"admin_port": N}`. SIGTERM: stop accepting, finish what is in flight (up to
5 s), exit 0. `GatewayProcess` (supervisor.py) does all of this for the platform, sync or async.

Admin API on 127.0.0.1 (all but /healthz need `Authorization: Bearer <token>`):
  PUT /snapshot    a Snapshot (snapshot.py) -> {"version", "listeners": {"<service>/<logical port>": bound port}};
                   400 with every problem's path when invalid, 409 when older than the one in use
  GET /snapshot    the version in use and the listeners
  GET /metrics     Prometheus text, all names prefixed `inferstack_gateway_`
  GET /healthz     200

Modules: snapshot (models), routing (pure decisions), access (keys, sources), proxy (the hot path: asyncio protocols
and httptools), server (snapshot swap, listeners, pools, draining), admin, metrics, supervisor.
"""

from .routing import RoutingTable, ServiceRouter, SmoothWeightedRoundRobin
from .snapshot import Snapshot
from .supervisor import GatewayError, GatewayProcess, SnapshotRejected

__all__ = [
    "GatewayError",
    "GatewayProcess",
    "RoutingTable",
    "ServiceRouter",
    "SmoothWeightedRoundRobin",
    "Snapshot",
    "SnapshotRejected",
]
