"""The typer application and what every command shares: consoles, help conventions and exit codes.

Exit codes, the same on every command (README, "Exit codes"):

| code | meaning |
|---|---|
| 0 | done: valid, applied and Ready, printed |
| 1 | invalid or refused: the input breaks rules, the platform refused it, or the object does not exist — nothing was written |
| 2 | unreadable input: a file that cannot be read or parsed, or a usage error (unknown option, missing argument) |
| 3 | written but not Ready: the rollout is Degraded or was not Ready before `--timeout` (it goes on) |
| 4 | the platform is unreachable: none is running for the data dir, or nothing answers at its URL |
| 130 | interrupted (Ctrl-C); `apply` says what was written first |
"""

from __future__ import annotations

from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand

from .output import console, err_console

EXIT_OK = 0
EXIT_INVALID = 1  # the input is readable but breaks rules, the platform refused it, or it names nothing that exists
EXIT_UNREADABLE = 2  # the input cannot be read at all (bad YAML, missing file), or the command line is wrong
EXIT_NOT_READY = 3  # written, but not Ready: Degraded, or the wait timed out
EXIT_UNREACHABLE = 4  # no platform answers
EXIT_INTERRUPTED = 130  # Ctrl-C (typer's own code for KeyboardInterrupt, too)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 120}


class Command(TyperCommand):
    """Help in the conventions of Unix tools: `FILE...` and `[SERVICE]` in the usage line, arguments listed by their
    names with no Python type placeholders (`<list[Path]>`); options show their metavar (`--timeout SECONDS`)."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                help_ = getattr(param, "help", None) or ""
                args.append((_argument_name(param), help_ + ("  [required]" if param.required else "")))
            else:
                record = param.get_help_record(ctx)
                if record is not None:
                    opts.append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


def _argument_name(param: click.Parameter) -> str:
    name = param.metavar or (param.name or "").upper()
    return name + ("..." if param.nargs != 1 else "")


class Typer(typer.Typer):
    """typer.Typer whose commands use `Command` (their help follows one convention)."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or Command, **kwargs)


app = Typer(
    name="inferstack",
    help="Multi-deployment online inference services as code.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: readable in a pipe, no `<bool>`-style type placeholders
    context_settings=CONTEXT,
)
platform_app = Typer(help="Run and stop the embedded platform.", no_args_is_help=True, rich_markup_mode=None,
                     context_settings=CONTEXT)
app.add_typer(platform_app, name="platform")

__all__ = ["CONTEXT", "EXIT_INTERRUPTED", "EXIT_INVALID", "EXIT_NOT_READY", "EXIT_OK", "EXIT_UNREACHABLE",
           "EXIT_UNREADABLE", "app", "console", "err_console", "platform_app"]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"inferstack {version('inferstack')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("inferstack (not installed)")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", "-V", is_eager=True, callback=_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Multi-deployment online inference services as code.

    Exit codes (every command): 0 ok; 1 invalid or refused, nothing written; 2 unreadable input or usage error;
    3 written but not Ready (Degraded or timed out); 4 platform unreachable; 130 interrupted.
    """
