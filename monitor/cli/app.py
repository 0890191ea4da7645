"""The `monitor` command line's shared parts: the typer app with its common options (`--config`,
`--version`), loading the config (every problem printed, exit 2), the exit codes and the small
helpers every command uses (`fail`, `when`, the stderr console), and the console-script `main`.

Exit codes: 0 ok, 1 runtime failure (e.g. an input could not be read), 2 bad usage or config.
The commands live one module per command; `monitor.cli` registers them on `app`. This module
defines no command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from monitor import __version__
from monitor.errors import ConfigError

if TYPE_CHECKING:
    from monitor.config import Settings

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="monitor",
    help="Watch news feeds in many languages and alert people when a story matches a watchlist.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Options:
    config: Path


def _version(value: bool) -> None:
    if value:
        typer.echo(f"monitor {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            envvar="MONITOR_CONFIG",
            help="The YAML config file (SPEC §2).",
            show_default=True,
        ),
    ] = Path("config.yaml"),
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    ctx.obj = Options(config)


def load_settings(ctx: typer.Context) -> Settings:
    """Load and validate the config, or print every problem and exit 2."""
    from monitor.config import load_config

    options: Options = ctx.obj
    try:
        return load_config(options.config)
    except ConfigError as exc:
        for problem in exc.problems:
            stderr.print(f"[red]error:[/red] {escape(str(problem))}")
        if not options.config.exists():
            stderr.print("hint: pass --config PATH or set MONITOR_CONFIG")
        else:
            count = len(exc.problems)
            stderr.print(
                f"{count} problem{'s' if count != 1 else ''} in {escape(str(options.config))}"
            )
        raise typer.Exit(EXIT_USAGE) from None


def fail(message: str, code: int = EXIT_FAILURE) -> typer.Exit:
    stderr.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else "—"


def main() -> None:
    """Console-script entry point."""
    app()
