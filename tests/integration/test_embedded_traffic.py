"""The main job on the embedded platform: apply, instances become Ready, the gateway splits real traffic."""

from __future__ import annotations

import httpx
import pytest
from embedded_harness import echo_deployment, echo_service, gateway, split, start_platform, wait_ready


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    p = start_platform(tmp_path_factory.mktemp("embedded"))
    yield p
    p.stop()


def test_quickstart_shape_splits_90_10_and_pins_direct_calls(platform):
    client = platform.client()
    stable = {**echo_deployment("stable", queue="q-prepaid-a", replicas=2), "weight": 90}
    canary = {**echo_deployment("canary", env=[{"name": "INFERSTACK_VERSION", "value": "2"}]), "weight": 10}
    client.apply({"services": [echo_service("chat", [stable, canary])]})
    wait_ready(client, "chat")
    url, headers = gateway(client, "chat")
    counts = split(url, headers, 1000)
    assert abs(counts["stable"] - 900) <= 20 and abs(counts["canary"] - 100) <= 20, counts
    assert split(url, headers, 50, **{"X-Inferstack-Deployment": "canary"}) == {"canary": 50}
    with httpx.Client(base_url=url, timeout=5) as anonymous:
        assert anonymous.post("/v1/predict", json={"input": "x"}).status_code == 401
    answer = httpx.post(f"{url}/v1/predict", json={"input": "x"}, headers={**headers, "X-Inferstack-Deployment":
                                                                              "canary"}).json()
    assert answer["service"] == "chat" and answer["deployment"] == "canary" and answer["version"] == "2"


def test_weights_move_in_one_traffic_write_and_the_gateway_follows(platform):
    client = platform.client()
    traffic = client.get_traffic("chat")["spec"]
    client.put_traffic("chat", {**traffic, "weights": {"stable": 50, "canary": 50}})
    wait_ready(client, "chat")
    url, _ = gateway(client, "chat")
    key = client.request("POST", "/v1/services/chat/keys/rotate")["key"]
    headers = {"Authorization": f"Bearer {key}"}
    import time

    deadline = time.monotonic() + 5
    while True:  # the snapshot with the new weights and the new key is pushed right after the write
        try:
            counts = split(url, headers, 200)
            break
        except AssertionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert abs(counts["stable"] - 100) <= 4, counts


def test_metrics_expose_gateway_and_instance_counts(platform):
    with platform.http() as http:
        text = http.get("/metrics").text
    assert "inferstack_gateway_" in text
    assert 'inferstack_instances{service="chat",deployment="stable",role="main",state="ready"} 2' in text


def test_a_custom_image_that_cannot_run_locally_is_degraded_with_its_name(platform):
    client = platform.client()
    bad = echo_deployment("llm", image={"custom": "registry.example.com/team/llm:1.4"})
    client.apply({"services": [echo_service("custom", [bad])]})
    dep = client.wait("custom", "llm", timeout=10, until=lambda d: any(
        c["type"] == "Degraded" and c["status"] == "True" for c in d["status"].get("conditions", [])))
    degraded = next(c for c in dep["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ImageNotRunnable"
    assert "registry.example.com/team/llm:1.4" in degraded["message"] and "inventory" in degraded["message"]


def test_multi_role_entry_instances_call_the_prefill_role(platform):
    client = platform.client()
    roles = [{"name": "prefill", "compute_spec": "cpu-small", "replicas": 1,
              "rolling_update": {"max_unavailable": 0, "max_surge": 100}},
             {"name": "decode", "entry": True, "compute_spec": "cpu-small", "replicas": 1,
              "rolling_update": {"max_unavailable": 0, "max_surge": 100}}]
    dep = echo_deployment("pd", inference_mode="multi_role", roles=roles)
    for field in ("compute_spec", "replicas", "rolling_update", "probes"):
        dep.pop(field)
    client.apply({"services": [echo_service("llm", [dep])]})
    wait_ready(client, "llm")
    url, headers = gateway(client, "llm")
    import time

    deadline = time.monotonic() + 5
    while True:  # the endpoints file reaches the decode instance once prefill is ready
        answer = httpx.post(f"{url}/v1/completions", json={"prompt": "hello", "max_tokens": 3}, headers=headers,
                            timeout=10)
        if answer.status_code == 200 and "prefill" in answer.json():
            break
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.1)
    assert answer.headers["x-inferstack-instance"].startswith("llm-pd-decode-")
    assert "llm-pd-prefill-" in str(answer.json()["prefill"])


def test_private_gateway_admits_only_sources_its_security_groups_allow(platform):
    client = platform.client()
    dep = echo_deployment("main", security_group="sg-loopback")  # ingress 1024-65535 from 127.0.0.1/32 only
    client.apply({"services": [echo_service("internal", [dep], network_type="private_gateway")]})
    wait_ready(client, "internal")
    url = client.get_service("internal")["status"]["gateway_url"]
    allowed = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1"), timeout=5)
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=5)
    with allowed, other:
        assert allowed.post(f"{url}/v1/predict", json={"input": "x"}).status_code == 200  # no key needed
        refused = other.post(f"{url}/v1/predict", json={"input": "x"})
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/json")


def test_instance_logs_are_readable_through_the_api_and_the_cli(platform):
    import os
    import subprocess
    import sys

    client = platform.client()
    client.apply({"services": [echo_service("logged", [echo_deployment("main", replicas=2)])]})
    wait_ready(client, "logged")
    answer = client.request("GET", "/v1/services/logged/deployments/main/logs", params={"tail": 5})
    instances = {i["instance"]: i["lines"] for i in answer["instances"]}
    assert set(instances) == {"logged-main-main-1", "logged-main-main-2"}
    assert all(0 < len(lines) <= 5 for lines in instances.values())
    env = {**os.environ, "INFERSTACK_URL": platform.url, "INFERSTACK_TOKEN": platform.token, "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "inferstack", "logs", "logged", "main", "--tail", "3"],
                            check=False, capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "== logged-main-main-1" in result.stdout and "== logged-main-main-2" in result.stdout
    missing = platform.http().get("/v1/services/logged/deployments/nope/logs")
    assert missing.status_code == 404
