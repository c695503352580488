"""Instances answer only the gateway: a direct call to an instance's loopback port is refused (403) while the same
instance serves through the gateway; the multi-role path between an instance's roles still works."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from embedded_harness import echo_deployment, echo_service, gateway, start_platform, wait_ready

from inferstack.images import UPSTREAM_TOKEN_HEADER


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    p = start_platform(tmp_path_factory.mktemp("isolation"))
    yield p
    p.stop()


def _multi_role() -> dict:
    role = {"compute_spec": "cpu-small", "replicas": 1, "rolling_update": {"max_unavailable": 0, "max_surge": 100},
            "probes": {"readiness": {"http": {"path": "/healthz"}, "period_s": 0.1, "failure_threshold": 1}}}
    dep = echo_deployment("pd", inference_mode="multi_role", roles=[
        {"name": "prefill", **role}, {"name": "decode", "entry": True, **role}])
    for field in ("compute_spec", "replicas", "rolling_update", "probes"):
        dep.pop(field)
    return dep


def _instances(client, service: str) -> list[dict]:
    return [i for d in client.list_deployments(service) for r in d["status"]["roles"].values()
            for i in r["instances"] if i["ready"]]


def test_a_direct_call_to_an_instance_is_refused_while_the_gateway_serves_it(platform):
    client = platform.client()
    client.apply({"services": [echo_service("iso", [{**echo_deployment("stable"), "weight": 100}])]})
    wait_ready(client, "iso")
    url, headers = gateway(client, "iso")
    (instance,) = _instances(client, "iso")
    direct = f"http://127.0.0.1:{instance['port']}"
    with httpx.Client(timeout=5) as http:
        through = http.post(f"{url}/v1/predict", json={"input": "abc"}, headers=headers)
        assert through.status_code == 200 and through.json()["output"] == "CBA"
        assert through.headers["x-inferstack-instance"] == instance["id"]
        for path, method in (("/v1/predict", "POST"), ("/healthz", "GET"), ("/v1/completions", "POST")):
            refused = http.request(method, direct + path, json={"input": "abc"} if method == "POST" else None)
            assert refused.status_code == 403, (path, refused.text)
            assert "answers only the gateway" in refused.json()["error"]["message"]
            assert "output" not in refused.text
        forged = http.post(direct + "/v1/predict", json={"input": "abc"},
                           headers={UPSTREAM_TOKEN_HEADER: "guess-" + "0" * 58})
        assert forged.status_code == 403
        # A client's own token header is dropped by the gateway (only the gateway's reaches the instance).
        spoofed = http.post(f"{url}/v1/predict", json={"input": "abc"},
                            headers={**headers, UPSTREAM_TOKEN_HEADER: "guess"})
        assert spoofed.status_code == 200
    # The instance stays ready: the platform's own readiness probe (HTTP) carries the token too.
    (still,) = _instances(client, "iso")
    assert still["id"] == instance["id"]


def test_the_roles_of_a_multi_role_deployment_still_reach_each_other(platform):
    client = platform.client()
    client.apply({"services": [echo_service("pd", [{**_multi_role(), "weight": 100}])]})
    wait_ready(client, "pd", timeout=30)
    url, headers = gateway(client, "pd")
    answer = httpx.post(f"{url}/v1/completions", json={"prompt": "hello world", "max_tokens": 2}, headers=headers,
                        timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["prefill"]["role"] == "prefill"
    prefill = next(i for i in _instances(client, "pd") if "-prefill-" in i["id"])
    assert httpx.post(f"http://127.0.0.1:{prefill['port']}/v1/prefill", json={"prompt": "x"},
                      timeout=5).status_code == 403


def test_services_have_distinct_tokens(platform):
    client = platform.client()
    assert {i["id"] for i in _instances(client, "iso")}  # from the first test
    # An instance of one service cannot be called with another service's token: each instance's env holds its own.
    from embedded_harness import instance_pids

    def token(service: str) -> str:
        pid = next(iter(instance_pids(service, platform.data_dir).values()))
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        return env["INFERSTACK_UPSTREAM_TOKEN"]

    assert token("iso") != token("pd") and len(token("iso")) == 64
    (instance,) = _instances(client, "iso")
    wrong = httpx.post(f"http://127.0.0.1:{instance['port']}/v1/predict", json={"input": "x"},
                       headers={UPSTREAM_TOKEN_HEADER: token("pd")}, timeout=5)
    assert wrong.status_code == 403
