"""`inferstack keys show|rotate SERVICE`: a service's invocation key, usable in scripts.

The platform keeps only a hash of each key: `show` reveals a new service's key once (then refuses, exit 1, and says
to rotate); `rotate` makes a new key at once (the old one stops working) and shows it. `--quiet` prints the bare key
and a newline, so `KEY=$(inferstack keys show chat --quiet)` works; `--format json` prints {service, key, message}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from .app import EXIT_INVALID, Typer, app, console, err_console
from .output import print_json
from .platform_cmds import DataDir, ServiceKey, _client
from .spec_cmds import Format

keys_app = Typer(help="Show or rotate a service's invocation key (callers send `Authorization: Bearer <key>`).",
                 no_args_is_help=True, rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(keys_app, name="keys")

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the key (for KEY=$(...)).")]
KeyFormat = Annotated[Format, typer.Option("--format", help="text, or json: {service, key, message}.")]


def _print_key(service: str, answer: dict, fmt: Format, quiet: bool, what: str) -> None:
    if fmt is Format.json:
        print_json(answer)
    elif quiet:
        typer.echo(answer["key"])
    else:
        console.print(f"{what} of {service}: {answer['key']}", highlight=False, markup=False, soft_wrap=True)
        err_console.print(f"{answer['message']}; callers send `Authorization: Bearer <key>`", highlight=False,
                          markup=False, soft_wrap=True)


def show_key(service: str, fmt: Format, quiet: bool, data_dir: Path | None) -> None:
    with _client(data_dir) as client:
        answer = client.request("GET", f"/v1/services/{service}/keys")
    if not answer.get("key"):
        if fmt is Format.json:
            print_json(answer)
        err_console.print(Text.assemble(("refused", "red"), f" the invocation key of {service} was shown once "
                                                            f"already and is stored hashed; `inferstack keys rotate "
                                                            f"{service}` makes a new one (the old one stops "
                                                            f"working)"), soft_wrap=True)
        raise typer.Exit(EXIT_INVALID)
    _print_key(service, answer, fmt, quiet, "invocation key")


def rotate(service: str, fmt: Format, quiet: bool, data_dir: Path | None) -> None:
    with _client(data_dir) as client:
        answer = client.request("POST", f"/v1/services/{service}/keys/rotate")
    _print_key(service, answer, fmt, quiet, "new invocation key")


@keys_app.command("show")
def show_cmd(service: ServiceKey, quiet: Quiet = False, fmt: KeyFormat = Format.text,
             data_dir: DataDir = None) -> None:
    """Show a service's invocation key, once.

    The first call after the service is created shows it; later calls exit 1 (the platform keeps only a hash):
    rotate for a new key."""
    show_key(service, fmt, quiet, data_dir)


@keys_app.command("rotate")
def rotate_cmd(service: ServiceKey, quiet: Quiet = False, fmt: KeyFormat = Format.text,
               data_dir: DataDir = None) -> None:
    """Replace a service's invocation key and show the new one.

    The old key stops working at once."""
    rotate(service, fmt, quiet, data_dir)
