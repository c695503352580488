"""The runtime's own routes (keys, logs, cost, releases, metrics) take hostile and mistaken requests like the rest of
the API: a 400 naming the parameter, never a 5xx, and nothing done. A `?dry_run=true` on a route that has no dry run
must not act for real: rotating a key for real stops the callers that still hold the old one."""

from __future__ import annotations

import time

import httpx
import pytest
from embedded_harness import echo_deployment, echo_service, gateway, start_platform, wait_ready
from release_harness import release_events

KEYS = "/v1/services/svc/keys"
LOGS = "/v1/services/svc/deployments/main/logs"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    platform = start_platform(tmp_path_factory.mktemp("runtime-routes"))
    client = platform.client()
    client.apply({"services": [echo_service("svc", [echo_deployment("main")])]})
    wait_ready(client, "svc")
    url, headers = gateway(client, "svc")
    with platform.http() as http:
        yield platform, http, url, headers
    platform.stop()


def answers(url: str, headers: dict[str, str]) -> int:
    return httpx.post(f"{url}/v1/predict", json={"input": "x"}, headers=headers, timeout=5).status_code


@pytest.mark.parametrize("method,path,names", [
    ("POST", f"{KEYS}/rotate?dry_run=true", "'dry_run'"),
    ("GET", f"{KEYS}?show=1", "'show'"),
    ("POST", "/v1/services/svc/traffic/release/retry?dry_run=true", "'dry_run'"),
    ("POST", "/v1/services/svc/deployments/main/release/retry?dry_run=1", "'dry_run'"),
    ("GET", "/v1/services/svc/cost?since=0", "'since'"),
    ("GET", "/v1/costs?deleted=true", "'deleted'"),
    ("GET", "/metrics?format=json", "'format'"),
    ("GET", f"{LOGS}?tail=0", "tail is a whole number from 1 to 10000"),
    ("GET", f"{LOGS}?tail=-5", "tail is a whole number from 1 to 10000"),
    ("GET", f"{LOGS}?tail=1e400", "tail is a whole number from 1 to 10000"),
    ("GET", f"{LOGS}?tail=99999", "tail is a whole number from 1 to 10000"),
    ("GET", f"{LOGS}?tail=5&tail=6", "'tail' is given more than once"),
    ("GET", f"{LOGS}?tial=5", "'tial'"),
])
def test_a_mistaken_query_is_a_400_naming_it_and_nothing_is_done(live, method, path, names):
    platform, http, url, headers = live
    events = len(platform.client().events("svc"))
    response = http.request(method, path)
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.json()["error"] == "bad_request" and names in response.json()["message"]
    assert answers(url, headers) == 200  # the key callers hold still works: nothing was rotated
    assert len(platform.client().events("svc")) == events and not release_events(platform.client(), "svc")


def test_the_same_routes_answer_when_asked_right(live):
    _, http, url, headers = live
    assert http.get(f"{LOGS}?tail=5").status_code == 200
    assert http.get("/v1/services/svc/cost").json()["service"] == "svc"
    assert http.post("/v1/services/svc/traffic/release/retry").status_code == 409  # nothing failed to retry
    rotated = http.post(f"{KEYS}/rotate")
    assert rotated.status_code == 200
    new = {"Authorization": f"Bearer {rotated.json()['key']}"}
    deadline = time.monotonic() + 10
    while answers(url, headers) == 200 and time.monotonic() < deadline:  # the gateway takes the new key at once
        time.sleep(0.05)
    assert answers(url, headers) == 401 and answers(url, new) == 200
