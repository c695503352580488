"""`inferstack render`: a stack file rendered to Kubernetes YAML, one file per object (GitOps-friendly)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from ..spec.kubernetes import DNS_LABEL_RE, kubernetes_findings
from .app import EXIT_INVALID, EXIT_OK, EXIT_UNREADABLE, app, console, err_console
from .spec_cmds import require_stack

# Files `render` owns in its output directory: `NN-<kind>-<name>.yaml`. Others are never touched.
_RENDERED_FILE = re.compile(r"^\d\d-[a-z]+-[a-z0-9-]+\.yaml$")


@app.command("render")
def render_cmd(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Stack file (YAML) to render.")],
    out: Annotated[Path | None, typer.Option(
        "-o", "--output", metavar="DIR", help="Directory for one YAML file per object (created if missing; rendered files of objects "
                               "that no longer exist are removed). Default: print one multi-document stream.")] = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", metavar="NAMESPACE", help="Namespace of the objects (default: the stack's kubernetes.namespace).")] = None,
    include_secrets: Annotated[bool, typer.Option(
        "--include-secrets", help="Also write the Secrets holding secret env values (stringData, files mode 0600). "
                                  "Without it they are referenced, never written.")] = False,
    cluster_bootstrap: Annotated[bool | None, typer.Option(
        "--cluster-bootstrap/--no-cluster-bootstrap", help="Also render cluster-wide objects (PriorityClasses). "
                                                           "Default: the stack's kubernetes.cluster_bootstrap.")] = None,
) -> None:
    """Render a stack to Kubernetes objects. Exit 0 rendered, 1 invalid stack, 2 unreadable file."""
    from ..targets.kubernetes import RenderError, RenderOptions, render

    if namespace is not None and not (len(namespace) <= 63 and DNS_LABEL_RE.match(namespace)):
        err_console.print(f"--namespace {namespace!r} is not a Kubernetes namespace name (a DNS label: lowercase "
                          f"letters, digits and '-', at most 63 characters); nothing rendered", highlight=False)
        raise typer.Exit(EXIT_INVALID)
    loaded = require_stack(file, "nothing rendered")
    if loaded.stack.target != "kubernetes":  # validate ran the kubernetes.* rules only for kubernetes stacks
        services = loaded.stack.services
        found = kubernetes_findings(services, [f"services[{i}]" for i in range(len(services))],
                                    loaded.stack.kubernetes)
        if found:
            err_console.print(f"{file}: [red]cannot render[/red] ({len(found)} error(s)); nothing rendered",
                              highlight=False)
            for f in found:
                err_console.print(f"  [red]error[/red] {file} {f.path}: {f.message} [dim]({f.rule})[/dim]",
                                  highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INVALID)
    options = RenderOptions(namespace=namespace, include_secrets=include_secrets, cluster_bootstrap=cluster_bootstrap)
    try:
        result = render(loaded.stack, options)
    except RenderError as exc:
        err_console.print(Text.assemble(f"{file}: ", ("cannot render", "red"), f": {exc}"), soft_wrap=True)
        raise typer.Exit(EXIT_INVALID) from exc
    if loaded.stack.target != "kubernetes":
        err_console.print(Text.assemble(("note", "yellow"), f" {file} targets '{loaded.stack.target}'; rendered "
                                                            f"anyway"), soft_wrap=True)
    for warning in result.warnings:
        err_console.print(Text.assemble(("warning", "yellow"), f" {warning}"), soft_wrap=True)
    if out is None:
        typer.echo(result.to_documents(), nl=False)
        raise typer.Exit(EXIT_OK)
    files = result.files()
    try:
        _write(out, files)
    except OSError as exc:
        err_console.print(Text.assemble(("cannot write", "red"), f" {out}: {exc}"), soft_wrap=True)
        raise typer.Exit(EXIT_UNREADABLE) from exc
    console.print(f"{file}: {len(files)} object(s) → {out}/", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_OK)


def _write(out: Path, files: list[tuple[str, str]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = {name for name, _ in files}
    for stale in sorted(p for p in out.iterdir() if _RENDERED_FILE.match(p.name) and p.name not in names):
        stale.unlink()
        console.print(f"removed {stale}", highlight=False, markup=False, soft_wrap=True)
    for name, text in files:
        path = out / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue  # unchanged: keep the file's mtime, so tools that watch the directory see no change
        mode = 0o600 if name.split("-", 2)[1] == "secret" else 0o644  # secret values: readable by the owner only
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
