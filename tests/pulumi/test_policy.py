"""The policy pack: one policy per rule of `inferstack.spec.RULES`, fed the resources a program registers (captured on
mocks) as the engine's analyzer would hand them over (hand-built `PolicyResource`s). The pack's gRPC server itself
(`inferstack/policy/__main__.py`) is not started here."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

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

from inferstack.components import InferenceService, InferenceServiceArgs, StackInventory, StackInventoryArgs
from inferstack.policy import POLICIES, policy_for
from inferstack.spec import RULES

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


def stack_resources(spec: dict[str, Any], inventory: dict[str, Any] = INVENTORY) -> list[PolicyResource]:
    """The stack as the analyzer sees it: each resource's type, URN and properties (outputs)."""
    with mock_session() as session:
        def program() -> Any:
            inv = StackInventory("inventory", StackInventoryArgs(inventory))
            return InferenceService("chat", InferenceServiceArgs(service=spec, inventory=inv, validate=False)).status

        run_program(program)
        urns = {(u.split("::")[2].rsplit("$", 1)[-1], u.rsplit("::", 1)[1]): u for u in session.monitor.resources}
        outputs = {(r.typ, r.name): r for r in session.mocks.resources}
        opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
        return [PolicyResource(typ, analyzer_props({**args.inputs, "uid": f"uid-{name}"}), urns[(typ, name)], name,
                               opts, None, None, [], {}) for (typ, name), args in outputs.items()]


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


def test_a_value_not_known_at_preview_defers_its_rules_instead_of_skipping_the_pack():
    resources = stack_resources(SPEC)
    canary = next(r for r in resources if r.name == "chat/canary")
    props = dict(canary.props["__target"])
    props["subnet"] = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # how the analyzer receives an unknown string
    props["replicas"] = "3eeb2bf0-c639-47a8-9e75-3b44932eb421"  # ... and an unknown number
    canary.props = unknown_checking_proxy(props)
    assert violations("subnet.zone_matches_queue", resources) == []
    assert violations("field.type", resources) == []
    broken = copy.deepcopy(SPEC)
    broken["deployments"][0]["subnet"] = "subnet-b"  # a known value elsewhere is still checked
    resources = stack_resources(broken)
    # (an unknown number would leave the service unparsed, deferring all its cross-object rules: strings only here)
    next(r for r in resources if r.name == "chat/canary").props = unknown_checking_proxy(
        {**props, "replicas": 5.0})
    assert [u.rsplit("::", 1)[1] for _, u in violations("subnet.zone_matches_queue", resources)] == ["chat/stable"]


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
        urns = {u.rsplit("::", 1)[1]: u for u in session.monitor.resources}
        loop = asyncio.new_event_loop()
        resources = [analyzer_pb2.AnalyzerResource(  # secrets stay marked, as the engine sends them to analyzers
            type=r.typ, name=r.name, urn=urns[r.name],
            properties=loop.run_until_complete(rpc.serialize_properties(r.inputs, {})))
            for r in session.mocks.resources]
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
