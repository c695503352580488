"""The embedded platform from the command line: `platform serve|stop`, `plan`, `apply`, `status`, `delete`,
`events`. Everything but `platform serve` talks to a running platform through `PlatformClient`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape as rich_escape
from rich.table import Table

from ..spec import StackFileError, load_file
from ..spec.stack import locate
from ..targets.local.client import PlatformClient, PlatformError, PlatformUnreachable
from .app import EXIT_INVALID, EXIT_OK, EXIT_UNREADABLE, app, console, err_console, platform_app
from .spec_cmds import Format, require_stack

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="The platform's data dir (default: $INFERSTACK_DATA_DIR, else ~/.inferstack). "
                       "$INFERSTACK_URL and $INFERSTACK_TOKEN win.")]
StackPath = Annotated[Path, typer.Argument(help="Stack file (YAML).")]


# --- the platform process ----------------------------------------------------------------------------------------

@platform_app.command("serve")
def serve_cmd(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on; 0 picks a free one (platform.json says "
                                                     "which).")] = 0,
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background; return once it is "
                                                          "healthy.")] = False,
    runtime: Annotated[bool | None, typer.Option("--runtime/--no-runtime", help="Run instances and the gateway "
                                                 "(default: on unless INFERSTACK_RUNTIME=0); off = control plane "
                                                 "only.")] = None,
) -> None:
    """Run the embedded platform (API + store). A new data dir gets the default inventory and a token."""
    from ..platform import server

    try:
        if detach:
            info = server.start_detached(data_dir, host, port, runtime=runtime)
            console.print(f"platform running at {info['url']} (pid {info['pid']}, data dir {info['data_dir']}); "
                          f"stop it with `inferstack platform stop`", highlight=False)
            return
        server.serve(data_dir, host, port, runtime=runtime, on_ready=lambda info: err_console.print(
            f"platform serving at {info['url']} (data dir {info['data_dir']}); Ctrl-C stops it", highlight=False))
    except server.PlatformProcessError as exc:
        err_console.print(f"[red]error[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None


@platform_app.command("stop")
def stop_cmd(data_dir: DataDir = None) -> None:
    """Stop the platform of the data dir (SIGTERM, then wait until it has exited)."""
    from ..platform import server

    info = server.stop(data_dir)
    if info is None:
        console.print(f"no platform running for {server.resolve_data_dir(data_dir)}", highlight=False)
        return
    console.print(f"stopped the platform at {info['url']} (pid {info['pid']})", highlight=False)


# --- talking to it -----------------------------------------------------------------------------------------------

@contextmanager
def _client(data_dir: Path | None) -> Iterator[PlatformClient]:
    """A client of the running platform; its refusals become exit codes (1 refused, 2 unreachable)."""
    try:
        with PlatformClient.discover(data_dir) as client:
            yield client
    except PlatformUnreachable as exc:
        err_console.print(f"[red]error[/red] {exc.message}", highlight=False)
        raise typer.Exit(EXIT_UNREADABLE) from None
    except PlatformError as exc:
        err_console.print(f"[red]refused[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INVALID) from None


def _read_stack(path: Path) -> tuple[Any, yaml.Node | None]:
    """The file's data (sugar kept: the platform expands it) and its YAML tree (for line numbers)."""
    try:
        loaded = load_file(path)
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except StackFileError as exc:
        err_console.print(f"[red]unreadable[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_UNREADABLE) from None
    data = json.loads(json.dumps(loaded.data if loaded.data is not None else {}, default=str))
    return data, root


def _apply(client: PlatformClient, path: Path, root: yaml.Node | None, data: Any, dry_run: bool) -> dict:
    try:
        return client.apply(data, dry_run=dry_run)
    except PlatformError as exc:
        if not exc.findings:
            raise
        err_console.print(f"{path}: [red]refused[/red] ({exc.status_code} {exc.error})", highlight=False)
        for f in exc.findings:
            line = locate(root, f["path"]) if f.get("path") else None
            where = f"{path}:{line}" if line else str(path)
            colour = {"error": "red", "warning": "yellow"}.get(f.get("severity"), "cyan")
            value = "" if f.get("value") is None else f"  value: {json.dumps(f['value'], ensure_ascii=False)}"
            err_console.print(f"  [{colour}]{f.get('severity')}[/{colour}] {where} {f['path']}: {f['message']}"
                              f"{value} [dim]({f['rule']})[/dim]", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INVALID) from None


def _warnings(result: dict) -> None:
    for w in result.get("warnings") or []:
        console.print(f"[yellow]warning[/yellow] {w['path']}: {w['message']} [dim]({w['rule']})[/dim]",
                      highlight=False, soft_wrap=True)


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
        typer.echo(json.dumps(result["plan"], indent=2, ensure_ascii=False))
        return
    console.print(result["plan_text"], highlight=False, markup=False)
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
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        console.print(result.to_text(), highlight=False, markup=False)


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
    fmt: Annotated[Format, typer.Option("--format", help="text, or json (plan, writes, changed).")] = Format.text,
    wait: Annotated[bool | None, typer.Option("--wait/--no-wait", help="Follow the rollout until every changed "
                                              "deployment is Ready (exit 1 on Degraded). Default: when the platform "
                                              "runs instances.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to follow the rollout.")] = 300.0,
    data_dir: DataDir = None,
) -> None:
    """Apply FILE to the running platform in one transaction: show the plan, write it, follow the rollout."""
    data, root = _read_stack(file)
    with _client(data_dir) as client:
        result = _apply(client, file, root, data, dry_run=False)
        if fmt is Format.json:
            typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        else:
            _print_applied(result)
        if wait is None:
            wait = bool(client.health().get("runtime"))
        services = sorted({c["object"].split("/")[1] for c in result["changed"]
                           if c["object"].startswith("services/") and c["action"] != "delete"})
        if wait and services and not _follow(client, services, timeout, quiet=fmt is Format.json):
            raise typer.Exit(EXIT_INVALID)
    raise typer.Exit(EXIT_OK)


def _observed(obj: dict) -> bool:
    return obj.get("status", {}).get("observed_generation") == obj["metadata"]["generation"]


def _follow(client: PlatformClient, services: list[str], timeout: float, quiet: bool = False) -> bool:
    """Show per-deployment progress until everything is observed and Ready (True), Degraded or the timeout (False)."""
    import time

    from rich.live import Live

    deadline = time.monotonic() + timeout
    degraded: list[str] = []

    def snapshot() -> tuple[Table, bool]:
        table = Table(title="Rollout", title_justify="left")
        for col in ("Deployment", "Ready", "Generation", "State"):
            table.add_column(col)
        done = True
        for svc in services:
            objs = [client.get_service(svc), client.get_traffic(svc)]
            done = done and all(_observed(o) for o in objs)
            for dep in client.list_deployments(svc):
                st = dep.get("status", {})
                roles = st.get("roles") or {}
                ready = ", ".join(f"{'' if len(roles) == 1 else name + ' '}{r.get('ready', 0)}/{r.get('desired', '?')}"
                                  for name, r in roles.items()) or "-"
                conds = {c["type"]: c for c in st.get("conditions") or []}
                ok = _observed(dep) and conds.get("Ready", {}).get("status") == "True"
                bad = conds.get("Degraded", {}).get("status") == "True"
                if bad:
                    degraded.append(f"{svc}/{dep['metadata']['key']}: {conds['Degraded'].get('message', '')}")
                state = ("[green]Ready[/green]" if ok else f"[red]Degraded[/red] {conds['Degraded'].get('reason')}"
                         if bad else f"[yellow]{conds.get('Progressing', {}).get('reason', 'Pending')}[/yellow]")
                done = done and ok
                table.add_row(f"{svc}/{dep['metadata']['key']}", ready,
                              f"{st.get('observed_generation', 0)}/{dep['metadata']['generation']}", state)
        return table, done

    with Live(console=console, refresh_per_second=8, transient=False, redirect_stdout=False) as live:
        while True:
            degraded.clear()
            table, done = snapshot()
            if not quiet:
                live.update(table)
            if done:
                return True
            if degraded:
                for line in degraded:
                    err_console.print(f"[red]degraded[/red] {line}", highlight=False, soft_wrap=True)
                return False
            if time.monotonic() > deadline:
                err_console.print(f"[red]timeout[/red] not every deployment was Ready after {timeout:g}s",
                                  highlight=False)
                return False
            time.sleep(0.2)


def _print_applied(result: dict) -> None:
    if result["writes"] == 0:
        console.print("No changes: the platform already matches the file; nothing written.", highlight=False)
        return
    console.print(result["plan_text"], highlight=False, markup=False)
    _warnings(result)
    console.print(f"Applied: {result['writes']} write(s).", highlight=False)
    for c in result["changed"]:
        console.print(f"  {c['action']:<8} {c['object']}", highlight=False)


@app.command()
def delete(
    service: Annotated[str, typer.Argument(help="Service key.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; delete nothing.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Delete a service: its traffic first, then its deployments, then the service."""
    with _client(data_dir) as client:
        result = client.delete_service(service, dry_run=dry_run)
    if dry_run:
        console.print(result["plan_text"], highlight=False, markup=False)
        return
    console.print(f"Deleted service {service}: {result['writes']} write(s).", highlight=False)
    for c in result["changed"]:
        console.print(f"  {c['action']:<8} {c['object']}", highlight=False)


def _cond(obj: dict, type_: str) -> str:
    c = next((c for c in obj.get("status", {}).get("conditions") or [] if c.get("type") == type_), None)
    if c is None:
        return "-"
    good = (c["status"] == "True") == (type_ == "Ready")
    text = f"{c['status']} ({c['reason']})" if c.get("reason") else c["status"]
    return f"[{'green' if good else 'red' if type_ != 'Progressing' else 'yellow'}]{text}[/]"


def _conditions(obj: dict) -> str:
    """Ready with its reason; Progressing and Degraded only while they are True."""
    parts = [f"Ready {_cond(obj, 'Ready')}"]
    for type_ in ("Progressing", "Degraded"):
        c = next((c for c in obj.get("status", {}).get("conditions") or [] if c.get("type") == type_), None)
        if c is not None and c["status"] == "True":
            parts.append(f"{type_} {_cond(obj, type_)}")
    return "\n".join(parts)


def _gen(obj: dict) -> str:
    observed = obj.get("status", {}).get("observed_generation", 0)
    generation = obj["metadata"]["generation"]
    return f"{observed}/{generation}" if observed == generation else f"[yellow]{observed}/{generation}[/yellow]"


@app.command()
def status(
    service: Annotated[str | None, typer.Argument(help="Service key (default: every service).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="text (tables), or json (the objects).")] = Format.text,
    keys: Annotated[bool, typer.Option("--keys", help="Show the service's invocation key — once: the platform "
                                                      "keeps only its hash afterwards.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Services, or one service's deployments: generations, conditions, replicas and weights."""
    if keys:
        if service is None:
            err_console.print("[red]error[/red] --keys needs a SERVICE", highlight=False)
            raise typer.Exit(EXIT_INVALID)
        with _client(data_dir) as client:
            answer = client.request("GET", f"/v1/services/{service}/keys")
        if answer.get("key"):
            console.print(f"invocation key of {service}: {answer['key']}\n{answer['message']}; callers send "
                          f"`Authorization: Bearer <key>`", highlight=False, markup=False)
        else:
            console.print(answer["message"], highlight=False, markup=False)
        return
    with _client(data_dir) as client:
        if service is None:
            services = client.list_services()
            rows = [(s, client.list_deployments(s["metadata"]["key"])) for s in services]
            details = None
        else:
            details = (client.get_service(service), client.list_deployments(service), client.get_traffic(service))
        gateway = _gateway_status(client) if fmt is not Format.json else None
    if fmt is Format.json:
        if details is None:
            out: Any = [{"service": s, "deployments": d} for s, d in rows]
        else:
            out = {"service": details[0], "deployments": details[1], "traffic": details[2]}
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
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
        console.print("No services. Apply a stack file: `inferstack apply examples/quickstart.yaml`.")
        return
    table = Table(title="Services")
    for col in ("Service", "Name", "Deployments", "Gen", "Conditions", "Gateway"):
        table.add_column(col)
    for svc, deps in rows:
        table.add_row(svc["metadata"]["key"], svc["spec"]["name"], ", ".join(d["metadata"]["key"] for d in deps)
                      or "-", _gen(svc), _conditions(svc), svc["status"].get("gateway_url") or "-")
    console.print(table)


def _service_details(svc: dict, deps: list[dict], traffic: dict) -> None:
    spec, st = svc["spec"], svc["status"]
    console.print(f"[bold]{spec['name']}[/bold] ({svc['metadata']['key']})  resource group {spec['resource_group']}"
                  f", VPC {spec['vpc']}, {spec.get('network_type')}, ports {spec.get('ports')}", highlight=False)
    gateways = st.get("gateway_urls") or {}
    console.print(f"gateway: {st.get('gateway_url') or 'not yet'}"
                  + (f"  {gateways}" if len(gateways) > 1 else "")
                  + f"   generation {_gen(svc)}   {_conditions(svc).replace(chr(10), '   ')}"
                  + f"   converted: {'yes' if st.get('converted') else 'no'}", highlight=False)
    tspec = traffic["spec"]
    weights = tspec.get("weights") or {}
    total = sum(weights.values())
    table = Table(title="Deployments")
    for col in ("Deployment", "Queue / spec", "Replicas\ndes/rdy/upd", "Gen", "Conditions", "Weight"):
        table.add_column(col)
    for dep in deps:
        key, ds = dep["metadata"]["key"], dep["spec"]
        roles = dep["status"].get("roles") or {}
        specs = ds.get("compute_spec") or ", ".join(f"{r['name']}: {r['compute_spec']}" for r in ds.get("roles") or [])
        counts = ", ".join(f"{'' if len(roles) == 1 else name + ' '}{r.get('desired', '?')}/{r.get('ready', 0)}/"
                           f"{r.get('updated', 0)}" for name, r in roles.items()) or "-"
        if tspec.get("strategy") == "weighted":
            share = weights.get(key, 0)
            weight = f"{share:g}" + (f" ({share / total:.0%})" if total and total != 100 else "")
        else:
            weight = "per instance"
        name = key if ds["name"] == key else f"{key}\n[dim]{ds['name']}[/dim]"
        table.add_row(name, f"{ds['queue']}\n{specs}", counts, _gen(dep), _conditions(dep), weight)
    console.print(table)
    extras = []
    for rule in tspec.get("header_rules") or []:
        extras.append(f"header {rule['header']}={rule['value']} → {rule['deployment']}")
    if tspec.get("mirror"):
        extras.append(f"mirror {tspec['mirror']['percent']:g}% → {tspec['mirror']['deployment']}")
    if tspec.get("consistent_hash"):
        extras.append(f"consistent hash on {tspec['consistent_hash']['header']}")
    console.print(f"traffic: {tspec.get('strategy')}, timeout {tspec.get('timeout_s'):g}s, retries "
                  f"{tspec.get('retries')}, generation {_gen(traffic)}" + "".join(f"; {e}" for e in extras),
                  highlight=False)


@app.command()
def events(
    service: Annotated[str | None, typer.Argument(help="Service key (default: every object).")] = None,
    object_: Annotated[str | None, typer.Option("--object", help="One object, e.g. "
                                                                    "services/chat/traffic.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="text, or json.")] = Format.text,
    data_dir: DataDir = None,
) -> None:
    """What changed, when, by which request: the platform's event log."""
    with _client(data_dir) as client:
        items = client.events(service, object=object_)
    if fmt is Format.json:
        typer.echo(json.dumps(items, indent=2, ensure_ascii=False))
        return
    table = Table(title="Events")
    for col in ("Seq", "Time", "Object", "Action", "Request", "Gen", "Changes"):
        table.add_column(col)
    for e in items:
        if e.get("action") == "event":  # a runtime event: its reason and message
            what = e["reason"] + (" (warning)" if e.get("type") == "Warning" else "")
            details = e.get("message", "")
        else:
            what = e["action"]
            details = ", ".join(e["changes"][:6]) + (" …" if len(e["changes"]) > 6 else "")
        table.add_row(str(e["seq"]), e["time"], e["object"], what, e["request_id"], str(e["generation"]), details)
    console.print(table)


@app.command("rotate-key")
def rotate_key(
    service: Annotated[str, typer.Argument(help="Service key.")],
    data_dir: DataDir = None,
) -> None:
    """Replace a service's invocation key; the new one is shown once and the old one stops working."""
    with _client(data_dir) as client:
        answer = client.request("POST", f"/v1/services/{service}/keys/rotate")
    console.print(f"new invocation key of {service}: {answer['key']}\n{answer['message']}", highlight=False,
                  markup=False)


@app.command()
def logs(
    service: Annotated[str, typer.Argument(help="Service key.")],
    deployment: Annotated[str, typer.Argument(help="Deployment key.")],
    tail: Annotated[int, typer.Option("--tail", help="Lines per instance.")] = 50,
    data_dir: DataDir = None,
) -> None:
    """The last lines of every instance's log of a deployment (kept after instances stop, for post-mortems)."""
    with _client(data_dir) as client:
        answer = client.request("GET", f"/v1/services/{service}/deployments/{deployment}/logs",
                                params={"tail": tail})
    if not answer["instances"]:
        console.print(f"no instance of {service}/{deployment} has logged anything yet", highlight=False)
    for inst in answer["instances"]:
        console.print(f"[bold]== {inst['instance']}[/bold]", highlight=False)
        for line in inst["lines"]:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
