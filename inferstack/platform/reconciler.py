"""The reconciler: converges every deployment's roles to running instances and keeps the gateway's routing current.

Desired state comes from the store (what the API accepted); observed state is what the role controllers report.
The reconciler writes status only — never spec: per role the desired/ready/updated counts and the instances (with pid
and start time, so a restarted platform re-adopts them), `observed_generation` once a generation is fully rolled out,
and the conditions `Ready` / `Progressing` / `Degraded` with reasons. Every change of the ready set, the traffic object
or a service's listeners becomes a new versioned routing snapshot pushed to the gateway process."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferstack.spec import Deployment, Inventory, Role, Service

from ..images import PRESET_IMAGES, UPSTREAM_TOKEN_ENV
from .gateway.process import GatewayUnavailable, SnapshotRejected
from .keys import InvocationKeys
from .objects import condition, get_condition, object_path, set_condition
from .placement import PlacementBook
from .routing_book import RoutingBook
from .runtime import (
    Exec,
    HttpGet,
    InstanceRecord,
    Mount,
    Probe,
    Probes,
    RoleController,
    RoleTemplate,
    RollingUpdate,
    TcpSocket,
    role_endpoints_env,
    write_role_endpoints,
)
from .store import Store

log = logging.getLogger("inferstack.reconciler")

SERVICE, DEPLOYMENT, TRAFFIC = "service", "deployment", "traffic"
RoleKey = tuple[str, str, str]  # (service key, deployment key, role name)


class ImageNotRunnable(Exception):
    """The deployment's image has no local command (a custom image or URL the inventory does not map)."""


@dataclass
class Settings:
    """Knobs of the reconciler (tests use short ones)."""

    progress_deadline_s: float = 120.0
    restart_backoff_base_s: float = 1.0
    restart_backoff_cap_s: float = 30.0
    python: str = sys.executable


@dataclass
class _Applied:
    """What the reconciler last asked of a deployment's controllers, to know when a generation is observed."""

    generation: int
    roles: dict[str, str] = field(default_factory=dict)  # role → revision


class Reconciler:
    """Subscribes to the platform's change hook; one `RoleController` per (service, deployment, role)."""

    def __init__(self, store: Store, data_dir: Path, *, gateway: Any | None = None,
                 settings: Settings | None = None, keys: InvocationKeys | None = None):
        self.store = store
        self.data_dir = Path(data_dir)
        self.gateway = gateway
        self.settings = settings or Settings()
        self.keys = keys or InvocationKeys(self.data_dir)
        self.controllers: dict[RoleKey, RoleController] = {}
        self._applied: dict[tuple[str, str], _Applied] = {}
        self._problems: dict[tuple[str, str], str] = {}  # deployments that cannot run, with the reason
        self._withdrawn: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_lock = asyncio.Lock()
        self._publish_wanted = asyncio.Event()
        self._snapshot_version = time.time_ns() // 1000
        self._stopped = False
        # Per service: the routing the gateway has acknowledged, fresh or on its last good parts (and why).
        self.routing = RoutingBook(store)
        # The capacity scheduler: where every instance may run (placement.py).
        self.capacity = PlacementBook(store, self.controllers, on_status=self._write_status)

    # --- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.gateway is not None:
            await self.gateway.start()  # re-adopts the running gateway, else starts one on its last snapshot
            last = self.gateway.last_snapshot()
            self.routing.seed(last)
            if last and isinstance(last.get("version"), int):
                self._snapshot_version = max(self._snapshot_version, last["version"])
        self._adopt()
        services = [key for _, key, _ in self.store.scan(SERVICE)]
        self.capacity.expect(services)
        for key in services:
            self._enqueue(key)
        self._tasks = [asyncio.create_task(self._worker(), name="reconciler"),
                       asyncio.create_task(self._publisher(), name="gateway-publisher"),
                       asyncio.create_task(self.capacity.tick_forever(), name="capacity-scheduler")]

    async def stop(self, graceful: bool = True) -> None:
        """Stop every instance (withdrawn from routing first, then its graceful period) and the gateway."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.shutdown(graceful) for c in self.controllers.values()), return_exceptions=True)
        self.controllers.clear()
        self.capacity.close()
        if self.gateway is not None:
            await self.gateway.stop()

    async def on_change(self, service_key: str) -> None:
        """The platform's change hook: queue the service (never block the API's response)."""
        self._enqueue(service_key)

    def _enqueue(self, service_key: str) -> None:
        if service_key not in self._queued:
            self._queued.add(service_key)
            self._queue.put_nowait(service_key)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                await self.reconcile(key)
            except Exception:
                log.exception("reconciling service %s failed; retrying in 1 s", key)
                await asyncio.sleep(1)
                self._enqueue(key)

    # --- adoption after a restart ------------------------------------------------------------------------------------

    def _adopt(self) -> None:
        """Re-adopt the instances recorded in status whose process is still the same one (pid + start time). A
        row that cannot be read costs only its own instances (they are left running, unadopted)."""
        for svc_key, dep_key, row in self.store.scan(DEPLOYMENT):
            try:
                if isinstance(row, ValueError):
                    raise row
                self._adopt_deployment(row)
            except Exception:
                log.exception("cannot re-adopt the instances of %s", object_path(DEPLOYMENT, dep_key, svc_key))

    def _adopt_deployment(self, row: Any) -> None:
        roles = {r.name: r for r in Deployment.model_validate(row.spec).effective_roles()}
        for role, info in (row.status.get("roles") or {}).items():
            records = [_record(r) for r in info.get("instances", [])]
            if not records:
                continue
            key = (row.parent, row.key, role)
            controller = self._controller(key)
            adopted = controller.adopt_existing(records)
            # Their placements come back from status, so the scheduler counts the slots they hold.
            self.capacity.restore(key, [i for i in info.get("instances", []) if i.get("id") in {a.id for a in adopted}],
                                  row.spec.get("queue", ""), roles[role].compute_spec if role in roles else "")
            log.info("%s: re-adopted %d of %d recorded instance(s)", "/".join(key), len(adopted), len(records))

    # --- convergence -----------------------------------------------------------------------------------------------

    async def reconcile(self, service_key: str) -> None:
        """Converge one service. A stored object that cannot be read or parsed (a row of an older version, edited on
        disk) keeps what runs for it as it is — nothing started, nothing stopped — and costs only itself."""
        try:
            svc_row = self.store.get(SERVICE, service_key)
            service = Service.model_validate({**svc_row.spec, "deployments": []}) if svc_row is not None else None
        except Exception as exc:  # noqa: BLE001 -- whatever is wrong with it, it must not stop other services
            log.warning("%s cannot be read; what runs for it stays as it is: %s", object_path(SERVICE, service_key),
                        str(exc).splitlines()[0])
            self._publish_wanted.set()
            return
        desired: set[RoleKey] = set()
        if service is not None:
            inventory = self._inventory()
            self.capacity.set_inventory(inventory)
            self.keys.ensure(service_key)
            for _, dep_key, dep_row in self.store.scan(DEPLOYMENT, parent=service_key):
                try:
                    if isinstance(dep_row, ValueError):
                        raise dep_row
                    deployment = Deployment.model_validate(dep_row.spec)
                except Exception as exc:  # noqa: BLE001 -- as above, for one deployment
                    log.warning("%s cannot be read; its instances stay as they are: %s",
                                object_path(DEPLOYMENT, dep_key, service_key), str(exc).splitlines()[0])
                    desired |= {k for k in self.controllers if k[:2] == (service_key, dep_key)}
                    continue
                desired |= self._converge_deployment(service, deployment, dep_row, inventory, svc_row.uid)
        else:
            self.keys.forget(service_key)
        for key in [k for k in self.controllers if k[0] == service_key and k not in desired]:
            controller = self.controllers.pop(key)
            log.info("%s: removed from the spec; draining", "/".join(key))
            self.capacity.retire(key, controller, asyncio.create_task(controller.shutdown(graceful=True)))
        for key in [k for k in self._applied if k[0] == service_key and not any(d[:2] == k for d in desired)]:
            self._applied.pop(key, None)
            self._problems.pop(key, None)
        self.capacity.converged(service_key)
        self.capacity.run()
        self._publish_wanted.set()

    def _converge_deployment(self, service: Service, deployment: Deployment, row: Any,
                             inventory: Inventory, service_uid: str = "") -> set[RoleKey]:
        svc_key, dep_key = service.key or "", deployment.key or ""
        roles = deployment.effective_roles()
        keys = {(svc_key, dep_key, r.name) for r in roles}
        try:
            argv = self._image_argv(deployment, inventory)
        except ImageNotRunnable as exc:
            self._problems[(svc_key, dep_key)] = str(exc)
            # Acted on (observed) and found unrunnable: waiters see Degraded at this generation at once.
            previous = self._applied.get((svc_key, dep_key))
            self._applied[(svc_key, dep_key)] = _Applied(row.generation, dict(previous.roles) if previous else {})
            self._write_status(svc_key, dep_key)
            return {k for k in keys if k in self.controllers}  # keep what runs; never start what cannot
        self._problems.pop((svc_key, dep_key), None)
        redeploy = int(row.status.get("redeploy_generation") or 0)
        applied = _Applied(row.generation)
        endpoints_file = self.data_dir / "endpoints" / svc_key / f"{dep_key}.json"
        multi = len(roles) > 1
        endpoints = {r.name: [f"{i.host}:{i.port}" for i in self.controllers[(svc_key, dep_key, r.name)]
                              .ready_instances()] if (svc_key, dep_key, r.name) in self.controllers else []
                     for r in roles} if multi else {}
        for role in roles:
            key = (svc_key, dep_key, role.name)
            others = {name: hosts for name, hosts in endpoints.items() if name != role.name}
            template = self._template(service, deployment, role, argv, redeploy, endpoints_file, multi,
                                      extra_env=role_endpoints_env(others))
            applied.roles[role.name] = template.revision
            ru = role.rolling_update
            want = self._replicas(role, row)
            self.capacity.demand(key, deployment, role, want, service_uid=service_uid, order=row.created_at)
            self._controller(key).set_desired(
                template, self.capacity.replicas(key, want), RollingUpdate(ru.max_surge, ru.max_unavailable))
        self._applied[(svc_key, dep_key)] = applied
        self._write_status(svc_key, dep_key)
        return keys

    def _replicas(self, role: Role, row: Any) -> int:
        """The spec's replicas; under autoscaling the autoscaler's count in status (the spec only starts it)."""
        if role.autoscaling is not None:
            scaled = ((row.status.get("roles") or {}).get(role.name) or {}).get("autoscaled")
            if isinstance(scaled, int) and scaled >= 1:
                return scaled
        return role.starting_replicas

    def _controller(self, key: RoleKey) -> RoleController:
        controller = self.controllers.get(key)
        if controller is None:
            svc, dep, role = key
            controller = RoleController(
                f"{svc}-{dep}-{role}", log_dir=self.data_dir / "logs" / svc / dep,
                progress_deadline_s=self.settings.progress_deadline_s,
                restart_backoff_base_s=self.settings.restart_backoff_base_s,
                restart_backoff_cap_s=self.settings.restart_backoff_cap_s,
                on_withdraw=self._withdraw, on_change=lambda c, k=key: self._role_changed(k),
                admit=lambda instance, k=key: self.capacity.admit(k, instance))
            self.controllers[key] = controller
        return controller

    def _inventory(self) -> Inventory:
        """The stored inventory; an object that cannot be read is left out (logged), so it fails only its users."""
        data: dict[str, list[Any]] = {kind: [] for kind in Inventory.KINDS}
        for kind in Inventory.KINDS:
            for _, name, row in self.store.scan(kind):
                try:
                    if isinstance(row, ValueError):
                        raise row
                    data[kind].extend(getattr(Inventory.model_validate({kind: [row.spec]}), kind))
                except Exception as exc:  # noqa: BLE001 -- whatever is wrong with it, it fails only its users
                    log.warning("inventory object %s cannot be read: %s", object_path(kind, name), exc)
        return Inventory.model_construct(**data)

    def _image_argv(self, deployment: Deployment, inventory: Inventory) -> list[str]:
        ref = deployment.image.reference
        image = inventory.index("images").get(ref)
        if image is not None and image.command:
            return [self.settings.python if a == "{python}" else a for a in image.command]
        if deployment.image.preset and deployment.image.preset in PRESET_IMAGES:
            return list(PRESET_IMAGES[deployment.image.preset]["argv"])
        kind = "preset" if deployment.image.preset else "custom" if deployment.image.custom else "url"
        raise ImageNotRunnable(
            f"image {kind} '{ref}' cannot run on the local platform: map it to a local command in the inventory "
            f"(inventory.images: [{{name: '{ref}', command: [...]}}])")

    def _template(self, service: Service, deployment: Deployment, role: Role, image_argv: list[str],
                  redeploy: int, endpoints_file: Path, multi: bool,
                  extra_env: dict[str, str] | None = None) -> RoleTemplate:
        """The role's template. `extra_env` (the other roles' current endpoints) is not part of the revision: it
        changes as instances come and go, which must not roll the role out again (the endpoints file keeps it
        current in running instances)."""
        argv = list(role.command) if role.command else image_argv
        env: dict[str, str] = {
            "INFERSTACK_SERVICE": service.key or "",
            "INFERSTACK_DEPLOYMENT": deployment.key or "",
            "INFERSTACK_ROLE": role.name,
            "HOST": "127.0.0.1",
        }
        if deployment.model is not None:
            model = deployment.model  # the id the echo preset serves under (its /v1/models)
            env["INFERSTACK_MODEL"] = model.path or (model.registry or "") + (f":{model.version}" if model.version
                                                                                 else "")
        if multi:
            env["INFERSTACK_ROLE_ENDPOINTS_FILE"] = str(endpoints_file)
        secrets = {UPSTREAM_TOKEN_ENV}
        for var in role.env:
            env[var.name] = var.value if var.secret is None else var.secret.get_secret_value()
            if var.secret is not None:
                secrets.add(var.name)
        env[UPSTREAM_TOKEN_ENV] = self.routing.upstream_token(service.key or "")
        mounts = tuple(Mount(self.data_dir / "mounts" / m.source, m.path, m.read_only) for m in deployment.mounts)
        # Secret values enter the revision as keyed digests: a revision (shown in status) that hashed a secret
        # itself would let whoever reads status test guesses of it.
        box = self.store.box
        revision_env = {k: box.derive("revision", v) if k in secrets else v for k, v in env.items()}
        content = {
            "argv": argv, "env": sorted(revision_env.items()),
            "mounts": [(str(m.source), m.path, m.read_only) for m in mounts],
            "probes": role.probes.to_data(), "spec": role.compute_spec, "model": deployment.model and
            deployment.model.to_data(), "listen": deployment.ports.listen, "redeploy": redeploy,
        }
        revision = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:10]
        env.setdefault("INFERSTACK_VERSION", revision)
        env.update(extra_env or {})
        preset = PRESET_IMAGES.get(deployment.image.preset or "", {})
        cwd = self.data_dir / "work" / (service.key or "") / (deployment.key or "")
        cwd.mkdir(parents=True, exist_ok=True)
        return RoleTemplate(
            argv=tuple(argv), revision=revision, env=env, cwd=cwd,
            mounts=mounts, listen_port_env=preset.get("listen_port_env", "PORT"),
            probes=_probes(role, preset), graceful_shutdown_s=deployment.graceful_shutdown_s)

    # --- status ----------------------------------------------------------------------------------------------------

    async def _role_changed(self, key: RoleKey) -> None:
        if self._stopped:
            return
        self.capacity.run()
        self._write_status(key[0], key[1])
        self._update_role_endpoints(key[0], key[1])
        self._publish_wanted.set()

    def _write_status(self, svc_key: str, dep_key: str) -> None:
        row = self.store.get(DEPLOYMENT, dep_key, svc_key)
        if row is None:
            return
        status = dict(row.status)
        roles_status: dict[str, Any] = {}
        applied = self._applied.get((svc_key, dep_key))
        complete = applied is not None
        conditions = list(status.get("conditions") or [])
        ready_all, degraded, progressing = True, [], []
        for (s, d, role), controller in sorted(self.controllers.items()):
            if (s, d) != (svc_key, dep_key):
                continue
            rs = controller.status()
            previous = (status.get("roles") or {}).get(role) or {}
            roles_status[role] = {
                "desired": rs.replicas, "total": rs.total, "ready": rs.ready, "updated": rs.updated,
                "updated_ready": rs.updated_ready, "revision": rs.revision,
                "instances": [{**_record_dict(r), **self.capacity.instance_status(r.id)} for r in controller.instances()],
                **({"autoscaled": previous["autoscaled"]} if "autoscaled" in previous else {}),
                **self.capacity.role_status((s, d, role)),
            }
            by_type = {c.type: c for c in rs.conditions}
            if by_type["Ready"].status != "True":
                ready_all = False
            if by_type["Degraded"].status == "True":
                degraded.append(f"{role}: {by_type['Degraded'].message}")
            if by_type["Progressing"].status == "True":
                progressing.append(f"{role}: {by_type['Progressing'].message}")
            if applied is None or applied.roles.get(role) != rs.revision or by_type["Progressing"].reason != "Complete":
                complete = False
        problem = self._problems.get((svc_key, dep_key))
        if problem:
            degraded.insert(0, problem)
            complete = False
        if applied is not None and applied.generation == row.generation:
            # Kubernetes semantics: the generation the controller acted on; Ready says whether it is rolled out.
            status["observed_generation"] = row.generation
        else:
            complete = False
        status["roles"] = roles_status
        observed = int(status.get("observed_generation") or 0)
        if degraded:
            new = condition("Degraded", True, "ImageNotRunnable" if problem else "RolloutStuck", "; ".join(degraded),
                            observed)
        else:
            new = condition("Degraded", False, "AsExpected", "", observed)
        conditions = set_condition(conditions, new)
        if progressing or not complete:
            new = condition("Progressing", True, "RollingUpdate",
                            "; ".join(progressing) or f"converging to generation {row.generation}", observed)
        else:
            new = condition("Progressing", False, "Complete", "every role runs the latest generation", observed)
        conditions = set_condition(conditions, new)
        counts = ", ".join(f"{r}: {v['ready']}/{v['desired']} ready" for r, v in roles_status.items())
        counts += "".join(f"; {r}: {note}" for r in roles_status
                          if (note := self.capacity.pending_note((svc_key, dep_key, r))))
        if ready_all and complete and roles_status:
            new = condition("Ready", True, "AllRolesReady", counts, observed)
        else:
            new = condition("Ready", False, "Degraded" if degraded else "NotReady",
                            counts or problem or "no instances yet", observed)
        conditions = set_condition(conditions, new)
        status["conditions"] = conditions
        if status != row.status:
            self.store.write_status(DEPLOYMENT, dep_key, status, parent=svc_key, event=None)

    def _update_role_endpoints(self, svc_key: str, dep_key: str) -> None:
        roles = {k[2]: c for k, c in self.controllers.items() if k[:2] == (svc_key, dep_key)}
        if len(roles) < 2:
            return
        endpoints = {role: [f"{r.host}:{r.port}" for r in c.ready_instances()] for role, c in roles.items()}
        write_role_endpoints(self.data_dir / "endpoints" / svc_key / f"{dep_key}.json", endpoints)

    # --- routing ---------------------------------------------------------------------------------------------------

    async def _withdraw(self, record: InstanceRecord) -> None:
        """Before an instance stops: a snapshot without it, pushed and swapped in by the gateway."""
        self._withdrawn.add(record.id)
        try:
            await self.publish()
        except GatewayUnavailable:
            pass  # no gateway routes to it now; a restarted one is sent a snapshot without it as soon as it serves
        finally:
            self._withdrawn.discard(record.id)

    def request_publish(self) -> None:
        """Push a new routing snapshot soon (e.g. after an invocation key changed)."""
        self._publish_wanted.set()

    async def _publisher(self) -> None:
        while True:
            await self._publish_wanted.wait()
            self._publish_wanted.clear()
            try:
                await self.publish()
            except GatewayUnavailable as exc:
                # The supervisor restarts it and asks for a publish then (request_publish): no retry loop here.
                log.warning("routing snapshot not pushed: %s", exc)
            except Exception:
                log.exception("pushing the routing snapshot failed; retrying")
                await asyncio.sleep(0.5)
                self._publish_wanted.set()

    async def publish(self) -> None:
        """Build the routing snapshot (service by service: `RoutingBook`) and push it to the gateway. After the
        gateway acknowledged it: listeners and routing state into status (`_observe_routing`, `mark_status`)."""
        if self.gateway is None:
            return
        async with self._publish_lock:
            for attempt in range(3):
                self._snapshot_version += 1
                snapshot = self.snapshot(self._snapshot_version)
                try:
                    result = await self.gateway.apush(snapshot)
                    break
                except SnapshotRejected as exc:
                    if attempt == 2:
                        raise
                    if exc.status == 409 and isinstance(exc.detail, dict):  # the gateway has a newer version
                        self._snapshot_version = max(self._snapshot_version, int(exc.detail.get("version") or 0))
                    elif exc.status != 400 or not self.routing.rejected(exc.detail):
                        raise
            self.routing.acknowledge(snapshot["version"])
            self._record_listeners(result.get("listeners") or {})
            self._observe_routing(snapshot)
            self.routing.mark_status()

    def snapshot(self, version: int) -> dict[str, Any]:
        """The routing snapshot of `version`: every service built on its own (see `RoutingBook`), with the ready
        instances of each role, minus those being withdrawn."""
        ready: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
        for (svc, dep, role), controller in self.controllers.items():
            ready.setdefault((svc, dep), {})[role] = [{"id": r.id, "host": r.host, "port": r.port}
                                                      for r in controller.ready_instances()
                                                      if r.id not in self._withdrawn]
        return self.routing.build(version, lambda svc, dep: ready.get((svc, dep), {}), self.keys.hashes())

    def health(self) -> dict[str, Any]:
        """The runtime's parts for `/healthz`: the gateway's supervision state (`ok` false while it is down)."""
        return {"gateway": self.gateway.health()} if self.gateway is not None else {}

    def _record_listeners(self, listeners: dict[str, int]) -> None:
        by_service: dict[str, dict[str, int]] = {}
        for name, port in listeners.items():
            svc, logical = name.rsplit("/", 1)
            by_service.setdefault(svc, {})[logical] = port
        for svc, ports in by_service.items():
            try:
                row = self.store.get(SERVICE, svc)
            except ValueError:
                continue  # a row that cannot be read: its routing book entry says why
            if row is None:
                continue
            urls = {p: f"http://127.0.0.1:{b}" for p, b in sorted(ports.items(), key=lambda i: int(i[0]))}
            first = urls.get(str(row.spec.get("ports", [8000])[0])) or next(iter(urls.values()), None)
            patch = {"gateway_ports": ports, "gateway_urls": urls, "gateway_url": first}
            if any(row.status.get(k) != v for k, v in patch.items()):
                self.store.write_status(SERVICE, svc, patch, event=None)

    def _observe_routing(self, snapshot: dict[str, Any]) -> None:
        """A service and its traffic object are observed once a snapshot carrying them is live in the gateway — at
        the generation its routing was built from (`self.routing`: a part kept from its last good value is not)."""
        for svc in snapshot["services"]:
            live = self.routing.service(svc["key"])
            for kind, key, parent in ((SERVICE, svc["key"], ""), (TRAFFIC, svc["key"], svc["key"])):
                try:
                    row = self.store.get(kind, key, parent)
                except ValueError:
                    continue
                routed = live.generations.get(object_path(kind, key, parent)) if live is not None else None
                if row is None or routed != row.generation or (row.status.get("observed_generation") == row.generation
                                   and (get_condition(row.status, "Ready") or {}).get("status") == "True"):
                    continue
                message = (f"routing snapshot {snapshot['version']} is live"
                           + (f" at {row.status.get('gateway_url')}" if kind == SERVICE else ""))
                conditions = list(row.status.get("conditions") or [])
                for new in (condition("Ready", True, "Routed", message, row.generation),
                            condition("Progressing", False, "Complete", message, row.generation),
                            condition("Degraded", False, "AsExpected", "", row.generation)):
                    conditions = set_condition(conditions, new)
                self.store.write_status(kind, key, {"observed_generation": row.generation, "conditions": conditions},
                                        parent=parent, event=None)

    def metrics_lines(self) -> list[str]:
        """The platform's own gauges (instances per role, desired and ready), Prometheus text format."""
        lines = ["# HELP inferstack_instances Instances of a role by state.", "# TYPE inferstack_instances gauge"]
        for (svc, dep, role), c in sorted(self.controllers.items()):
            rs = c.status()
            labels = f'service="{svc}",deployment="{dep}",role="{role}"'
            lines.append(f'inferstack_instances{{{labels},state="desired"}} {rs.replicas}')
            lines.append(f'inferstack_instances{{{labels},state="ready"}} {rs.ready}')
            lines.append(f'inferstack_instances{{{labels},state="total"}} {rs.total}')
        return lines


def _probes(role: Role, preset: dict[str, Any]) -> Probes:
    def convert(p: Any) -> Probe | None:
        if p is None:
            return None
        action: HttpGet | TcpSocket | Exec
        if p.http is not None:
            action = HttpGet(p.http.path, p.http.port)
        elif p.tcp is not None:
            action = TcpSocket(p.tcp.port)
        else:
            action = Exec(tuple(p.command or ()))
        return Probe(action, p.initial_delay_s, p.period_s, p.timeout_s, p.success_threshold, p.failure_threshold)

    readiness = convert(role.probes.readiness)
    if readiness is None and preset.get("readiness_path"):
        readiness = Probe(HttpGet(preset["readiness_path"]), period_s=0.5, timeout_s=1.0, failure_threshold=2)
    return Probes(startup=convert(role.probes.startup), readiness=readiness, liveness=convert(role.probes.liveness))


def _record(data: dict[str, Any]) -> InstanceRecord:
    fields = InstanceRecord.__dataclass_fields__
    return InstanceRecord(**{k: v for k, v in data.items() if k in fields})


def _record_dict(record: InstanceRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in InstanceRecord.__dataclass_fields__}


__all__ = ["ImageNotRunnable", "Reconciler", "Settings"]
