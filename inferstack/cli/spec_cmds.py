"""`inferstack validate`, `inferstack schema` and `inferstack rules`."""

from __future__ import annotations

import gc
import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from ..spec import (
    Finding,
    Inventory,
    LoadedStack,
    StackFileError,
    check_across_stacks,
    default_inventory,
    json_schema,
    load_file,
)
from ..spec.yaml_text import paused_gc
from .app import EXIT_INVALID, EXIT_OK, EXIT_UNREADABLE, app, console, err_console
from .output import finding_text, print_json, print_table, table


class Format(str, Enum):
    text = "text"
    json = "json"


def print_unreadable(exc: StackFileError) -> None:
    """A file that cannot be read, on stderr: where, the offending line with a caret, and a hint."""
    err_console.print(Text.assemble(("unreadable", "red"), f" {exc}"), soft_wrap=True)


def _where(path: Path, f: Finding) -> str:
    return f"{path}:{f.line}" if f.line else str(path)


def _ordered(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then deferred rules; each kind in the input's order."""
    rank = {"error": 0, "warning": 1, "deferred": 2}
    return sorted(findings, key=lambda f: rank.get(f.severity.value, 3))


def load_stack(path: Path, base: Inventory | None) -> LoadedStack:
    """`load_file` for a command: what it loads lives until the process exits, so it is taken out of the garbage
    collector's sight (`gc.freeze`, before collections resume) — no collection scans it afterwards, during rendering
    or planning either."""
    with paused_gc():
        loaded = load_file(path, base)
        gc.freeze()
    return loaded


def require_stack(path: Path, action: str = "") -> LoadedStack:
    """A stack file that reads and validates (against the default inventory plus its own), or exit: 2 when it
    cannot be read, 1 with its errors when it breaks rules. `action` says what did not happen (e.g. "nothing
    rendered")."""
    try:
        loaded = load_stack(path, default_inventory())
    except StackFileError as exc:
        print_unreadable(exc)
        raise typer.Exit(EXIT_UNREADABLE) from None
    if loaded.stack is None or not loaded.report.ok:
        err_console.print(Text.assemble(f"{path}: ", ("invalid", "red"), f" ({len(loaded.report.errors)} error(s))"
                                        + (f"; {action}" if action else "")), soft_wrap=True)
        for f in loaded.report.errors:
            err_console.print(finding_text("error", _where(path, f), f.path, f.message, f.rule), soft_wrap=True)
        raise typer.Exit(EXIT_INVALID)
    return loaded


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="Stack files (YAML) to validate.")],
    fmt: Annotated[Format, typer.Option("--format", help="text, or json: a list of {file, rule, path, value, "
                                                         "message, severity, line}.")] = Format.text,
    no_default_inventory: Annotated[bool, typer.Option(
        "--no-default-inventory", help="Check references against the file's own inventory only, not the "
                                       "platform's default inventory.")] = False,
) -> None:
    """Check stack files against every domain rule.

    Also checks, across the files, that kubernetes stacks sharing a Gateway claim distinct route paths. Exit 0 valid,
    1 invalid (or declaring nothing), 2 unreadable."""
    base = None if no_default_inventory else default_inventory()
    worst = EXIT_OK
    out: list[dict] = []
    results: list[LoadedStack | StackFileError] = []
    for path in files:
        try:
            results.append(load_stack(path, base))
        except StackFileError as exc:
            results.append(exc)
    check_across_stacks([r for r in results if isinstance(r, LoadedStack)])
    for path, loaded in zip(files, results):
        if isinstance(loaded, StackFileError):
            exc = loaded
            worst = EXIT_UNREADABLE
            if fmt is Format.json:
                out.append({"file": str(path), "rule": "file.unreadable", "path": "", "value": None,
                            "message": exc.problem, "severity": "error", "line": exc.line, "column": exc.column,
                            "snippet": exc.snippet, "hint": exc.hint})
            else:
                print_unreadable(exc)
            continue
        if not loaded.report.ok and worst == EXIT_OK:
            worst = EXIT_INVALID
        if fmt is Format.json:
            out.extend({"file": str(path), **f} for f in loaded.report.to_list())
            continue
        errors = loaded.report.errors
        console.print(Text.assemble(f"{path}: ", ("valid", "green") if not errors else
                                    ("invalid", "red"), f" ({len(errors)} error(s))" if errors else ""),
                      soft_wrap=True)
        for f in _ordered(loaded.report.findings):
            console.print(finding_text(f.severity.value, _where(path, f), f.path, f.message, f.rule, f.value),
                          soft_wrap=True)
    if fmt is Format.json:
        print_json(out)
    raise typer.Exit(worst)


@app.command()
def schema() -> None:
    """Print the stack file's JSON Schema (for editors)."""
    typer.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))


@app.command()
def rules(
    fmt: Annotated[Format, typer.Option("--format", help="text, or json.")] = Format.text,
) -> None:
    """List every rule id the spec enforces.

    The ids that findings, the API's 422 bodies and the policy pack name."""
    from ..spec import RULES

    if fmt is Format.json:
        print_json([{"rule": r.id, "severity": r.severity.value, "summary": r.summary} for r in RULES.values()])
        return
    out = table("Rule", "Severity", "Summary")
    for r in RULES.values():
        out.add_row(r.id, r.severity.value, r.summary)
    print_table(out)
