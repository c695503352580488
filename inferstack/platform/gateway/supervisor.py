"""GatewaySupervisor: keeps one gateway process serving for the platform — re-adopts it, watches it, restarts it.

- `start()`: re-adopt the gateway the state dir records when it is still the same process (pid + /proc start time)
  *and* its admin API answers our token as that pid; else start one, which serves the persisted last snapshot at
  once on the same listener ports. Never a second gateway: a recorded process that is alive but does not answer
  within ADOPT_PATIENCE_S is killed first (it holds the listeners).
- Watching: an exit is seen at once (pidfd); a gateway whose admin `/healthz` fails LIVENESS_FAILURES checks in a
  row (one every LIVENESS_PERIOD_S, LIVENESS_TIMEOUT_S each) is killed. Either way it is restarted — at once after a
  first failure; while it keeps failing within STABLE_AFTER_S of its start, after a back-off of 1 s, 2 s, 4 s … up
  to 30 s. Every restart is counted and logged, reported through `on_event` (the platform's runtime events:
  `GatewayRestarted`, `GatewayBackOff`, `GatewayUnresponsive`, `GatewayAdopted`, `GatewayStarted`,
  `GatewayStartFailed`), and followed by `on_restart` (the platform pushes its current snapshot).
- `stop()`: a deliberate stop — SIGTERM, the gateway drains (up to 5 s), SIGKILL after; its record and persisted
  snapshot are removed (the platform stops the instances too). A crash of the platform runs none of this: the
  gateway keeps serving its last snapshot and is re-adopted by the next platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .process import GatewayError, GatewayProcess, GatewayUnavailable, SnapshotRejected, describe_exit
from .statedir import StateDir

log = logging.getLogger("inferstack.gateway.supervisor")

ADOPT_PATIENCE_S = 5.0
LIVENESS_PERIOD_S = 2.0
LIVENESS_TIMEOUT_S = 3.0
LIVENESS_FAILURES = 5
STABLE_AFTER_S = 30.0
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0

OnEvent = Callable[[str, str, str], None]  # (reason, message, type "Normal" | "Warning")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GatewaySupervisor:
    """The platform's one gateway (see the module docstring). States: starting, running, restarting, backoff,
    stopped. `push` / `metrics` raise GatewayUnavailable unless it is running."""

    def __init__(self, state_dir: Path | str, *, on_event: OnEvent | None = None,
                 on_restart: Callable[[], None] | None = None, python: str = sys.executable,
                 env: dict[str, str] | None = None, startup_timeout: float = 20.0,
                 backoff_base_s: float = BACKOFF_BASE_S, backoff_cap_s: float = BACKOFF_CAP_S,
                 liveness_period_s: float = LIVENESS_PERIOD_S, liveness_timeout_s: float = LIVENESS_TIMEOUT_S,
                 liveness_failures: int = LIVENESS_FAILURES) -> None:
        self.state_dir = StateDir(state_dir)
        self.on_event = on_event
        self.on_restart = on_restart
        self.options: dict[str, Any] = {"python": python, "env": env, "startup_timeout": startup_timeout}
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.liveness_period_s, self.liveness_timeout_s = liveness_period_s, liveness_timeout_s
        self.liveness_failures = liveness_failures
        self.process: GatewayProcess | None = None
        self.state = "stopped"
        self.reason = ""  # why it is not running (empty while it runs)
        self.restarts = 0
        self.last_restart: dict[str, Any] | None = None  # {"at", "cause", "downtime_s", "pid"}
        self.acknowledged_version: int | None = None  # the version of the last snapshot the gateway accepted
        self._failures = 0  # consecutive failed runs or starts (reset by a run of STABLE_AFTER_S)
        self._started_at = 0.0
        self._down_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._starting: tuple[asyncio.Future[GatewayProcess], GatewayProcess] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the recorded gateway or start one; then watch it. A gateway that cannot start leaves the
        supervisor in back-off (the platform serves its API meanwhile; `/healthz` says why)."""
        self.state_dir.ensure()
        self.options["admin_token"] = self.state_dir.token()
        self.state, self._down_since = "starting", time.monotonic()
        adopted = await self._adopt()
        if adopted is not None:
            self._running(adopted)
            self._event("GatewayAdopted", f"re-adopted the running gateway (pid {adopted.pid}, admin port "
                                          f"{adopted.admin_port}); it kept serving while the platform was down")
        else:
            with contextlib.suppress(GatewayError):  # _spawn reported it; the watcher retries
                await self._spawn("GatewayStarted", f"started the gateway{self.reason}")
        self._task = asyncio.create_task(self._watch(), name="gateway-supervisor")

    async def stop(self) -> None:
        """A deliberate stop: the gateway drains and exits; its record and persisted snapshot go."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._starting is not None:  # a start in progress finishes (it runs in a thread), then stops
            starting, process = self._starting
            await asyncio.gather(starting, return_exceptions=True)
            self.process = self.process or (process if process.running() else None)
        process, self.process = self.process, None
        if process is not None:
            await process.astop()
        self.state_dir.remove_snapshot()
        self.state, self.reason = "stopped", "the platform stopped the gateway"

    # --- the admin API, while running ------------------------------------------------------------------------------

    async def apush(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """Swap `snapshot` in; GatewayUnavailable while the gateway is down, SnapshotRejected on 400/409."""
        process = self._live()
        result = await process.apush(snapshot)
        self.acknowledged_version = int(result["version"])
        return result

    async def ametrics(self) -> str:
        return await self._live().ametrics()

    async def awindows(self, services: list[str]) -> dict[str, Any]:
        """The gateway's per-instance totals of `services` (progressive releases); GatewayUnavailable while down."""
        return await self._live().awindows(services)

    def last_snapshot(self) -> dict[str, Any] | None:
        """The last snapshot the gateway applied, as persisted in its state dir (plain data, not validated)."""
        return self.state_dir.read_snapshot()

    def _live(self) -> GatewayProcess:
        if self.state != "running" or self.process is None:
            raise GatewayUnavailable(self.reason or f"the gateway is {self.state}")
        return self.process

    # --- what the platform reports ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """`ok` only while running; `reason` says why not; restarts and the last one's cause."""
        process = self.process
        down_for = None if self._down_since is None or self.state == "running" else \
            round(time.monotonic() - self._down_since, 1)
        return {"ok": self.state == "running", "state": self.state, "reason": self.reason,
                "pid": process.pid if process is not None and self.state == "running" else None,
                "admin_port": process.admin_port if process is not None and self.state == "running" else None,
                "restarts": self.restarts, "last_restart": self.last_restart, "down_for_s": down_for,
                "acknowledged_version": self.acknowledged_version, "log": str(self.state_dir.log_path)}

    def metrics_lines(self) -> list[str]:
        """The supervisor's own gauges, Prometheus text format (scraped even while the gateway is down)."""
        return ["# HELP inferstack_gateway_up Whether the gateway process runs and answers (1) or not (0).",
                "# TYPE inferstack_gateway_up gauge", f"inferstack_gateway_up {int(self.state == 'running')}",
                "# HELP inferstack_gateway_restarts_total Gateway restarts by the platform's supervisor.",
                "# TYPE inferstack_gateway_restarts_total counter", f"inferstack_gateway_restarts_total {self.restarts}"]

    # --- adoption --------------------------------------------------------------------------------------------------

    async def _adopt(self) -> GatewayProcess | None:
        record = self.state_dir.read_record()
        process = GatewayProcess.adopt(self.state_dir.path, **self.options)
        if process is None:
            if record is not None:
                self.reason = f" (the recorded gateway, pid {record['pid']}, had exited)"
            self.state_dir.remove_record()
            return None
        deadline = time.monotonic() + ADOPT_PATIENCE_S
        while time.monotonic() < deadline:
            if await process.averify():
                return process
            await asyncio.sleep(0.25)
        log.warning("the recorded gateway (pid %s) does not answer its admin API with our token: killing it",
                    process.pid)
        self._event("GatewayUnresponsive", f"the recorded gateway (pid {process.pid}) did not answer its admin API "
                                           f"within {ADOPT_PATIENCE_S:g} s: killed it, starting a new one", "Warning")
        process.kill()
        self.state_dir.remove_record()
        return None

    # --- watching and restarting -----------------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # supervision must not end on a surprise: log it and go on
                log.exception("gateway supervision failed; going on in 1 s")
                await asyncio.sleep(1.0)

    async def _watch_once(self) -> None:
        """Until the gateway is down, then one restart (after the back-off)."""
        if self.process is not None:
            cause = await self._until_down(self.process)
            self._went_down(cause)
        delay = self._backoff()
        if delay > 0:
            self.state = "backoff"
            log.warning("gateway back-off: next start in %g s (%s)", delay, self.reason)
            self._event("GatewayBackOff", f"{self.reason}; it failed {self._failures} time(s) in a row: next "
                                          f"start in {delay:g} s", "Warning")
            await asyncio.sleep(delay)
        self.state = "restarting"
        try:
            await self._spawn("GatewayRestarted", "restarted the gateway", "Warning")
        except GatewayError:
            return
        if self.on_restart is not None:
            self.on_restart()

    async def _until_down(self, process: GatewayProcess) -> str:
        """Wait until the process exits (its exit, described) or stops answering (it is killed)."""
        exited = asyncio.ensure_future(process.wait())
        failures = 0
        try:
            while True:
                done, _ = await asyncio.wait({exited}, timeout=self.liveness_period_s)
                if done:
                    return f"(pid {process.pid}) {describe_exit(exited.result())}"
                if await process.ahealthy(self.liveness_timeout_s):
                    failures = 0
                    continue
                failures += 1
                if failures >= self.liveness_failures:
                    cause = (f"(pid {process.pid}) did not answer its health check {failures} times in a row; "
                             f"killed")
                    self._event("GatewayUnresponsive", f"the gateway {cause}", "Warning")
                    process.kill()
                    await exited
                    return cause
        finally:
            exited.cancel()

    def _went_down(self, cause: str) -> None:
        if time.monotonic() - self._started_at >= STABLE_AFTER_S:
            self._failures = 0
        self._failures += 1
        self.process = None
        self.state, self.reason, self._down_since = "restarting", f"the gateway {cause}", time.monotonic()
        log.warning("%s", self.reason)

    def _backoff(self) -> float:
        """0 after a first failure; then base, 2×base, 4×base … up to the cap while failures follow each other."""
        if self._failures <= 1:
            return 0.0
        return min(self.backoff_cap_s, self.backoff_base_s * 2 ** (self._failures - 2))

    async def _spawn(self, reason: str, what: str, type_: str = "Normal") -> GatewayProcess:
        process = GatewayProcess(self.state_dir.path, **self.options)
        starting = asyncio.ensure_future(process.astart())
        self._starting = (starting, process)
        try:
            await asyncio.shield(starting)  # a cancelled watcher must not orphan a gateway being started
        except GatewayError as exc:
            self._failures += 1
            self.process = None
            head, _, log_tail = str(exc).partition("--- gateway log ---")
            last = next((line for line in reversed(log_tail.splitlines()) if line.strip()), "")
            self.state, self.reason = "backoff", f"the {head.strip()}" + (f" (its log ends: {last.strip()})"
                                                                           if last else "")
            log.error("%s", exc)
            self._event("GatewayStartFailed", self.reason, "Warning")
            raise
        finally:
            if starting.done():
                self._starting = None
        downtime = time.monotonic() - self._down_since if self._down_since is not None else 0.0
        cause = self.reason
        self._running(process)
        message = f"{what} as pid {process.pid} (admin port {process.admin_port}) after {downtime:.1f} s"
        if reason == "GatewayRestarted":
            self.restarts += 1
            self.last_restart = {"at": _now(), "cause": cause, "downtime_s": round(downtime, 2), "pid": process.pid}
            message = f"{cause}; {message}, serving its last snapshot on the same listeners (restart {self.restarts})"
            log.warning("%s", message)
        self._event(reason, message, type_)
        return process

    def _running(self, process: GatewayProcess) -> None:
        self.process = process
        self.state, self.reason, self._down_since = "running", "", None
        self._started_at = time.monotonic()

    def _event(self, reason: str, message: str, type_: str = "Normal") -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(reason, message, type_)
        except Exception:  # an event that cannot be recorded must not stop the supervision
            log.exception("recording the gateway event %s failed", reason)


__all__ = ["GatewayError", "GatewaySupervisor", "GatewayUnavailable", "SnapshotRejected"]
