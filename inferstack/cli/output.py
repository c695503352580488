"""How the CLI writes: to a terminal for a person, or to a pipe, a file or a CI log for a program.

Invariants:
- Nothing is cut. On a terminal, tables fold long cells onto more lines (never `…`); anywhere else there is no width
  limit at all (a pipe has no width), so `inferstack status chat | cat` shows the whole gateway URL.
- Every output ends with a newline.
- Colour and live (redrawn) displays only on a terminal; elsewhere plain lines, one per state change.
- Text that comes from the user or the platform (messages, values, paths) is never read as rich markup: a regex such as
  `^[a-z][a-z0-9-]{0,39}$` is printed as written.
"""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich import box
from rich.console import Console, ConsoleDimensions
from rich.table import Table
from rich.text import Text

PIPE_WIDTH = 1_000_000
"""The width rich lays text out in when the output is not a terminal: in practice, none."""


class PipeAwareConsole(Console):
    """A rich console without a width when its output is not a terminal (see the module's invariants)."""

    @property
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = PipeAwareConsole()
err_console = PipeAwareConsole(stderr=True)

SEVERITY_STYLES = {"error": "red", "warning": "yellow", "deferred": "cyan", "info": "cyan"}
PLAN_STYLES = {"+": "green", "~": "yellow", "±": "magenta", "-": "red"}


def on_terminal() -> bool:
    """True when stdout is a terminal (a person watches): live displays and colour."""
    return console.is_terminal


class PlainTable(Table):
    """A rich table whose string cells are text as written, never markup (a `[` in a message stays a `[`)."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(Text(r) if isinstance(r, str) else r for r in renderables), **kwargs)


def table(*columns: str, title: str | None = None) -> Table:
    """A table that never cuts a cell: folded on a terminal, plain columns (no box) elsewhere."""
    tty = on_terminal()
    out = PlainTable(title=title, title_justify="left", box=box.HEAVY_HEAD if tty else None,
                show_edge=tty, pad_edge=tty)
    for name in columns:
        out.add_column(name, overflow="fold")
    return out


def print_table(data: Table) -> None:
    """A table on stdout; off a terminal as plain lines without the padding rich adds at their ends."""
    if on_terminal():
        console.print(data)
        return
    with console.capture() as captured:
        console.print(data)
    typer.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def cell_separator() -> str:
    """Between the parts of a table cell: a new line on a terminal, `; ` elsewhere (one row stays one line)."""
    return "\n" if on_terminal() else "; "


def lines(*parts: str) -> str:
    """Cell text of several parts (empty ones left out), joined by `cell_separator`."""
    return cell_separator().join(p for p in parts if p)


def print_json(data: Any) -> None:
    """JSON on stdout, ending with a newline (for `--format json`)."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def finding_text(severity: str, where: str, path: str, message: str, rule: str, value: Any = None) -> Text:
    """One finding as a line: severity, `file:line`, path, message, value and rule id — none of it read as markup."""
    style = SEVERITY_STYLES.get(severity, "cyan")
    text = Text("  ")
    text.append(severity, style=style)
    text.append(f" {where}")
    if path:
        text.append(f" {path}:")
    text.append(f" {message}")
    if value is not None:
        text.append(f"  value: {json.dumps(value, ensure_ascii=False)}")
    text.append(f" ({rule})", style="dim")
    return text


def plan_text(text: str) -> Text:
    """The plan's text with each object's line coloured by its action (create, update, replace, delete)."""
    out = Text()
    for line in text.splitlines(keepends=True):
        symbol = line[:1]
        style = PLAN_STYLES.get(symbol) if line[1:2] == " " else None
        if line.startswith("  ! "):
            style = "yellow"
        out.append(line, style=style)
    return out


def clock() -> str:
    """The time of a progress line: local wall clock, to the second."""
    return time.strftime("%H:%M:%S")
