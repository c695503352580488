"""Canary redeploys on the reconciler's side: which revision a deployment with `progressive` runs, and when its
controller holds a rollout as a canary (`RoleController.set_desired(canary=...)`); the steps themselves are the
release manager's (`releases.py`).

Decisions, per convergence of a standard deployment with a policy (the release's attempt key says whether a record is
about the current spec: `release_status.attempt_key`):

- no release of this attempt, and the template's revision differs from the one the controller runs: a **canary
  starts** — the revision running so far is the stable one, its spec is kept (`stable_revision` rows, below), and the
  controller runs up to the rolling update's surge (at least 1) new-revision instances beside it;
- a release of this attempt **progressing or paused**: the hold is kept (after a restart: taken up again, with the
  stable revision's template rebuilt from its kept spec);
- **rolled back**: the stable revision stays what runs (its template, rebuilt after a restart from the kept spec) —
  the declared spec is not rolled out again until it changes or a retry is asked;
- **succeeded** (promoted), superseded, or no policy: the template as declared, plainly.

The stable spec is kept as a private row of kind `stable_revision` (parent the service, key the deployment) — in the
store, so secrets are kept as every spec is, and so a restarted platform can start the stable revision's instances
again; the API never shows it. It goes once no release needs it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from inferstack.spec import Deployment

from .objects import DEPLOYMENT, STABLE_REVISION
from .release_status import PAUSED, PROGRESSING, ROLLED_BACK, SUPERSEDED, attempt_key
from .releases import ReleaseManager
from .runtime import RoleController, RoleTemplate, RollingUpdate
from .store import Store

log = logging.getLogger("inferstack.canary")

BuildTemplate = Callable[[dict[str, Any]], RoleTemplate | None]  # a deployment spec → its entry role's template


class CanaryRollouts:
    """What the reconciler asks before it sets a standard deployment's controller (see the module docstring)."""

    def __init__(self, store: Store, releases: ReleaseManager) -> None:
        self.store = store
        self.releases = releases
        self._specs: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}  # the spec of the revision each runs

    def converge(self, svc: str, deployment: Deployment, row: Any, template: RoleTemplate,
                 controller: RoleController, replicas: int, rolling: RollingUpdate, build: BuildTemplate) -> None:
        """Set `controller` for `template` (the declared revision), holding it as a canary where the policy says."""
        dep = deployment.key or ""
        policy = deployment.progressive
        release = row.status.get("release") if isinstance(row.status.get("release"), dict) else None
        if policy is None or deployment.inference_mode != "standard" or deployment.roles:
            self._supersede(svc, dep, release, "the progressive policy was removed: the rolling update goes on")
            self._plain(svc, dep, row, template, controller, replicas, rolling)
            return
        attempt = attempt_key(row.generation, policy, int(row.status.get("release_retries") or 0))
        count = max(rolling.bounds(replicas)[0], 1)  # the surge: canary instances run beside the old ones
        held = controller.canary
        if release is not None and release.get("attempt") == attempt:
            phase = release.get("phase")
            stable = held[0] if held else self._stable_template(svc, dep, str(release.get("stable_revision")), build)
            if phase in (PROGRESSING, PAUSED) and stable is not None:
                controller.set_desired(template, replicas, rolling, canary=count, stable=stable)
                self.releases.resume_canary(svc, dep, release, policy)
                return
            if phase == ROLLED_BACK:
                current = controller.template
                keep = current if current is not None and current.revision == release.get("stable_revision") \
                    else stable
                if keep is not None:
                    controller.set_desired(keep, replicas, rolling)
                    return
            if phase in (PROGRESSING, PAUSED, ROLLED_BACK):
                log.warning("%s/%s: the stable revision %s's spec is not kept: %s rolls out as declared", svc, dep,
                            release.get("stable_revision"), template.revision)
                self._supersede(svc, dep, release, "the stable revision's spec is not kept (a platform restart): "
                                                   "the declared revision rolls out")
            self._plain(svc, dep, row, template, controller, replicas, rolling)
            return
        stable, stable_spec = self._stable_of(svc, dep, controller, template, build)
        if stable is None:
            self._supersede(svc, dep, release, f"generation {row.generation} needs no canary")
            self._plain(svc, dep, row, template, controller, replicas, rolling)
            return
        if stable_spec is not None:
            self._keep(svc, dep, stable_spec)
        state = self.releases.start_canary(svc, dep, row.generation, attempt, policy, template.revision,
                                           stable.revision)
        self.store.write_status(DEPLOYMENT, dep, {"release": state}, parent=svc, request_id="releases", event=None)
        controller.set_desired(template, replicas, rolling, canary=count, stable=stable)

    def forget(self, svc: str, dep: str | None = None) -> None:
        """A deployment (or every deployment of the service) is gone: its kept specs too."""
        for key in [k for k in self._specs if k[0] == svc and dep in (None, k[1])]:
            del self._specs[key]
        for parent, key, _ in self.store.scan(STABLE_REVISION, parent=svc):
            if dep is None or key == dep:
                with self.store.transaction("releases") as tx:
                    tx.delete(STABLE_REVISION, key, parent)

    # --- helpers -----------------------------------------------------------------------------------------------------

    def _plain(self, svc: str, dep: str, row: Any, template: RoleTemplate, controller: RoleController,
               replicas: int, rolling: RollingUpdate) -> None:
        controller.set_desired(template, replicas, rolling)
        self._specs[(svc, dep)] = (template.revision, dict(row.spec))
        release = row.status.get("release") if isinstance(row.status.get("release"), dict) else None
        needed = release is not None and release.get("phase") in (PROGRESSING, PAUSED, ROLLED_BACK)
        if not needed and self.store.get(STABLE_REVISION, dep, svc) is not None:
            with self.store.transaction("releases") as tx:
                tx.delete(STABLE_REVISION, dep, svc)

    def _stable_of(self, svc: str, dep: str, controller: RoleController, template: RoleTemplate,
                   build: BuildTemplate) -> tuple[RoleTemplate | None, dict[str, Any] | None]:
        """The revision a canary of `template` would be measured against (None: nothing to canary — a new
        deployment, the same revision, or an earlier one whose spec is unknown), and its spec to keep."""
        held = controller.canary
        if held is not None:
            return (held[0], None) if held[0].revision != template.revision else (None, None)
        current = controller.template
        if current is not None:
            if current.revision == template.revision:
                return None, None
            known = self._specs.get((svc, dep))
            return current, (known[1] if known is not None and known[0] == current.revision else None)
        running = {r.revision for r in controller.instances()} - {template.revision}
        if len(running) != 1:
            return None, None  # nothing runs yet, or a mix: roll out plainly
        stable = self._stable_template(svc, dep, running.pop(), build)
        return stable, None

    def _stable_template(self, svc: str, dep: str, revision: str, build: BuildTemplate) -> RoleTemplate | None:
        """The stable revision's template, from the kept spec (None when none is kept, or it builds another one)."""
        row = self.store.get(STABLE_REVISION, dep, svc)
        if row is None:
            return None
        try:
            template = build(row.spec)
        except Exception:  # a kept spec that no longer builds is as good as none
            log.exception("%s/%s: the kept spec of revision %s does not build", svc, dep, revision)
            return None
        if template is None or template.revision != revision:
            return None
        self._specs[(svc, dep)] = (revision, dict(row.spec))
        return template

    def _keep(self, svc: str, dep: str, spec: dict[str, Any]) -> None:
        with self.store.transaction("releases") as tx:
            tx.put(STABLE_REVISION, dep, spec, parent=svc, action="keep")

    def _supersede(self, svc: str, dep: str, release: dict[str, Any] | None, why: str) -> None:
        if release is None or release.get("phase") not in (PROGRESSING, PAUSED, ROLLED_BACK):
            return
        self.releases.forget(svc, dep)
        self.store.write_status(DEPLOYMENT, dep, {"release": {**release, "phase": SUPERSEDED, "reason": why}},
                                parent=svc, request_id="releases", event=None)
        try:
            self.store.record_event(DEPLOYMENT, dep, "ReleaseSuperseded", why, parent=svc, request_id="releases")
        except Exception:
            log.exception("recording ReleaseSuperseded failed")
