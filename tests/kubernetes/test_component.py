"""The Pulumi component registers one typed pulumi-kubernetes resource per rendered object, under the parent.

Runs under `pulumi.runtime.set_mocks` (see /work/shared/pulumi-testing.md §1): the `pulumi_mocks` fixture in
conftest.py records each registration's type, logical name, inputs, parent URN and dependencies."""

from __future__ import annotations

import pulumi
import pytest
from k8s_checks import ROOT

from inferstack.spec import default_inventory, load_file
from inferstack.targets.kubernetes import RenderOptions, render_service
from inferstack.targets.kubernetes.component import register_cluster_objects, register_service

EXAMPLE = ROOT / "examples" / "k8s.yaml"

TYPES = {
    "Deployment": "kubernetes:apps/v1:Deployment",
    "Service": "kubernetes:core/v1:Service",
    "HorizontalPodAutoscaler": "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
    "PodDisruptionBudget": "kubernetes:policy/v1:PodDisruptionBudget",
    "NetworkPolicy": "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "Secret": "kubernetes:core/v1:Secret",
    "HTTPRoute": "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute",
    "ScaledObject": "kubernetes:keda.sh/v1alpha1:ScaledObject",
    "PriorityClass": "kubernetes:scheduling.k8s.io/v1:PriorityClass",
}


@pytest.fixture
def stack():
    loaded = load_file(EXAMPLE, default_inventory())
    assert loaded.stack is not None and loaded.report.ok, str(loaded.report)
    return loaded.stack


@pulumi.runtime.test
def test_component_registers_each_rendered_object_as_a_typed_child_of_the_parent(pulumi_mocks, stack):
    chat = stack.services[0]
    expected = render_service(chat, stack, RenderOptions(include_secrets=True)).objects
    parent = pulumi.ComponentResource("test:index:Parent", "p")
    children = register_service(chat, stack, parent=parent)
    assert len(children) == len(expected)

    def check(urns):
        parent_urn, *_ = urns
        registered = {r.name: r for r in pulumi_mocks.resources.values() if r.typ.startswith("kubernetes:")}
        want = {f"{o['kind'].lower()}-{o['metadata']['name']}": TYPES[o["kind"]] for o in expected}
        assert {name: r.typ for name, r in registered.items()} == want
        assert {r.parent for r in registered.values()} == {parent_urn}
        assert {"HTTPRoute", "ScaledObject", "HorizontalPodAutoscaler", "Secret"} <= {o["kind"] for o in expected}
        deployment = registered["deployment-chat-stable"].inputs
        assert deployment["metadata"]["name"] == "chat-stable"
        assert deployment["metadata"]["namespace"] == "inference"
        assert deployment["spec"]["selector"]["matchLabels"]["inferstack.io/deployment"] == "stable"
        # the HPA owns the count once the Deployment exists: it starts at the floor, then Pulumi leaves it alone
        assert deployment["spec"]["replicas"] == 2
        assert registered["deployment-chat-stable"].ignore_changes == ["spec.replicas"]
        assert registered["deployment-chat-shadow"].ignore_changes == []  # not autoscaled: Pulumi keeps its count
        route = registered["httproute-chat"].inputs
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["kind"] == "HTTPRoute"
        assert route["spec"]["parentRefs"][0]["name"] == "public"
        scaled = registered["scaledobject-chat-canary"].inputs
        assert scaled["spec"]["scaleTargetRef"]["name"] == "chat-canary"
        # the Deployment that reads a Secret waits for it
        secret_urn = next(u for u in urns if u.endswith("::secret-chat-stable-env"))
        assert secret_urn in registered["deployment-chat-stable"].dependencies

    return pulumi.Output.all(parent.urn, *(c.urn for c in children)).apply(check)


@pulumi.runtime.test
def test_component_passes_secret_values_only_as_pulumi_secrets(pulumi_mocks, stack):
    chat = stack.services[0]
    parent = pulumi.ComponentResource("test:index:Parent", "p")
    children = register_service(chat, stack, parent=parent)
    secret = next(c for c in children if c._name == "secret-chat-stable-env")

    def check(args):
        is_secret, _ = args
        assert is_secret
        inputs = pulumi_mocks.resources["secret-chat-stable-env"].inputs
        assert "hf-example-token" in str(inputs["stringData"])  # mocks see the value, wrapped as a secret
        for name, reg in pulumi_mocks.resources.items():
            if reg.typ.startswith("kubernetes:") and reg.typ != TYPES["Secret"]:
                assert "hf-example-token" not in str(reg.inputs), name

    return pulumi.Output.all(pulumi.Output.is_secret(secret.string_data), secret.urn).apply(check)


@pulumi.runtime.test
def test_without_included_secrets_the_component_registers_no_secret(pulumi_mocks, stack):
    parent = pulumi.ComponentResource("test:index:Parent", "p")
    children = register_service(stack.services[0], stack, parent=parent, options=RenderOptions())

    def check(_):
        assert not [n for n, r in pulumi_mocks.resources.items() if r.typ == TYPES["Secret"]]

    return pulumi.Output.all(*(c.urn for c in children)).apply(check)


@pulumi.runtime.test
def test_cluster_objects_are_registered_once_per_stack(pulumi_mocks, stack):
    parent = pulumi.ComponentResource("test:index:Parent", "p")
    children = register_cluster_objects(stack, parent=parent)

    def check(urns):
        parent_urn, *_ = urns
        classes = {n: r for n, r in pulumi_mocks.resources.items() if r.typ == TYPES["PriorityClass"]}
        # the default priority (5) needs no class
        assert sorted(classes) == ["priorityclass-inferstack-idle-5", "priorityclass-inferstack-priority-2",
                                   "priorityclass-inferstack-priority-7"]
        assert {r.parent for r in classes.values()} == {parent_urn}
        assert classes["priorityclass-inferstack-priority-7"].inputs["value"] == 2000.0
        assert classes["priorityclass-inferstack-idle-5"].inputs["preemptionPolicy"] == "Never"

    return pulumi.Output.all(parent.urn, *(c.urn for c in children)).apply(check)


@pulumi.runtime.test
def test_without_cluster_bootstrap_no_cluster_objects_are_registered(pulumi_mocks, stack):
    parent = pulumi.ComponentResource("test:index:Parent", "p")
    assert register_cluster_objects(stack, parent=parent, options=RenderOptions(cluster_bootstrap=False)) == []

    def check(_):
        assert not [n for n, r in pulumi_mocks.resources.items() if r.typ == TYPES["PriorityClass"]]

    return parent.urn.apply(check)
