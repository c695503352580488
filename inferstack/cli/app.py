"""The typer application and what every command shares: consoles and exit codes."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="inferstack",
    help="Multi-deployment online inference services as code.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
platform_app = typer.Typer(help="Run and stop the embedded platform.", no_args_is_help=True)
app.add_typer(platform_app, name="platform")

console = Console()
err_console = Console(stderr=True)

EXIT_OK = 0
EXIT_INVALID = 1  # the input is readable but breaks rules, or the platform refused it
EXIT_UNREADABLE = 2  # the input cannot be read at all (bad YAML, missing file), or the platform is unreachable
