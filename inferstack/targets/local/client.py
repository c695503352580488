"""The embedded platform's HTTP client (sync, httpx). What the CLI and the Pulumi dynamic providers call.

Errors are `PlatformError(status_code, body)`: `.findings` holds the rule findings of a 422, and `str()` reads as a
person would want it (each finding's path, message and rule). `PlatformUnreachable` (status 0) means no platform
answered; `WaitError` means a `wait` ended without the object becoming ready."""

from __future__ import annotations

import functools
import json
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx

URL_ENV = "INFERSTACK_URL"
TOKEN_ENV = "INFERSTACK_TOKEN"
INVENTORY_KINDS = ("vpcs", "resource-groups", "queues", "compute-specs", "subnets", "security-groups", "images")


class PlatformError(Exception):
    """The platform refused a request (or could not be reached: status_code 0)."""

    def __init__(self, status_code: int, body: Any):
        self.status_code = status_code
        self.body = body
        super().__init__(self._text())

    @property
    def error(self) -> str:
        return self.body.get("error", "") if isinstance(self.body, dict) else ""

    @property
    def message(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("message", ""))
        return str(self.body)

    @property
    def findings(self) -> list[dict[str, Any]]:
        found = self.body.get("findings") if isinstance(self.body, dict) else None
        return list(found or [])

    def _text(self) -> str:
        head = f"{self.status_code} {self.error}: " if self.status_code else ""
        findings = self.findings
        if not findings:
            return head + self.message
        lines = [head + f"{sum(f.get('severity') == 'error' for f in findings)} rule(s) broken"]
        for f in findings:
            shown = "" if f.get("value") is None else f" [value: {json.dumps(f['value'], ensure_ascii=False)}]"
            lines.append(f"  {f.get('severity', 'error')}: {f.get('path') or '(root)'}: {f.get('message')}{shown} "
                         f"({f.get('rule')})")
        return "\n".join(lines)


class PlatformUnreachable(PlatformError):
    """No platform answered at the URL, or none is running for the data dir."""

    def __init__(self, message: str):
        super().__init__(0, {"error": "unreachable", "message": message})


class WaitError(PlatformError):
    """`wait` ended without the object becoming ready: it is Degraded, or the time ran out."""

    def __init__(self, message: str, obj: dict[str, Any] | None):
        self.object = obj
        super().__init__(0, {"error": "wait", "message": message})


def _conditions(obj: dict[str, Any] | None) -> str:
    if not obj:
        return "no object read yet"
    parts = [f"{c.get('type')}={c.get('status')} ({c.get('reason')}{': ' + c['message'] if c.get('message') else ''})"
             for c in obj.get("status", {}).get("conditions") or []]
    meta, status = obj.get("metadata", {}), obj.get("status", {})
    parts.append(f"observed_generation {status.get('observed_generation')} of generation {meta.get('generation')}")
    return "; ".join(parts)


def _ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status", {})
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return (status.get("observed_generation") == obj.get("metadata", {}).get("generation")
            and ready is not None and ready.get("status") == "True")


class PlatformClient:
    """A client of one platform: `PlatformClient(url, token)`, or `PlatformClient.discover()`."""

    def __init__(self, url: str, token: str, timeout: float = 30):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, verify=_tls_context(),
                                  headers={"Authorization": f"Bearer {token}"})

    @classmethod
    def discover(cls, data_dir: str | Path | None = None, timeout: float = 30) -> PlatformClient:
        """`$INFERSTACK_URL` (+ `$INFERSTACK_TOKEN`, else the data dir's token) wins; else the data dir's
        `platform.json` and `token` (data dir: argument, `$INFERSTACK_DATA_DIR`, `~/.inferstack`)."""
        from inferstack.platform.server import read_info, read_token, resolve_data_dir

        root = resolve_data_dir(data_dir)
        url = os.environ.get(URL_ENV)
        if not url:
            info = read_info(root)
            if info is None:
                raise PlatformUnreachable(f"no platform is running for data dir {root}: start one with "
                                          f"`inferstack platform serve --detach` (or set {URL_ENV})")
            url = info["url"]
        token = os.environ.get(TOKEN_ENV) or read_token(root)
        if not token:
            raise PlatformUnreachable(f"no token: set {TOKEN_ENV}, or point --data-dir at the platform's data dir "
                                      f"({root / 'token'} does not exist)")
        return cls(url, token, timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport -----------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: Any = None, dry_run: bool = False,
                if_match: str | None = None, create_only: bool = False, params: dict[str, Any] | None = None,
                answers: tuple[int, ...] = ()) -> Any:
        """One call; the JSON answer, or PlatformError (not for the error statuses in `answers`). `create_only`:
        `If-None-Match: *` (412 when the object exists)."""
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else {}
        if create_only:
            headers["If-None-Match"] = "*"
        query = dict(params or {})
        if dry_run:
            query["dry_run"] = "true"
        try:
            response = self._http.request(method, path, json=body, headers=headers, params=query)
        except httpx.TransportError as exc:
            raise PlatformUnreachable(f"cannot reach the platform at {self.url}: {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            data = {"error": "http", "message": response.text}
        if response.status_code >= 400 and response.status_code not in answers:
            raise PlatformError(response.status_code, data)
        return data

    def health(self) -> dict[str, Any]:
        """`GET /healthz`: its answer whether healthy (200) or not (503, naming the part that is down)."""
        return self.request("GET", "/healthz", answers=(503,))

    # --- services, deployments, traffic --------------------------------------------------------------------------

    def list_services(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/services")["items"]

    def get_service(self, key: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/services/{_seg(key)}")

    def put_service(self, key: str, spec: dict[str, Any], *, dry_run: bool = False,
                    if_match: str | None = None, create_only: bool = False) -> dict[str, Any]:
        return self.request("PUT", f"/v1/services/{_seg(key)}", body=spec, dry_run=dry_run, if_match=if_match,
                            create_only=create_only)

    def delete_service(self, key: str, *, dry_run: bool = False, if_match: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/services/{_seg(key)}", dry_run=dry_run, if_match=if_match)

    def list_deployments(self, svc: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/v1/services/{_seg(svc)}/deployments")["items"]

    def get_deployment(self, svc: str, key: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/services/{_seg(svc)}/deployments/{_seg(key)}")

    def put_deployment(self, svc: str, key: str, spec: dict[str, Any], *, dry_run: bool = False,
                       if_match: str | None = None, create_only: bool = False) -> dict[str, Any]:
        return self.request("PUT", f"/v1/services/{_seg(svc)}/deployments/{_seg(key)}", body=spec,
                            dry_run=dry_run, if_match=if_match, create_only=create_only)

    def delete_deployment(self, svc: str, key: str, *, dry_run: bool = False,
                          if_match: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/services/{_seg(svc)}/deployments/{_seg(key)}", dry_run=dry_run,
                            if_match=if_match)

    def get_traffic(self, svc: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/services/{_seg(svc)}/traffic")

    def put_traffic(self, svc: str, spec: dict[str, Any], *, dry_run: bool = False,
                    if_match: str | None = None) -> dict[str, Any]:
        return self.request("PUT", f"/v1/services/{_seg(svc)}/traffic", body=spec, dry_run=dry_run,
                            if_match=if_match)

    def retry_release(self, svc: str, deployment: str | None = None) -> dict[str, Any]:
        """Another attempt of a failed progressive release (a traffic shift, or a deployment's canary redeploy)."""
        where = f"deployments/{_seg(deployment)}" if deployment is not None else "traffic"
        return self.request("POST", f"/v1/services/{_seg(svc)}/{where}/release/retry")

    def failed_releases(self, svc: str) -> list[tuple[str | None, dict[str, Any]]]:
        """(deployment key, or None for the traffic object; its release) of each failed progressive release of the
        service's current generations."""
        objects = [(None, self.get_traffic(svc))] + [(d["metadata"]["key"], d) for d in self.list_deployments(svc)]
        out = []
        for key, obj in objects:
            release = (obj.get("status") or {}).get("release")
            if isinstance(release, dict) and release.get("generation") == obj["metadata"]["generation"] and \
                    release.get("phase") in ("RolledBack", "Paused"):
                out.append((key, release))
        return out

    def cost(self, svc: str) -> dict[str, Any]:
        """Cost so far and per hour now of a service: `{cost, per_hour, by_billing, lines, at}` (the meter)."""
        return self.request("GET", f"/v1/services/{_seg(svc)}/cost")

    def costs(self) -> list[dict[str, Any]]:
        """Every bill the meter holds, deleted services' too: `[{service, uid, deleted, cost, per_hour, …}]`."""
        return self.request("GET", "/v1/costs")["services"]

    # --- inventory -----------------------------------------------------------------------------------------------

    def get_inventory(self, kind: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/{_kind(kind)}/{_name(name)}")

    def put_inventory(self, kind: str, name: str, spec: dict[str, Any], *, dry_run: bool = False,
                      if_match: str | None = None, create_only: bool = False) -> dict[str, Any]:
        return self.request("PUT", f"/v1/{_kind(kind)}/{_name(name)}", body=spec, dry_run=dry_run,
                            if_match=if_match, create_only=create_only)

    def delete_inventory(self, kind: str, name: str, *, dry_run: bool = False,
                         if_match: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/{_kind(kind)}/{_name(name)}", dry_run=dry_run, if_match=if_match)

    def list_inventory(self, kind: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/v1/{_kind(kind)}")["items"]

    def inventory(self) -> dict[str, Any]:
        """The whole inventory in the stack file's `inventory:` shape."""
        return self.request("GET", "/v1/inventory")

    # --- stacks, events, waiting ---------------------------------------------------------------------------------

    def apply(self, stack: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Apply a stack file (`{"inventory": ..., "services": [...]}`) in one transaction:
        `{"plan", "plan_text", "writes", "changed", "warnings"}`."""
        return self.request("POST", "/v1/apply", body=stack, dry_run=dry_run)

    def events(self, svc: str | None = None, *, object: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Events of a service (its deployments and traffic included), or of one object path, or all."""
        if svc is not None:
            return self.request("GET", f"/v1/services/{_seg(svc)}/events", params={"since": since})["items"]
        params: dict[str, Any] = {"since": since}
        if object is not None:
            params["object"] = object
        return self.request("GET", "/v1/events", params=params)["items"]

    def wait(self, svc: str, deployment: str | None = None, *, timeout: float,
             until: Callable[[dict[str, Any]], bool] | None = None, interval: float = 0.1) -> dict[str, Any]:
        """Poll the service (or one deployment) until `until(obj)` — by default: the current generation observed
        and Ready. Raises WaitError when it is Degraded at the current generation, or when `timeout` passes."""
        check = until or _ready
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        what = f"services/{svc}" + (f"/deployments/{deployment}" if deployment else "")
        while True:
            last = self.get_deployment(svc, deployment) if deployment else self.get_service(svc)
            if check(last):
                return last
            status = last.get("status", {})
            degraded = next((c for c in status.get("conditions") or [] if c.get("type") == "Degraded"), None)
            if (degraded and degraded.get("status") == "True"
                    and status.get("observed_generation") == last.get("metadata", {}).get("generation")):
                raise WaitError(f"{what} is degraded: {degraded.get('reason')}: {degraded.get('message', '')}",
                                last)
            if time.monotonic() >= deadline:
                raise WaitError(f"{what} was not ready after {timeout:g}s: {_conditions(last)}", last)
            time.sleep(interval)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One default TLS context per process: building it (loading the CA bundle) costs ~40 ms, and the Pulumi providers
    make a client per call."""
    return ssl.create_default_context()


def _seg(value: str) -> str:
    return quote(value, safe="")


def _name(value: str) -> str:
    # Inventory names may hold '/' (preset images such as `inferstack/echo`): the route takes the rest of the path.
    return quote(value, safe="/")


def _kind(kind: str) -> str:
    url = kind.replace("_", "-")
    if url not in INVENTORY_KINDS:
        raise ValueError(f"unknown inventory kind {kind!r}: one of {', '.join(INVENTORY_KINDS)}")
    return url
