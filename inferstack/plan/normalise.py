"""Normalised data of each object, so that equal meaning compares equal.

Defaults are filled (the spec's dump includes them), numbers compare by value (30.0 is 30), weights compare as percent
shares at the spec's `WEIGHT_PRECISION` (`Share`: 33.33/33.33/33.34 is thirds, 99.96/0.04 is not 100/0), replicas under autoscaling are dropped (they only set the starting count), a multi-role
deployment's env is merged into each role (what the instances see), and lists whose items have an identity become
maps (`Keyed`: env by name, mounts by path, roles by name, queue capacity by spec), so that a path names the item and
order does not matter. Secret values are wrapped in `Secret`: equal by value, never rendered.

The inverse functions (`*_input`) turn normalised data back into model input, for `apply_plan`."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from inferstack.spec import SECRET_MASK, WEIGHT_PRECISION, Deployment, Model, Service, Traffic

REVEAL = {"reveal_secrets": True}
SERVICE_FIELDS = ("name", "key", "description", "resource_group", "vpc", "network_type", "ports")
"""A service's own fields: deployments and traffic are objects of their own; `legacy_form` is only how it was written."""


class Secret:
    """A secret value inside normalised data: compares by value, renders as `[secret]`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return False
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return SECRET_MASK

    def reveal(self) -> str:
        return self._value


class Share(float):
    """A deployment's share of a weighted split, in percent. Two shares are equal when they differ by less than
    `WEIGHT_PRECISION` (0.01 points): a change of that size or more always shows. An absent share is 0."""

    __slots__ = ()
    _TOLERANCE = WEIGHT_PRECISION - 1e-9  # 50.01 - 50.0 is 0.010000000000005; 0.01 computed may be 0.00999999999

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (int, float)):
            return False
        return abs(float(self) - float(other)) < self._TOLERANCE

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(numbers(round(float(self), 6)))


class Keyed(dict):
    """A list made a map by each item's identity; a path shows its keys in brackets (`env[API_KEY]`)."""


def numbers(value: Any) -> Any:
    """`value` with every integral float made an int, recursively (3.0 and 3 compare and render alike)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:  # most of the leaves: answered first
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return type(value)((k, numbers(v)) for k, v in value.items())
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return value


def public(value: Any) -> Any:
    """Plain JSON-able data with secrets masked and shares as plain numbers (4 places: finer than the precision)."""
    if isinstance(value, Secret):
        return SECRET_MASK
    if isinstance(value, Share):
        return numbers(round(float(value), 4))
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public(v) for v in value]
    return value


def key_of_service(service: Service) -> str:
    return service.key or service.name


def key_of_deployment(deployment: Deployment) -> str:
    return deployment.key or deployment.name


# --- services --------------------------------------------------------------------------------------------------

def service_data(service: Service) -> dict[str, Any]:
    return numbers(service.model_dump(mode="json", exclude_none=True, include=set(SERVICE_FIELDS)))


def service_public(service: Service) -> dict[str, Any]:
    return service.model_dump(mode="json", exclude_none=True, include=set(SERVICE_FIELDS))


# --- deployments -----------------------------------------------------------------------------------------------

def is_multi_role(deployment: Deployment) -> bool:
    return deployment.inference_mode == "multi_role" or bool(deployment.roles)


def deployment_data(deployment: Deployment, accept_traffic_settable: bool = True) -> dict[str, Any]:
    """`accept_traffic_settable`: the service (as it will be) is `clb` + `by_instance_count`. Only there does an
    explicit `accept_traffic: true` mean the omitted default; elsewhere stating it is an error, so it stays a
    property and a deployment that still states it after its service left `clb` gets it removed."""
    data = numbers(deployment.model_dump(mode="json", exclude_none=True, context=REVEAL))
    if data.get("accept_traffic") is True and accept_traffic_settable:
        del data["accept_traffic"]
    data["mounts"] = Keyed((m.pop("path"), m) for m in data.get("mounts", []))
    if is_multi_role(deployment):
        shared = data.pop("env", [])
        roles = Keyed()
        for role in data.get("roles", []):
            name = role.pop("name")
            role["env"] = _env(shared + role.get("env", []))  # the role's own value wins, as at run time
            _drop_autoscaled_replicas(role)
            roles[name] = role
        data["roles"] = roles
    else:
        data["env"] = _env(data.get("env", []))
        data.setdefault("probes", {})
        _drop_autoscaled_replicas(data)
    return data


def _env(items: list[dict[str, Any]]) -> Keyed:
    return Keyed((e["name"], Secret(e["secret"]) if e.get("secret") is not None else e.get("value"))
                 for e in items)


def _drop_autoscaled_replicas(role: dict[str, Any]) -> None:
    # With autoscaling, replicas only set the starting count; the live count lives in status.
    if "autoscaling" in role:
        role.pop("replicas", None)


def deployment_input(data: dict[str, Any]) -> dict[str, Any]:
    """Model input from normalised deployment data (secrets revealed). Empty maps and lists are left out: they mean
    what an omitted field means, and an inline `probes: {}` would not be allowed on a multi-role deployment."""
    out = {k: v for k, v in data.items() if v != {} and v != []}
    out["mounts"] = [{"path": path, **m} for path, m in data.get("mounts", {}).items()]
    if "env" in data:
        out["env"] = _env_input(data["env"])
    if "roles" in data:
        out["roles"] = [{**role, "name": name, "env": _env_input(role.get("env", {}))}
                        for name, role in data["roles"].items()]
    return out


def _env_input(env: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, "secret": v.reveal()} if isinstance(v, Secret) else {"name": name, "value": v}
            for name, v in env.items()]


# --- traffic ---------------------------------------------------------------------------------------------------

def traffic_data(traffic: Traffic, keys: Iterable[str]) -> dict[str, Any]:
    """The traffic object with the weights of `keys` (the service's deployments as they will be) as `Share`s. A zero
    share means the same as no entry and is dropped; an entry for anything else is kept as written, so that a weight
    left behind by a deleted deployment is removed from the traffic object."""
    data = numbers(traffic.model_dump(mode="json", exclude_none=True))
    if traffic.strategy == "weighted":
        deployments = list(keys)
        shares = traffic.normalised_weights(list(dict.fromkeys([*deployments, *traffic.weights])))
        data["weights"] = Keyed((k, Share(s) if k in deployments else numbers(round(s, 6)))
                                for k, s in shares.items() if s > 0 or k not in deployments)
    else:
        data["weights"] = Keyed(data.get("weights", {}))
    return data


def traffic_input(data: dict[str, Any], weights: dict[str, float]) -> dict[str, Any]:
    """Model input from normalised traffic data; `weights` as written (shares rounded for comparison may not sum to
    100 exactly)."""
    return {**data, "weights": dict(weights)}


# --- inventory -------------------------------------------------------------------------------------------------

def inventory_data(kind: str, obj: Model) -> dict[str, Any]:
    data = numbers(obj.model_dump(mode="json", exclude_none=True))
    if kind == "queues":
        data["capacity"] = Keyed(data.get("capacity", {}))
    elif kind == "security_groups":
        data["ingress"] = [{**r, "to_port": r.get("to_port", r["from_port"])} for r in data.get("ingress", [])]
    return data


def inventory_input(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    if kind == "queues":
        return {**data, "capacity": dict(data.get("capacity", {}))}
    return data
