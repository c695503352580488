"""The policy pack: one policy per rule of `inferstack.spec.RULES`, fed the resources a program registers (captured on
mocks) as the engine's analyzer hands them to stack policies: each resource's final outputs — for the components,
what they register with `register_outputs` (hand-built `PolicyResource`s). The same rules run on the local and the
kubernetes target: the policies read the components, never one target's resource types. The last test starts the pack
as the engine does and calls its AnalyzeStack."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pulumi
import pytest
from inferstack_mocks import mock_session, run_program
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    StackValidationArgs,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import unknown_checking_proxy

from inferstack.components import (
    SERVICE_TYPE,
    InferenceService,
    InferenceServiceArgs,
    StackInventory,
    StackInventoryArgs,
    deploy_stack,
)
from inferstack.policy import POLICIES, policy_for
from inferstack.policy.policies import plain
from inferstack.spec import RULES, StackFile

SPEC = {
    "name": "chat", "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000],
    "deployments": [
        {"name": "stable", "image": {"preset": "inferstack/echo"}, "queue": "q-prepaid-a", "compute_spec": "cpu-small",
         "replicas": 2, "rolling_update": {"max_unavailable": 25, "max_surge": 25}, "subnet": "subnet-a",
         "security_group": "sg-lab", "weight": 90},
        {"name": "canary", "image": {"preset": "inferstack/echo"}, "queue": "q-postpaid-a",
         "compute_spec": "cpu-small", "replicas": 5, "rolling_update": {"max_unavailable": 0, "max_surge": 100},
         "autoscaling": {"metrics": [{"metric": "qps", "target": 10, "min": 1, "max": 3}]},
         "env": [{"name": "HF_TOKEN", "secret": "policy-secret"}],
         "subnet": "subnet-a", "security_group": "sg-lab", "weight": 10},
    ],
}
INVENTORY = {"security_groups": [{"name": "sg-lab", "vpc": "vpc-default",
                                  "ingress": [{"from_port": 1024, "to_port": 65535, "source": "127.0.0.1/32"}]}]}


def stack_resources(spec: dict[str, Any], inventory: dict[str, Any] = INVENTORY,
                    target: str = "local") -> list[PolicyResource]:
    """The stack as the analyzer sees it: each resource's type, URN and outputs (components: registered outputs)."""
    with mock_session() as session:
        def program() -> Any:
            inv = StackInventory("inventory", StackInventoryArgs(inventory, target))
            return InferenceService("chat", InferenceServiceArgs(service=spec, inventory=inv, validate=False,
                                                                 target=target)).status

        run_program(program)
        return [PolicyResource(typ, analyzer_props(props), urn, name, OPTS, None, None, [], {})
                for typ, name, urn, props in analyzed(session)]


OPTS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def analyzed(session: Any) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(type, name, URN, final outputs) of every resource the program registered: the components' registered
    outputs, custom resources' inputs (what the mocks echo back as outputs)."""
    out = []
    for request in session.monitor.requests:
        if request.type == "pulumi:pulumi:Stack":
            continue
        urn = session.monitor.urn(request.name, request.type)
        if request.custom:
            props = session.mocks.named(request.name, request.type).inputs
        else:
            props = session.monitor.outputs.get(urn, {})
        out.append((request.type, request.name, urn, dict(props)))
    return out


def analyzer_props(props: dict[str, Any]) -> Any:
    """Props as the analyzer hands them to stack policies: secrets unwrapped, behind its unknown-checking proxy."""
    return unknown_checking_proxy(deserialize_properties(props))


def violations(rule_id: str, resources: list[PolicyResource]) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    policy_for(rule_id).validate(StackValidationArgs(resources), lambda message, urn=None: found.append((message,
                                                                                                       urn)))
    return found


def test_there_is_one_policy_per_rule_errors_mandatory_warnings_advisory():
    assert [p.name for p in POLICIES] == list(RULES)
    levels = {p.name: p.enforcement_level for p in POLICIES}
    assert levels["subnet.zone_matches_queue"] == EnforcementLevel.MANDATORY
    assert levels["autoscaling.replicas_outside_bounds"] == EnforcementLevel.ADVISORY


def test_a_cross_object_rule_is_reported_on_the_deployment_that_breaks_it():
    spec = copy.deepcopy(SPEC)
    spec["deployments"][1]["subnet"] = "subnet-b"
    resources = stack_resources(spec)
    found = violations("subnet.zone_matches_queue", resources)
    assert len(found) == 1
    message, urn = found[0]
    assert urn is not None and urn.endswith("::chat/canary")
    assert "services[0].deployments[1].subnet" in message and "zone-a" in message


def test_the_stacks_own_inventory_counts_and_breaking_it_is_reported_on_the_object():
    assert violations("deployment.security_group_exists", stack_resources(SPEC)) == []
    broken = {"security_groups": [{**INVENTORY["security_groups"][0], "vpc": "vpc-nowhere"}]}
    found = violations("security_group.vpc_exists", stack_resources(SPEC, broken))
    assert len(found) == 1 and found[0][1] is not None and found[0][1].endswith("::sg-lab")


def test_warnings_are_reported_without_secret_values_and_a_valid_stack_has_no_errors():
    resources = stack_resources(SPEC)
    outside = violations("autoscaling.replicas_outside_bounds", resources)
    assert len(outside) == 1 and outside[0][1] is not None and outside[0][1].endswith("::chat/canary")
    everything = [v for p in POLICIES for v in violations(p.name, resources)]
    assert all("policy-secret" not in message for message, _ in everything)
    errors = [v for p in POLICIES if RULES[p.name].severity.value == "error" for v in violations(p.name, resources)]
    assert errors == []


def test_a_reference_the_platform_may_hold_is_not_a_violation():
    spec = copy.deepcopy(SPEC)
    spec["deployments"][0]["queue"] = "q-on-the-platform-only"
    assert violations("deployment.queue_exists", stack_resources(spec)) == []


def _with_unknowns(resources: list[PolicyResource], **unknown: str) -> None:
    """Make values of the canary deployment unknown in the service component's `spec`, as the analyzer receives
    values not known at preview."""
    service = next(r for r in resources if r.resource_type == SERVICE_TYPE)
    props = copy.deepcopy(plain(service.props))
    props["spec"]["deployments"][1].update(unknown)
    service.props = unknown_checking_proxy(props)


def test_a_value_not_known_at_preview_defers_its_rules_instead_of_skipping_the_pack():
    resources = stack_resources(SPEC)
    _with_unknowns(resources, subnet="04da6b54-80e4-46f7-96ec-b56ff0331ba9",  # an unknown string, as received
                   replicas="3eeb2bf0-c639-47a8-9e75-3b44932eb421")  # ... and an unknown number
    assert violations("subnet.zone_matches_queue", resources) == []
    assert violations("field.type", resources) == []
    broken = copy.deepcopy(SPEC)
    broken["deployments"][0]["subnet"] = "subnet-b"  # a known value elsewhere is still checked
    resources = stack_resources(broken)
    # (an unknown number would leave the service unparsed, deferring all its cross-object rules: strings only here)
    _with_unknowns(resources, subnet="04da6b54-80e4-46f7-96ec-b56ff0331ba9")
    assert [u.rsplit("::", 1)[1] for _, u in violations("subnet.zone_matches_queue", resources)] == ["chat/stable"]


def test_the_same_rules_run_on_the_kubernetes_target():
    broken = copy.deepcopy(SPEC)
    broken["deployments"][1]["subnet"] = "subnet-b"
    resources = stack_resources(broken, target="kubernetes")
    assert not any(r.resource_type.startswith("pulumi-python:dynamic") for r in resources)  # no platform objects
    [(message, urn)] = violations("subnet.zone_matches_queue", resources)
    assert urn is not None and urn.endswith("::chat") and SERVICE_TYPE in urn  # on the service's component
    assert "services[0].deployments[1].subnet" in message and "zone-a" in message
    assert violations("deployment.security_group_exists", resources) == []  # the declared inventory counts
    outside = violations("autoscaling.replicas_outside_bounds", resources)
    assert len(outside) == 1
    assert all("policy-secret" not in m for p in POLICIES for m, _ in violations(p.name, resources))


def test_the_prod_stack_program_is_checked_by_the_pack():
    """The kubernetes stack program of this repository (stacks/Pulumi.prod.yaml) with one rule broken."""
    import runpy
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "stacks" / "Pulumi.prod.yaml").read_text())["config"]
    config["inferstack:stack"]["services"][0]["deployments"][1]["subnet"] = "subnet-b"
    with mock_session(config), pytest.raises(pulumi.RunError, match="subnet.zone_matches_queue"):
        run_program(lambda: runpy.run_path(str(root / "stacks" / "__main__.py"), run_name="__main__") and None)
    # (the program stops first) ...
    # ...and the pack, reviewing what a program registered, finds the same on the components.
    with mock_session() as session:
        stack = StackFile.model_validate(config["inferstack:stack"])
        run_program(lambda: pulumi.Output.all(*[s.status for s in deploy_stack(stack).services.values()]))
        resources = [PolicyResource(t, analyzer_props(p), u, n, OPTS, None, None, [], {})
                     for t, n, u, p in analyzed(session)]
    found = violations("subnet.zone_matches_queue", resources)
    assert [m.split(":")[0] for m, _ in found] == ["services[0].deployments[1].subnet"]


def test_the_pack_served_as_the_engine_starts_it_reports_through_analyze_stack():
    import subprocess
    import sys

    import grpc
    from google.protobuf import empty_pb2
    from pulumi.runtime import rpc
    from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

    spec = copy.deepcopy(SPEC)
    spec["deployments"][1]["subnet"] = "subnet-b"
    with mock_session() as session:
        def program() -> Any:
            inv = StackInventory("inventory", StackInventoryArgs(INVENTORY))
            return InferenceService("chat", InferenceServiceArgs(service=spec, inventory=inv, validate=False)).status

        run_program(program)
        loop = asyncio.new_event_loop()
        resources = [analyzer_pb2.AnalyzerResource(  # secrets stay marked, as the engine sends them to analyzers
            type=typ, name=name, urn=urn, properties=loop.run_until_complete(rpc.serialize_properties(props, {})))
            for typ, name, urn, props in analyzed(session)]
        loop.close()
    process = subprocess.Popen([sys.executable, "-u", "-m", "inferstack.policy"], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=20)
            assert info.name == "inferstack" and {p.name for p in info.policies} == set(RULES)
            response = stub.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources), timeout=20)
    finally:
        process.terminate()
        process.wait(10)
    found = [(d.policyName, d.urn.rsplit("::", 1)[1], d.enforcementLevel) for d in response.diagnostics]
    assert ("subnet.zone_matches_queue", "chat/canary", analyzer_pb2.MANDATORY) in found
    assert all("policy-secret" not in d.message for d in response.diagnostics)


def test_a_production_service_with_two_deployments_is_advised_a_progressive_policy():
    levels = {p.name: p.enforcement_level for p in POLICIES}
    assert levels["progressive.advised"] == EnforcementLevel.ADVISORY
    [(message, urn)] = violations("progressive.advised", stack_resources(SPEC))
    assert urn is not None and urn.endswith("::chat") and SERVICE_TYPE in urn  # on the service's component
    assert "takes production traffic (public_gateway) with 2 deployments" in message
    gated = copy.deepcopy(SPEC)
    gated["traffic"] = {"progressive": {"steps": [10, 50, 100], "bake_time_s": 60}}
    assert violations("progressive.advised", stack_resources(gated)) == []
    private = {**copy.deepcopy(SPEC), "network_type": "private_gateway"}
    assert violations("progressive.advised", stack_resources(private)) == []
    assert violations("progressive.advised", stack_resources(SPEC, target="kubernetes"))  # both targets alike
