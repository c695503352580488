"""Who may call: invocation keys (public gateway, CLB) and allowed sources (private gateway)."""

from __future__ import annotations

import hashlib
import socket

import httpx
import pytest

from inferstack.platform.gateway.access import AccessPolicy
from inferstack.platform.gateway.snapshot import AllowedSource

from .conftest import BackendHost, GatewayUnderTest, service

KEY = "sk-test-123"
KEY_HASH = hashlib.sha256(KEY.encode()).hexdigest()


def client_from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address))


# ------------------------------------------------------------------------------------------ the policy itself


def test_policy_accepts_only_bearer_keys_whose_hash_is_listed() -> None:
    policy = AccessPolicy("public_gateway", [KEY_HASH], [])
    assert policy.check_key(f"Bearer {KEY}".encode())
    assert policy.check_key(f"bearer  {KEY} ".encode())
    for value in (None, b"", KEY.encode(), f"Basic {KEY}".encode(), b"Bearer other", b"Bearer "):
        assert not policy.check_key(value)


def test_policy_matches_sources_by_network_and_logical_port() -> None:
    policy = AccessPolicy(
        "private_gateway",
        [],
        [AllowedSource(cidr="10.0.0.0/8", from_port=8000, to_port=8010), AllowedSource(cidr="::1/128", from_port=1,
                                                                                     to_port=65535)],
    )
    assert policy.check_source("10.2.3.4", 8005)
    assert not policy.check_source("10.2.3.4", 8011)
    assert not policy.check_source("11.0.0.1", 8005)
    assert policy.check_source("::ffff:10.0.0.1", 8000)  # IPv4-mapped IPv6
    assert policy.check_source("::1", 9999)
    assert not policy.check_source("not-an-ip", 8000)


def test_policy_kind_follows_the_network_type() -> None:
    assert AccessPolicy("clb", [], []).needs_key and not AccessPolicy("clb", [], []).checks_source
    assert AccessPolicy("private_gateway", [], []).checks_source
    assert not AccessPolicy("private_gateway", [], []).needs_key


# ------------------------------------------------------------------------------------------ through the gateway


def test_private_gateway_admits_only_the_allowed_source(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    gateway.push(
        service("private", {"main": [backends.start("private-main")]}, weights={"main": 100},
                network_type="private_gateway",
                allowed_sources=[{"cidr": "127.0.0.2/32", "from_port": 8000, "to_port": 8000}])
    )
    url = gateway.url("private")

    with client_from("127.0.0.2") as allowed, client_from("127.0.0.3") as denied, client_from("127.0.0.1") as local:
        ok = allowed.get(url)
        refused = denied.get(url)
        also_refused = local.get(url)

    assert (ok.status_code, ok.text) == (200, "private-main")
    assert refused.status_code == also_refused.status_code == 403
    assert refused.json() == {"error": {"message": "source 127.0.0.3 is not allowed by the security groups of "
                                              "service 'private'", "type": "permission_error", "param": None, "code": "source_not_allowed"}, "service": "private", "deployment": None}


def test_private_gateway_rule_must_cover_the_logical_port(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    gateway.push(
        service("private", {"main": [backends.start("private-port")]}, weights={"main": 100},
                network_type="private_gateway",
                allowed_sources=[{"cidr": "127.0.0.0/8", "from_port": 9000, "to_port": 9100}])
    )
    with client_from("127.0.0.2") as client:
        assert client.get(gateway.url("private")).status_code == 403


def test_private_gateway_forwards_the_callers_authorization_header(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    gateway.push(service("private", {"main": [backends.start("private-auth")]}, weights={"main": 100}))
    seen = httpx.get(gateway.url("private", "/echo"), headers={"Authorization": "Bearer app-token"}).json()
    assert ["Authorization", "Bearer app-token"] in seen["headers"]


@pytest.mark.parametrize("network_type", ["public_gateway", "clb"])
def test_key_protected_gateway_needs_the_invocation_key_and_strips_it(
    gateway: GatewayUnderTest, backends: BackendHost, network_type: str
) -> None:
    gateway.push(
        service("public", {"main": [backends.start("public-main")]}, weights={"main": 100},
                network_type=network_type, key_hashes=[hashlib.sha256(b"other").hexdigest(), KEY_HASH])
    )
    url = gateway.url("public", "/echo")

    with httpx.Client() as client:
        missing = client.get(url)
        wrong = client.get(url, headers={"Authorization": "Bearer nope"})
        right = client.get(url, headers={"Authorization": f"Bearer {KEY}"})

    assert missing.status_code == wrong.status_code == 401
    assert missing.json() == {"error": {"message": "missing or invalid invocation key: send "
                                              "`Authorization: Bearer <key>` (`inferstack keys show public`)", "type": "authentication_error", "param": None, "code": "invalid_api_key"}, "service": "public", "deployment": None}
    assert right.status_code == 200
    assert "authorization" not in {name.lower() for name, _ in right.json()["headers"]}


def test_access_changes_apply_to_open_keep_alive_connections(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    backend = backends.start("rotating")
    with_key = service("public", {"main": [backend]}, weights={"main": 100}, network_type="public_gateway",
                       key_hashes=[KEY_HASH])
    rotated = service("public", {"main": [backend]}, weights={"main": 100}, network_type="public_gateway",
                      key_hashes=[hashlib.sha256(b"new-key").hexdigest()])
    gateway.push(with_key)
    url = gateway.url("public")

    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        before = client.get(url)
        gateway.push(rotated)
        after = client.get(url)

    assert (before.status_code, after.status_code) == (200, 401)


def test_refused_request_waiting_for_100_continue_gets_the_refusal_instead_and_a_close(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    gateway.push(service("public", {"main": [backends.start("expecting")]}, weights={"main": 100},
                         network_type="public_gateway", key_hashes=[KEY_HASH]))
    with socket.create_connection(("127.0.0.1", gateway.port("public")), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"100 Continue" not in answer
    assert b"Connection: close" in answer
