"""Asking for another attempt of a failed progressive release, without a change of the spec:

    POST /v1/services/{key}/traffic/release/retry                 a traffic shift
    POST /v1/services/{key}/deployments/{dkey}/release/retry      a canary redeploy

Only a release of the object's current generation that rolled back or paused can be retried (409 otherwise, naming
its phase). The retry is a status change — `status.release_retries` moves, which is part of the release's attempt
key (`release_status.attempt_key`) — recorded as `ReleaseRetried`; the reconciler then starts the release again from
what is live. `inferstack apply --retry-release` calls these for the services of the file it applied."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .inputs import only_params
from .objects import DEPLOYMENT, TRAFFIC, envelope, object_path
from .release_status import FAILED, current


def retry(platform: Any, kind: str, key: str, parent: str) -> tuple[int, dict[str, Any]]:
    """Ask for another attempt of the object's failed release: (HTTP status, body)."""
    with platform.store.locked():
        row = platform.store.get(kind, key, parent)
        path = object_path(kind, key, parent)
        if row is None or platform.store.get("service", parent) is None:
            return 404, {"error": "not_found", "message": f"{path} does not exist"}
        release = current(row.status.get("release"), row.generation)
        if release is None or release.get("phase") not in FAILED:
            phase = release.get("phase") if release is not None else "none"
            return 409, {"error": "conflict", "message": f"{path} has no failed release of generation "
                                                         f"{row.generation} to retry (release: {phase})"}
        retries = int(row.status.get("release_retries") or 0) + 1
        with platform.store.transaction("retry") as tx:
            tx.patch_status(kind, key, {"release_retries": retries}, parent=parent, action=None)
    platform.store.record_event(kind, key, "ReleaseRetried", f"another attempt of the release of generation "
                                f"{row.generation} was asked (retry {retries}); it starts from what is live",
                                parent=parent, request_id="retry")
    return 200, envelope(platform.store.get(kind, key, parent))


def routes(platform: Any) -> list[Route]:
    async def traffic_retry(request: Request) -> JSONResponse:
        only_params(request, ())  # no dry run: `?dry_run=true` must not start a real attempt
        svc = request.path_params["key"]
        status, body = retry(platform, TRAFFIC, svc, svc)
        if status == 200:
            await platform.on_change(svc)
        return JSONResponse(body, status)

    async def deployment_retry(request: Request) -> JSONResponse:
        only_params(request, ())
        svc, dep = request.path_params["key"], request.path_params["dkey"]
        status, body = retry(platform, DEPLOYMENT, dep, svc)
        if status == 200:
            await platform.on_change(svc)
        return JSONResponse(body, status)

    return [Route("/v1/services/{key}/traffic/release/retry", traffic_retry, methods=["POST"]),
            Route("/v1/services/{key}/deployments/{dkey}/release/retry", deployment_retry, methods=["POST"])]
