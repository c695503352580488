"""The dynamic providers against a real embedded platform on loopback, driven as the engine drives them.

Inputs come from the program itself (the component run on mocks: what it registers, `__provider` included), and go
through the SDK's own `DynamicResourceProviderServicer` over gRPC (see `engine.py`), in-process and once as
`python -u -m pulumi.dynamic`.

The platform here is the control plane only (no process runtime, so nothing ever becomes Ready and observed
generations do not move): the provider is configured with `inferstack:waitForReady: "false"` — it then returns once
the platform accepted a write. One test runs with `"true"` to show the wait failing with the platform's reason."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from engine import DIFF_NONE, DIFF_SOME, ProviderError, ProviderHost, Resource
from inferstack_mocks import DYNAMIC, Platform, mock_session, run_program
from pulumi.output import Unknown
from pulumi.runtime import rpc

from inferstack.components import InferenceService, InferenceServiceArgs

DEPLOYMENT = {"image": {"preset": "inferstack/echo"}, "compute_spec": "cpu-small", "replicas": 1,
              "rolling_update": {"max_unavailable": 25, "max_surge": 25}, "subnet": "subnet-a",
              "security_group": "sg-default"}


def service_spec(key: str, weights: dict[str, float], secret: str = "hf-lifecycle-secret") -> dict[str, Any]:
    deployments = []
    for i, (dkey, weight) in enumerate(weights.items()):
        dep = {"name": dkey, "queue": "q-prepaid-a" if i == 0 else "q-postpaid-a", **DEPLOYMENT, "weight": weight}
        if i == 1:
            dep["env"] = [{"name": "MODE", "value": "canary"}, {"name": "HF_TOKEN", "secret": secret}]
        deployments.append(dep)
    return {"name": key, "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000],
            "deployments": deployments}


def program_inputs(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """What the program registers for each resource ((type, name) → inputs), exactly as the engine receives it."""
    with mock_session() as session:
        run_program(lambda: InferenceService(spec["name"], InferenceServiceArgs(service=spec)).status)
        return {(r.typ.removeprefix(DYNAMIC), r.name): r.inputs for r in session.mocks.resources
                if r.typ.startswith(DYNAMIC)}


class Stack:
    """The engine's view of one service's resources while a test walks it through `up`s."""

    def __init__(self, host: ProviderHost, key: str) -> None:
        self.host, self.key = host, key
        self.service = Resource(host, self.urn("Service", key))
        self.traffic = Resource(host, self.urn("Traffic", key))
        self.deployments: dict[str, Resource] = {}

    def urn(self, kind: str, name: str) -> str:
        return f"urn:pulumi:test::inferstack::{'inferstack:index:InferenceService$'}{DYNAMIC}{kind}::{name}"

    def deployment(self, dkey: str) -> Resource:
        if dkey not in self.deployments:
            self.deployments[dkey] = Resource(self.host, self.urn("Deployment", f"{self.key}/{dkey}"))
        return self.deployments[dkey]

    def traffic_inputs(self, inputs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
        """The traffic inputs with the deployments' real uids (the engine resolves those outputs)."""
        news = dict(inputs[("Traffic", self.key)])
        news["deployment_uids"] = {k: self.deployments[k].outputs["uid"] for k in news["deployment_keys"]}
        return news

    def up(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Service, deployments, traffic in the engine's order; then deployments that left, deleted last."""
        inputs = program_inputs(spec)
        diffs = {"service": self.service.up(inputs[("Service", self.key)])}
        keys = [d.get("key") or d["name"] for d in spec["deployments"]]
        for dkey in keys:
            diffs[dkey] = self.deployment(dkey).up(inputs[("Deployment", f"{self.key}/{dkey}")])
        diffs["traffic"] = self.traffic.up(self.traffic_inputs(inputs))
        for dkey in [k for k in self.deployments if k not in keys]:
            self.deployments.pop(dkey).destroy()
        return diffs


def configure(host: ProviderHost, platform: Platform, **extra: str) -> None:
    host.configure({"inferstack:platformUrl": platform.url,
                    "inferstack:platformToken": rpc.wrap_rpc_secret(platform.token),
                    "inferstack:waitForReady": "false", **extra})


@pytest.fixture
def host():
    with ProviderHost.in_process() as made:
        yield made


@pytest.mark.parametrize("mode", ["in-process", "subprocess"])
def test_lifecycle_check_create_diff_weights_replace_update_read_delete(mode: str, platform: Platform):
    """In-process, then through `python -u -m pulumi.dynamic` started exactly as the engine starts it."""
    with ProviderHost.in_process() if mode == "in-process" else ProviderHost.subprocess() as host:
        lifecycle(host, platform, f"life-{mode[:3]}")
        if mode == "subprocess":
            assert "rules checked by the platform on apply" in host.stderr.read_text()


def lifecycle(host: ProviderHost, platform: Platform, key: str) -> None:
    configure(host, platform)
    client = platform.client()
    stack = Stack(host, key)
    spec = service_spec(key, {"stable": 90, "canary": 10})
    inputs = program_inputs(spec)

    # Check rejects a bad input with the rule id and the property path.
    bad = {**inputs[("Service", key)], "ports": [8000.0, 8000.0]}
    assert stack.service.check(bad).failures == [
        ("ports[1]", "call port 8000 is given twice [service.ports_unique]")]
    bad_dep = {**inputs[("Deployment", f"{key}/stable")], "priority": 12.0}
    failures = stack.deployment("stable").check(bad_dep).failures
    assert [p for p, _ in failures] == ["priority"] and "[priority.range]" in failures[0][1]

    # Create in the engine's order: the service, the deployments — the new one at weight 0 until it is Ready —
    # then the traffic object, which moves the weights.
    stack.service.up(inputs[("Service", key)])
    stack.deployment("stable").up(inputs[("Deployment", f"{key}/stable")])
    stack.deployment("canary").up(inputs[("Deployment", f"{key}/canary")])
    assert client.get_traffic(key)["spec"]["weights"] == {"stable": 100.0, "canary": 0.0}
    stack.traffic.up(stack.traffic_inputs(inputs))
    assert client.get_traffic(key)["spec"]["weights"] == {"stable": 90.0, "canary": 10.0}
    assert stack.service.outputs["uid"] == client.get_service(key)["metadata"]["uid"]
    canary = client.get_deployment(key, "canary")
    assert canary["spec"]["env"][1] == {"name": "HF_TOKEN", "secret": "[secret]"}  # stored, never shown

    # Identical inputs: no diff anywhere (no perpetual diff from defaults, floats or secrets).
    again = stack.up(spec)
    assert all(d is not None and d.changes == DIFF_NONE for d in again.values()), again

    # 90/10 → 33.33/33.33/33.34 over three deployments → and back: each settles, then diffs to nothing.
    thirds = service_spec(key, {"stable": 33.33, "canary": 33.33, "third": 33.34})
    stack.up(thirds)
    assert client.get_traffic(key)["spec"]["weights"] == {"stable": 33.33, "canary": 33.33, "third": 33.34}
    assert stack.traffic.diff(stack.traffic_inputs(program_inputs(thirds))).changes == DIFF_NONE
    stack.traffic.refresh()
    assert stack.traffic.diff(stack.traffic_inputs(program_inputs(thirds))).changes == DIFF_NONE
    back = stack.up(spec)  # traffic leaves `third` first, then `third` is deleted
    assert back["traffic"].changes == DIFF_SOME
    assert "third" not in stack.deployments
    assert [d["metadata"]["key"] for d in client.list_deployments(key)] == ["stable", "canary"]
    assert all(d.changes == DIFF_NONE for d in stack.up(spec).values())

    # A weight change is an in-place update of the traffic object alone.
    shifted = service_spec(key, {"stable": 80, "canary": 20})
    diff = stack.traffic.diff(stack.traffic_inputs(program_inputs(shifted)))
    assert diff.changes == DIFF_SOME and diff.replaces == [] and not diff.delete_before_replace
    assert all(stack.deployment(k).diff(program_inputs(shifted)[("Deployment", f"{key}/{k}")]).changes == DIFF_NONE
               for k in ("stable", "canary"))

    # A resource-group change is a replace of the service, deleting first (its key is its identity).
    moved = {**copy.deepcopy(spec), "resource_group": "rg-other"}
    diff = stack.service.diff(program_inputs_unchecked(moved)[("Service", key)])
    assert diff.changes == DIFF_SOME and diff.replaces == ["resource_group"] and diff.delete_before_replace
    # ...and the engine, asking the deployments with their `service_key` not known yet, replaces them too.
    pending = {**program_inputs(spec)[("Deployment", f"{key}/stable")], "service_key": Unknown()}
    assert stack.deployment("stable").diff(pending).replaces == ["service_key"]

    # Update: the weights move on the platform.
    stack.up(shifted)
    assert client.get_traffic(key)["spec"]["weights"] == {"stable": 80.0, "canary": 20.0}
    replicas = service_spec(key, {"stable": 80, "canary": 20})
    replicas["deployments"][0]["replicas"] = 2
    assert stack.up(replicas)["stable"].changes == DIFF_SOME
    assert client.get_deployment(key, "stable")["spec"]["replicas"] == 2

    # Read after changes behind our back: refresh shows them, and the next up would put them back.
    traffic = client.get_traffic(key)
    client.put_traffic(key, {**traffic["spec"], "weights": {"stable": 50, "canary": 50}})
    deployment = client.get_deployment(key, "canary")
    client.put_deployment(key, "canary", {**deployment["spec"], "replicas": 3})
    assert stack.traffic.refresh()["weights"] == {"stable": 50.0, "canary": 50.0}
    assert stack.deployment("canary").refresh()["replicas"] == 3.0
    assert stack.deployment("canary").outputs["env"][1]["secret"] == "hf-lifecycle-secret"  # masked live: kept
    assert stack.traffic.diff(stack.traffic_inputs(program_inputs(replicas))).changes == DIFF_SOME
    assert stack.deployment("canary").diff(program_inputs(replicas)[("Deployment", f"{key}/canary")]).changes \
        == DIFF_SOME
    stack.up(replicas)
    assert client.get_traffic(key)["spec"]["weights"] == {"stable": 80.0, "canary": 20.0}

    # Delete: a deployment that still takes traffic moves its weight away first (the platform answers 409
    # otherwise), then goes; then the traffic (nothing to delete), the last deployment, the service.
    stack.deployment("canary").destroy()
    assert client.get_traffic(key)["spec"]["weights"] == {"stable": 100.0}
    stack.traffic.destroy()
    stack.deployment("stable").destroy()
    outputs = stack.service.outputs
    stack.service.destroy()
    assert host.read(stack.service.urn, key, outputs)[0] == ""  # gone: the engine drops it from state
    assert all(s["metadata"]["key"] != key for s in client.list_services())


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
    assert "the platform rejected the change (HTTP 422)" in caught.value.details
    assert "[subnet.zone_matches_queue] at services[0].deployments[0].subnet" in caught.value.details
    stack.service.destroy()


def program_inputs_unchecked(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Program inputs without the program's own validation (to show what the platform says on its own)."""
    with mock_session() as session:
        run_program(lambda: InferenceService(spec["name"], InferenceServiceArgs(service=spec, validate=False)).status)
        return {(r.typ.removeprefix(DYNAMIC), r.name): r.inputs for r in session.mocks.resources
                if r.typ.startswith(DYNAMIC)}


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
    for res in [stack.traffic, *stack.deployments.values(), stack.service]:
        res.destroy()


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
    with mock_session() as session:
        from inferstack.components import StackInventory, StackInventoryArgs

        run_program(lambda: StackInventory("inventory", StackInventoryArgs({
            "resource_groups": [{"name": "rg-lab"}],
            "queues": [{"name": "q-lab", "resource_group": "rg-lab", "zone": "zone-a", "billing": "postpaid",
                        "capacity": {"cpu-small": 4}}]})).urn)
        inputs = {r.name: r.inputs for r in session.mocks.resources if r.typ.startswith(DYNAMIC)}
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
