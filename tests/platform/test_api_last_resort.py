"""The API's last lines of defence, for what validation should never let in: an exception no handler takes answers
a generic 500 that echoes nothing (and logs no message, only where it was raised); a value strict JSON cannot carry
(from an older data dir) is rendered as null instead of failing the answer."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path

import httpx
import pytest
from platform_harness import deployment, service
from starlette.requests import Request
from starlette.routing import Route

from inferstack.platform.api import create_app
from inferstack.platform.control import Platform, WriteContext
from inferstack.platform.store import DB_NAME, Store

SECRET = "echo-me-not-41b7"


class _Client:
    """GETs against the ASGI app in process (no lifespan: no runtime is attached)."""

    def __init__(self, platform: Platform):
        self.transport = httpx.ASGITransport(create_app(platform, "t"), raise_app_exceptions=False)

    def get(self, path: str) -> httpx.Response:
        async def call() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://api",
                                         headers={"Authorization": "Bearer t"}) as client:
                return await client.get(path)

        return asyncio.run(call())


def _app(tmp_path: Path) -> tuple[Platform, _Client]:
    platform = Platform(Store.open(tmp_path))

    async def boom(request: Request) -> None:
        raise ValueError(f"the input was {SECRET}")

    platform.routes.append(Route("/v1/boom", boom, methods=["GET"]))
    return platform, _Client(platform)


def test_an_unexpected_failure_answers_a_generic_500_and_logs_no_message(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, client = _app(tmp_path)
    with caplog.at_level(logging.ERROR, logger="inferstack.platform"):
        response = client.get("/v1/boom")
    assert response.status_code == 500 and response.json()["error"] == "internal"
    assert SECRET not in response.text
    assert "ValueError" in caplog.text and "boom" in caplog.text
    assert SECRET not in caplog.text


def test_a_stored_non_finite_number_is_rendered_as_null(tmp_path: Path) -> None:
    platform, client = _app(tmp_path)
    platform.put_service("s", service("s"), WriteContext())
    platform.put_deployment("s", "stable", deployment("stable"), WriteContext())
    platform.store.close()
    conn = sqlite3.connect(tmp_path / DB_NAME)  # what an older platform could store (timeout_s: 1e400)
    spec = json.loads(conn.execute("SELECT spec FROM objects WHERE kind = 'traffic'").fetchone()[0])
    conn.execute("UPDATE objects SET spec = ? WHERE kind = 'traffic'", (json.dumps({**spec, "timeout_s": 1e400}),))
    conn.commit()
    conn.close()
    platform.store = Store.open(tmp_path)
    response = client.get("/v1/services/s/traffic")
    assert response.status_code == 200 and response.json()["spec"]["timeout_s"] is None
