"""Moving the `InferenceService` component (under a new parent, or to a new type token) is a no-op with `aliases`,
and replaces everything without them (point 10 of issue 11).

The programs run on Pulumi's mocks; the raw `RegisterResourceRequest`s (with the alias specs the SDK sends) are
matched against the state the first program leaves by a port of the engine's own alias resolution
(`alias_resolution.py`). What cannot be shown offline: the engine itself running — only that what our component sends
is what the engine's algorithm resolves to the same URNs (no create, no delete)."""

from __future__ import annotations

import copy
from typing import Any

import pulumi
import pytest
from alias_resolution import resolve, urns
from inferstack_mocks import DYNAMIC, mock_session, run_program

from inferstack import components
from inferstack.components import InferenceService, InferenceServiceArgs

CHAT = {"name": "chat", "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000],
        "deployments": [
            {"name": name, "image": {"preset": "inferstack/echo"}, "queue": "q-postpaid-a",
             "compute_spec": "cpu-small", "replicas": 1, "rolling_update": {}, "subnet": "subnet-a",
             "security_group": "sg-default", "weight": weight}
            for name, weight in (("stable", 90), ("canary", 10))]}


class Team(pulumi.ComponentResource):
    """A user's own component that the service moves under."""

    def __init__(self, name: str) -> None:
        super().__init__("acme:index:Team", name, None, None)
        self.register_outputs({})


def _requests(program: Any) -> list[Any]:
    with mock_session() as session:
        run_program(program)
        return list(session.monitor.requests)


def _at_root() -> Any:
    return InferenceService("chat", InferenceServiceArgs(service=copy.deepcopy(CHAT))).status


def _under_team(aliases: list[pulumi.Alias] | None) -> Any:
    team = Team("ml")
    return InferenceService("chat", InferenceServiceArgs(service=copy.deepcopy(CHAT)),
                            pulumi.ResourceOptions(parent=team, aliases=aliases)).status


def _service_resources(matches: list[Any]) -> list[Any]:
    return [m for m in matches if m.type == components.SERVICE_TYPE or m.type.startswith(DYNAMIC)]


def test_moving_the_component_under_a_new_parent_with_an_alias_keeps_every_urn():
    state = urns(_requests(_at_root))
    assert len(state) == 5  # the component, its service, two deployments, its traffic
    moved = _service_resources(resolve(_requests(lambda: _under_team([pulumi.Alias(
        parent=pulumi.ROOT_STACK_RESOURCE)])), state))
    assert all(m.old is not None for m in moved), [m.urn for m in moved if m.old is None]  # nothing created
    assert {m.old for m in moved} == state  # nothing left behind to delete
    assert all(m.urn != m.old for m in moved)  # (the URNs did change: the aliases carried them over)


def test_moving_it_without_an_alias_would_delete_the_live_service_and_create_it_again():
    state = urns(_requests(_at_root))
    moved = _service_resources(resolve(_requests(lambda: _under_team(None)), state))
    assert all(m.old is None for m in moved)  # every resource a create, every old one a delete


def test_renaming_the_type_token_with_an_alias_keeps_every_urn(monkeypatch: pytest.MonkeyPatch):
    state = urns(_requests(_at_root))
    monkeypatch.setattr(components, "SERVICE_TYPE", "inferstack:serving:InferenceService")

    def renamed_program() -> Any:
        opts = pulumi.ResourceOptions(aliases=[pulumi.Alias(type_="inferstack:index:InferenceService")])
        return InferenceService("chat", InferenceServiceArgs(service=copy.deepcopy(CHAT)), opts).status

    renamed = resolve(_requests(renamed_program), state)
    mine = [m for m in renamed if m.type.startswith(("inferstack:", DYNAMIC))]
    assert any(m.type == "inferstack:serving:InferenceService" for m in mine)
    assert all(m.old is not None for m in mine) and {m.old for m in mine} == state
