"""The reconciler: converges every deployment's roles to running instances and keeps the gateway's routing current.

Desired state comes from the store (what the API accepted); observed state is what the role controllers report and
what the gateway acknowledged. The reconciler writes status only — never spec: per role the desired/ready/updated
counts, restarts and the instances (with pid, start time and process tree, so a restarted platform re-adopts them;
with CrashLoopBackOff, exit code and log tail when they fail), `observed_generation` (the generation acted on),
`observed_routing_generation`, and the conditions `Available` / `Progressing` / `Degraded` / `Ready` (`conditions.py`;
services and traffic objects: `routing_status.py`). What happens at run time goes to the event log (`record_event`).
Every change of the ready set, the traffic object or a service's listeners becomes a new versioned routing snapshot
pushed to the gateway process.

Deleted deployments drain in the background (tracked: a platform stop waits for them too) and their log and work
directories, keyed by the deployment's uid, are removed after the retention period (`retention.py`). After a
restart, process trees of this data dir that no adopted instance owns (left by a platform killed mid-way) are
stopped."""

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

from inferstack.spec import STANDARD_ROLE, Deployment, Inventory, Role, Service

from ..images import PRESET_IMAGES, UPSTREAM_TOKEN_ENV
from . import retention
from .canary import CanaryRollouts
from .conditions import Routing, deployment_conditions, role_summary
from .gateway.process import GatewayUnavailable, SnapshotRejected
from .keys import InvocationKeys
from .objects import object_path
from .placement import PlacementBook
from .release_status import current, release_conditions
from .releases import ReleaseManager
from .routing_book import RoutingBook
from .routing_status import RoutingStatus
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
    RuntimeEvent,
    TcpSocket,
    Termination,
    role_endpoints_env,
    write_role_endpoints,
)
from .runtime.tree import scope_of, stray_trees, terminate_strays
from .store import PLATFORM, Store

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
    crash_loop_after: int = 3  # failed starts in a row before an instance is CrashLoopBackOff
    log_retention_s: float = field(default_factory=retention.retention_from_env)
    stray_grace_s: float = 10.0  # SIGTERM → SIGKILL for process trees a killed platform left without an owner
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
        self._uids: dict[tuple[str, str], str] = {}  # the deployment object each controller runs for
        self._ordinals: dict[RoleKey, int] = {}  # next instance ordinal of a role whose controller was replaced
        self._draining: set[asyncio.Task[None]] = set()
        self.routing_status = RoutingStatus(store)
        self.stop_report: list[dict[str, Any]] = []  # how each instance ended when the platform stopped
        self._scope = scope_of(self.data_dir)
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
        # Progressive releases: traffic shifts and canary redeploys (releases.py, canary.py).
        self.releases = ReleaseManager(store, windows=self._gateway_windows, routing_changed=self._release_routed,
                                       deployment_changed=self._write_status,
                                       controllers=lambda svc, dep: self.controllers.get((svc, dep, STANDARD_ROLE)),
                                       rollouts=self._rollout_of)
        self.canaries = CanaryRollouts(store, self.releases)

    # --- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.gateway is not None:
            await self.gateway.start()  # re-adopts the running gateway, else starts one on its last snapshot
            last = self.gateway.last_snapshot()
            self.routing.seed(last)
            if last and isinstance(last.get("version"), int):
                self._snapshot_version = max(self._snapshot_version, last["version"])
        readable = self._adopt()
        strays = await asyncio.to_thread(stray_trees, self._scope, [r.tree for c in self.controllers.values()
                                                                    for r in c.instances() if r.tree])
        if strays and not readable:
            log.warning("not stopping %d process tree(s) without an owner: a deployment row cannot be read, they may "
                        "be its instances", len(strays))
            strays = []
        services = [key for _, key, _ in self.store.scan(SERVICE)]
        self.capacity.expect(services)
        self.releases.load()  # held canaries' revision splits are routed from the first snapshot on
        for key in services:
            self._enqueue(key)
        self._tasks = [asyncio.create_task(self._worker(), name="reconciler"),
                       asyncio.create_task(self._publisher(), name="gateway-publisher"),
                       asyncio.create_task(self.capacity.tick_forever(), name="capacity-scheduler"),
                       asyncio.create_task(self._janitor(), name="retention"),
                       asyncio.create_task(self.releases.run_forever(), name="releases")]
        if strays:
            self._tasks.append(asyncio.create_task(self._stop_strays(strays), name="strays"))

    async def stop(self, graceful: bool = True) -> None:
        """Stop every instance (withdrawn from routing first, then its graceful period; draining ones included) and
        the gateway. ``stop_report`` then says how each instance ended."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        keys = list(self.controllers)
        results = await asyncio.gather(*(self.controllers[k].shutdown(graceful) for k in keys),
                                       return_exceptions=True)
        while self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):
                log.error("stopping %s failed: %r", "/".join(key), result)
                continue
            self.stop_report.extend(_stop_entry(key, instance, ended) for instance, ended in result)
        self.controllers.clear()
        self.capacity.close()
        if self.gateway is not None:
            await self.gateway.stop()

    def graceful_shutdown_s(self) -> float:
        """The longest graceful period of any running instance (what a stop may take, before its margin)."""
        return max((c.graceful_shutdown_s for c in self.controllers.values()), default=0.0)

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

    def _adopt(self) -> bool:
        """Re-adopt the instances recorded in status whose process is still the same one (pid + start time). A
        row that cannot be read costs only its own instances (they are left running, unadopted). Returns whether
        every deployment row could be read (else no process tree can be called a stray)."""
        readable = True
        for svc_key, dep_key, row in self.store.scan(DEPLOYMENT):
            try:
                if isinstance(row, ValueError):
                    raise row
                self._adopt_deployment(row)
            except Exception:
                readable = False
                log.exception("cannot re-adopt the instances of %s", object_path(DEPLOYMENT, dep_key, svc_key))
        return readable

    def _adopt_deployment(self, row: Any) -> None:
        roles = {r.name: r for r in Deployment.model_validate(row.spec).effective_roles()}
        for role, info in (row.status.get("roles") or {}).items():
            records = [InstanceRecord.from_dict(r) for r in info.get("instances", [])]
            if not records:
                continue
            key = (row.parent, row.key, role)
            controller = self._controller(key, row.uid)
            adopted = controller.adopt_existing(records)
            # Their placements come back from status, so the scheduler counts the slots they hold.
            self.capacity.restore(key, [i for i in info.get("instances", []) if i.get("id") in {a.id for a in adopted}],
                                  row.spec.get("queue", ""), roles[role].compute_spec if role in roles else "")
            log.info("%s: re-adopted %d of %d recorded instance(s)", "/".join(key), len(adopted), len(records))

    async def _stop_strays(self, strays: list[Any]) -> None:
        """Process trees of this data dir no adopted instance owns — left by a platform killed while it started or
        drained them: SIGTERM, a grace, SIGKILL. Off the event loop (it waits)."""
        found = await asyncio.to_thread(terminate_strays, strays, self.settings.stray_grace_s)
        pids = sum(len(p) for p in found.values())
        log.warning("stopped %d process tree(s) (%d process(es)) an earlier run left without an owner", len(found),
                    pids)
        self.store.record_event(PLATFORM, "runtime", "Killing", f"stopped {len(found)} instance process tree(s) "
                                f"an earlier platform run left without an owner", type="Warning",
                                request_id="reconciler")

    # --- retention -------------------------------------------------------------------------------------------------

    async def _janitor(self) -> None:
        """Remove expired log and work directories of deleted deployments, now and then (`retention.py`)."""
        interval = min(max(self.settings.log_retention_s / 4, 1.0), 600.0)
        while True:
            try:
                live = {row.uid for row in self.store.list(DEPLOYMENT)}
                in_use = [r.log_path for c in self.controllers.values() for r in c.instances() if r.log_path]
                await asyncio.to_thread(retention.remove_expired, self.data_dir, live, self.settings.log_retention_s,
                                        in_use=in_use)
            except Exception:
                log.exception("removing expired logs failed; trying again later")
            await asyncio.sleep(interval)

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
        dep_keys: list[str] = []
        if service is not None:
            inventory = self._inventory()
            self.capacity.set_inventory(inventory)
            self.keys.ensure(service_key)
            for _, dep_key, dep_row in self.store.scan(DEPLOYMENT, parent=service_key):
                dep_keys.append(dep_key)
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
        gone = [k for k in self.controllers if k[0] == service_key and k not in desired]
        for svc, dep in sorted({k[:2] for k in gone}):
            kept = any(d[:2] == (svc, dep) for d in desired)
            self._drain(svc, dep, [k for k in gone if k[:2] == (svc, dep)],
                        "role removed from the deployment" if kept else "deployment deleted")
        for key in [k for k in self._applied if k[0] == service_key and not any(d[:2] == k for d in desired)]:
            self._applied.pop(key, None)
            self._problems.pop(key, None)
            self.routing_status.forget(*key)
        for dep in {k[1] for k in gone} - set(dep_keys):
            self.releases.forget(service_key, dep)
            self.canaries.forget(service_key, dep)
        if svc_row is None:
            self.releases.forget(service_key)
            self.canaries.forget(service_key)
            self.routing_status.forget(service_key)
        else:
            self.releases.traffic_changed(service_key, dep_keys, self.routing.routed_weights(service_key))
            self.routing_status.refresh(service_key)  # new generations are pending until the gateway routes them
        self.capacity.converged(service_key)
        self.capacity.run()
        self._publish_wanted.set()

    def _rollout_of(self, svc: str, dep: str) -> tuple[str, str]:
        """Where the deployment's roles are with the revision of its current spec, for a traffic shift toward it:
        ("failed", why) when a role's rollout stopped, ("waiting", what) while a ready instance of an earlier revision
        could still take the shift's requests or none of the current one is ready yet, else ("done", ""). A scale
        alone is not waited for; a role held as a canary (its own progressive release splits it by revision) counts
        as rolled out."""
        roles = sorted((key[2], controller) for key, controller in self.controllers.items() if key[:2] == (svc, dep))
        waiting = []
        for role, controller in roles:
            rs = controller.status()
            progressing = rs.condition("Progressing")
            if progressing.status == "False":
                return "failed", f"{progressing.reason}: {progressing.message}"
            current = rs.complete or rs.replicas == 0 or (rs.updated_ready > 0 and rs.ready == rs.updated_ready)
            if not current and controller.canary is None:
                waiting.append(progressing.message if len(roles) == 1 else f"{role}: {progressing.message}")
        return ("waiting", "; ".join(w for w in waiting if w)) if waiting else ("done", "")

    def _drain(self, svc: str, dep: str, keys: list[RoleKey], why: str) -> None:
        """Stop these controllers' instances in the background (tracked: a platform stop waits for them); once they
        are gone, the deployment object's files start their retention period."""
        controllers = [self.controllers.pop(k) for k in keys]
        whole = not any(k[:2] == (svc, dep) for k in self.controllers)  # else only some roles of it go
        uid = self._uids.pop((svc, dep), "") if whole else ""
        for key, controller in zip(keys, controllers, strict=True):
            self._ordinals[key] = controller.next_ordinal  # a re-created deployment's ids go on from here
        log.info("%s/%s: %s; draining %d role(s)", svc, dep, why, len(controllers))

        stops = [asyncio.create_task(c.shutdown(True, why)) for c in controllers]
        for key, controller, stopped in zip(keys, controllers, stops, strict=True):
            self.capacity.retire(key, controller, stopped)  # its slots stay taken until its instances are gone

        async def drain() -> None:
            for key, result in zip(keys, await asyncio.gather(*stops, return_exceptions=True), strict=True):
                if isinstance(result, BaseException):
                    log.error("draining %s failed: %r", "/".join(key), result)
                elif self._stopped:
                    self.stop_report.extend(_stop_entry(key, instance, ended) for instance, ended in result)
            if uid:
                retention.mark_deleted(self.data_dir, svc, dep, uid)

        task = asyncio.create_task(drain(), name=f"drain {svc}/{dep}")
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def _converge_deployment(self, service: Service, deployment: Deployment, row: Any,
                             inventory: Inventory, service_uid: str = "") -> set[RoleKey]:
        svc_key, dep_key = service.key or "", deployment.key or ""
        roles = deployment.effective_roles()
        keys = {(svc_key, dep_key, r.name) for r in roles}
        known = self._uids.get((svc_key, dep_key))
        if known is not None and known != row.uid:  # deleted and created again under the same key: a new object
            self._drain(svc_key, dep_key, [k for k in self.controllers if k[:2] == (svc_key, dep_key)],
                        "deployment re-created")
            self.routing_status.forget(svc_key, dep_key)
        try:
            argv = self._image_argv(deployment, inventory)
        except ImageNotRunnable as exc:
            if self._problems.get((svc_key, dep_key)) != str(exc):
                self.store.record_event(DEPLOYMENT, dep_key, "ImageNotRunnable", str(exc), parent=svc_key,
                                        type="Warning", request_id="reconciler")
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
                                      row.uid, extra_env=role_endpoints_env(others))
            applied.roles[role.name] = template.revision
            ru = role.rolling_update
            want = self._replicas(role, row)
            self.capacity.demand(key, deployment, role, want, service_uid=service_uid, order=row.created_at)
            controller = self._controller(key, row.uid)
            rolling, replicas = RollingUpdate(ru.max_surge, ru.max_unavailable), self.capacity.replicas(key, want)
            if multi:
                controller.set_desired(template, replicas, rolling)
                continue

            def build(spec: dict[str, Any]) -> RoleTemplate:
                kept = Deployment.model_validate(spec)
                return self._template(service, kept, kept.entry_role(), self._image_argv(kept, inventory), redeploy,
                                      endpoints_file, multi, row.uid)

            self.canaries.converge(svc_key, deployment, row, template, controller, replicas, rolling, build)
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

    def _controller(self, key: RoleKey, uid: str) -> RoleController:
        controller = self.controllers.get(key)
        if controller is None:
            svc, dep, role = key
            self._uids[(svc, dep)] = uid
            controller = RoleController(
                f"{svc}-{dep}-{role}", log_dir=retention.log_dir(self.data_dir, svc, dep, uid),
                progress_deadline_s=self.settings.progress_deadline_s,
                restart_backoff_base_s=self.settings.restart_backoff_base_s,
                restart_backoff_cap_s=self.settings.restart_backoff_cap_s,
                crash_loop_after=self.settings.crash_loop_after, tree_scope=self._scope,
                first_ordinal=self._ordinals.pop(key, 1),
                on_withdraw=self._withdraw, on_change=lambda c, k=key: self._role_changed(k),
                on_event=lambda event, k=key: self._record_event(k, event),
                admit=lambda instance, k=key: self.capacity.admit(k, instance))
            self.controllers[key] = controller
        return controller

    def _record_event(self, key: RoleKey, event: RuntimeEvent) -> None:
        """A controller's event, on its deployment (role-level ones name the role when there are several)."""
        svc, dep, role = key
        several = sum(1 for k in self.controllers if k[:2] == (svc, dep)) > 1
        message = event.message if event.instance or not several else f"role {role}: {event.message}"
        self.store.record_event(DEPLOYMENT, dep, event.reason, message, parent=svc, type=event.type,
                                request_id="runtime")

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
                  redeploy: int, endpoints_file: Path, multi: bool, uid: str,
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
        secret_names = {UPSTREAM_TOKEN_ENV}
        for var in role.env:
            env[var.name] = var.value if var.secret is None else var.secret.get_secret_value()
            if var.secret is not None:
                secret_names.add(var.name)
        env[UPSTREAM_TOKEN_ENV] = self.routing.upstream_token(service.key or "")
        secrets = {env[name] for name in secret_names}  # values, masked in the log tails status shows
        mounts = tuple(Mount(self.data_dir / "mounts" / m.source, m.path, m.read_only) for m in deployment.mounts)
        # Secret values enter the revision as keyed digests: a revision (shown in status) that hashed a secret
        # itself would let whoever reads status test guesses of it.
        box = self.store.box
        revision_env = {k: box.derive("revision", v) if k in secret_names else v for k, v in env.items()}
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
        cwd = retention.work_dir(self.data_dir, service.key or "", deployment.key or "", uid)
        cwd.mkdir(parents=True, exist_ok=True)
        return RoleTemplate(
            argv=tuple(argv), revision=revision, env=env, cwd=cwd,
            mounts=mounts, listen_port_env=preset.get("listen_port_env", "PORT"),
            probes=_probes(role, preset), graceful_shutdown_s=deployment.graceful_shutdown_s,
            secrets=frozenset(secrets))

    # --- status ----------------------------------------------------------------------------------------------------

    async def _role_changed(self, key: RoleKey) -> None:
        if self._stopped:
            return
        self.capacity.run()
        self._write_status(key[0], key[1])
        self._update_role_endpoints(key[0], key[1])
        self._publish_wanted.set()

    def _write_status(self, svc_key: str, dep_key: str) -> None:
        """The deployment's status from its controllers and the acknowledged routing (conditions: `conditions.py`)."""
        row = self.store.get(DEPLOYMENT, dep_key, svc_key)
        if row is None:
            return
        status = dict(row.status)
        applied = self._applied.get((svc_key, dep_key))
        if applied is not None and applied.generation == row.generation:
            # Kubernetes semantics: the generation the controller acted on; Ready says whether it is rolled out.
            status["observed_generation"] = row.generation
        observed = int(status.get("observed_generation") or 0)
        roles_status: dict[str, Any] = {}
        role_states = {}
        entry_ready: list[str] = []
        entry = Deployment.model_validate(row.spec).entry_role().name
        for (s, d, role), controller in sorted(self.controllers.items()):
            if (s, d) != (svc_key, dep_key):
                continue
            rs = role_states[role] = controller.status()
            previous = (status.get("roles") or {}).get(role) or {}
            instances = controller.instances()
            roles_status[role] = {
                **role_summary(rs),
                "instances": [{**r.to_dict(), **self.capacity.instance_status(r.id)} for r in instances],
                **({"autoscaled": previous["autoscaled"]} if "autoscaled" in previous else {}),
                **self.capacity.role_status((s, d, role)),
            }
            if role == entry:
                entry_ready = [r.id for r in instances if r.ready and r.id not in self._withdrawn]
        revisions_current = applied is not None and all(
            applied.roles.get(role) == rs.revision for role, rs in role_states.items())
        if self.gateway is None:
            routing = Routing(True)
        else:
            routed, version, pending = self.routing_status.deployment(svc_key, dep_key, entry_ready)
            routing = Routing(routed, version, pending)
            if version is not None:
                status["observed_routing_generation"] = version
        status["roles"] = roles_status
        held_back = "; ".join(f"{r}: {note}" for r in roles_status
                              if (note := self.capacity.pending_note((svc_key, dep_key, r))))
        status["conditions"] = release_conditions(deployment_conditions(
            list(status.get("conditions") or []), generation=row.generation, observed=observed, roles=role_states,
            revisions_current=revisions_current, problem=self._problems.get((svc_key, dep_key)), routing=routing,
            pending=held_back), current(status.get("release"), row.generation), observed)
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
                self._routing_failed(exc, "GatewayUnavailable")
            except Exception as exc:
                log.exception("pushing the routing snapshot failed; retrying")
                self._routing_failed(exc)
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
            self.routing.mark_status()  # first: a service's Ready reads the Degraded condition it writes
            self._observe_routing(snapshot)
            self.releases.acknowledged(snapshot)  # a release step's window opens once the gateway routes it

    def snapshot(self, version: int) -> dict[str, Any]:
        """The routing snapshot of `version`: every service built on its own (see `RoutingBook`), with the ready
        instances of each role, minus those being withdrawn."""
        ready: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
        for (svc, dep, role), controller in self.controllers.items():
            ready.setdefault((svc, dep), {})[role] = [{"id": r.id, "host": r.host, "port": r.port,
                                                       "revision": r.revision}
                                                      for r in controller.ready_instances()
                                                      if r.id not in self._withdrawn]
        return self.routing.build(version, lambda svc, dep: ready.get((svc, dep), {}), self.keys.hashes(),
                                  self.releases.revision_weights)

    async def _gateway_windows(self, services: list[str]) -> dict[str, Any]:
        """The gateway's per-instance totals for release gates (GatewayUnavailable without a gateway)."""
        if self.gateway is None:
            raise GatewayUnavailable("no gateway runs: releases cannot read metrics")
        return await self.gateway.awindows(services)

    def _release_routed(self, svc: str) -> None:
        """A release changed what must be routed (weights, revision shares) or its status: publish, say so."""
        self.routing_status.refresh(svc)
        self._publish_wanted.set()

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
        """The gateway swapped ``snapshot`` in: services, traffic objects and deployments it carries at their current
        generation are observed / routed (`routing_status.py`; the generations each service's routing was built from
        come from `self.routing`: a part kept from its last good value is not its current generation); the
        deployments whose routed instances changed get a new status (their Ready waits for this)."""
        generations = {svc["key"]: live.generations for svc in snapshot["services"]
                       if (live := self.routing.service(svc["key"])) is not None}
        for svc, dep in sorted(self.routing_status.observe(snapshot, generations)):
            self._write_status(svc, dep)

    def _routing_failed(self, exc: Exception, reason: str = "PublishFailed") -> None:
        """A snapshot could not be made live: every service says so (Ready False with the reason) until one is."""
        message = f"the gateway did not take routing snapshot {self._snapshot_version}: {exc}"
        try:
            self.routing_status.failed(reason, message)
            self.store.record_event(PLATFORM, "gateway", reason, f"the gateway did not take a routing snapshot: "
                                    f"{type(exc).__name__}", type="Warning", request_id="reconciler")
        except Exception:
            log.exception("recording the failed publish failed")

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


def _stop_entry(key: RoleKey, instance: str, ended: Termination) -> dict[str, Any]:
    """One line of the platform's stop report."""
    return {"service": key[0], "deployment": key[1], "role": key[2], "instance": instance,
            "exit_code": ended.exit_code, "killed": ended.forced, "graceful_s": ended.grace_s,
            "leftovers": list(ended.leftovers)}


__all__ = ["ImageNotRunnable", "Reconciler", "Settings"]
