"""Wires the runtime into the control plane: the reconciler (instances as processes), the autoscaler, the gateway
process (traffic split) and its supervisor, invocation keys, `/metrics` and `GET /v1/gateway`. `server.serve` calls
`attach` unless the runtime is off.

The gateway's state dir is `<data dir>/gateway/` (statedir.py): the gateway outlives a crash of the platform there
and is re-adopted from it; its restarts are runtime events of `platform/gateway`."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from . import release_api
from .autoscaler import Autoscaler
from .gateway.process import GatewayUnavailable
from .gateway.supervisor import GatewaySupervisor
from .inputs import int_param, only_params
from .keys import InvocationKeys
from .metering import METER_DB, Meter, clock_from_env
from .reconciler import Reconciler, Settings
from .retention import read_logs
from .store import PLATFORM

RUNTIME_ENV = "INFERSTACK_RUNTIME"  # "0": control plane only (no processes, no gateway)
GATEWAY_DIR = "gateway"


def runtime_enabled(explicit: bool | None = None) -> bool:
    if explicit is not None:
        return explicit
    return os.environ.get(RUNTIME_ENV, "1") != "0"


def settings_from_env() -> Settings:
    """Knobs for tests and small machines: INFERSTACK_PROGRESS_DEADLINE_S, INFERSTACK_RESTART_BACKOFF_S."""
    settings = Settings()
    if "INFERSTACK_PROGRESS_DEADLINE_S" in os.environ:
        settings.progress_deadline_s = float(os.environ["INFERSTACK_PROGRESS_DEADLINE_S"])
    if "INFERSTACK_RESTART_BACKOFF_S" in os.environ:
        settings.restart_backoff_base_s = float(os.environ["INFERSTACK_RESTART_BACKOFF_S"])
        settings.restart_backoff_cap_s = max(settings.restart_backoff_base_s * 30, 1.0)
    return settings


def attach(platform, data_dir: Path, *, settings: Settings | None = None, gateway: bool = True) -> Reconciler:
    """Subscribe a reconciler to the platform, start/stop it with the server, add its routes."""
    keys = InvocationKeys(data_dir)

    def gateway_event(reason: str, message: str, type_: str) -> None:
        platform.store.record_event(PLATFORM, "gateway", reason, message, type=type_)

    supervisor = GatewaySupervisor(Path(data_dir) / GATEWAY_DIR, on_event=gateway_event) if gateway else None
    reconciler = Reconciler(platform.store, data_dir, gateway=supervisor, settings=settings or settings_from_env(),
                            keys=keys)
    if supervisor is not None:
        supervisor.on_restart = reconciler.request_publish  # a restarted gateway gets the current snapshot at once
    reconciler.capacity.meter = meter = Meter(Path(data_dir) / METER_DB, clock=clock_from_env())
    autoscaler = Autoscaler(platform.store, reconciler)  # knobs: INFERSTACK_AUTOSCALE_* (AutoscalerSettings)
    platform.runtime = reconciler
    platform.autoscaler = autoscaler
    platform.subscribe(reconciler.on_change)
    platform.on_startup.extend([reconciler.start, autoscaler.start])
    platform.on_shutdown.extend([autoscaler.stop, reconciler.stop])  # no new counts while instances stop

    async def metrics(request: Request) -> PlainTextResponse:
        only_params(request, ())
        lines = reconciler.metrics_lines() + (supervisor.metrics_lines() if supervisor is not None else [])
        text = "\n".join(lines) + "\n"
        if supervisor is not None:
            try:
                text += await supervisor.ametrics()
            except GatewayUnavailable:
                pass  # inferstack_gateway_up 0 says so
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def gateway_status(request: Request) -> JSONResponse:
        """The gateway's supervision state and, per service, what routing the gateway has acknowledged."""
        only_params(request, ())
        routing = {key: {"fresh": r.fresh, "routed": r.routed, "reason": r.reason, "snapshot_version": r.version,
                         "generations": r.generations} for key, r in reconciler.routing.services().items()}
        return JSONResponse({"gateway": supervisor.health() if supervisor is not None else None,
                             "acknowledged_version": reconciler.routing.acknowledged_version, "services": routing})

    def _service(request: Request) -> str | JSONResponse:
        only_params(request, ())  # no dry run here: `?dry_run=true` on a rotation must not rotate the key for real
        key = request.path_params["key"]
        if platform.store.get("service", key) is None:
            return JSONResponse({"error": "not_found", "message": f"services/{key} does not exist"}, 404)
        return key

    async def reveal_key(request: Request) -> JSONResponse:
        key = _service(request)
        if isinstance(key, JSONResponse):
            return key
        keys.ensure(key)
        plain = keys.reveal(key)
        if plain is None:
            return JSONResponse({"service": key, "key": None, "message": "the key was shown once already; rotate "
                                 "it (POST /v1/services/{key}/keys/rotate, `inferstack keys rotate SERVICE`) for a new one"})
        return JSONResponse({"service": key, "key": plain, "message": "shown once: store it now"})

    async def rotate_key(request: Request) -> JSONResponse:
        key = _service(request)
        if isinstance(key, JSONResponse):
            return key
        plain = keys.rotate(key)
        reconciler.request_publish()
        return JSONResponse({"service": key, "key": plain, "message": "the old key stops working now"})

    async def logs(request: Request) -> JSONResponse:
        """The last lines of each instance's log (stdout and stderr), newest instances last."""
        only_params(request, ("tail",))
        tail = int_param(request, "tail", 100, 1, 10_000)
        key, dkey = request.path_params["key"], request.path_params["dkey"]
        row = platform.store.get("deployment", dkey, key)
        if row is None:
            return JSONResponse({"error": "not_found", "message": f"services/{key}/deployments/{dkey} does not "
                                 f"exist"}, 404)
        # This object's logs only (keyed by its uid): a re-created deployment never shows its predecessor's.
        paths = [i.get("log_path") for r in (row.status.get("roles") or {}).values() for i in r.get("instances", [])]
        out = read_logs(Path(data_dir), key, dkey, row.uid, tail, paths)
        return JSONResponse({"service": key, "deployment": dkey, "instances": out})

    async def cost(request: Request) -> JSONResponse:
        """Cost so far and per hour now of a service (metering.py; prices per instance-hour of the inventory)."""
        only_params(request, ())
        key = request.path_params["key"]
        row = platform.store.get("service", key)
        if row is None:
            return JSONResponse({"error": "not_found", "message": f"services/{key} does not exist"}, 404)
        reconciler.capacity.run()  # the meter reflects every placement up to now
        return JSONResponse({"service": key, **meter.report(row.uid)})

    async def costs(request: Request) -> JSONResponse:
        """Every bill the meter holds, deleted services' too (`deleted`: no live service has its uid), oldest first."""
        only_params(request, ())
        reconciler.capacity.run()
        bills = []
        for bill in meter.bills():
            row = platform.store.get("service", bill["service"])
            bills.append({"service": bill["service"], "uid": bill["service_uid"],
                          "deleted": row is None or row.uid != bill["service_uid"],
                          **meter.report(bill["service_uid"])})
        return JSONResponse({"services": bills})

    platform.routes.extend([
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/costs", costs, methods=["GET"]),
        Route("/v1/gateway", gateway_status, methods=["GET"]),
        Route("/v1/services/{key}/cost", cost, methods=["GET"]),
        Route("/v1/services/{key}/deployments/{dkey}/logs", logs, methods=["GET"]),
        Route("/v1/services/{key}/keys", reveal_key, methods=["GET"]),
        Route("/v1/services/{key}/keys/rotate", rotate_key, methods=["POST"]),
        *release_api.routes(platform),
    ])
    return reconciler
