"""The component graph on Pulumi's mocks: shape, types, parents, dependencies, URNs, secrets, the stack program.

What mocks cannot show: how the engine orders steps from these dependencies, and whether it resolves aliases —
those are the engine's, and no engine runs here."""

from __future__ import annotations

import asyncio
import base64
import copy
import runpy
from pathlib import Path
from typing import Any

import dill
import pulumi
import pytest
import yaml
from inferstack_mocks import DYNAMIC, mock_session, run_program, secret_paths
from pulumi.output import Unknown
from pulumi.runtime import rpc

from inferstack.components import (
    INVENTORY_TYPE,
    SERVICE_TYPE,
    InferenceService,
    InferenceServiceArgs,
    StackInventory,
    StackInventoryArgs,
    deploy_stack,
)
from inferstack.spec import StackFile

ROOT = Path(__file__).resolve().parents[2]

CHAT = {
    "name": "chat", "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000],
    "deployments": [
        {"name": "stable", "image": {"preset": "inferstack/echo"}, "queue": "q-prepaid-a", "compute_spec": "cpu-small",
         "replicas": 2, "rolling_update": {"max_unavailable": 25, "max_surge": 25}, "subnet": "subnet-a",
         "security_group": "sg-default", "weight": 90},
        {"name": "canary", "image": {"preset": "inferstack/echo"}, "queue": "q-postpaid-a",
         "compute_spec": "cpu-small", "replicas": 1, "rolling_update": {"max_unavailable": 0, "max_surge": 100},
         "env": [{"name": "MODE", "value": "canary"}, {"name": "HF_TOKEN", "secret": "hf-very-secret-token"}],
         "subnet": "subnet-a", "security_group": "sg-default", "weight": 10},
    ],
}
FLAT = {
    "name": "ocr", "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000],
    "image": {"preset": "inferstack/echo"}, "queue": "q-prepaid-b", "compute_spec": "cpu-small", "replicas": 2,
    "rolling_update": {"max_unavailable": 50, "max_surge": 0}, "subnet": "subnet-b", "security_group": "sg-default",
}
LIST = {
    "name": "ocr", "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000],
    "deployments": [{"name": "Default", "key": "default", **{k: FLAT[k] for k in (
        "image", "queue", "compute_spec", "replicas", "rolling_update", "subnet", "security_group")}}],
}


def build(service: Any, **kwargs: Any) -> InferenceService:
    return InferenceService(service["name"] if isinstance(service, dict) else service.name,
                            InferenceServiceArgs(service=service, **kwargs))


def test_each_deployment_and_the_traffic_are_typed_children_of_the_service(pulumi_test):
    run_program(lambda: build(CHAT).gateway_url)
    m = pulumi_test.monitor
    component = m.request("chat", "InferenceService")
    assert component.type == SERVICE_TYPE and not component.custom
    children = {(r.type, r.name) for r in m.requests if r.parent == m.urn("chat", SERVICE_TYPE)}
    assert children == {
        (DYNAMIC + "Service", "chat"), (DYNAMIC + "Deployment", "chat/stable"),
        (DYNAMIC + "Deployment", "chat/canary"), (DYNAMIC + "Traffic", "chat"),
    }


def test_traffic_depends_on_every_deployment_and_deployments_on_the_service(pulumi_test):
    run_program(lambda: build(CHAT).status)
    m = pulumi_test.monitor
    service, stable, canary = m.urn("chat", DYNAMIC + "Service"), m.urn("chat/stable"), m.urn("chat/canary")
    traffic = m.request("chat", "Traffic")
    assert {stable, canary, service} <= set(traffic.dependencies)
    # The deployment keys and uids are inputs taken from the deployments' outputs: the dependency is on the data.
    assert set(traffic.propertyDependencies["deployment_keys"].urns) == {stable, canary}
    assert set(traffic.propertyDependencies["deployment_uids"].urns) == {stable, canary}
    for name in ("chat/stable", "chat/canary"):
        dep = m.request(name)
        assert service in dep.dependencies
        assert list(dep.propertyDependencies["service_key"].urns) == [service]
        assert dep.deleteBeforeReplace
    assert m.request("chat", DYNAMIC + "Service").deleteBeforeReplace


def test_inputs_split_the_service_into_its_objects_without_weights_on_deployments(pulumi_test):
    run_program(lambda: build(CHAT).gateway_url)
    mocks = pulumi_test.mocks
    service = mocks.named("chat", DYNAMIC + "Service").inputs
    assert set(service) - {"__provider"} == {"name", "key", "resource_group", "vpc", "network_type", "ports"}
    stable = mocks.named("chat/stable").inputs
    assert stable["service_key"] == "chat" and stable["key"] == "stable" and "weight" not in stable
    assert stable["replicas"] == 2.0  # what the engine sees: numbers as floats
    traffic = mocks.named("chat", "Traffic").inputs
    assert traffic["weights"] == {"stable": 90.0, "canary": 10.0}
    assert traffic["deployment_keys"] == ["stable", "canary"]
    assert traffic["deployment_uids"] == {"stable": "uid-chat/stable", "canary": "uid-chat/canary"}


def test_component_outputs_name_the_gateway_the_deployments_and_their_status(pulumi_test):
    def program() -> pulumi.Output:
        service = build(CHAT)
        return pulumi.Output.all(service.gateway_url, service.deployment_keys, service.status)

    out = run_program(program)
    assert out == ["http://127.0.0.1:18000/chat", ["stable", "canary"],
                   {"stable": {"ready": True}, "canary": {"ready": True}}]


def _urns(service: dict[str, Any]) -> set[str]:
    with mock_session() as session:
        run_program(lambda: build(service).status)
        return {u for u in session.monitor.resources}


def test_flat_form_and_list_form_keeping_default_have_identical_urns():
    flat, listed = _urns(FLAT), _urns(LIST)
    assert flat == listed
    assert any(u.endswith("::ocr/default") for u in flat)


def test_flat_form_and_list_form_send_identical_inputs_to_every_resource(pulumi_test):
    run_program(lambda: build(FLAT).status)
    flat = {(r.typ, r.name): r.inputs for r in pulumi_test.mocks.resources}
    with mock_session() as session:
        run_program(lambda: build(LIST).status)
        listed = {(r.typ, r.name): r.inputs for r in session.mocks.resources}
    assert flat == listed  # `__provider` included: nothing would even diff


def test_secret_env_values_are_sent_as_secrets_and_kept_secret_in_outputs(pulumi_test, caplog):
    run_program(lambda: build(CHAT).status)
    canary = pulumi_test.monitor.request("chat/canary")
    assert "env[1].secret" in secret_paths(canary.object)
    assert "env[0].value" not in secret_paths(canary.object)  # plain values stay readable in diffs
    assert list(canary.additionalSecretOutputs) == ["env"]
    assert not pulumi_test.monitor.request("chat/stable").additionalSecretOutputs
    assert "hf-very-secret-token" not in caplog.text


def test_a_secret_given_as_a_pulumi_output_stays_secret(pulumi_test):
    spec = copy.deepcopy(CHAT)
    spec["deployments"][1]["env"][1]["secret"] = pulumi.Output.secret("from-config")
    run_program(lambda: build(spec).status)
    canary = pulumi_test.monitor.request("chat/canary")
    assert "env[1].secret" in secret_paths(canary.object)


def test_provider_is_pickled_without_state_and_identically_for_every_resource(pulumi_test):
    run_program(lambda: build(CHAT).status)
    providers = {r.name: rpc.unwrap_rpc_secret(r.inputs["__provider"]) for r in pulumi_test.mocks.of_type("Deployment")}
    assert providers["chat/stable"] == providers["chat/canary"]  # no per-resource state: `__provider` never diffs
    provider = dill.loads(base64.b64decode(providers["chat/stable"]))
    assert vars(provider) == {}
    assert type(provider).__module__ == "inferstack.targets.local.providers"


def _unknown_output() -> pulumi.Output:
    """What another resource's output is during a first preview: not known."""
    value: asyncio.Future = asyncio.Future()
    value.set_result(None)
    known: asyncio.Future = asyncio.Future()
    known.set_result(False)
    return pulumi.Output(set(), value, known)


def test_an_input_not_known_at_preview_defers_its_rules_and_reaches_the_provider_unknown(caplog):
    caplog.set_level("INFO")
    with mock_session(preview=True) as session:
        def program() -> Any:
            spec = copy.deepcopy(CHAT)
            spec["deployments"][0]["subnet"] = _unknown_output()
            return build(spec).status

        run_program(program)
        stable = session.mocks.named("chat/stable").inputs
    assert isinstance(stable["subnet"], Unknown)
    assert "deferred" in caplog.text and "deployment.subnet_exists" in caplog.text
    assert "deployments[0].subnet" in caplog.text


def test_a_service_breaking_a_rule_stops_the_program_naming_the_rule(pulumi_test):
    spec = copy.deepcopy(CHAT)
    spec["deployments"][1]["subnet"] = "subnet-b"  # zone-b, but the queue is in zone-a
    with pytest.raises(pulumi.RunError, match=r"subnet\.zone_matches_queue"):
        run_program(lambda: build(spec).status)


def test_a_reference_outside_the_known_inventory_is_deferred_not_an_error(pulumi_test, caplog):
    caplog.set_level("INFO")
    spec = copy.deepcopy(CHAT)
    spec["deployments"][1]["queue"] = "q-only-on-the-platform"
    run_program(lambda: build(spec).status)
    assert "deferred" in caplog.text and "deployment.queue_exists" in caplog.text


def test_declared_inventory_objects_are_resources_the_service_depends_on(pulumi_test):
    inventory = {
        "resource_groups": [{"name": "rg-gpu"}],
        "queues": [{"name": "q-gpu", "resource_group": "rg-gpu", "zone": "zone-a", "billing": "postpaid",
                    "capacity": {"cpu-small": 8}}],
        "security_groups": [{"name": "sg-chat", "vpc": "vpc-default",
                             "ingress": [{"from_port": 1024, "to_port": 65535, "source": "127.0.0.1/32"}]}],
    }
    spec = copy.deepcopy(CHAT)
    spec["resource_group"] = "rg-gpu"
    for d in spec["deployments"]:
        d.update(queue="q-gpu", security_group="sg-chat")

    def program() -> Any:
        inv = StackInventory("inventory", StackInventoryArgs(inventory))
        return build(spec, inventory=inv).status

    run_program(program)
    m = pulumi_test.monitor
    assert {(r.type, r.name) for r in m.requests if r.parent == m.urn("inventory", INVENTORY_TYPE)} == {
        (DYNAMIC + "ResourceGroup", "rg-gpu"), (DYNAMIC + "Queue", "q-gpu"), (DYNAMIC + "SecurityGroup", "sg-chat")}
    assert m.urn("rg-gpu") in m.request("q-gpu").dependencies
    assert m.urn("rg-gpu") in m.request("chat", DYNAMIC + "Service").dependencies
    stable = m.request("chat/stable").dependencies
    assert m.urn("q-gpu") in stable and m.urn("sg-chat") in stable
    assert pulumi_test.mocks.named("q-gpu").inputs["kind"] == "queues"


def test_aliases_given_to_the_service_are_sent_with_it(pulumi_test):
    opts = pulumi.ResourceOptions(aliases=[pulumi.Alias(type_="inferstack:index:Service")])
    run_program(lambda: InferenceService("chat", InferenceServiceArgs(service=CHAT), opts).status)
    request = pulumi_test.monitor.request("chat", "InferenceService")
    assert [a.spec.type for a in request.aliases] == ["inferstack:index:Service"]


# --- the stack program ------------------------------------------------------------------------------------------------

def _stack_config(stack: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def test_project_file_points_at_the_stacks_folder():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "inferstack" and project["stackConfigDir"] == "stacks" and project["main"] == "stacks/"
    assert project["runtime"]["name"] == "python" and project["runtime"]["options"]["virtualenv"] == ".venv"


def test_the_dev_stack_program_builds_inventory_service_deployments_and_traffic():
    with mock_session(_stack_config("dev")) as session:
        run_program(lambda: runpy.run_path(str(ROOT / "stacks" / "__main__.py"), run_name="__main__") and None)
        names = {(r.typ.removeprefix(DYNAMIC), r.name) for r in session.mocks.resources}
    assert {("SecurityGroup", "sg-chat"), ("Service", "chat"), ("Deployment", "chat/stable"),
            ("Deployment", "chat/canary"), ("Traffic", "chat")} <= names


def test_the_stack_program_stops_on_an_invalid_stack_naming_the_rule():
    config = _stack_config("dev")
    config["inferstack:stack"]["services"][0]["deployments"][0]["replicas"] = 0
    with mock_session(config), pytest.raises(pulumi.RunError, match=r"replicas\.min_one"):
        run_program(lambda: runpy.run_path(str(ROOT / "stacks" / "__main__.py"), run_name="__main__") and None)


def test_the_prod_stack_program_registers_kubernetes_objects_under_the_service():
    with mock_session(_stack_config("prod")) as session:
        run_program(lambda: runpy.run_path(str(ROOT / "stacks" / "__main__.py"), run_name="__main__") and None)
        m = session.monitor
        parent = m.urn("chat", SERVICE_TYPE)
        kinds = {r.type for r in m.requests if r.parent == parent}
        cluster = {r.type for r in m.requests if r.parent == m.urn("cluster", "inferstack:index:Cluster")}
    assert "kubernetes:apps/v1:Deployment" in kinds
    assert not any(t.startswith(DYNAMIC) for t in kinds)
    assert cluster == {"kubernetes:scheduling.k8s.io/v1:PriorityClass"}  # cluster_bootstrap: true, registered once


def test_deploy_stack_registers_one_component_per_service(pulumi_test):
    stack = StackFile.model_validate({"services": [CHAT, FLAT]})

    def program() -> pulumi.Output:
        return pulumi.Output.all(*[s.deployment_keys for s in deploy_stack(stack).services.values()])

    assert run_program(program) == [["stable", "canary"], ["default"]]


def test_the_stack_program_states_each_deferred_rule_once_as_info(caplog):
    """Deferred rules are the program's to state (the providers' check prints nothing): once each, as info."""
    caplog.set_level("INFO")
    config = _stack_config("dev")
    for dep in config["inferstack:stack"]["services"][0]["deployments"]:
        dep["queue"] = "q-only-on-the-platform"
    with mock_session(config):
        run_program(lambda: runpy.run_path(str(ROOT / "stacks" / "__main__.py"), run_name="__main__") and None)
    deferred = [r for r in caplog.records if "deployment.queue_exists" in r.getMessage()]
    assert sorted(r.getMessage().split(":")[1].strip() for r in deferred) == [
        "services[0].deployments[0].queue", "services[0].deployments[1].queue"]
    assert all(r.levelname == "INFO" for r in deferred)
