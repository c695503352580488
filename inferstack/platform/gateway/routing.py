"""Routing decisions: which deployment and which instance serve a request.

Pure: no I/O, no clock (callers pass `now`), no globals. The state it keeps (round-robin counters, in-flight counts
maintained by the proxy) lives on the objects built from one snapshot and is carried into the next one.

Header names are lower-case bytes and values bytes, as the proxy's HTTP parser delivers them.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from math import gcd, lcm
from typing import Any, Generic, TypeVar

from .snapshot import Deployment, Service

DIRECT_CALL_HEADER = b"x-inferstack-deployment"
RING_POINTS_PER_INSTANCE = 64
FAILED_INSTANCE_PAUSE_S = 1.0

T = TypeVar("T")


class RoutingError(Exception):
    """A request cannot be routed; carries the HTTP status, an error code and the words for the client."""

    status = 500
    error = "routing error"
    code = "routing_error"

    def __init__(self, service: str, deployment: str | None) -> None:
        super().__init__(f"{self.error}: service={service} deployment={deployment}")
        self.service = service
        self.deployment = deployment

    @property
    def message(self) -> str:
        return f"{self.error} (service '{self.service}')"


class UnknownDeployment(RoutingError):
    """The direct-call header names a deployment the service does not have."""

    status = 404
    error = "unknown deployment"
    code = "deployment_not_found"

    @property
    def message(self) -> str:
        return (f"service '{self.service}' has no deployment '{self.deployment}' (named by the "
                f"X-Inferstack-Deployment header)")


class NoReadyInstance(RoutingError):
    """The chosen deployment (or the service) has no instance to send the request to."""

    status = 503
    error = "no ready instance"
    code = "no_ready_instance"

    @property
    def message(self) -> str:
        where = f"deployment '{self.deployment}' of service '{self.service}'" if self.deployment else \
            f"service '{self.service}'"
        return f"no ready instance of {where}; retry later"


class Instance:
    """A ready instance as routing sees it; the same object lives on across snapshots while it stays listed."""

    __slots__ = ("deployment", "down_until", "host", "id", "in_flight", "port", "stats", "upstream")

    def __init__(self, id: str, host: str, port: int, deployment: str) -> None:
        self.id = id
        self.host = host
        self.port = port
        self.deployment = deployment
        self.in_flight = 0
        # After a failed connection the instance is avoided until then (when its deployment has others).
        self.down_until = 0.0
        # Owned by the proxy: the connection pool and the metrics of this instance.
        self.upstream: Any = None
        self.stats: Any = None

    @property
    def identity(self) -> tuple[str, str, str, int]:
        return (self.deployment, self.id, self.host, self.port)

    def __repr__(self) -> str:
        return f"Instance({self.id!r}, {self.host}:{self.port}, deployment={self.deployment!r})"


def integer_weights(weights: Sequence[float]) -> list[int]:
    """Exact integer weights with the same ratios (up to 1e-6 precision), reduced by their gcd."""
    fractions = [Fraction(w).limit_denominator(1_000_000) for w in weights]
    scale = lcm(*(f.denominator for f in fractions)) if fractions else 1
    ints = [int(f * scale) for f in fractions]
    divisor = gcd(*ints) if any(ints) else 1
    return [i // divisor for i in ints]


class SmoothWeightedRoundRobin(Generic[T]):
    """nginx's smooth weighted round robin: deterministic, interleaved, exact shares over each cycle.

    Entries of weight 0 are never chosen. The state of a previous instance is carried over by key (rescaled to the
    new total weight), so a snapshot swap neither restarts the cycle nor distorts the new shares.

    From the all-zero counters the algorithm returns to them after `total` picks, each entry picked exactly its
    weight times. When `total` is small (`CYCLE_LIMIT`) that cycle is computed once, when the snapshot is built, and a
    pick is a list index — no per-request loop. A carried-over state then continues at the cycle's position whose
    counters are nearest to it (the very position when the weights did not change), so every cycle after a swap has
    the exact new shares.
    """

    __slots__ = ("cycle", "items", "keys", "live", "position", "total", "weights")

    CYCLE_LIMIT = 1024  # longest cycle kept as a list (integer weights summing to 100 give at most 100)

    def __init__(self, entries: Iterable[tuple[str, T, float]], previous: SmoothWeightedRoundRobin[Any] | None = None):
        kept = [(key, item, weight) for key, item, weight in entries if weight > 0]
        self.keys = [key for key, _, _ in kept]
        self.items = [item for _, item, _ in kept]
        self.weights = integer_weights([weight for _, _, weight in kept])
        self.total = sum(self.weights)
        start = [0] * len(kept)
        if previous is not None and previous.total and start:
            old = dict(zip(previous.keys, previous.current))
            for i, key in enumerate(self.keys):
                if key in old:
                    start[i] = old[key] * self.total // previous.total
            # The algorithm keeps sum(current) == 0; restore it after dropping keys and rounding.
            start[0] -= sum(start)
        self.live = start  # the counters, stepped per pick when the cycle is not precomputed
        self.position = 0  # the next pick's index in `cycle`
        self.cycle: list[T | None] | None = None
        if len(kept) <= 1:
            self.cycle = [self.items[0] if kept else None]
        elif self.total <= self.CYCLE_LIMIT:
            self._precompute(start)

    def _precompute(self, carried: list[int]) -> None:
        counters = [0] * len(self.weights)
        states: list[tuple[int, ...]] = []
        picks = []
        for _ in range(self.total):
            states.append(tuple(counters))
            picks.append(self.items[self._step(counters)])
        self.cycle = picks
        if any(carried):
            exact = {state: index for index, state in enumerate(states)}.get(tuple(carried))
            self.position = exact if exact is not None else min(
                range(len(states)), key=lambda i: sum(abs(a - b) for a, b in zip(states[i], carried)))

    def _step(self, current: list[int]) -> int:
        """One pick on `current` (updated in place): the index of the item picked."""
        weights = self.weights
        best = 0
        best_value = current[0] + weights[0]
        current[0] = best_value
        for i in range(1, len(weights)):
            value = current[i] + weights[i]
            current[i] = value
            if value > best_value:
                best = i
                best_value = value
        current[best] = best_value - self.total
        return best

    def next(self) -> T | None:
        """The next item, or None when every weight is 0."""
        cycle = self.cycle
        if cycle is not None:
            position = self.position
            self.position = position + 1 if position + 1 < len(cycle) else 0
            return cycle[position]
        return self.items[self._step(self.live)]

    @property
    def current(self) -> list[int]:
        """The counters now (what a successor snapshot carries over)."""
        if self.cycle is None:
            return list(self.live)
        current = [0] * len(self.weights)
        if len(self.weights) > 1:
            for _ in range(self.position):
                self._step(current)
        return current

    def shares(self) -> dict[str, float]:
        """Configured share of each key (0..1)."""
        return {key: weight / self.total for key, weight in zip(self.keys, self.weights)}


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    """Consistent hash ring over instance ids: adding or removing an instance moves only the keys it owns."""

    __slots__ = ("owners", "points")

    def __init__(self, instances: Sequence[Instance], points_per_instance: int = RING_POINTS_PER_INSTANCE) -> None:
        ring = sorted(
            (_hash64(f"{instance.id}#{n}".encode()), instance.id, instance)
            for instance in instances
            for n in range(points_per_instance)
        )
        self.points = [point for point, _, _ in ring]
        self.owners = [instance for _, _, instance in ring]

    def lookup(self, value: bytes, now: float = 0.0, exclude: Iterable[Instance] | None = None) -> Instance | None:
        """The owner of `value`; walks on past excluded instances and (if it can) past recently failed ones."""
        owners = self.owners
        n = len(owners)
        if not n:
            return None
        start = bisect_right(self.points, _hash64(value))
        fallback = None
        for step in range(n):
            instance = owners[(start + step) % n]
            if exclude is not None and instance in exclude:
                continue
            if instance.down_until > now:
                fallback = fallback or instance
                continue
            return instance
        return fallback


class DeploymentRoute:
    """One deployment of one snapshot: its instances and how one of them is chosen.

    During a canary redeploy (`revision_weights` in the snapshot) the deployment is split by revision first: `parts`
    chooses a revision's own route by smooth weighted round robin, then an instance within it; an instance a
    revision cannot give (all excluded or recently failed) comes from the whole deployment."""

    __slots__ = ("accept_traffic", "cursor", "instances", "key", "parts", "ring")

    def __init__(self, key: str, accept_traffic: bool, instances: list[Instance], with_ring: bool) -> None:
        self.key = key
        self.accept_traffic = accept_traffic
        self.instances = instances
        self.ring = HashRing(instances) if with_ring and instances else None
        self.cursor = 0
        self.parts: SmoothWeightedRoundRobin[DeploymentRoute] | None = None

    def split_by_revision(self, weights: Mapping[str, float], revisions: Mapping[str, str], with_ring: bool,
                          previous: DeploymentRoute | None) -> None:
        """Split this deployment's requests by revision (`revisions`: instance id → its revision); revisions without
        an instance here, or of weight 0, take nothing."""
        entries = []
        for revision, weight in weights.items():
            members = [i for i in self.instances if revisions.get(i.id) == revision]
            if members and weight > 0:
                entries.append((revision, DeploymentRoute(self.key, self.accept_traffic, members, with_ring), weight))
        if entries:
            self.parts = SmoothWeightedRoundRobin(entries, previous.parts if previous is not None else None)

    def least_busy(self, now: float = 0.0, exclude: Iterable[Instance] | None = None) -> Instance | None:
        """Fewest in-flight requests, ties broken round-robin; recently failed instances only as a last resort."""
        if self.parts is not None:
            found = self.parts.next().least_busy(now, exclude)  # type: ignore[union-attr]
            if found is not None and found.down_until <= now:
                return found
        instances = self.instances
        n = len(instances)
        if n == 1 and exclude is None:
            return instances[0]
        start = self.cursor
        best = fallback = None
        best_load = best_index = fallback_index = 0
        for step in range(n):
            index = start + step
            if index >= n:
                index -= n
            instance = instances[index]
            if exclude is not None and instance in exclude:
                continue
            if instance.down_until > now:
                if fallback is None:
                    fallback, fallback_index = instance, index
                continue
            load = instance.in_flight
            if best is None or load < best_load:
                best, best_load, best_index = instance, load, index
                if load == 0:
                    break
        if best is None:
            if fallback is None:
                return None
            best, best_index = fallback, fallback_index
        self.cursor = best_index + 1
        return best


class ServiceRouter:
    """Routes the requests of one service for one snapshot (precedence as in domain.md "Traffic")."""

    def __init__(self, service: Service, previous: ServiceRouter | None = None) -> None:
        traffic = service.traffic
        self.service = service.key
        self.strategy = traffic.strategy
        self.timeout_s = traffic.timeout_s
        self.retries = traffic.retries
        reused = previous.instances if previous is not None else {}
        self.instances: dict[tuple[str, str, str, int], Instance] = {}
        self.deployments: dict[str, DeploymentRoute] = {}
        hash_header = traffic.consistent_hash.header.lower().encode() if traffic.consistent_hash else None
        old_routes = previous.deployments if previous is not None else {}
        for deployment in service.deployments:
            route = self.deployments[deployment.key] = DeploymentRoute(
                deployment.key,
                deployment.accept_traffic,
                self._instances_of(deployment, reused),
                with_ring=hash_header is not None,
            )
            if deployment.revision_weights:
                revisions = {i.id: i.revision for i in deployment.instances}
                route.split_by_revision(deployment.revision_weights, revisions, hash_header is not None,
                                        old_routes.get(deployment.key))
        self.by_key_bytes = {key.encode(): route for key, route in self.deployments.items()}
        self.hash_header = hash_header
        self.rules = [(r.header.lower().encode(), r.value.encode(), r.deployment) for r in traffic.header_rules]
        self.watched = frozenset(
            [DIRECT_CALL_HEADER] + [header for header, _, _ in self.rules] + ([hash_header] if hash_header else [])
        )
        self.split = SmoothWeightedRoundRobin(
            self._split_entries(service, traffic.weights),
            previous.split if previous is not None else None,
        )
        mirror = traffic.mirror
        self.mirror = self.deployments.get(mirror.deployment) if mirror is not None else None
        # Mirroring is a Bresenham counter in basis points: exactly `percent` % of every 10 000 requests.
        self.mirror_step = round(mirror.percent * 100) if mirror is not None else 0
        self.mirror_acc = previous.mirror_acc if previous is not None else 0

    def _instances_of(self, deployment: Deployment, reused: Mapping[tuple[str, str, str, int], Instance]) -> list[Instance]:
        result = []
        for spec in deployment.instances:
            identity = (deployment.key, spec.id, spec.host, spec.port)
            instance = reused.get(identity) or Instance(spec.id, spec.host, spec.port, deployment.key)
            self.instances[identity] = instance
            result.append(instance)
        return result

    def _split_entries(self, service: Service, weights: Mapping[str, float]) -> list[tuple[str, DeploymentRoute, float]]:
        entries = []
        for key, route in self.deployments.items():
            if not route.accept_traffic or not route.instances:
                continue
            if self.strategy == "by_instance_count":
                entries.append((key, route, float(len(route.instances))))
            else:
                entries.append((key, route, float(weights.get(key, 0))))
        return entries

    def route(self, headers: Mapping[bytes, bytes] | None, now: float = 0.0) -> Instance:
        """The instance for a request whose watched headers are `headers` (None when it carries none of them).

        Raises UnknownDeployment (404) or NoReadyInstance (503).
        """
        if headers is None:  # the common case, kept short: weighted choice, then least busy
            deployment = self.split.next()
            if deployment is None:
                raise NoReadyInstance(self.service, None)
            instances = deployment.instances
            instance = instances[0] if len(instances) == 1 else deployment.least_busy(now)
        else:
            deployment = self.pinned_deployment(headers) or self.split.next()
            if deployment is None:
                raise NoReadyInstance(self.service, None)
            instance = self.instance_in(deployment, headers, now)
        if instance is None:
            raise NoReadyInstance(self.service, deployment.key)
        return instance

    def pinned_deployment(self, headers: Mapping[bytes, bytes]) -> DeploymentRoute | None:
        """The deployment named by the direct-call header or the first matching header rule, else None."""
        direct = headers.get(DIRECT_CALL_HEADER)
        if direct is not None:
            deployment = self.by_key_bytes.get(direct)
            if deployment is None:
                raise UnknownDeployment(self.service, direct.decode("latin-1"))
            return deployment
        for header, value, key in self.rules:
            if headers.get(header) == value:
                deployment = self.deployments.get(key)
                if deployment is None:
                    raise NoReadyInstance(self.service, key)
                return deployment
        return None

    def instance_in(
        self,
        deployment: DeploymentRoute,
        headers: Mapping[bytes, bytes] | None,
        now: float,
        exclude: Iterable[Instance] | None = None,
    ) -> Instance | None:
        """Consistent hash on the configured header when the request has it, else least busy (within the revision a
        canary split chooses, when there is one)."""
        if deployment.parts is not None and deployment.ring is not None and headers is not None:
            found = self.instance_in(deployment.parts.next(), headers, now, exclude)  # type: ignore[arg-type]
            if found is not None:
                return found
        if deployment.ring is not None and headers is not None:
            value = headers.get(self.hash_header)  # type: ignore[arg-type]
            if value is not None:
                return deployment.ring.lookup(value, now, exclude)
        return deployment.least_busy(now, exclude)

    def retry_instance(
        self, failed: Instance, tried: Sequence[Instance], headers: Mapping[bytes, bytes] | None, now: float
    ) -> Instance | None:
        """Another instance after `failed` could not be connected to.

        First the same deployment; a request that was not pinned to it may then move to another deployment of the
        weighted split (as an nginx upstream would), taken in split order.
        """
        failed.down_until = now + FAILED_INSTANCE_PAUSE_S
        deployment = self.deployments.get(failed.deployment)
        if deployment is not None:
            instance = self.instance_in(deployment, headers, now, tried)
            if instance is not None:
                return instance
        if headers is not None and self.pinned_deployment(headers) is not None:
            return None
        for _ in range(len(self.split.items)):
            other = self.split.next()
            if other is not None and other.key != failed.deployment:
                instance = self.instance_in(other, headers, now, tried)
                if instance is not None:
                    return instance
        return None

    def mirror_target(self, chosen: Instance, now: float = 0.0) -> Instance | None:
        """The instance that gets a copy of this request, or None (deterministic: `percent` % of the requests)."""
        mirror = self.mirror
        if mirror is None or chosen.deployment == mirror.key:
            return None
        self.mirror_acc += self.mirror_step
        if self.mirror_acc < 10_000:
            return None
        self.mirror_acc -= 10_000
        return mirror.least_busy(now)


class RoutingTable:
    """The routers of every service of one snapshot; swapped in as a whole."""

    __slots__ = ("services", "version")

    def __init__(self, version: int, services: dict[str, ServiceRouter]) -> None:
        self.version = version
        self.services = services

    @classmethod
    def build(cls, version: int, services: Iterable[Service], previous: RoutingTable | None = None) -> RoutingTable:
        """Routers for `services`, carrying over state (split counters, instance objects) from `previous`."""
        old = previous.services if previous is not None else {}
        return cls(version, {s.key: ServiceRouter(s, old.get(s.key)) for s in services})

    def all_instances(self) -> dict[tuple[str, str, str, str, int], Instance]:
        """Every instance, keyed by service and identity."""
        return {
            (service, *identity): instance
            for service, router in self.services.items()
            for identity, instance in router.instances.items()
        }
