"""`apply_plan(old, plan)`: the stack `old` becomes once every change of `plan` is carried out.

Updates are applied property path by property path, so a plan that missed a property would not reach the desired
stack (which is what the property test `diff(a, b)` applied to `a` gives `b` checks); created and replaced objects are
taken whole. Weights are taken as written by the change's target (compared as shares, they are not stored as such)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from inferstack.spec import Deployment, Inventory, Model, Service, StackFile, Traffic

from .diff import INVENTORY_MODELS
from .model import Change, Plan, PropertyChange
from .normalise import (
    deployment_data,
    deployment_input,
    inventory_data,
    inventory_input,
    key_of_deployment,
    key_of_service,
    service_data,
    traffic_data,
    traffic_input,
)

_MISSING: Any = object()


@dataclass
class _ServiceState:
    fields: Service
    deployments: dict[str, Deployment] = field(default_factory=dict)
    traffic: Traffic = field(default_factory=Traffic)

    @classmethod
    def of(cls, svc: Service) -> _ServiceState:
        return cls(svc, {key_of_deployment(d): d for d in svc.deployments}, svc.traffic)

    def build(self) -> Service:
        return Service(**service_data(self.fields), deployments=list(self.deployments.values()),
                       traffic=self.traffic.model_copy(deep=True))


def apply_plan(old: StackFile | None, plan: Plan) -> StackFile:
    """`old` with every change of `plan` applied (its `target` and `kubernetes` options kept)."""
    old = old or StackFile()
    inventory = {kind: dict(old.inventory.index(kind)) for kind in Inventory.KINDS}
    services = {key_of_service(s): _ServiceState.of(s) for s in old.services}
    for change in plan.changes:
        if change.kind == "inventory":
            kind = change.id.split("/", 1)[0]
            _apply(inventory[kind], change, partial(_patched_inventory, kind))
        elif change.kind == "service":
            _apply_service(services, change)
        elif change.service in services:  # a deployment or traffic change of a service deleted here is moot
            state = services[change.service]
            if change.kind == "deployment":
                _apply(state.deployments, change, _patched_deployment)
            elif change.action == "delete":
                state.traffic = Traffic()
            else:
                state.traffic = change.target.model if change.action != "update" else \
                    _patched_traffic(state, change)
    return StackFile(target=old.target, kubernetes=old.kubernetes,
                     inventory=Inventory(**{kind: list(objs.values()) for kind, objs in inventory.items()}),
                     services=[s.build() for s in services.values()])


def _apply(objects: dict[str, Any], change: Change, patched: Callable[[Any, Change], Any]) -> None:
    if change.action == "delete":
        objects.pop(change.key, None)
    elif change.action == "update" and change.key in objects:
        objects[change.key] = patched(objects[change.key], change) if change.properties else objects[change.key]
    else:
        objects[change.key] = change.target.model


def _apply_service(services: dict[str, _ServiceState], change: Change) -> None:
    if change.action == "delete":
        services.pop(change.key, None)
    elif change.action == "create" or change.key not in services:
        services[change.key] = _ServiceState(change.target.model)
    else:  # update; a replace keeps the deployments, whose own replace changes follow
        state = services[change.key]
        state.fields = change.target.model if change.action == "replace" else \
            Service.model_validate(patch(service_data(state.fields), change.properties, change.target.data))


def _patched_deployment(model: Deployment, change: Change) -> Deployment:
    data = patch(deployment_data(model), change.properties, change.target.data)
    return Deployment.model_validate(deployment_input(data))


def _patched_traffic(state: _ServiceState, change: Change) -> Traffic:
    data = patch(traffic_data(state.traffic, list(state.deployments)), change.properties, change.target.data)
    weights_changed = any(p.parts[0] == "weights" for p in change.properties)
    weights = change.target.model.weights if weights_changed else state.traffic.weights
    return Traffic.model_validate(traffic_input(data, weights))


def _patched_inventory(kind: str, model: Model, change: Change) -> Model:
    data = patch(inventory_data(kind, model), change.properties, change.target.data)
    return INVENTORY_MODELS[kind].model_validate(inventory_input(kind, data))


def patch(data: dict[str, Any], properties: list[PropertyChange], target: dict[str, Any]) -> dict[str, Any]:
    """`data` (normalised, changed in place) with each property path set to its value in `target` (or removed)."""
    for p in properties:
        source: Any = target
        for part in p.parts:
            source = source.get(part, _MISSING) if isinstance(source, dict) else _MISSING
        parent = data
        for part in p.parts[:-1]:
            parent = parent[part]
        if source is _MISSING:
            parent.pop(p.parts[-1], None)
        else:
            parent[p.parts[-1]] = source
    return data
