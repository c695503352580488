"""Pulumi `up` and a progressive traffic shift, through the SDK's provider servicer against a real platform: `up`
waits for the release's outcome and fails with the gate that failed; the failed release leaves the declared spec live
(the next preview shows no change, and says what is live and why); raising `progressive.retry` tries again."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from engine import DIFF_NONE, DIFF_SOME, ProviderError, ProviderHost
from inferstack_mocks import Platform
from stack_driver import Stack, configure, program_inputs, service_spec

POLICY = {"steps": [10, 50, 100], "bake_time_s": 0.3, "gates": {"max_error_rate": 1, "min_requests": 10}}


@pytest.fixture
def host() -> Iterator[ProviderHost]:
    with ProviderHost.in_process() as made:
        yield made


def spec(weights: dict[str, float], retry: int = 0) -> dict:
    out = service_spec("shifted", weights)
    out["deployments"][1]["env"].append({"name": "ECHO_FAILURE_RATE", "value": "0.25"})
    out["traffic"] = {"progressive": {**POLICY, "retry": retry}}
    return out


class Traffic(threading.Thread):
    """Requests to the service's gateway while the shift runs (the gates need them)."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.stop = url, key, threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=5) as http:
            while not self.stop.is_set():
                try:
                    http.post("/v1/predict", json={"input": "x"})
                except httpx.HTTPError:
                    time.sleep(0.01)


def test_up_waits_for_the_shift_and_fails_with_the_gate_then_the_preview_says_why(host: ProviderHost,
                                                                                 platform: Platform, capfd):
    configure(host, platform, **{"inferstack:waitForReady": "true", "inferstack:readyTimeout": "30"})
    client = platform.client()
    stack = Stack(host, "shifted")
    stack.up(spec({"stable": 100, "canary": 0}))
    url = client.get_service("shifted")["status"]["gateway_url"]
    load = Traffic(url, client.request("GET", "/v1/services/shifted/keys")["key"])
    load.start()
    try:
        with pytest.raises(ProviderError) as caught:
            stack.up(spec({"stable": 0, "canary": 100}))
        assert "traffic of service 'shifted' is degraded" in caught.value.details
        assert "ReleaseRolledBack" in caught.value.details and "canary: error rate" in caught.value.details
        live = client.get_traffic("shifted")
        assert live["spec"]["weights"] == {"stable": 0, "canary": 100}  # written: the declared spec is live
        assert live["status"]["live_weights"] == {"stable": 100, "canary": 0}

        capfd.readouterr()
        inputs = program_inputs(spec({"stable": 0, "canary": 100}))
        assert stack.traffic.diff(stack.traffic_inputs(inputs)).changes == DIFF_NONE  # nothing to write again...
        said = capfd.readouterr().err
        assert "shifted/traffic: the release of generation" in said and "rolled back at step 1 of 3 (10 %)" in said
        assert "live weights canary 0, stable 100" in said and "does not retry it" in said  # ...and it says why

        retried = program_inputs(spec({"stable": 0, "canary": 100}, retry=1))
        assert stack.traffic.diff(stack.traffic_inputs(retried)).changes == DIFF_SOME  # a new value of `retry`
        with pytest.raises(ProviderError):
            stack.up(spec({"stable": 0, "canary": 100}, retry=1))
        reasons = [e["reason"] for e in client.events("shifted") if e.get("action") == "event"
                   and e["reason"] == "ReleaseStarted"]
        assert len(reasons) == 2
    finally:
        load.stop.set()
        load.join()
    back = spec({"stable": 100, "canary": 0}, retry=1)
    stack.up(back)  # the declared weights back where they are live: nothing to shift, Ready at once
    live = client.get_traffic("shifted")
    assert live["status"]["live_weights"] == {"stable": 100, "canary": 0}
    assert live["status"]["release"]["phase"] == "Superseded" and "nothing to shift" in live["status"]["release"][
        "reason"]
    plain = copy.deepcopy(back)
    del plain["traffic"]["progressive"]
    plain["deployments"][0]["weight"], plain["deployments"][1]["weight"] = 30, 70
    stack.up(plain)  # no policy any more: the declared weights apply at once
    assert client.get_traffic("shifted")["status"].get("live_weights") is None
    stack.destroy()
