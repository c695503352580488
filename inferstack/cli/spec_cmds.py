"""`inferstack validate` and `inferstack schema`."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..spec import LoadedStack, StackFileError, check_across_stacks, default_inventory, json_schema, load_file
from .app import EXIT_INVALID, EXIT_OK, EXIT_UNREADABLE, app, console, err_console


class Format(str, Enum):
    text = "text"
    json = "json"


def require_stack(path: Path, action: str = "") -> LoadedStack:
    """A stack file that reads and validates (against the default inventory plus its own), or exit: 2 when it
    cannot be read, 1 with its errors when it breaks rules. `action` says what did not happen (e.g. "nothing
    rendered")."""
    try:
        loaded = load_file(path, default_inventory())
    except StackFileError as exc:
        err_console.print(f"[red]unreadable[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_UNREADABLE) from None
    if loaded.stack is None or not loaded.report.ok:
        err_console.print(f"{path}: [red]invalid[/red] ({len(loaded.report.errors)} error(s))"
                          + (f"; {action}" if action else ""), highlight=False)
        for f in loaded.report.errors:
            line = f":{f.line}" if f.line else ""
            err_console.print(f"  [red]error[/red] {path}{line} {f.path}: {f.message} [dim]({f.rule})[/dim]",
                              highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INVALID)
    return loaded


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Stack files (YAML) to validate.")],
    fmt: Annotated[Format, typer.Option("--format", help="text, or json: a list of {rule, path, value, message, "
                                                         "severity}.")] = Format.text,
    no_default_inventory: Annotated[bool, typer.Option(
        "--no-default-inventory", help="Check references against the file's own inventory only, not the "
                                       "platform's default inventory.")] = False,
) -> None:
    """Check stack files against every domain rule (and, across the files, that kubernetes stacks sharing a Gateway
    claim distinct route paths). Exit 0 valid, 1 invalid, 2 unreadable."""
    base = None if no_default_inventory else default_inventory()
    worst = EXIT_OK
    out: list[dict] = []
    results: list[LoadedStack | StackFileError] = []
    for path in files:
        try:
            results.append(load_file(path, base))
        except StackFileError as exc:
            results.append(exc)
    check_across_stacks([r for r in results if isinstance(r, LoadedStack)])
    for path, loaded in zip(files, results):
        if isinstance(loaded, StackFileError):
            exc = loaded
            worst = EXIT_UNREADABLE
            if fmt is Format.json:
                out.append({"file": str(path), "rule": "file.unreadable", "path": "", "value": None,
                            "message": str(exc), "severity": "error", "line": exc.line, "column": exc.column})
            else:
                err_console.print(f"[red]unreadable[/red] {exc}", highlight=False)
            continue
        if not loaded.report.ok and worst == EXIT_OK:
            worst = EXIT_INVALID
        if fmt is Format.json:
            out.extend({"file": str(path), **f} for f in loaded.report.to_list())
            continue
        errors = loaded.report.errors
        status = "[green]valid[/green]" if not errors else f"[red]invalid[/red] ({len(errors)} error(s))"
        console.print(f"{path}: {status}", highlight=False)
        for f in loaded.report.findings:
            colour = {"error": "red", "warning": "yellow", "deferred": "cyan"}[f.severity.value]
            line = f":{f.line}" if f.line else ""
            value = "" if f.value is None else f"  value: {json.dumps(f.value, ensure_ascii=False)}"
            console.print(f"  [{colour}]{f.severity.value}[/{colour}] {path}{line} {f.path}: {f.message}{value} "
                          f"[dim]({f.rule})[/dim]", highlight=False, soft_wrap=True)
    if fmt is Format.json:
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
    raise typer.Exit(worst)


@app.command()
def schema() -> None:
    """Print the stack file's JSON Schema (for editors)."""
    typer.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))


@app.command()
def rules(
    fmt: Annotated[Format, typer.Option("--format", help="text, or json.")] = Format.text,
) -> None:
    """List every rule id the spec enforces (the ids errors, the API's 422 bodies and the policy pack name)."""
    from ..spec import RULES

    if fmt is Format.json:
        typer.echo(json.dumps([{"rule": r.id, "severity": r.severity.value, "summary": r.summary}
                               for r in RULES.values()], indent=2, ensure_ascii=False))
        return
    for r in RULES.values():
        console.print(f"{r.id:<45} {r.severity.value:<8} {r.summary}", highlight=False, markup=False, soft_wrap=True)
