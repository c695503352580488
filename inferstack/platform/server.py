"""The platform process: data dir, token, `platform.json`, serving on uvicorn, detaching, stopping.

Data dir: `--data-dir`, else env `INFERSTACK_DATA_DIR`, else `~/.inferstack`. It holds `platform.db` (the store),
`secrets.key` (the key secret values are sealed with, `secretbox.py`), `token` (the API's bearer token, created
once), `platform.json` (`url`, `pid`, `start_time` of the running server, and `stopping` once it stops; removed when
it has stopped), `lock` (held while a server runs: one server per data dir), `platform.log` (a detached server's
output), `gateway/` (the gateway's state dir: `gateway/statedir.py`) and `last-stop.json` (how each instance ended
when the server last stopped). The directory is 0700 and every file in it 0600 (`datadir.py`): the server tightens
it on start and serves with umask 077.

Stopping (`stop`, `inferstack platform stop`): SIGTERM; the server withdraws every instance from routing, gives each
its own graceful period, then kills what is left of its process tree, and stops the gateway. As soon as it starts,
it announces in `platform.json` how long that may take (the longest graceful period plus a margin), and `stop`
waits that long — a server is killed only when it overruns the announcement (or never announces), and then `stop`
stops the instance process trees it left itself. The report says what had to be killed.

Run as `python -m inferstack.platform.server [serve|stop] ...` (what `--detach` and the tests start: it imports less
than the CLI)."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import datadir

DATA_DIR_ENV = "INFERSTACK_DATA_DIR"
TOKEN_FILE = "token"
INFO_FILE = "platform.json"
LOCK_FILE = "lock"
LOG_FILE = "platform.log"
STOP_REPORT_FILE = "last-stop.json"
SHUTDOWN_MARGIN_S = 15.0  # beyond the longest graceful period: connections (5 s), routing, tree kills, the gateway
ANNOUNCE_WAIT_S = 30.0  # how long `stop` waits for a server that has not announced its shutdown yet

log = logging.getLogger("inferstack.platform")


class PlatformProcessError(RuntimeError):
    """The platform process cannot be started or stopped as asked."""


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """`data_dir`, else `$INFERSTACK_DATA_DIR`, else `~/.inferstack`."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or Path.home() / ".inferstack"
    return Path(chosen).expanduser().absolute()


def read_token(data_dir: Path) -> str | None:
    try:
        return (data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def ensure_token(data_dir: Path) -> str:
    """The data dir's token, generated on first start with mode 0600 (never rewritten afterwards)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = read_token(data_dir)
        if token is None:
            raise PlatformProcessError(f"{path} is empty: delete it to have a new token generated") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token


def process_start_time(pid: int) -> int | None:
    """The process' start time in clock ticks since boot (/proc), to tell it from a later process with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # exited, not reaped yet
        return None
    return int(fields[19])


def read_info(data_dir: Path) -> dict[str, Any] | None:
    """The running server's `platform.json`, or None when there is none or its process is gone."""
    try:
        info = json.loads((data_dir / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid, started = info.get("pid"), info.get("start_time")
    if not isinstance(pid, int) or process_start_time(pid) is None:
        return None
    if started is not None and process_start_time(pid) != started:
        return None
    return info


def _write_info(data_dir: Path, info: dict[str, Any]) -> None:
    tmp = data_dir / f".{INFO_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, data_dir / INFO_FILE)


def _remove_info(data_dir: Path) -> None:
    path = data_dir / INFO_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _lock(data_dir: Path) -> int:
    """Hold the data dir's lock for this process' life (the kernel drops it when the process dies)."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = read_info(data_dir)
        where = f" (pid {info['pid']}, {info['url']})" if info else ""
        raise PlatformProcessError(f"a platform already runs on {data_dir}{where}; stop it with "
                                   f"`inferstack platform stop`") from None
    return fd


@datadir.private_umask()
def serve(data_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 0, *,
          configure: Callable[[Any], None] | None = None,
          on_ready: Callable[[dict[str, Any]], None] | None = None, runtime: bool | None = None) -> None:
    """Run the platform in the foreground until SIGTERM / SIGINT. Port 0 picks a free port (`platform.json` says
    which). `configure(platform)` may subscribe controllers before serving; `on_ready(info)` runs once it serves.
    Runs with umask 077 (the data dir stays private: `datadir.py`)."""
    import uvicorn

    from .api import create_app
    from .control import Platform
    from .store import Store

    root = datadir.secure(resolve_data_dir(data_dir))
    lock_fd = _lock(root)
    token = ensure_token(root)
    store = Store.open(root)
    platform = Platform(store)
    from .embedded import attach, runtime_enabled

    if runtime_enabled(runtime):
        try:
            attach(platform, root)
        except ValueError as exc:  # a knob from the environment that makes no sense: say which, start nothing
            store.close()
            os.close(lock_fd)
            raise PlatformProcessError(str(exc)) from None
    if configure is not None:
        configure(platform)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise PlatformProcessError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.set_inheritable(False)
    bound = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
    config = uvicorn.Config(create_app(platform, token), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.005)
        if server.started:
            info = {"url": url, "pid": os.getpid(), "start_time": process_start_time(os.getpid()),
                    "data_dir": str(root), "new_data_dir": store.created}
            _write_info(root, info)
            if on_ready is not None:
                on_ready(info)
            announcer = asyncio.create_task(_announce_stop(root, info, server, platform))
            try:
                await task
            finally:
                announcer.cancel()
        await task

    # uvicorn handles SIGTERM / SIGINT while serving and raises them again once it has shut down; these handlers
    # take that second delivery, so that the cleanup below runs instead of the default action.
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(main())
    finally:
        if platform.runtime is not None:
            _write_stop_report(root, getattr(platform.runtime, "stop_report", []))
        _remove_info(root)
        store.close()
        sock.close()
        os.close(lock_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _announce_stop(root: Path, info: dict[str, Any], server: Any, platform: Any) -> None:
    """Once the server is told to stop, say in `platform.json` how long stopping may take (`stop` waits so long)."""
    while not server.should_exit:
        await asyncio.sleep(0.05)
    graceful = platform.runtime.graceful_shutdown_s() if platform.runtime is not None else 0.0
    _write_info(root, {**info, "stopping": {"since": time.time(), "graceful_s": graceful,
                                            "expected_s": graceful + SHUTDOWN_MARGIN_S}})


def _write_stop_report(root: Path, instances: list[dict[str, Any]]) -> None:
    report = {"pid": os.getpid(), "stopped_at": time.time(), "instances": instances}
    tmp = root / f".{STOP_REPORT_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / STOP_REPORT_FILE)


def _ignore(signum: int, frame: Any) -> None:
    log.info("platform stopped by signal %d", signum)


def start_detached(data_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 0,
                   timeout: float = 20.0, runtime: bool | None = None) -> dict[str, Any]:
    """Start the server as a daemon (own session, output in `platform.log`); return its info once it is healthy."""
    root = datadir.secure(resolve_data_dir(data_dir))
    running = read_info(root)
    if running is not None:
        raise PlatformProcessError(f"a platform already runs on {root} (pid {running['pid']}, {running['url']})")
    log_path = root / LOG_FILE
    with datadir.private_file(log_path) as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "inferstack.platform.server", "serve", "--data-dir", str(root), "--host", host,
             "--port", str(port), *([] if runtime is None else ["--runtime" if runtime else "--no-runtime"])],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise PlatformProcessError(f"the platform exited with code {child.returncode} on start:\n"
                                       f"{_tail(log_path)}")
        info = read_info(root)
        if info is not None and info.get("pid") == child.pid and _healthy(info["url"]):
            return info
        time.sleep(0.02)
    child.terminate()
    raise PlatformProcessError(f"the platform did not become healthy within {timeout:g}s:\n{_tail(log_path)}")


def stop(data_dir: str | Path | None = None, timeout: float | None = None) -> dict[str, Any] | None:
    """SIGTERM the data dir's server and wait until it has exited; None when none was running.

    It waits as long as the server announces its shutdown may take (its instances' longest graceful period plus a
    margin), or `timeout` seconds when given. A server that overruns is killed (SIGKILL) and the instance process
    trees it left are stopped here. Returns the server's info with `report` (how each instance ended, from
    `last-stop.json`), `forced` (the server had to be killed) and `cleaned` (process trees stopped here)."""
    root = resolve_data_dir(data_dir)
    info = read_info(root)
    if info is None:
        gateway = _stop_left_gateway(root)  # first: nothing routes to the instances while they stop
        cleaned = _stop_left_trees(root, _longest_grace(root)) if (root / "platform.db").exists() else {}
        if not cleaned and gateway is None:
            return None
        return {"url": None, "pid": None, "running": False, "cleaned": cleaned, "gateway": gateway}
    pid, started = info["pid"], info.get("start_time")

    def alive() -> bool:
        now = process_start_time(pid)
        return now is not None and (started is None or now == started)

    os.kill(pid, signal.SIGTERM)
    begun = time.monotonic()
    force_at = begun + (timeout if timeout is not None else ANNOUNCE_WAIT_S)
    forced = False
    while alive():
        if timeout is None and not forced:
            announced = _stopping(root, pid)
            if announced is not None:  # its own estimate, from when it began: wait that long, and a little more
                left = float(announced.get("since", time.time())) + float(announced.get("expected_s", 0.0)) - time.time()
                force_at = max(begun + ANNOUNCE_WAIT_S, time.monotonic() + left + 5.0)
        if time.monotonic() > force_at and not forced:
            log.warning("the platform (pid %d) overran its shutdown: SIGKILL", pid)
            os.kill(pid, signal.SIGKILL)
            forced = True
        time.sleep(0.02)
    gateway = _stop_left_gateway(root) if forced else None
    cleaned = _stop_left_trees(root, 2.0) if forced else {}  # it overran already: a short grace
    return {**info, "report": _read_stop_report(root, pid), "forced": forced, "cleaned": cleaned,
            "gateway": gateway}


def _stopping(root: Path, pid: int) -> dict[str, Any] | None:
    try:
        info = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    stopping = info.get("stopping") if info.get("pid") == pid else None
    return stopping if isinstance(stopping, dict) else None


def _read_stop_report(root: Path, pid: int) -> list[dict[str, Any]] | None:
    try:
        report = json.loads((root / STOP_REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report.get("instances") if report.get("pid") == pid else None


def _stop_left_trees(root: Path, grace_s: float) -> dict[str, list[int]]:
    """With no server running (killed, or killed here): stop every instance process tree of this data dir."""
    from .runtime.tree import scope_of, stray_trees, terminate_strays

    trees = stray_trees(scope_of(root), keep=[])
    return terminate_strays(trees, grace_s) if trees else {}


GATEWAY_STOP_S = 10.0  # the gateway drains its connections for up to 5 s on SIGTERM


def _stop_left_gateway(root: Path) -> dict[str, Any] | None:
    """With no server running: stop the gateway a killed platform left serving (it outlives the control plane on
    purpose), adopted from its record as the supervisor adopts it — the same pid *and* start time, signalled through
    a pidfd, never a later process with its pid — SIGTERM, then SIGKILL after GATEWAY_STOP_S. Its record and persisted
    snapshot go, as after a deliberate stop. Returns what was done ({"pid", "killed"}), or None when no recorded
    gateway was running."""
    from .gateway.process import GatewayProcess
    from .gateway.statedir import StateDir

    state_dir = root / "gateway"
    if not state_dir.is_dir():
        return None
    gateway = GatewayProcess.adopt(state_dir)
    if gateway is None:
        stale = StateDir(state_dir)
        stale.remove_record()
        stale.remove_snapshot()
        return None
    pid = gateway.pid
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GATEWAY_STOP_S
    while gateway.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = gateway.running()
    gateway.stop(0)  # SIGKILL if it is still there; its record goes
    gateway.state_dir.remove_snapshot()
    return {"pid": pid, "killed": killed}


def _longest_grace(root: Path) -> float:
    """The longest graceful period of the data dir's deployments (the default 30 s when none can be read)."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{root / 'platform.db'}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT spec FROM objects WHERE kind = 'deployment'").fetchall()
        finally:
            conn.close()
        graces = [float(json.loads(spec).get("graceful_shutdown_s", 30.0)) for (spec,) in rows]
    except (sqlite3.Error, ValueError, TypeError):
        return 30.0
    return max([g for g in graces if 0 <= g < float("inf")], default=30.0)


def describe_stop(result: dict[str, Any]) -> list[str]:
    """What `stop` did, in lines a person reads (the CLI prints them)."""
    if result.get("running") is False:
        cleaned = result.get("cleaned") or {}
        return [(f"no platform was running; stopped what a killed platform had left: {_gateway_text(result)}"
                 f"{len(cleaned)} instance process tree(s) ({sum(map(len, cleaned.values()))} process(es))")]
    lines = [f"stopped the platform at {result['url']} (pid {result['pid']})"]
    report = result.get("report") or []
    if report:
        killed = [r for r in report if r.get("killed")]
        lines.append(f"  {len(report)} instance(s) stopped: {len(report) - len(killed)} within their graceful "
                     f"period" + (f", {len(killed)} killed (SIGKILL) after it" if killed else ""))
        for r in killed:
            lines.append(f"    {r['service']}/{r['deployment']} {r['instance']}: still running after "
                         f"{r['graceful_s']:g}s")
        leftovers = sum(len(r.get("leftovers") or []) for r in report)
        if leftovers:
            lines.append(f"  {leftovers} leftover process(es) of instance process trees killed")
    if result.get("forced"):
        cleaned = result.get("cleaned") or {}
        lines.append(f"  the platform overran its announced shutdown and was killed (SIGKILL); stopped what it left: "
                     f"{_gateway_text(result)}{len(cleaned)} instance process tree(s) "
                     f"({sum(map(len, cleaned.values()))} process(es))")
    return lines


def _gateway_text(result: dict[str, Any]) -> str:
    gateway = result.get("gateway")
    if not gateway:
        return ""
    return f"the gateway (pid {gateway['pid']}{', killed with SIGKILL' if gateway.get('killed') else ''}), "


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferstack.platform.server",
                                     description="Run or stop the embedded platform.")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "stop"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--runtime", action=argparse.BooleanOptionalAction, default=None,
                        help="run instances and the gateway (default: on unless INFERSTACK_RUNTIME=0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command == "stop":
            info = stop(args.data_dir)
            print("\n".join(describe_stop(info)) if info else "no platform running")
        else:
            serve(args.data_dir, args.host, args.port, runtime=args.runtime)
    except PlatformProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
