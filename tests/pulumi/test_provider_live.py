"""`diff` against the live platform: what the preview shows is what `up` does.

- a change made behind Pulumi's back shows in the next diff (no refresh needed), and `up` undoes it;
- a failed update (written, then its readiness wait failed: the engine keeps the old state) followed by a revert of the
  program converges the platform back, because the revert diffs against what is live;
- status-owned values (autoscaled counts, generations) and values the platform fills never count as drift;
- weights at the documented precision (0.01 points) reach the platform and show in refresh and diff;
- the legacy `Default` redeploy and the traffic rewrite of a replaced deployment show in the preview."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from engine import DIFF_NONE, DIFF_SOME, ProviderError, ProviderHost
from inferstack_mocks import Platform
from pulumi.output import Unknown
from stack_driver import Stack, configure, program_inputs, service_spec


@pytest.fixture
def host() -> Iterator[ProviderHost]:
    with ProviderHost.in_process() as made:
        yield made


@pytest.fixture(scope="module")
def engine_host(platform: Platform) -> Iterator[ProviderHost]:
    """The engine's own provider process: what it says on stderr is what the CLI shows as info."""
    with ProviderHost.subprocess() as made:
        configure(made, platform)
        yield made


def test_an_out_of_band_change_shows_in_the_next_diff_and_up_undoes_it(host: ProviderHost, platform: Platform):
    configure(host, platform)
    client = platform.client()
    stack = Stack(host, "drift")
    spec = service_spec("drift", {"stable": 90, "canary": 10})
    stack.up(spec)
    inputs = program_inputs(spec)
    dep = client.get_deployment("drift", "canary")
    client.put_deployment("drift", "canary", {**dep["spec"], "replicas": 3})  # behind Pulumi's back, no refresh
    client.put_traffic("drift", {**client.get_traffic("drift")["spec"], "weights": {"stable": 50, "canary": 50}})
    client.put_service("drift", {**client.get_service("drift")["spec"], "description": "edited by hand"})
    assert stack.deployment("canary").diff(inputs[("Deployment", "drift/canary")]).changes == DIFF_SOME
    assert stack.traffic.diff(stack.traffic_inputs(inputs)).changes == DIFF_SOME
    assert stack.service.diff(inputs[("Service", "drift")]).changes == DIFF_SOME
    assert stack.deployment("stable").diff(inputs[("Deployment", "drift/stable")]).changes == DIFF_NONE
    stack.up(spec)
    assert client.get_deployment("drift", "canary")["spec"]["replicas"] == 1
    assert client.get_traffic("drift")["spec"]["weights"] == {"stable": 90.0, "canary": 10.0}
    assert "description" not in client.get_service("drift")["spec"]
    assert all(d.changes == DIFF_NONE for d in stack.up(spec).values())
    stack.destroy()


def test_a_failed_update_followed_by_a_revert_converges_the_platform_back(host: ProviderHost, platform: Platform):
    configure(host, platform, **{"inferstack:waitForReady": "true", "inferstack:readyTimeout": "30"})
    client = platform.client()
    stack = Stack(host, "revert")
    good = service_spec("revert", {"stable": 100})
    stack.up(good)
    broken = copy.deepcopy(good)
    broken["deployments"][0]["image"] = {"custom": "registry.example.com/team/llm:2"}
    with pytest.raises(ProviderError) as caught:
        stack.up(broken)  # written, then Degraded: the update fails and the engine keeps the old state
    assert "ImageNotRunnable" in caught.value.details
    assert client.get_deployment("revert", "stable")["spec"]["image"] == {"custom": "registry.example.com/team/llm:2"}
    # The program is reverted: its inputs equal the state's again, yet the preview shows the change to make...
    assert stack.deployment("stable").diff(program_inputs(good)[("Deployment", "revert/stable")]).changes == DIFF_SOME
    stack.up(good)  # ...and up carries it out
    live = client.get_deployment("revert", "stable")
    assert live["spec"]["image"] == {"preset": "inferstack/echo"}
    assert {c["type"]: c["status"] for c in live["status"]["conditions"]}["Ready"] == "True"
    assert all(d.changes == DIFF_NONE for d in stack.up(good).values())
    stack.destroy()


def test_status_owned_and_platform_filled_values_never_drift(host: ProviderHost, platform: Platform):
    configure(host, platform)
    client = platform.client()
    stack = Stack(host, "owned")
    spec = service_spec("owned", {"stable": 100})
    spec["deployments"][0].pop("replicas")
    spec["deployments"][0]["autoscaling"] = {"metrics": [{"metric": "qps", "target": 10, "min": 1, "max": 3}]}
    stack.up(spec)
    dep = client.get_deployment("owned", "stable")
    client.put_deployment("owned", "stable", {**dep["spec"], "replicas": 2})  # a starting count: no change at all
    for grace in (31, 30):  # generations move with writes; back where the program has it
        client.put_deployment("owned", "stable", {**client.get_deployment("owned", "stable")["spec"],
                                                  "graceful_shutdown_s": grace})
    live = client.get_deployment("owned", "stable")
    assert live["metadata"]["generation"] == 3 and live["status"]["roles"]  # status counts the instances
    assert live["spec"]["priority"] == 5  # and the platform filled in the defaults the program left out
    assert all(d.changes == DIFF_NONE for d in stack.up(spec).values())
    stack.destroy()


def test_weights_at_the_documented_precision_reach_the_platform_and_show(host: ProviderHost, platform: Platform):
    configure(host, platform)
    client = platform.client()
    stack = Stack(host, "fine")
    stack.up(service_spec("fine", {"stable": 100, "canary": 0}))
    finer = service_spec("fine", {"stable": 99.96, "canary": 0.04})
    assert stack.traffic.diff(stack.traffic_inputs(program_inputs(finer))).changes == DIFF_SOME
    stack.up(finer)
    assert client.get_traffic("fine")["spec"]["weights"] == {"stable": 99.96, "canary": 0.04}
    client.put_traffic("fine", {**client.get_traffic("fine")["spec"], "weights": {"stable": 99.95, "canary": 0.05}})
    assert stack.traffic.refresh()["weights"] == {"stable": 99.95, "canary": 0.05}
    assert stack.traffic.diff(stack.traffic_inputs(program_inputs(finer))).changes == DIFF_SOME
    stack.up(finer)
    assert client.get_traffic("fine")["spec"]["weights"] == {"stable": 99.96, "canary": 0.04}
    below = service_spec("fine", {"stable": 99.964, "canary": 0.036})  # finer than the precision: the same split
    assert stack.traffic.diff(stack.traffic_inputs(program_inputs(below))).changes == DIFF_NONE
    stack.destroy()


FLAT = {"name": "legacy", "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000],
        "image": {"preset": "inferstack/echo"}, "queue": "q-prepaid-a", "compute_spec": "cpu-small", "replicas": 1,
        "rolling_update": {"max_unavailable": 25, "max_surge": 25}, "subnet": "subnet-a",
        "security_group": "sg-default"}


def _listed(**default: object) -> dict:
    inline = {k: v for k, v in FLAT.items() if k not in ("name", "resource_group", "vpc", "ports")}
    return {**{k: FLAT[k] for k in ("name", "resource_group", "vpc", "ports")},
            "deployments": [{"name": "Default", "key": "default", **inline, **default, "weight": 100},
                            {"name": "canary", **inline, "queue": "q-postpaid-a", "weight": 0}]}


def test_the_legacy_conversion_shows_in_the_preview_and_redeploys_default_once(engine_host: ProviderHost,
                                                                                platform: Platform):
    host = engine_host
    client = platform.client()
    stack = Stack(host, "legacy")
    stack.up(FLAT)
    listed = _listed()
    default = stack.deployment("default")
    # Preview: Default's own inputs do not change, yet `up` redeploys it: the diff says so.
    assert default.diff(program_inputs(listed)[("Deployment", "legacy/default")]).changes == DIFF_SOME
    assert "redeploys Default (legacy conversion: first added deployment 'canary')" in host.stderr.read_text()
    stack.up(listed)  # (its diff says so again: the engine diffs in `up` too)
    said = host.stderr.read_text().count("legacy conversion")
    assert client.get_service("legacy")["status"]["converted"] is True
    assert client.get_deployment("legacy", "default")["status"]["redeploy_generation"] == 2
    assert all(d.changes == DIFF_NONE for d in stack.up(listed).values())
    # Afterwards, Default follows the usual rules: a replicas edit is an update that keeps its instances.
    more = _listed(replicas=2)
    assert default.diff(program_inputs(more)[("Deployment", "legacy/default")]).changes == DIFF_SOME
    stack.up(more)
    assert client.get_deployment("legacy", "default")["metadata"]["generation"] == 3
    assert client.get_deployment("legacy", "default")["status"]["redeploy_generation"] == 2
    assert host.stderr.read_text().count("legacy conversion") == said  # never again
    stack.destroy()


def test_a_first_edit_of_default_is_the_conversion_too(engine_host: ProviderHost, platform: Platform):
    host = engine_host
    client = platform.client()
    stack = Stack(host, "edited")
    flat = {**FLAT, "name": "edited"}
    stack.up(flat)
    edited = {**flat, "replicas": 2}
    assert stack.deployment("default").diff(program_inputs(edited)[("Deployment", "edited/default")]).changes == \
        DIFF_SOME
    assert "redeploys Default (legacy conversion: first edit of Default)" in host.stderr.read_text()
    stack.up(edited)
    assert client.get_deployment("edited", "default")["status"]["redeploy_generation"] == 2
    stack.destroy()


def test_a_replaced_deployment_shows_its_traffic_rewrite_in_the_preview(host: ProviderHost, platform: Platform):
    configure(host, platform)
    stack = Stack(host, "forced")
    spec = service_spec("forced", {"stable": 70, "canary": 30})
    stack.up(spec)
    news = stack.traffic_inputs(program_inputs(spec))
    # Preview of `up --replace <canary>`: a deployment created again has no id (nor uid) yet...
    replaced = {**news, "deployment_ids": {**news["deployment_ids"], "canary": Unknown()},
                "deployment_uids": {**news["deployment_uids"], "canary": Unknown()}}
    assert stack.traffic.diff(replaced).changes == DIFF_SOME  # its weight moves away and back: shown
    # ...while an updated one keeps its id: no traffic change of its own.
    updated = {**news, "deployment_uids": {**news["deployment_uids"], "canary": Unknown()}}
    assert stack.traffic.diff(updated).changes == DIFF_NONE
    stack.destroy()
