"""Who may call a service: invocation keys (public gateway, CLB) and allowed sources (private gateway)."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

from .snapshot import AllowedSource, Service

KEY_CACHE_SIZE = 1024


class AccessPolicy:
    """The access rule of one service in one snapshot.

    `check_key` sees the raw `Authorization` header value; `check_source` the caller's IP and the logical port.
    Both return True when the request may pass. Results are cached: the proxy asks for every request.
    """

    __slots__ = ("_hashes", "_key_cache", "_source_cache", "_sources", "checks_source", "needs_key")

    def __init__(self, network_type: str, key_hashes: Iterable[str], sources: Iterable[AllowedSource]) -> None:
        self.needs_key = network_type in ("public_gateway", "clb")
        self.checks_source = network_type == "private_gateway"
        self._hashes = frozenset(h.lower() for h in key_hashes)
        self._key_cache: dict[bytes | None, bool] = {}
        self._sources = [
            (ipaddress.ip_network(s.cidr, strict=False), s.from_port, s.to_port) for s in sources
        ]
        self._source_cache: dict[tuple[str, int], bool] = {}

    @classmethod
    def of(cls, service: Service) -> AccessPolicy:
        return cls(service.network_type, service.invocation_key_hashes, service.allowed_sources)

    def check_key(self, authorization: bytes | None) -> bool:
        """True when `authorization` is `Bearer <key>` with a key whose sha256 is listed."""
        cached = self._key_cache.get(authorization)
        if cached is not None:
            return cached
        allowed = False
        if authorization is not None:
            scheme, _, key = authorization.strip().partition(b" ")
            if scheme.lower() == b"bearer" and key.strip():
                allowed = hashlib.sha256(key.strip()).hexdigest() in self._hashes
        if len(self._key_cache) >= KEY_CACHE_SIZE:
            self._key_cache.clear()
        self._key_cache[authorization] = allowed
        return allowed

    def check_source(self, address: str, logical_port: int) -> bool:
        """True when a rule covers `logical_port` and its network contains `address`."""
        cached = self._source_cache.get((address, logical_port))
        if cached is not None:
            return cached
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            allowed = False
        else:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            allowed = any(
                ip.version == net.version and ip in net and low <= logical_port <= high
                for net, low, high in self._sources
            )
        if len(self._source_cache) >= KEY_CACHE_SIZE:
            self._source_cache.clear()
        self._source_cache[(address, logical_port)] = allowed
        return allowed
