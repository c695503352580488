"""The snapshot models: what the gateway accepts from the platform."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferstack.platform.gateway.snapshot import Snapshot

HASH = "a" * 64


def snapshot(**service: object) -> dict:
    base = {"key": "chat", "deployments": [{"key": "stable", "instances": [{"id": "i1", "port": 40001}]}]}
    return {"version": 1, "services": [base | service]}


def error_paths(document: dict) -> list[str]:
    with pytest.raises(ValidationError) as raised:
        Snapshot.model_validate(document)
    return [".".join(str(p) for p in e["loc"]) for e in raised.value.errors()]


def test_minimal_snapshot_gets_defaults() -> None:
    parsed = Snapshot.model_validate(snapshot())
    service = parsed.services[0]
    assert service.network_type == "public_gateway"
    assert service.traffic.strategy == "weighted"
    assert (service.traffic.timeout_s, service.traffic.retries) == (60, 1)
    assert service.deployments[0].accept_traffic is True
    assert service.deployments[0].instances[0].host == "127.0.0.1"


def test_full_example_of_the_contract_parses() -> None:
    parsed = Snapshot.model_validate(
        snapshot(
            network_type="public_gateway",
            listeners=[{"port": 8000, "bind_port": 0}],
            invocation_key_hashes=[HASH.upper()],
            allowed_sources=[{"cidr": "127.0.0.2/32", "from_port": 8000, "to_port": 8000}],
            traffic={
                "strategy": "weighted",
                "weights": {"stable": 90, "canary": 10},
                "header_rules": [{"header": "x-canary", "value": "1", "deployment": "canary"}],
                "mirror": {"deployment": "stable", "percent": 5},
                "consistent_hash": {"header": "x-user-id"},
                "timeout_s": 0.5,
                "retries": 1,
            },
        )
    )
    assert parsed.services[0].invocation_key_hashes == [HASH]  # normalised to lower case
    assert parsed.services[0].traffic.timeout_s == 0.5


def test_negative_weight_is_rejected_with_its_path() -> None:
    assert error_paths(snapshot(traffic={"weights": {"stable": -1}})) == ["services.0.traffic.weights"]


def test_invalid_cidr_and_reversed_port_range_are_both_reported() -> None:
    paths = error_paths(
        snapshot(allowed_sources=[{"cidr": "not-a-net", "from_port": 1, "to_port": 2},
                                  {"cidr": "10.0.0.0/8", "from_port": 9, "to_port": 2}])
    )
    assert paths == ["services.0.allowed_sources.0.cidr", "services.0.allowed_sources.1"]


def test_key_hash_must_be_sha256_hex() -> None:
    assert error_paths(snapshot(invocation_key_hashes=["secret"])) == ["services.0.invocation_key_hashes"]


def test_duplicate_deployments_listeners_and_instances_are_rejected_together() -> None:
    document = snapshot(
        listeners=[{"port": 8000}, {"port": 8000}],
        deployments=[
            {"key": "a", "instances": [{"id": "same", "port": 1}]},
            {"key": "a", "instances": [{"id": "same", "port": 2}]},
        ],
    )
    with pytest.raises(ValidationError) as raised:
        Snapshot.model_validate(document)
    message = str(raised.value)
    assert "deployment 'a' appears twice" in message
    assert "listener port 8000 appears twice" in message
    assert "instance 'same' appears twice" in message


def test_duplicate_services_are_rejected() -> None:
    document = snapshot()
    document["services"].append(document["services"][0])
    with pytest.raises(ValidationError, match="service keys appear twice: chat"):
        Snapshot.model_validate(document)


def test_unknown_fields_are_rejected() -> None:
    assert error_paths(snapshot(weights={"stable": 1})) == ["services.0.weights"]


def test_references_to_unlisted_deployments_are_accepted() -> None:
    # Between removing a deployment and editing the traffic, the platform may push such a snapshot.
    Snapshot.model_validate(
        snapshot(traffic={"weights": {"gone": 10}, "mirror": {"deployment": "gone", "percent": 1},
                          "header_rules": [{"header": "x", "value": "1", "deployment": "gone"}]})
    )
