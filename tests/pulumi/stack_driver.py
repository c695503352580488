"""The engine's view of one service's resources, driven through a provider host (`engine.py`) against a real platform:
the program's own inputs (the component run on mocks), Check → Create or Diff → Update in the engine's order, and the
acceptance sequence every way of starting the provider must pass (`lifecycle`)."""

from __future__ import annotations

import copy
from typing import Any

from engine import DIFF_NONE, DIFF_SOME, ProviderHost, Resource
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
        """The traffic inputs with the deployments' real uids and ids (the engine resolves those outputs)."""
        news = dict(inputs[("Traffic", self.key)])
        news["deployment_uids"] = {k: self.deployments[k].outputs["uid"] for k in news["deployment_keys"]}
        news["deployment_ids"] = {k: self.deployments[k].id for k in news["deployment_keys"]}
        return news

    def up(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Service, deployments, traffic in the engine's order; then deployments that left, deleted last."""
        inputs = program_inputs(spec)
        diffs = {"service": self.service.up(inputs[("Service", self.key)])}
        keys = [name.split("/", 1)[1] for kind, name in inputs if kind == "Deployment"]
        for dkey in keys:
            diffs[dkey] = self.deployment(dkey).up(inputs[("Deployment", f"{self.key}/{dkey}")])
        diffs["traffic"] = self.traffic.up(self.traffic_inputs(inputs))
        for dkey in [k for k in self.deployments if k not in keys]:
            self.deployments.pop(dkey).destroy()
        return diffs

    def destroy(self) -> None:
        """`pulumi destroy`: dependents first — the traffic object, the deployments, the service."""
        for res in [self.traffic, *self.deployments.values(), self.service]:
            if res.id:
                res.destroy()


def configure(host: ProviderHost, platform: Platform, **extra: str) -> None:
    host.configure({"inferstack:platformUrl": platform.url,
                    "inferstack:platformToken": rpc.wrap_rpc_secret(platform.token),
                    "inferstack:waitForReady": "false", **extra})


def program_inputs_unchecked(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Program inputs without the program's own validation (to show what the platform says on its own)."""
    with mock_session() as session:
        run_program(lambda: InferenceService(spec["name"], InferenceServiceArgs(service=spec, validate=False)).status)
        return {(r.typ.removeprefix(DYNAMIC), r.name): r.inputs for r in session.mocks.resources
                if r.typ.startswith(DYNAMIC)}


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


def inventory_inputs(inventory: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the program registers for each declared inventory object (name → inputs)."""
    from inferstack.components import StackInventory, StackInventoryArgs

    with mock_session() as session:
        run_program(lambda: StackInventory("inventory", StackInventoryArgs(inventory)).urn)
        return {r.name: r.inputs for r in session.mocks.resources if r.typ.startswith(DYNAMIC)}
