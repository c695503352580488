"""What the gateway has acknowledged — the platform's only ground for calling a service, a traffic object or a
deployment Ready (a status reports what the data plane does, not what was written).

After each routing snapshot the gateway swapped in, ``RoutingStatus.observe`` records what it carries: a service and
its traffic object are *observed* at their current generation once an acknowledged snapshot was built from exactly
that generation (the routing book says which generation each part of a service's entry was built from; without it,
the entry's content is compared with the stored spec) — so a snapshot built from an older spec, or a service kept on
its last good routing because its new spec cannot be built, never marks them observed. A deployment is *routed*
once an acknowledged snapshot carries every ready instance of its entry role. ``observed_routing_generation`` in
status is the version of the first acknowledged snapshot that did. A publish that fails is recorded with ``failed``
and shown on every service (or one) as ``Ready=False`` with the reason, until a snapshot is acknowledged again.

Service and traffic conditions (the deployment's are in ``conditions.py``):

| object | condition | status | reason | when |
|---|---|---|---|---|
| service | Ready | True | Routed | the gateway routes its current generation and its traffic object's, and at least one deployment that takes traffic has a routed instance |
| service | Ready | False | RoutingPending / NoReadyInstance / PublishFailed (or the reason ``failed`` gave) | not routed yet / nothing to route to / the gateway refused or could not take the snapshot |
| service | Ready | False | the reason of a ``Degraded`` condition another controller set | its routing cannot be built (it is not written here) |
| service | Progressing | True / False | RoutingPending / Routed | its current generation is not / is routed |
| traffic | Ready | True / False | Routed / RoutingPending | the gateway routes its current generation / not yet |
| traffic | Ready, Progressing, Degraded | | ReleaseProgressing / ReleaseRolledBack / ReleasePaused | a progressive release of its current generation is under way or failed (`release_status.py`) |

One object that cannot be read or parsed costs only its own status: it is logged and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from inferstack.spec import Traffic

from .gateway import snapshot as wire
from .objects import condition, get_condition, object_path, set_condition
from .release_status import current, pending_shift, release_conditions
from .store import Store

log = logging.getLogger("inferstack.routing")

SERVICE, TRAFFIC = "service", "traffic"
EVERY_SERVICE = ""


class RoutingStatus:
    """The reconciler's record of acknowledged routing, and the writer of services' and traffic objects' status."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._deployments: dict[tuple[str, str], tuple[int, frozenset[str]]] = {}  # → (version, routed ids)
        self._routed: dict[tuple[str, str], tuple[int, int]] = {}  # (kind, service) → (generation, first version)
        self._servable: dict[str, bool] = {}  # service → its acknowledged routing sends traffic somewhere
        self._failures: dict[str, tuple[str, str]] = {}  # service ("" = all) → (reason, message)

    # ---- deployments ----------------------------------------------------------------------------------------------

    def deployment(self, svc: str, dep: str, ready: Iterable[str]) -> tuple[bool, int | None, tuple[str, ...]]:
        """(routed, routing generation, ready instances not routed yet) of a deployment with these ready instances."""
        version, ids = self._deployments.get((svc, dep), (None, frozenset()))
        pending = tuple(sorted(set(ready) - ids))
        return not pending and version is not None, version, pending

    def forget(self, svc: str, dep: str | None = None) -> None:
        for key in [k for k in self._deployments if k[0] == svc and dep in (None, k[1])]:
            del self._deployments[key]
        if dep is None:
            for kind in (SERVICE, TRAFFIC):
                self._routed.pop((kind, svc), None)
            self._servable.pop(svc, None)
            self._failures.pop(svc, None)

    # ---- acknowledged snapshots -----------------------------------------------------------------------------------

    def observe(self, snapshot: dict[str, Any],
                generations: dict[str, dict[str, int]] | None = None) -> set[tuple[str, str]]:
        """The gateway swapped ``snapshot`` in: record what it routes, write the services' and traffic objects' status.
        ``generations``: per service, object path → the generation its part of the entry was built from (the routing
        book's); a service without them is judged by content. Returns the deployments whose routed instances changed
        (their status needs writing)."""
        version = int(snapshot["version"])
        self._failures.pop(EVERY_SERVICE, None)
        changed: set[tuple[str, str]] = set()
        for entry in snapshot.get("services") or []:
            svc = entry["key"]
            for dep in entry.get("deployments") or []:
                ids = frozenset(i["id"] for i in dep.get("instances") or [])
                if self._deployments.get((svc, dep["key"]), (None, None))[1] != ids:
                    self._deployments[(svc, dep["key"])] = (version, ids)
                    changed.add((svc, dep["key"]))
            try:
                self._observe_service(svc, entry, version, (generations or {}).get(svc))
            except Exception:
                log.exception("cannot record the routing of services/%s", svc)
        return changed

    def failed(self, reason: str, message: str, *, service: str = EVERY_SERVICE) -> None:
        """The routing of one service (or, by default, every service: a failed publish) could not be made live."""
        self._failures[service] = (reason, message)
        for row in self.store.list(SERVICE):
            if service in (EVERY_SERVICE, row.key):
                self.refresh(row.key)

    def _observe_service(self, svc: str, entry: dict[str, Any], version: int,
                         built: dict[str, int] | None) -> None:
        row = self.store.get(SERVICE, svc)
        if row is None:
            return
        traffic = self.store.get(TRAFFIC, svc, svc)
        spec = row.spec
        if built is not None:
            service_routed = built.get(object_path(SERVICE, svc)) == row.generation
            traffic_routed = traffic is not None and built.get(object_path(TRAFFIC, svc, svc)) == traffic.generation
        else:
            service_routed = (entry.get("network_type") == spec.get("network_type", "public_gateway")
                              and [listener.get("port") for listener in entry.get("listeners") or []]
                              == list(spec.get("ports", [8000])))
            traffic_routed = traffic is not None and _same_traffic(entry.get("traffic"), traffic.spec)
        if service_routed:
            self._note(SERVICE, svc, row.generation, version)
        if traffic_routed:
            self._note(TRAFFIC, svc, traffic.generation, version)
            self._servable[svc] = _servable(entry)
        if self._current(SERVICE, svc, row.generation) and traffic is not None and \
                self._current(TRAFFIC, svc, traffic.generation):
            self._failures.pop(svc, None)
        self.refresh(svc)

    def _note(self, kind: str, svc: str, generation: int, version: int) -> None:
        known = self._routed.get((kind, svc))
        if known is None or known[0] != generation:
            self._routed[(kind, svc)] = (generation, version)

    def _current(self, kind: str, svc: str, generation: int) -> bool:
        known = self._routed.get((kind, svc))
        return known is not None and known[0] == generation

    # ---- status ---------------------------------------------------------------------------------------------------

    def refresh(self, svc: str) -> None:
        """Write the service's and its traffic object's status from what is known to be routed (after a write, the
        objects' new generations are pending until a snapshot carrying them is acknowledged)."""
        try:
            self._refresh(svc)
        except Exception:
            log.exception("cannot write the routing status of services/%s", svc)

    def _refresh(self, svc: str) -> None:
        row = self.store.get(SERVICE, svc)
        if row is None:
            return
        traffic = self.store.get(TRAFFIC, svc, svc)
        failure = self._failures.get(svc) or self._failures.get(EVERY_SERVICE)
        if traffic is not None:
            self._write_traffic(traffic, failure)
        self._write_service(row, traffic, failure)

    def _write_service(self, row: Any, traffic: Any, failure: tuple[str, str] | None) -> None:
        status = row.status
        degraded = get_condition(status, "Degraded") or {}
        if failure is None and degraded.get("status") == "True":  # set by whoever builds its routing: say why
            failure = (str(degraded.get("reason") or "Degraded"), str(degraded.get("message") or ""))
        routed = self._routed.get((SERVICE, row.key))
        observed = self._current(SERVICE, row.key, row.generation) and traffic is not None and self._current(
            TRAFFIC, row.key, traffic.generation)
        gen = row.generation if observed else int(status.get("observed_generation") or 0)
        url = status.get("gateway_url")
        if failure is not None:
            ready = condition("Ready", False, failure[0], failure[1], gen)
        elif not observed:
            ready = condition("Ready", False, "RoutingPending",
                              f"waiting for the gateway to route generation {row.generation}", gen)
        else:
            assert routed is not None
            since = f"routed by the gateway since routing generation {routed[1]}" + (f" at {url}" if url else "")
            if self._servable.get(row.key):
                ready = condition("Ready", True, "Routed", since, gen)
            else:
                ready = condition("Ready", False, "NoReadyInstance",
                                  f"{since}, but no deployment that takes traffic has a ready instance", gen)
        progressing = (condition("Progressing", False, "Routed", f"generation {row.generation} is routed", gen)
                       if observed else condition("Progressing", True, "RoutingPending",
                                                  f"generation {row.generation} waits for the gateway", gen))
        conditions = list(status.get("conditions") or [])
        for new in (ready, progressing):
            conditions = set_condition(conditions, new)
        patch: dict[str, Any] = {"conditions": conditions}
        if observed:
            assert routed is not None
            patch.update(observed_generation=row.generation, observed_routing_generation=routed[1])
        if any(status.get(k) != v for k, v in patch.items()):
            self.store.write_status(SERVICE, row.key, patch, event=None)

    def _write_traffic(self, row: Any, failure: tuple[str, str] | None) -> None:
        status = row.status
        routed = self._current(TRAFFIC, row.parent, row.generation)
        gen = row.generation if routed else int(status.get("observed_generation") or 0)
        conditions = list(status.get("conditions") or [])
        if routed:
            message = f"generation {row.generation} is routed"
            updates = (condition("Ready", True, "Routed", message, gen),
                       condition("Progressing", False, "Routed", message, gen))
        else:
            message = f"generation {row.generation} waits for the gateway"
            updates = (condition("Ready", False, failure[0] if failure else "RoutingPending",
                                 failure[1] if failure else message, gen),
                       condition("Progressing", True, "RoutingPending", message, gen))
        for new in updates:
            conditions = set_condition(conditions, new)
        if routed:  # a progressive release of this generation decides Ready until it settles (release_status.py)
            release = current(status.get("release"), row.generation) or pending_shift(row.spec, status,
                                                                                          row.generation)
            conditions = release_conditions(conditions, release, gen)
        patch: dict[str, Any] = {"conditions": conditions}
        if routed:
            patch["observed_generation"] = row.generation
        if any(status.get(k) != v for k, v in patch.items()):
            self.store.write_status(TRAFFIC, row.key, patch, parent=row.parent, event=None)


def _same_traffic(routed: Any, spec: dict[str, Any]) -> bool:
    """The routed split is this traffic spec's (both read through the gateway's own model, so a representation that
    differs only in defaults or number formatting compares equal)."""
    if not isinstance(routed, dict):
        return False
    declared = Traffic.model_validate(spec).to_data()
    declared.pop("progressive", None)  # the gateway never sees how weights move
    return (wire.Traffic.model_validate(routed).model_dump(mode="json")
            == wire.Traffic.model_validate(declared).model_dump(mode="json"))


def _servable(entry: dict[str, Any]) -> bool:
    """Some deployment the split sends traffic to has an instance (else every routed request answers 503)."""
    traffic = entry.get("traffic") or {}
    weights = traffic.get("weights") or {}
    by_count = traffic.get("strategy") == "by_instance_count"
    return any(d.get("accept_traffic", True) and d.get("instances") and (by_count or weights.get(d["key"], 0) > 0)
               for d in entry.get("deployments") or [])
