"""The desired state in memory: what a write loads from the store, changes and hands to validate and the plan."""

from __future__ import annotations

import copy
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from inferstack.plan import LiveInstance
from inferstack.spec import (
    RULES,
    SECRET_MASK,
    Deployment,
    Finding,
    Inventory,
    Report,
    Service,
    StackFile,
    Traffic,
)
from inferstack.spec.capacity import Admitted
from inferstack.spec.validate import parse, validate

from .objects import (
    DEPLOYMENT,
    SERVICE,
    SERVICE_FIELDS,
    TRAFFIC,
)
from .store import Row, Store

# --- the desired state in memory -----------------------------------------------------------------------------------

@dataclass
class ServiceState:
    """One service as stored: its own fields, its deployments (by key, in order) and its traffic object."""

    fields: dict[str, Any]
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    traffic: dict[str, Any] = field(default_factory=lambda: Traffic().to_data())
    converted: bool = False

    def data(self) -> dict[str, Any]:
        """Input of `Service` (secrets revealed)."""
        return {**self.fields, "deployments": list(self.deployments.values()), "traffic": self.traffic}


def _release(row: Row) -> dict[str, Any] | None:
    """A row's progressive release when it is of its current generation (an older one says nothing any more)."""
    release = row.status.get("release")
    return dict(release) if isinstance(release, dict) and release.get("generation") == row.generation else None


def split_service(svc: Service) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """A parsed service as the store keeps it: own fields, deployments by key, traffic (secrets revealed)."""
    fields = svc.model_dump(mode="json", exclude_none=True, include=set(SERVICE_FIELDS))
    return fields, {d.key: d.to_data() for d in svc.deployments}, svc.traffic.to_data()


@dataclass
class State:
    """The whole desired state: inventory objects by kind and name, services by key (dict order = path order)."""

    inventory: dict[str, dict[str, dict[str, Any]]]
    services: dict[str, ServiceState]
    replicas: dict[tuple[str, str, str], int] = field(default_factory=dict)
    instances: dict[tuple[str, str, str], list[LiveInstance]] = field(default_factory=dict)
    """Running instances per role and where they are placed (the scheduler's status), for the plan's preemptions."""
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`<service>/traffic` or `<service>/<deployment>` → its progressive release of the current generation (status'
    `release`, with `live_weights` for traffic), for what the plan says is live (`PlanContext.releases`)."""
    _parsed: dict[str, Service] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, store: Store) -> State:
        inventory = {kind: {r.key: r.spec for r in store.list(kind)} for kind in Inventory.KINDS}
        deployments: dict[str, list[Row]] = defaultdict(list)
        for r in store.list(DEPLOYMENT):
            deployments[r.parent].append(r)
        traffic_rows = store.list(TRAFFIC)
        traffic = {r.parent: r.spec for r in traffic_rows}
        releases = {f"{r.parent}/traffic": {**release, "live_weights": r.status.get("live_weights")}
                    for r in traffic_rows if (release := _release(r)) is not None}
        services: dict[str, ServiceState] = {}
        replicas: dict[tuple[str, str, str], int] = {}
        instances: dict[tuple[str, str, str], list[LiveInstance]] = {}
        for r in store.list(SERVICE):
            services[r.key] = ServiceState(dict(r.spec), {d.key: d.spec for d in deployments[r.key]},
                                           traffic.get(r.key, Traffic().to_data()),
                                           bool(r.status.get("converted")))
            for d in deployments[r.key]:
                if (release := _release(d)) is not None:
                    releases[f"{r.key}/{d.key}"] = release
                for role, counts in (d.status.get("roles") or {}).items():
                    if isinstance(counts, dict) and isinstance(counts.get("desired"), int):
                        replicas[(r.key, d.key, role)] = counts["desired"]
                    if isinstance(counts, dict):
                        instances[(r.key, d.key, role)] = [
                            LiveInstance(i["id"], i["placement"]["queue"], str(i["placement"].get("compute_spec") or ""))
                            for i in counts.get("instances") or [] if isinstance(i, dict)
                            and isinstance(i.get("placement"), dict) and i["placement"].get("queue")
                            and i.get("phase") != "terminating"]
        return cls(inventory, services, replicas, instances, releases)

    def copy(self) -> State:
        """A copy to change (without the parsed services: they would go stale)."""
        cache, self._parsed = self._parsed, None
        try:
            return copy.deepcopy(self)
        finally:
            self._parsed = cache

    def first(self, service: str | None = None, deployment: str | None = None,
              inventory: tuple[str, str] | None = None) -> State:
        """Put the written objects first, so that findings name them at index 0."""
        if service is not None and service in self.services:
            self.services = _move_first(self.services, [service])
            if deployment is not None:
                svc = self.services[service]
                svc.deployments = _move_first(svc.deployments, [deployment])
        if inventory is not None:
            kind, name = inventory
            self.inventory[kind] = _move_first(self.inventory[kind], [name])
        return self

    def inventory_data(self) -> dict[str, list[dict[str, Any]]]:
        return {kind: list(objs.values()) for kind, objs in self.inventory.items()}

    def inventory_model(self) -> Inventory:
        return Inventory.model_validate(self.inventory_data())

    def parsed_services(self) -> dict[str, Service]:
        """The services that parse, by key (a stored one always does; a broken one is skipped, never fatal). Parsed
        once per loaded state: use it on a state that is read, not changed (`old`)."""
        if self._parsed is None:
            parsed = {k: parse(Service, s.data(), "")[0] for k, s in self.services.items()}
            self._parsed = {k: svc for k, svc in parsed.items() if svc is not None}
        return self._parsed

    def sharing_capacity(self, written: Iterable[str], after: State) -> list[Service]:
        """The services not `written` that use a queue the written ones use in `after` (or a lending queue): the
        plan weighs capacity against them. They are the same in this state and in `after` (they are not written),
        so this state's parse serves."""
        written = set(written)
        queues = {d.get("queue") for k in written if k in after.services for d in after.services[k].deployments.values()}
        queues |= {name for name, q in after.inventory.get("queues", {}).items() if q.get("lends_idle")}
        return [svc for k, svc in self.parsed_services().items() if k not in written and k in after.services
                and any(d.get("queue") in queues for d in self.services[k].deployments.values())]

    def admitted(self) -> Admitted:
        """What this (stored) state admitted: capacity judges a write only on what it adds (spec.capacity)."""
        return Admitted.of(list(self.parsed_services().values()), self.inventory_model())

    def services_data(self) -> list[dict[str, Any]]:
        return [s.data() for s in self.services.values()]

    def stack(self, services: Iterable[str], inventory: Iterable[tuple[str, str]]) -> StackFile:
        """The part of the state a plan compares: the named services and inventory objects that exist.

        A number that is not finite (stored before numbers had to be, e.g. `timeout_s: Infinity`) is left out, so
        its field reads as its default: the write that replaces it can then be planned (and is, as a change)."""
        inv: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for kind, name in inventory:
            if name in self.inventory[kind]:
                inv[kind].append(self.inventory[kind][name])
        return StackFile.model_validate(_finite({"inventory": dict(inv), "services": [
            self.services[k].data() for k in services if k in self.services]}))


def _finite(data: Any) -> Any:
    """`data` without the mapping entries whose value is a non-finite float."""
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items() if not (isinstance(v, float) and not math.isfinite(v))}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    return data


def _move_first(d: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {**{k: d[k] for k in keys if k in d}, **{k: v for k, v in d.items() if k not in keys}}


def _restore_secrets(dep: Deployment, stored: dict[str, Any] | None, path: str) -> list[Finding]:
    """A secret given as the mask (`[secret]`, what GET shows) keeps the stored value of the same env name."""
    known: dict[tuple[str, str], str] = {}
    if stored:
        for e in stored.get("env") or []:
            if e.get("secret") is not None:
                known[("", e["name"])] = e["secret"]
        for r in stored.get("roles") or []:
            for e in r.get("env") or []:
                if e.get("secret") is not None:
                    known[(r["name"], e["name"])] = e["secret"]
    out: list[Finding] = []
    lists = [("", f"{path}.env", dep.env)] + [(r.name, f"{path}.roles[{i}].env", r.env)
                                                for i, r in enumerate(dep.roles or [])]
    for role, base, env in lists:
        for i, e in enumerate(env):
            if e.secret is not None and e.secret.get_secret_value() == SECRET_MASK:
                value = known.get((role, e.name))
                if value is None:
                    out.append(_finding("field.invalid", f"{base}[{i}].secret", SECRET_MASK,
                                        f"'{SECRET_MASK}' is how secrets are shown, not a value: env '{e.name}' has "
                                        f"no stored secret to keep, so give its value"))
                else:
                    e.secret = SecretStr(value)
    return out


def without_preexisting(report: Report, keys: list[str], old: State, written: set[str]) -> Report:
    """`report` (of services in the order `keys`) without the errors of services this write leaves alone that the
    stored state already had: a stored service that no longer validates — a row written by an older version or
    edited on disk — must not refuse writes to every other service. Errors of written services, errors the change
    brings to other services (a name clash, a full queue) and inventory errors all stay."""
    if report.ok:
        return report
    before: set[tuple[str, str, str, str]] | None = None
    kept = []
    for finding in report.findings:
        key, rest = _service_of(finding.path, keys)
        if finding.severity.value != "error" or key is None or key in written:
            kept.append(finding)
            continue
        if before is None:
            old_keys = list(old.services)
            old_report = validate(old.services_data(), old.inventory_data())
            before = {(k, r, f.rule, f.message) for f in old_report.errors
                      for k, r in [_service_of(f.path, old_keys)] if k is not None}
        if (key, rest, finding.rule, finding.message) not in before:
            kept.append(finding)
    return Report(kept)


def _service_of(path: str, keys: list[str]) -> tuple[str | None, str]:
    """`services[2].traffic.timeout_s` → (the key of service 2, `.traffic.timeout_s`); (None, path) otherwise."""
    match = re.match(r"services\[(\d+)\]", path)
    if match is None or int(match.group(1)) >= len(keys):
        return None, path
    return keys[int(match.group(1))], path[match.end():]


def _finding(rule: str, path: str, value: Any, message: str) -> Finding:
    return Finding(rule, path, value, message, RULES[rule].severity)
