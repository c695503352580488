"""The dynamic providers against a real embedded platform on loopback, driven as the engine drives them.

Inputs come from the program itself (the component run on mocks: what it registers, `__provider` included), and go
through the SDK's own `DynamicResourceProviderServicer` over gRPC (see `engine.py`), in-process and once as
`python -u -m pulumi.dynamic`.

The platform here is the control plane only (no process runtime, so nothing ever becomes Ready and observed
generations do not move): the provider is configured with `inferstack:waitForReady: "false"` — it then returns once
the platform accepted a write. One test runs with `"true"` to show the wait failing with the platform's reason."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from engine import DIFF_NONE, DIFF_SOME, ProviderError, ProviderHost, Resource
from inferstack_mocks import DYNAMIC, Platform
from pulumi.output import Unknown
from stack_driver import (
    Stack,
    configure,
    inventory_inputs,
    lifecycle,
    program_inputs,
    program_inputs_unchecked,
    service_spec,
)


@pytest.fixture
def host():
    with ProviderHost.in_process() as made:
        yield made


@pytest.mark.parametrize("mode", ["in-process", "subprocess"])
def test_lifecycle_check_create_diff_weights_replace_update_read_delete(mode: str, platform: Platform):
    """In-process, then through `python -u -m pulumi.dynamic` started exactly as the engine starts it."""
    with ProviderHost.in_process() if mode == "in-process" else ProviderHost.subprocess() as host:
        lifecycle(host, platform, f"life-{mode[:3]}")
        if mode == "subprocess":  # deferred rules are the program's to state, once: no line per check
            assert "rules checked by the platform" not in host.stderr.read_text()


def test_a_platform_rejection_names_the_rules_broken(host: ProviderHost, platform: Platform):
    configure(host, platform)
    stack = Stack(host, "rejected")
    spec = service_spec("rejected", {"stable": 100})
    spec["deployments"][0]["subnet"] = "subnet-b"  # zone-b; the queue is in zone-a: only the platform knows
    inputs = program_inputs_unchecked(spec)
    stack.service.up(inputs[("Service", "rejected")])
    checked = stack.deployment("stable").check(inputs[("Deployment", "rejected/stable")])
    assert checked.failures == []  # a cross-object rule: deferred to the platform
    with pytest.raises(ProviderError) as caught:
        stack.deployment("stable").up(inputs[("Deployment", "rejected/stable")])
    assert "create deployment 'rejected/stable': the platform refused it (HTTP 422)" in caught.value.details
    assert "- error: deployment 'rejected/stable' subnet: subnet 'subnet-b' is in zone 'zone-b'" in \
        caught.value.details and "[subnet.zone_matches_queue]" in caught.value.details
    stack.service.destroy()


def test_create_waits_until_the_runtime_reports_ready(host: ProviderHost, platform: Platform):
    """waitForReady: Create returns only once the instances run and the generation is observed."""
    configure(host, platform, **{"inferstack:waitForReady": "true", "inferstack:readyTimeout": "30"})
    stack = Stack(host, "ready")
    stack.up(service_spec("ready", {"stable": 100}))
    dep = platform.client().get_deployment("ready", "stable")
    assert dep["status"]["observed_generation"] == dep["metadata"]["generation"]
    assert dep["status"]["roles"]["main"]["ready"] == 1
    assert {c["type"]: c["status"] for c in dep["status"]["conditions"]}["Ready"] == "True"
    stack.traffic.destroy()
    stack.deployment("stable").destroy()
    stack.service.destroy()


def test_waiting_for_ready_fails_with_the_platforms_reason(host: ProviderHost, platform: Platform):
    """An image the local platform cannot run: Create fails with the Degraded reason, not a silent timeout."""
    configure(host, platform, **{"inferstack:waitForReady": "true", "inferstack:readyTimeout": "20"})
    stack = Stack(host, "waiting")
    spec = service_spec("waiting", {"stable": 100})
    spec["deployments"][0]["image"] = {"custom": "registry.example.com/team/llm:1.4"}
    inputs = program_inputs(spec)
    stack.service.up(inputs[("Service", "waiting")])
    with pytest.raises(ProviderError) as caught:
        stack.deployment("stable").up(inputs[("Deployment", "waiting/stable")])
    assert "ImageNotRunnable" in caught.value.details
    assert "registry.example.com/team/llm:1.4" in caught.value.details
    # The create failed, so the engine records nothing: the provider removed what it wrote (point 4).
    assert "removed again, so nothing is left behind" in caught.value.details
    assert platform.client().list_deployments("waiting") == []
    platform.client().delete_service("waiting")


def test_values_not_known_at_preview_pass_check_and_diff_as_changes(host: ProviderHost, platform: Platform):
    configure(host, platform)
    inputs = program_inputs(service_spec("preview", {"stable": 100}))
    news = {**inputs[("Deployment", "preview/stable")], "subnet": Unknown(), "replicas": Unknown()}
    res = Resource(host, "urn:pulumi:test::inferstack::x::preview/stable")
    assert res.check(news).failures == []
    old = inputs[("Deployment", "preview/stable")]
    diff = host.diff(res.urn, "preview/stable", {k: v for k, v in old.items() if k != "__provider"}, news)
    assert diff.changes == DIFF_SOME and diff.replaces == []


def test_a_replaced_deployment_gets_its_weight_back_through_the_traffic_update(host: ProviderHost, platform: Platform):
    configure(host, platform)
    client = platform.client()
    stack = Stack(host, "again")
    spec = service_spec("again", {"stable": 70, "canary": 30})
    stack.up(spec)
    # What the engine does for a delete-before-replace of `canary`: delete (its weight moves away), create anew
    # (at weight 0) — and the traffic's inputs now carry the new uid, so it updates and restores 70/30.
    canary = stack.deployment("canary")
    old_uid = canary.outputs["uid"]
    inputs = canary.inputs
    canary.destroy()
    assert client.get_traffic("again")["spec"]["weights"] == {"stable": 100.0}
    canary.up(inputs)
    assert canary.outputs["uid"] != old_uid
    assert client.get_traffic("again")["spec"]["weights"] == {"stable": 100.0, "canary": 0.0}
    assert stack.up(spec)["traffic"].changes == DIFF_SOME
    assert client.get_traffic("again")["spec"]["weights"] == {"stable": 70.0, "canary": 30.0}
    stack.destroy()


def test_destroy_deletes_deployments_in_parallel_without_dropping_a_request(host: ProviderHost, platform: Platform):
    configure(host, platform)
    client = platform.client()
    stack = Stack(host, "gone")
    spec = service_spec("gone", {"a": 40, "b": 30, "c": 30})
    stack.up(spec)
    stack.traffic.destroy()  # the engine deletes dependents first: the traffic object (nothing to delete)
    seen: list[dict[str, float]] = []
    with ThreadPoolExecutor(3) as pool:  # then the deployments, which do not depend on each other, at once
        done = [pool.submit(res.destroy) for res in stack.deployments.values()]
        while not all(f.done() for f in done):
            weights = client.get_traffic("gone")["spec"]["weights"]
            if weights:
                seen.append(weights)
        for f in done:
            f.result()
    assert client.list_deployments("gone") == []
    # Every state the gateway could have routed by kept all the traffic on deployments that still existed.
    assert seen and all(abs(sum(w.values()) - 100) < 0.05 for w in seen)
    stack.service.destroy()


def test_declared_inventory_objects_are_created_diffed_refreshed_and_deleted(host: ProviderHost, platform: Platform):
    configure(host, platform)
    client = platform.client()
    inputs = inventory_inputs({
        "resource_groups": [{"name": "rg-lab"}],
        "queues": [{"name": "q-lab", "resource_group": "rg-lab", "zone": "zone-a", "billing": "postpaid",
                    "capacity": {"cpu-small": 4}}]})
    group = Resource(host, f"urn:pulumi:test::inferstack::inferstack:index:Inventory${DYNAMIC}ResourceGroup::rg-lab")
    queue = Resource(host, f"urn:pulumi:test::inferstack::inferstack:index:Inventory${DYNAMIC}Queue::q-lab")
    bad = {**inputs["q-lab"], "capacity": {"cpu-small": -1.0}}
    assert [p for p, _ in queue.check(bad).failures] == ["capacity.cpu-small"]
    group.up(inputs["rg-lab"])
    queue.up(inputs["q-lab"])
    assert queue.id == "q-lab" and client.get_inventory("queues", "q-lab")["spec"]["capacity"] == {"cpu-small": 4}
    assert queue.diff(inputs["q-lab"]).changes == DIFF_NONE
    bigger = {**inputs["q-lab"], "capacity": {"cpu-small": 8.0}}
    assert queue.up(bigger).replaces == []
    assert client.get_inventory("queues", "q-lab")["spec"]["capacity"] == {"cpu-small": 8}
    client.put_inventory("queues", "q-lab", {**client.get_inventory("queues", "q-lab")["spec"], "lends_idle": True})
    assert queue.refresh()["lends_idle"] is True
    with pytest.raises(ProviderError) as caught:
        group.destroy()  # the queue still names it
    assert "[queue.resource_group_exists]" in caught.value.details
    queue.destroy()
    group.destroy()
    assert all(q["metadata"]["name"] != "q-lab" for q in client.list_inventory("queues"))
