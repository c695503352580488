"""The routing book: builds the gateway's snapshot service by service, and keeps each service's last good routing.

A service's routing entry is made of parts, each built from one stored object:

    service part      services/<key>                     network type, logical ports (+ the ports they are bound to)
    traffic part      services/<key>/traffic             the split (no traffic object yet: the default split; with a
                                                         progressive policy, the weights of the release's step:
                                                         `status.live_weights`)
    deployment parts  services/<key>/deployments/<dkey>  accept_traffic, entry role, security-group sources

plus observed state that is never "built": the ready instances of each deployment's entry role and the service's
invocation-key hashes. A part that cannot be built — whatever the reason: a row that no longer parses, a value no
model accepts (NaN, Infinity, a string for a number), a security group that cannot be read — keeps its last good
value, and only that service is affected: its entry is still sent, with that part as it last was and with current
instances (an instance withdrawn from routing is never kept). A part with no last good value leaves its deployment
(or, for the service and traffic parts, the whole service) out of the snapshot. Parts are checked against the
gateway's own snapshot models, strict JSON (finite numbers only), so one service can never make the gateway refuse
a snapshot for all.

What the gateway has acknowledged is kept per service (`ServiceRouting`): whether its live entry is fresh (built
from every object as it is now) or uses last good parts and why, and the generation of each object its live entry
was built from. `mark_status` writes the transitions to the service's status (`status.routing` and the `Degraded`
condition with reason `RoutingNotBuilt`; the traffic object too when it is the part that failed).

After a platform restart the book is seeded from the gateway's persisted snapshot (`seed`), so a service that cannot
be built keeps the routing the gateway already has.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from inferstack.spec import Deployment, SecurityGroup, Service, Traffic

from .gateway import snapshot as wire
from .objects import DEPLOYMENT, SERVICE, TRAFFIC, condition, get_condition, now, object_path, set_condition
from .store import Row, Store

log = logging.getLogger("inferstack.routing")

NOT_BUILT = "RoutingNotBuilt"
ReadyByRole = Callable[[str, str], dict[str, list[dict[str, Any]]]]  # (service, deployment) → role → instances
RevisionWeights = Callable[[str, str], dict[str, float] | None]  # (service, deployment) → revision → weight


def _no_split(svc: str, dep: str) -> None:
    return None


class PartError(Exception):
    """One part of a service's routing cannot be built; the message names the object and what is wrong."""


@dataclass(frozen=True)
class ServiceRouting:
    """What the gateway has for one service, as of the acknowledged snapshot `version`.

    `fresh`: every part was built from its object as stored now. Otherwise `problems` says, per object, why a last
    good part (or nothing) stands in. `generations`: object path → the generation the live part was built from
    (0 when unknown: a part seeded from the gateway's persisted snapshot after a platform restart)."""

    key: str
    fresh: bool
    problems: tuple[str, ...]
    generations: dict[str, int]
    version: int
    routed: bool  # the service is in the snapshot at all

    @property
    def deployments(self) -> set[str]:
        """Keys of the deployments its entry routes to."""
        prefix = object_path(DEPLOYMENT, "", self.key)
        return {p[len(prefix):] for p in self.generations if p.startswith(prefix)}

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)


@dataclass
class _DeploymentPart:
    key: str
    accept_traffic: bool
    entry_role: str | None  # None: unknown (seeded)
    sources: list[dict[str, Any]] | None  # None: unknown (seeded)
    generation: int = 0
    instances: list[dict[str, Any]] = field(default_factory=list)  # seeded only: the gateway's last instances


@dataclass
class _ServicePart:
    network_type: str
    ports: list[int]
    generation: int = 0
    sources: list[dict[str, Any]] = field(default_factory=list)  # seeded only: the gateway's last allowed sources


@dataclass
class _TrafficPart:
    traffic: dict[str, Any]
    generation: int = 0


@dataclass
class _Built:
    """One service as built for a snapshot: its entry (None: not routed), its routing, and the parts built fresh
    (they become the last good parts once the gateway acknowledges the snapshot)."""

    entry: dict[str, Any] | None
    routing: ServiceRouting
    uid: str = ""  # the service row's uid: a service deleted and created again is another one
    service: _ServicePart | None = None
    traffic: _TrafficPart | None = None
    deployments: dict[str, _DeploymentPart] = field(default_factory=dict)


def _spec(row: Row | ValueError, path: str) -> dict[str, Any]:
    if isinstance(row, ValueError):
        raise PartError(f"{path}: the stored object cannot be read: {row}")
    return row.spec


def _generation(row: Row | ValueError) -> int:
    return row.generation if isinstance(row, Row) else 0


def _bound_ports(row: Row | ValueError) -> dict[str, int]:
    """The ports the gateway bound a service's listeners to last time (in its status), to keep them."""
    bound = (row.status.get("gateway_ports") if isinstance(row, Row) else None) or {}
    return {str(p): b for p, b in bound.items() if isinstance(b, int) and not isinstance(b, bool)}


def _explain(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                         for e in exc.errors(include_url=False)[:3])
    return str(exc) or type(exc).__name__


class RoutingBook:
    """Per-service routing parts, last good values and acknowledged state (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.acknowledged_version: int | None = None
        self._services: dict[str, _ServicePart] = {}
        self._traffic: dict[str, _TrafficPart] = {}
        self._deployments: dict[tuple[str, str], _DeploymentPart] = {}
        self._live: dict[str, ServiceRouting] = {}
        self._pending: dict[str, _Built] = {}
        self._cache: dict[str, tuple[str, Any]] = {}  # object path → (spec text, what it was parsed into)
        self._marked: dict[str, tuple[str, str]] = {}  # service → (routing state its status has, its uid)
        self._uids: dict[str, str] = {}
        # Services the gateway refused: the reason, and the generations of the objects it refused.
        self._rejected: dict[str, tuple[str, dict[str, int]]] = {}

    def upstream_token(self, service_key: str) -> str:
        """The token the gateway adds to every request it sends to the service's instances, and that they check:
        what makes an instance answer the gateway only (the echo preset does; see the README for other commands).
        Derived from the data dir's key, so it survives restarts without being stored."""
        return self.store.box.derive("upstream-token", service_key)

    # --- what the gateway has ----------------------------------------------------------------------------------------

    def service(self, key: str) -> ServiceRouting | None:
        """The acknowledged routing of a service (None: not in an acknowledged snapshot yet)."""
        return self._live.get(key)

    def services(self) -> dict[str, ServiceRouting]:
        return dict(self._live)

    # --- seeding after a restart -------------------------------------------------------------------------------------

    def seed(self, snapshot: dict[str, Any] | None) -> None:
        """Take the gateway's last applied snapshot as the last good parts (nothing when it does not validate)."""
        if not snapshot:
            return
        try:
            parsed = wire.Snapshot.model_validate(snapshot)
        except ValidationError as exc:
            log.warning("not seeding routing from the gateway's persisted snapshot: %s", _explain(exc))
            return
        for svc in parsed.services:
            data = svc.model_dump(mode="json")
            self._services.setdefault(svc.key, _ServicePart(svc.network_type, [li.port for li in svc.listeners],
                                                            sources=data["allowed_sources"]))
            self._traffic.setdefault(svc.key, _TrafficPart(data["traffic"]))
            for dep in data["deployments"]:
                self._deployments.setdefault((svc.key, dep["key"]), _DeploymentPart(
                    dep["key"], dep["accept_traffic"], None, None, instances=dep["instances"]))

    # --- building ----------------------------------------------------------------------------------------------------

    def routed_weights(self, key: str) -> dict[str, float] | None:
        """The weights of the traffic part the gateway last acknowledged for a service (None: none yet)."""
        part = self._traffic.get(key)
        weights = part.traffic.get("weights") if part is not None else None
        return dict(weights) if isinstance(weights, dict) else None

    def build(self, version: int, ready: ReadyByRole, key_hashes: dict[str, list[str]],
              revision_weights: RevisionWeights | None = None) -> dict[str, Any]:
        """The snapshot for `version`: every service that has an entry, each built in isolation. `revision_weights`:
        a deployment's split by revision while a canary redeploy holds it (the release manager's)."""
        groups = self._security_groups()
        traffic = {parent: row for parent, _, row in self.store.scan(TRAFFIC)}
        deployments: dict[str, list[tuple[str, Row | ValueError]]] = {}
        for parent, key, row in self.store.scan(DEPLOYMENT):
            deployments.setdefault(parent, []).append((key, row))
        services, pending = [], {}
        for _, key, row in self.store.scan(SERVICE):
            built = self._build_service(key, version, (row, traffic.get(key), deployments.get(key, [])), ready,
                                        key_hashes, groups, revision_weights or _no_split)
            pending[key] = built
            if built.entry is not None:
                services.append(built.entry)
        self._pending = pending
        live = set(self._cache) & ({object_path(SERVICE, k) for k in pending}
                                   | {object_path(TRAFFIC, k, k) for k in traffic}
                                   | {object_path(DEPLOYMENT, d, k) for k, deps in deployments.items() for d, _ in deps}
                                   | {object_path("security_groups", name) for name in groups})
        self._cache = {path: self._cache[path] for path in live}
        return {"version": version, "services": services}

    def acknowledge(self, version: int) -> None:
        """The gateway accepted the snapshot last built: its entries are live, its fresh parts the last good ones."""
        self.acknowledged_version = version
        self._live = {key: built.routing for key, built in self._pending.items()}
        self._uids = {key: built.uid for key, built in self._pending.items()}
        for key in [k for k in self._services if k not in self._pending]:
            del self._services[key]
        for key in [k for k in self._traffic if k not in self._pending]:
            del self._traffic[key]
        for key in [k for k in self._rejected if k not in self._pending]:
            del self._rejected[key]
        for key, dkey in list(self._deployments):
            built = self._pending.get(key)
            if built is None or dkey not in built.routing.deployments:
                del self._deployments[(key, dkey)]
        for key, built in self._pending.items():
            if built.service is not None:
                self._services[key] = built.service
            if built.traffic is not None:
                self._traffic[key] = built.traffic
            for dkey, dep in built.deployments.items():
                self._deployments[(key, dkey)] = dep

    def rejected(self, detail: Any) -> bool:
        """The gateway refused the last snapshot (400). The services its error paths name are sent with their last
        good parts until one of their objects changes. False when no service can be blamed."""
        entries = [b for b in self._pending.values() if b.entry is not None]
        errors = detail.get("details") if isinstance(detail, dict) else None
        blamed = False
        for error in errors if isinstance(errors, list) else []:
            path = str(error.get("path", "")).split(".") if isinstance(error, dict) else []
            if len(path) >= 2 and path[0] == "services" and path[1].isdigit() and int(path[1]) < len(entries):
                built = entries[int(path[1])]
                reason = f"the gateway refused its routing: {'.'.join(path[2:])}: {error.get('message')}"
                self._rejected[built.routing.key] = (reason, dict(built.routing.generations))
                blamed = True
        return blamed

    def _build_service(self, key: str, version: int, rows: tuple[Row | ValueError, Row | ValueError | None,
                                                                 list[tuple[str, Row | ValueError]]],
                       ready: ReadyByRole, key_hashes: dict[str, list[str]],
                       groups: dict[str, list[dict[str, Any]] | str], revision_weights: RevisionWeights) -> _Built:
        """One service's entry from its rows (service, traffic or None, deployments); see the module docstring."""
        svc_row, traffic_row, dep_rows = rows
        problems: list[str] = []
        generations: dict[str, int] = {}
        fresh_parts: dict[str, Any] = {}
        rejected = self._rejected.get(key)

        def part(path: str, build: Callable[[], Any], last: Any) -> Any:
            """The part as built now, or its last good value (None: none) with the problem noted."""
            try:
                value = build()
            except Exception as exc:  # noqa: BLE001 -- whatever the reason, only this part of this service fails
                reason = exc.args[0] if isinstance(exc, PartError) else f"{path}: {_explain(exc)}"
                keeps = "keeps its last good routing" if last is not None else "has no last good routing"
                problems.append(f"{reason} ({keeps})")
                value = last
            else:
                fresh_parts[path] = value
            if value is not None:
                generations[path] = value.generation
            return value

        svc_path, traffic_path = object_path(SERVICE, key), object_path(TRAFFIC, key, key)
        service = part(svc_path, lambda: self._service_part(key, svc_row), self._services.get(key))
        traffic = part(traffic_path, lambda: self._traffic_part(key, traffic_row), self._traffic.get(key))
        deployments: dict[str, _DeploymentPart] = {}
        for dkey, dep_row in dep_rows:
            dep = part(object_path(DEPLOYMENT, dkey, key),
                       lambda dkey=dkey, dep_row=dep_row: self._deployment_part(key, dkey, dep_row, groups),
                       self._deployments.get((key, dkey)))
            if dep is not None:
                deployments[dkey] = dep
        if rejected is not None and rejected[1] == generations:
            # The gateway refused these very objects: send what it last accepted.
            problems.insert(0, rejected[0])
            fresh_parts.clear()
            service, traffic = self._services.get(key), self._traffic.get(key)
            deployments = {d: p for (s, d), p in self._deployments.items() if s == key and d in deployments}
            generations = {path: p.generation for path, p in ((svc_path, service), (traffic_path, traffic),
                                                              *((object_path(DEPLOYMENT, d, key), p)
                                                                for d, p in deployments.items())) if p is not None}
        else:
            self._rejected.pop(key, None)
        routed = service is not None and traffic is not None
        routing = ServiceRouting(key, not problems, tuple(problems), generations, version, routed)
        built = _Built(None, routing, svc_row.uid if isinstance(svc_row, Row) else "", fresh_parts.get(svc_path),
                       fresh_parts.get(traffic_path),
                       {d: p for d, p in deployments.items() if object_path(DEPLOYMENT, d, key) in fresh_parts})
        if not routed:
            return built
        sources: list[dict[str, Any]] = []
        for dep in deployments.values():
            known = dep.sources if dep.sources is not None else service.sources
            sources += [s for s in known if s not in sources]
        bound = _bound_ports(svc_row)
        built.entry = {
            "key": key,
            "network_type": service.network_type,
            "listeners": [{"port": p, "bind_port": int(bound.get(str(p), 0))} for p in service.ports],
            "invocation_key_hashes": key_hashes.get(key, []),
            "allowed_sources": sources,
            "upstream_token": self.upstream_token(key),
            "traffic": traffic.traffic,
            "deployments": [self._deployment_entry(dep, ready(key, dkey), revision_weights(key, dkey))
                            for dkey, dep in deployments.items()],
        }
        return built

    # --- the parts ---------------------------------------------------------------------------------------------------

    def _parsed(self, path: str, spec: dict[str, Any], parse: Callable[[dict[str, Any]], Any]) -> Any:
        """`parse(spec)`, checked for finite numbers first; remembered by the spec's text, so that the objects
        that did not change since the last snapshot (nearly all, nearly always) are not validated again."""
        try:
            text = json.dumps(spec, allow_nan=False, sort_keys=True)
        except ValueError:
            raise PartError(f"{path}: holds a number that is not finite (NaN or ±Infinity)") from None
        cached = self._cache.get(path)
        if cached is not None and cached[0] == text:
            return cached[1]
        value = parse(spec)
        self._cache[path] = (text, value)
        return value

    def _service_part(self, key: str, row: Row | ValueError) -> _ServicePart:
        def parse(spec: dict[str, Any]) -> tuple[str, list[int]]:
            service = Service.model_validate({**spec, "deployments": []})
            ports = list(service.ports)
            wire.Service(key=key, network_type=service.network_type, listeners=[wire.Listener(port=p) for p in ports])
            return service.network_type, ports

        path = object_path(SERVICE, key)
        network_type, ports = self._parsed(path, _spec(row, path), parse)
        return _ServicePart(network_type, list(ports), _generation(row))

    def _traffic_part(self, key: str, row: Row | ValueError | None) -> _TrafficPart:
        def parse(spec: dict[str, Any]) -> dict[str, Any]:
            traffic = Traffic.model_validate(spec).to_data()
            traffic.pop("progressive", None)  # how the weights move is the release manager's, not the gateway's
            json.dumps(traffic, allow_nan=False)  # what the model made of it is finite too
            return wire.Traffic.model_validate(traffic).model_dump(mode="json")

        path = object_path(TRAFFIC, key, key)
        spec = _spec(row, path) if row is not None else {}  # no traffic object yet: the default split
        live = row.status.get("live_weights") if isinstance(row, Row) else None
        if spec.get("progressive") is not None and isinstance(live, dict):
            spec = {**spec, "weights": live}  # a progressive release routes the weights of the step it reached
        return _TrafficPart(self._parsed(path, spec, parse), _generation(row) if row is not None else 0)

    def _deployment_part(self, key: str, dkey: str, row: Row | ValueError,
                         groups: dict[str, list[dict[str, Any]] | str]) -> _DeploymentPart:
        def parse(spec: dict[str, Any]) -> tuple[bool, str, str]:
            dep = Deployment.model_validate(spec)
            wire.Deployment(key=dkey, accept_traffic=dep.accepts_traffic)
            return dep.accepts_traffic, dep.entry_role().name, dep.security_group

        path = object_path(DEPLOYMENT, dkey, key)
        accept_traffic, entry_role, security_group = self._parsed(path, _spec(row, path), parse)
        sources = groups.get(security_group, [])
        if isinstance(sources, str):
            raise PartError(f"{path}: its security group {sources}")
        return _DeploymentPart(dkey, accept_traffic, entry_role, list(sources), _generation(row))

    @staticmethod
    def _deployment_entry(dep: _DeploymentPart, by_role: dict[str, list[dict[str, Any]]],
                          revisions: dict[str, float] | None) -> dict[str, Any]:
        if dep.entry_role is not None:
            instances = list(by_role.get(dep.entry_role, []))
        else:  # seeded: the role is unknown; keep the instances the gateway had that are still ready
            ready = {i["id"]: i for role in by_role.values() for i in role}
            instances = [ready[i["id"]] for i in dep.instances if i["id"] in ready]
        entry = {"key": dep.key, "accept_traffic": dep.accept_traffic, "instances": instances}
        if revisions:
            entry["revision_weights"] = dict(revisions)
        return entry

    def _security_groups(self) -> dict[str, list[dict[str, Any]] | str]:
        """Each security group's allowed sources (tcp rules) by name; one that cannot be read maps to the reason
        (only the deployments that use it are affected)."""
        def parse(spec: dict[str, Any]) -> list[dict[str, Any]]:
            sources: list[dict[str, Any]] = []
            for rule in SecurityGroup.model_validate(spec).ingress:
                if rule.protocol in ("tcp", "all"):
                    source = wire.AllowedSource(cidr=rule.source, from_port=rule.from_port, to_port=rule.last_port)
                    if (data := source.model_dump(mode="json")) not in sources:
                        sources.append(data)
            return sources

        groups: dict[str, list[dict[str, Any]] | str] = {}
        for _, name, row in self.store.scan("security_groups"):
            path = object_path("security_groups", name)
            try:
                groups[name] = self._parsed(path, _spec(row, path), parse)
            except Exception as exc:  # noqa: BLE001
                groups[name] = f"{path} cannot be read: {exc.args[0] if isinstance(exc, PartError) else _explain(exc)}"
        return groups

    # --- status ------------------------------------------------------------------------------------------------------

    def mark_status(self) -> None:
        """Write each service's routing state to its status when it changed: `status.routing` and `Degraded`."""
        for key, routing in self._live.items():
            state = "fresh" if routing.fresh else ("last_good" if routing.routed else "none")
            uid = self._uids.get(key, "")
            if state == "fresh" and uid and self._marked.get(key) == (state, uid):
                continue  # fresh, and its status says so already: nothing to read or write
            try:
                self._mark(key, routing, state)
                self._marked[key] = (state, uid)
            except Exception:  # a row that cannot be read cannot be marked either; the log says so
                log.exception("cannot mark the routing state of services/%s", key)
        self._marked = {k: v for k, v in self._marked.items() if k in self._live}

    def _mark(self, key: str, routing: ServiceRouting, state: str) -> None:
        row = self.store.get(SERVICE, key)
        if row is None:
            return
        previous = row.status.get("routing") or {}
        changed = previous.get("state") != state or previous.get("reason", "") != routing.reason
        degraded = get_condition(row.status, "Degraded") or {}
        generation = int(row.status.get("observed_generation") or 0)
        new = None
        if state != "fresh":
            message = (f"routing of services/{key} cannot be rebuilt: {routing.reason}; the gateway "
                       + (f"keeps its last good routing (snapshot {routing.version})" if routing.routed
                          else "does not route it"))
            if changed or degraded.get("status") != "True" or degraded.get("reason") != NOT_BUILT:
                new = condition("Degraded", True, NOT_BUILT, message, generation)
        elif degraded.get("reason") == NOT_BUILT:
            new = condition("Degraded", False, "AsExpected", "", generation)
        if not changed and new is None:
            return
        patch: dict[str, Any] = {}
        if changed:
            patch["routing"] = {"state": state, "reason": routing.reason, "since": now(),
                                "snapshot_version": routing.version}
            log.log(logging.INFO if state == "fresh" else logging.WARNING, "services/%s routing: %s %s", key,
                    state, routing.reason)
        if new is not None:
            patch["conditions"] = set_condition(list(row.status.get("conditions") or []), new)
        self.store.write_status(SERVICE, key, patch, event=None)
        self._mark_traffic(key, routing)

    def _mark_traffic(self, key: str, routing: ServiceRouting) -> None:
        path = object_path(TRAFFIC, key, key)
        row = self.store.get(TRAFFIC, key, key)
        if row is None:
            return
        mine = [p for p in routing.problems if p.startswith(path + ":")]
        degraded = get_condition(row.status, "Degraded") or {}
        generation = int(row.status.get("observed_generation") or 0)
        if mine:
            new = condition("Degraded", True, NOT_BUILT, "; ".join(mine), generation)
        elif degraded.get("reason") == NOT_BUILT:
            new = condition("Degraded", False, "AsExpected", "", generation)
        else:
            return
        conditions = set_condition(list(row.status.get("conditions") or []), new)
        self.store.write_status(TRAFFIC, key, {"conditions": conditions}, parent=key, event=None)


__all__ = ["NOT_BUILT", "RoutingBook", "ServiceRouting"]
