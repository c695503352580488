"""The embedded platform from the command line: `platform serve|stop`, `plan`, `apply`, `status`, `delete`,
`events`, `logs`. Everything but `platform serve` talks to a running platform through `PlatformClient`; exit codes as
in `app` (1 refused or not found, 3 written but not Ready, 4 unreachable)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape as rich_escape
from rich.text import Text

from ..spec import StackFileError
from ..spec.stack import locate
from .app import (
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_UNREADABLE,
    app,
    console,
    err_console,
    platform_app,
)
from .capacity_view import print_placements
from .output import cell_separator, finding_text, lines, plan_text, print_json, print_table, table
from .rollout import Outcome, follow, release_line, say_outcome
from .spec_cmds import Format, load_stack, print_unreadable, require_stack

if TYPE_CHECKING:  # imported where used: `validate`, `render` and `plan --against` start without httpx
    import yaml

    from ..targets.local.client import PlatformClient

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", metavar="DIR", help="The platform's data dir (default: $INFERSTACK_DATA_DIR, else ~/.inferstack). "
                                      "$INFERSTACK_URL and $INFERSTACK_TOKEN win.")]
StackPath = Annotated[Path, typer.Argument(metavar="FILE", help="Stack file (YAML).")]
ServiceKey = Annotated[str, typer.Argument(metavar="SERVICE", help="Service key.")]


# --- the platform process ----------------------------------------------------------------------------------------

@platform_app.command("serve")
def serve_cmd(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on; 0 picks a free one "
                                                                     "(platform.json says which).")] = 0,
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background; return once it is "
                                                          "healthy.")] = False,
    runtime: Annotated[bool | None, typer.Option("--runtime/--no-runtime", help="Run instances and the gateway "
                                                 "(default: on unless INFERSTACK_RUNTIME=0); off = control plane "
                                                 "only.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="text, or json: {url, pid, data_dir} once running "
                                                         "(with --detach).")] = Format.text,
) -> None:
    """Run the embedded platform (API + store). A new data dir gets the default inventory and a token."""
    from ..platform import server

    try:
        if detach:
            info = server.start_detached(data_dir, host, port, runtime=runtime)
            if fmt is Format.json:
                print_json({"url": info["url"], "pid": info["pid"], "data_dir": str(info["data_dir"])})
                return
            console.print(f"platform running at {info['url']} (pid {info['pid']}, data dir {info['data_dir']}); "
                          f"stop it with `inferstack platform stop`", highlight=False, soft_wrap=True)
            return
        server.serve(data_dir, host, port, runtime=runtime, on_ready=lambda info: err_console.print(
            f"platform serving at {info['url']} (data dir {info['data_dir']}); Ctrl-C stops it", highlight=False))
    except server.PlatformProcessError as exc:
        err_console.print(f"[red]error[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None


@platform_app.command("stop")
def stop_cmd(data_dir: DataDir = None) -> None:
    """Stop the platform of the data dir: every instance gets its own graceful period, then what is left of its
    process tree is killed; waits until all of it has exited and says what had to be killed."""
    from ..platform import server

    info = server.stop(data_dir)
    if info is None:
        console.print(f"no platform running for {server.resolve_data_dir(data_dir)}", highlight=False)
        return
    console.print("\n".join(server.describe_stop(info)), highlight=False, markup=False, soft_wrap=True)


# --- talking to it -----------------------------------------------------------------------------------------------

@contextmanager
def _client(data_dir: Path | None) -> Iterator[PlatformClient]:
    """A client of the running platform; its refusals become exit codes (1 refused or not found, 4 unreachable)."""
    from ..targets.local.client import PlatformClient, PlatformError, PlatformUnreachable

    try:
        with PlatformClient.discover(data_dir) as client:
            yield client
    except PlatformUnreachable as exc:
        err_console.print(Text.assemble(("unreachable", "red"), f" {exc.message}"), soft_wrap=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except PlatformError as exc:
        word = "not found" if exc.status_code == 404 else "refused"
        message = exc.message if exc.status_code == 404 and not exc.findings else str(exc)
        err_console.print(Text.assemble((word, "red"), f" {message}"), soft_wrap=True)
        raise typer.Exit(EXIT_INVALID) from None


def _read_stack(path: Path) -> tuple[Any, yaml.Node | None]:
    """The file's data (sugar kept: the platform expands it) and its YAML tree (for line numbers). Exit 2 when it
    cannot be read, 1 when it declares nothing (an empty file must not read as "already applied")."""
    try:
        loaded = load_stack(path, None)
    except StackFileError as exc:
        print_unreadable(exc)
        raise typer.Exit(EXIT_UNREADABLE) from None
    empty = [f for f in loaded.report.errors if f.rule == "stack.declares_nothing"]
    if empty:
        err_console.print(Text.assemble(f"{path}: ", ("invalid", "red"), "; nothing sent to the platform"))
        err_console.print(finding_text("error", f"{path}", "", empty[0].message, empty[0].rule), soft_wrap=True)
        raise typer.Exit(EXIT_INVALID)
    data = json.loads(json.dumps(loaded.data, default=str))
    return data, loaded.root


def _apply(client: PlatformClient, path: Path, root: yaml.Node | None, data: Any, dry_run: bool) -> dict:
    from ..targets.local.client import PlatformError

    try:
        return client.apply(data, dry_run=dry_run)
    except PlatformError as exc:
        if not exc.findings:
            raise
        err_console.print(Text.assemble(f"{path}: ", ("refused", "red"), f" ({exc.status_code} {exc.error}); "
                                                                          f"nothing written"))
        for f in exc.findings:
            line = locate(root, f["path"]) if f.get("path") else None
            where = f"{path}:{line}" if line else str(path)
            err_console.print(finding_text(str(f.get("severity")), where, f.get("path") or "", str(f.get("message")),
                                           str(f.get("rule")), f.get("value")), soft_wrap=True)
        raise typer.Exit(EXIT_INVALID) from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted while the platform applied {path}: the file is written whole or not at all "
                          f"(one transaction) — `inferstack plan {path}` shows which", highlight=False, markup=False,
                          soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _warnings(result: dict) -> None:
    for w in result.get("warnings") or []:
        console.print(finding_text("warning", "", w["path"], w["message"], w["rule"]), soft_wrap=True)


@app.command()
def plan(
    file: StackPath,
    fmt: Annotated[Format, typer.Option("--format", help="text, or json (the plan as the API returns "
                                                         "it).")] = Format.text,
    against: Annotated[Path | None, typer.Option(
        "--against", help="Compare with this stack file instead of the running platform (offline: e.g. the file "
                          "at the base of a pull request).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Show what applying FILE to the running platform (or over --against OLD) would change. Stores nothing."""
    if against is not None:
        _offline_plan(against, file, fmt)
        return
    data, root = _read_stack(file)
    with _client(data_dir) as client:
        result = _apply(client, file, root, data, dry_run=True)
    if fmt is Format.json:
        print_json(result["plan"])
        return
    console.print(plan_text(result["plan_text"]), soft_wrap=True, end="")
    _warnings(result)


def _offline_plan(old_path: Path, new_path: Path, fmt: Format) -> None:
    """The plan between two stack files, both checked against the default inventory plus their own."""
    from ..plan import PlanContext, diff
    from ..spec import default_inventory

    stacks = [require_stack(path).stack for path in (old_path, new_path)]
    old, new = stacks
    inventory = default_inventory().merged(old.inventory).merged(new.inventory)
    result = diff(old, new, PlanContext(inventory=inventory))
    if new.target == "kubernetes":
        result.warnings += _kubernetes_differences(new, {c.service or c.key for c in result.changes})
    if fmt is Format.json:
        print_json(result.to_dict())
    else:
        console.print(plan_text(result.to_text()), soft_wrap=True, end="")


def _kubernetes_differences(stack, changed: set[str]) -> list[str]:
    """What the cluster will not do as the embedded platform would, for the services the plan changes (the render's
    warnings: the plan alone cannot see them, it knows no Kubernetes objects)."""
    from ..targets.kubernetes import RenderError, render

    try:
        warnings = render(stack).warnings
    except RenderError as exc:
        return [f"kubernetes: cannot render: {exc}"]
    return [f"kubernetes: {w}" for w in warnings if w.split(":", 1)[0].split("/", 1)[0] in changed]


@app.command()
def apply(
    file: StackPath,
    fmt: Annotated[Format, typer.Option("--format", help="text, or json (plan, writes, changed; no progress "
                                                         "lines).")] = Format.text,
    wait: Annotated[bool | None, typer.Option("--wait/--no-wait", help="Follow the rollout until every changed "
                                              "service is Ready (exit 3 when Degraded or timed out). Default: when "
                                              "the platform runs instances.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS", help="Seconds to follow the "
                                                                                "rollout.")] = 300.0,
    retry_release: Annotated[bool, typer.Option("--retry-release", help="Try the file's failed progressive "
                                                "releases again (a traffic shift or canary redeploy that rolled back "
                                                "or paused), without another change of the spec.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Apply FILE in one transaction, then follow the rollout.

    Shows the plan, writes it, then prints each change of the rollout (one timestamped line per change; a live table
    on a terminal) until every changed service is Ready — a progressive release until it succeeded or failed (then
    exit 3 with the gate that failed). Applying the same file again does not retry a failed release (it is followed,
    and reported, again); `--retry-release` does. Ctrl-C stops following only: what was written stays, and the
    rollout goes on."""
    data, root = _read_stack(file)
    with _client(data_dir) as client:
        result = _apply(client, file, root, data, dry_run=False)
        if fmt is Format.json:
            print_json(result)
        else:
            _print_applied(result)
        if wait is None:
            wait = bool(client.health().get("runtime"))
        services = sorted({c["object"].split("/")[1] for c in result["changed"]
                           if c["object"].startswith("services/") and c["action"] != "delete"})
        services = sorted({*services, *_failed_releases(client, data, retry_release, quiet=fmt is Format.json)})
        if wait and services:
            outcome = follow(client, services, timeout, quiet=fmt is Format.json)
            if not outcome.ok:
                say_outcome(outcome, services, timeout)
                raise typer.Exit(EXIT_INTERRUPTED if outcome.outcome is Outcome.INTERRUPTED else EXIT_NOT_READY)
    raise typer.Exit(EXIT_OK)


def _failed_releases(client: PlatformClient, data: Any, retry: bool, quiet: bool) -> list[str]:
    """The file's services with a failed progressive release (followed, so the failure is reported again); with
    `retry`, another attempt of each is asked first."""
    from ..targets.local.client import PlatformError

    keys = [s.get("key") or s.get("name") for s in (data.get("services") or []) if isinstance(s, dict)] \
        if isinstance(data, dict) else []
    found = []
    for svc in [k for k in keys if isinstance(k, str)]:
        try:
            failed = client.failed_releases(svc)
        except PlatformError:
            continue  # not there (a dry run, or deleted meanwhile)
        for dep, release in failed:
            what = f"{svc}/{dep or 'traffic'}"
            if retry:
                client.retry_release(svc, dep)
                line = f"retrying the release of {what} (it {release.get('phase')}: {release.get('reason')})"
            else:
                line = (f"{what}: its release {release.get('phase')} ({release.get('reason')}); applying the same "
                        f"spec does not retry it — change the spec, raise progressive.retry, or add --retry-release")
            if not quiet:
                err_console.print(Text.assemble(("release", "yellow"), f" {line}"), soft_wrap=True)
            found.append(svc)
    return found


def _print_applied(result: dict) -> None:
    plan = result.get("plan") or {}
    if result["writes"] == 0:
        console.print("No changes: the platform already matches the file; nothing written.", highlight=False)
        for w in plan.get("warnings") or []:
            console.print(Text.assemble(("warning", "yellow"), f" {w}"), soft_wrap=True)
        _warnings(result)
        return
    console.print(plan_text(result["plan_text"]), soft_wrap=True, end="")
    _warnings(result)
    console.print(f"Applied: {result['writes']} write(s).", highlight=False)
    for c in result["changed"]:
        console.print(f"  {c['action']:<8} {c['object']}", highlight=False, markup=False)


@app.command()
def delete(
    service: ServiceKey,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; delete nothing.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="text, or json (writes and changed objects; the plan with "
                                                         "--dry-run).")] = Format.text,
    data_dir: DataDir = None,
) -> None:
    """Delete a service: its traffic, then its deployments, then it."""
    with _client(data_dir) as client:
        result = client.delete_service(service, dry_run=dry_run)
    if fmt is Format.json:
        print_json(result)
        return
    if dry_run:
        console.print(plan_text(result["plan_text"]), soft_wrap=True, end="")
        return
    console.print(f"Deleted service {service}: {result['writes']} write(s).", highlight=False, markup=False)
    for c in result["changed"]:
        console.print(f"  {c['action']:<8} {c['object']}", highlight=False, markup=False)


def _cond(obj: dict, type_: str) -> Text:
    c = next((c for c in obj.get("status", {}).get("conditions") or [] if c.get("type") == type_), None)
    if c is None:
        return Text("-")
    good = (c["status"] == "True") == (type_ != "Degraded")
    text = f"{c['status']} ({c['reason']})" if c.get("reason") else c["status"]
    return Text(text, style="green" if good else "red" if type_ != "Progressing" else "yellow")


def _conditions(obj: dict, sep: str | None = None) -> Text:
    """Ready with its reason; the other conditions only while they say something (Degraded or Progressing True,
    Available False, and any other type the platform reports)."""
    parts = [Text.assemble("Ready ", _cond(obj, "Ready"))]
    for c in obj.get("status", {}).get("conditions") or []:
        type_ = c.get("type")
        quiet = {"Ready": None, "Available": "True", "Progressing": "False", "Degraded": "False"}
        if type_ in quiet and (quiet[type_] is None or c.get("status") == quiet[type_]):
            continue
        if type_ == "Progressing" and c.get("reason") == "NewReplicaSetAvailable":
            continue  # Kubernetes' "rolled out": True once done, nothing to say
        parts.append(Text.assemble(f"{type_} ", _cond(obj, type_)))
    return Text(sep if sep is not None else cell_separator()).join(parts)


def _instance_problems(dep: dict) -> list[str]:
    """One line per instance that is not serving: its state, exit code, restarts and last log line."""
    lines = []
    for info in (dep.get("status", {}).get("roles") or {}).values():
        for inst in info.get("instances") or []:
            if inst.get("ready") or not (inst.get("reason") or inst.get("message")):
                continue
            code = inst.get("exit_code")
            parts = [inst.get("reason") or inst.get("phase") or "not ready"]
            if code is not None:
                parts.append(f"exit code {code}")
            parts.append(f"{inst.get('restarts', 0)} restart(s)")
            line = f"  {inst['id']}: {', '.join(parts)}"
            if inst.get("message"):
                line += f" — {inst['message']}"
            tail = inst.get("log_tail") or []
            if tail:
                line += f"\n      last log line: {tail[-1]}"
            lines.append(line)
    return lines


def _gen(obj: dict) -> Text:
    observed = obj.get("status", {}).get("observed_generation", 0)
    generation = obj["metadata"]["generation"]
    return Text(f"{observed}/{generation}", style=None if observed == generation else "yellow")


@app.command()
def status(
    service: Annotated[str | None, typer.Argument(metavar="SERVICE", help="Service key (default: every "
                                                                          "service).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="text (tables), or json (the objects).")] = Format.text,
    gateway_url: Annotated[bool, typer.Option("--gateway-url", help="Print only the service's gateway URL (for "
                                                                    "scripts: URL=$(inferstack status chat "
                                                                    "--gateway-url)); exit 3 while it has none "
                                                                    "yet.")] = False,
    keys: Annotated[bool, typer.Option("--keys", help="Same as `inferstack keys show SERVICE`.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Show services, or one service's deployments.

    Generations, conditions, replicas, weights and the gateway URL."""
    if keys or gateway_url:
        if service is None:
            err_console.print(Text.assemble(("error", "red"), f" {'--keys' if keys else '--gateway-url'} needs a "
                                                              f"SERVICE"))
            raise typer.Exit(EXIT_INVALID)
        if keys:
            from .keys_cmd import show_key

            show_key(service, fmt, quiet=False, data_dir=data_dir)
            return
    with _client(data_dir) as client:
        if service is None:
            services = client.list_services()
            rows = [(s, client.list_deployments(s["metadata"]["key"])) for s in services]
            details = None
        else:
            details = (client.get_service(service), client.list_deployments(service), client.get_traffic(service))
        gateway = _gateway_status(client) if fmt is not Format.json and not gateway_url else None
    if gateway_url:
        url = details[0]["status"].get("gateway_url") if details else None
        if not url:
            err_console.print(f"service {service} has no gateway URL yet (its routing is not live); see `inferstack "
                              f"status {service}`", highlight=False, markup=False)
            raise typer.Exit(EXIT_NOT_READY)
        typer.echo(url)
        return
    if fmt is Format.json:
        if details is None:
            out: Any = [{"service": s, "deployments": d} for s, d in rows]
        else:
            out = {"service": details[0], "deployments": details[1], "traffic": details[2]}
        print_json(out)
        return
    if gateway is not None:
        console.print(gateway, highlight=False)
    if details is None:
        _services_table(rows)
    else:
        _service_details(*details)


def _gateway_status(client: PlatformClient) -> str | None:
    """One line on the gateway process: running (pid, restarts, the last restart's cause) or down and why."""
    if not client.health().get("runtime"):
        return None
    gw = client.request("GET", "/v1/gateway").get("gateway")
    if not gw:
        return None
    restarts = gw.get("restarts") or 0
    last = gw.get("last_restart") or {}
    since = f"; last {last.get('at')}: {last.get('cause')}" if restarts and last else ""
    if gw.get("ok"):
        head = (f"gateway: [green]running[/green] (pid {gw.get('pid')}), routing snapshot "
                f"{gw.get('acknowledged_version')} acknowledged")
    else:
        head = f"gateway: [red]{gw.get('state')}[/red] — {rich_escape(gw.get('reason') or '')}"
    return f"{head}; restarts: {restarts}{rich_escape(since)}"


def _services_table(rows: list[tuple[dict, list[dict]]]) -> None:
    if not rows:
        console.print("No services. Apply a stack file: `inferstack apply examples/quickstart.yaml`.",
                      highlight=False, markup=False)
        return
    out = table("Service", "Name", "Deployments", "Gen", "Conditions", "Gateway", title="Services")
    for svc, deps in rows:
        out.add_row(svc["metadata"]["key"], svc["spec"]["name"], ", ".join(d["metadata"]["key"] for d in deps)
                    or "-", _gen(svc), _conditions(svc), svc["status"].get("gateway_url") or "-")
    print_table(out)


def _service_details(svc: dict, deps: list[dict], traffic: dict) -> None:
    spec, st = svc["spec"], svc["status"]
    console.print(Text.assemble((spec["name"], "bold"), f" ({svc['metadata']['key']})  resource group "
                                f"{spec['resource_group']}, VPC {spec['vpc']}, {spec.get('network_type')}, ports "
                                f"{spec.get('ports')}"), soft_wrap=True)
    gateways = st.get("gateway_urls") or {}
    console.print(Text.assemble(f"gateway: {st.get('gateway_url') or 'not yet'}",
                                f"  {gateways}" if len(gateways) > 1 else "", "   generation ", _gen(svc), "   ",
                                _conditions(svc, "   "), f"   converted: {'yes' if st.get('converted') else 'no'}"),
                  soft_wrap=True)
    tspec = traffic["spec"]
    weights = tspec.get("weights") or {}
    total = sum(weights.values())
    live = traffic["status"].get("live_weights") if tspec.get("progressive") else None
    live_total = sum(v for v in live.values() if isinstance(v, (int, float))) if isinstance(live, dict) else 0
    out = table("Deployment", "Queue / spec", "Replicas des/rdy/upd", "Gen", "Conditions", "Weight",
                title="Deployments")
    for dep in deps:
        key, ds = dep["metadata"]["key"], dep["spec"]
        roles = dep["status"].get("roles") or {}
        specs = ds.get("compute_spec") or ", ".join(f"{r['name']}: {r['compute_spec']}" for r in ds.get("roles") or [])
        counts = ", ".join(f"{'' if len(roles) == 1 else name + ' '}{r.get('desired', '?')}/{r.get('ready', 0)}/"
                           f"{r.get('updated', 0)}" for name, r in roles.items()) or "-"
        if tspec.get("strategy") == "weighted":
            share = weights.get(key, 0)
            weight = f"{share:g}" + (f" ({share / total:.0%})" if total and total != 100 else "")
            if live_total and total and abs(live.get(key, 0) / live_total - share / total) >= 0.0001:
                weight += f", live {100 * live.get(key, 0) / live_total:g}"  # a progressive release moves it
        else:
            weight = "per instance"
        name = Text(key) if ds["name"] == key else Text.assemble(key, cell_separator(), (ds["name"], "dim"))
        out.add_row(name, lines(ds["queue"], specs), counts, _gen(dep), _conditions(dep), weight)
    print_table(out)
    for dep in deps:
        problems = _instance_problems(dep)
        if problems:
            console.print(Text.assemble((dep["metadata"]["key"], "bold"), " instances not serving:"), soft_wrap=True)
            for line in problems:
                console.print(line, highlight=False, markup=False, soft_wrap=True)
    extras = []
    for rule in tspec.get("header_rules") or []:
        extras.append(f"header {rule['header']}={rule['value']} → {rule['deployment']}")
    if tspec.get("mirror"):
        extras.append(f"mirror {tspec['mirror']['percent']:g}% → {tspec['mirror']['deployment']}")
    if tspec.get("consistent_hash"):
        extras.append(f"consistent hash on {tspec['consistent_hash']['header']}")
    if tspec.get("progressive"):
        steps = tspec["progressive"].get("steps") or []
        extras.append(f"progressive in steps of {', '.join(f'{x:g}' for x in steps)} %")
    console.print(Text.assemble(f"traffic: {tspec.get('strategy')}, timeout {tspec.get('timeout_s'):g}s, retries "
                                f"{tspec.get('retries')}, generation ", _gen(traffic),
                                "".join(f"; {e}" for e in extras)), soft_wrap=True)
    for what, obj in [("traffic", traffic), *((d["metadata"]["key"], d) for d in deps)]:
        line = release_line(obj)
        if line:
            console.print(f"{what}: {line}", highlight=False, markup=False, soft_wrap=True)
    print_placements(console, deps)


def _event_what(e: dict) -> tuple[str, str]:
    """(what happened, details) of an event: a runtime event's reason and message, a spec change's action and paths."""
    if e.get("action") == "event":
        count = e.get("count") or 1
        return (e["reason"] + (" (warning)" if e.get("type") == "Warning" else "") + (f" ×{count}" if count > 1
                                                                                        else ""),
                e.get("message", ""))
    return e["action"], ", ".join(e["changes"])  # all of them: nothing is cut


@app.command()
def events(
    service: Annotated[str | None, typer.Argument(metavar="SERVICE", help="Service key (default: every "
                                                                          "object).")] = None,
    object_: Annotated[str | None, typer.Option("--object", metavar="OBJECT", help="One object, e.g. "
                                                                                   "services/chat/traffic.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="text, or json (with --follow: one JSON object a "
                                                         "line).")] = Format.text,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing events as they happen (polls "
                                                                "`?since=`); Ctrl-C stops.")] = False,
    since: Annotated[int, typer.Option("--since", metavar="SEQ", help="Only events after this seq.")] = 0,
    interval: Annotated[float, typer.Option("--interval", metavar="SECONDS", help="Seconds between polls with "
                                            "--follow.", min=0.05, max=60)] = 0.5,
    data_dir: DataDir = None,
) -> None:
    """Show the platform's event log: spec changes (by which request) and runtime events (instances started, ready,
    crashed, backed off, killed; rollout steps; scale decisions; the gateway). Identical runtime events within 10
    minutes show once, with a count (×N)."""
    with _client(data_dir) as client:
        items = client.events(service, object=object_, since=since)
        if service is not None and not items and not since:
            client.get_service(service)  # a service never seen is an error (exit 1), not an empty log
        if follow:
            _follow_events(client, service, object_, items, fmt, interval, since)
            return
    if fmt is Format.json:
        print_json(items)
        return
    out = table("Seq", "Time", "Object", "Action", "Request", "Gen", "Changes", title="Events")
    for e in items:
        what, details = _event_what(e)
        out.add_row(str(e["seq"]), e["time"], e["object"], what, e["request_id"], str(e["generation"]), details)
    print_table(out)


def _follow_events(client: PlatformClient, service: str | None, object_: str | None, items: list[dict],
                   fmt: Format, interval: float, since: int) -> None:
    """Print events line by line as they come: an aggregated repeat shows again, with its count."""
    import time

    def show(batch: list[dict]) -> int:
        last = 0
        for e in batch:
            last = max(last, e["seq"])
            if fmt is Format.json:
                typer.echo(json.dumps(e, ensure_ascii=False))
            else:
                what, details = _event_what(e)
                console.print(f"{e['time']}  {e['object']}  {what}  {details}", highlight=False, markup=False,
                              soft_wrap=True)
        return last

    seq = max(show(items), since)
    try:
        while True:
            time.sleep(interval)
            seq = max(seq, show(client.events(service, object=object_, since=seq)))
    except KeyboardInterrupt:
        return


@app.command("rotate-key", hidden=True)
def rotate_key(
    service: ServiceKey,
    fmt: Annotated[Format, typer.Option("--format", help="text, or json: {service, key, message}.")] = Format.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the new key.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Same as `inferstack keys rotate SERVICE`."""
    from .keys_cmd import rotate

    rotate(service, fmt, quiet, data_dir)


@app.command()
def logs(
    service: ServiceKey,
    deployment: Annotated[str, typer.Argument(metavar="DEPLOYMENT", help="Deployment key.")],
    tail: Annotated[int, typer.Option("--tail", metavar="N", min=1, max=10_000, help="Lines per instance (1 to "
                                                                                     "10000).")] = 50,
    fmt: Annotated[Format, typer.Option("--format", help="text, or json: {service, deployment, instances: "
                                                         "[{instance, lines}]}.")] = Format.text,
    data_dir: DataDir = None,
) -> None:
    """Show the last lines of each instance's log of a deployment.

    Logs are kept after instances stop, for post-mortems."""
    with _client(data_dir) as client:
        answer = client.request("GET", f"/v1/services/{service}/deployments/{deployment}/logs",
                                params={"tail": tail})
    if fmt is Format.json:
        print_json(answer)
        return
    if not answer["instances"]:
        console.print(f"no instance of {service}/{deployment} has logged anything yet", highlight=False,
                      markup=False)
    for inst in answer["instances"]:
        console.print(Text(f"== {inst['instance']}", style="bold"))
        for line in inst["lines"]:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
