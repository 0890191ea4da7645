"""The `monitor` command line's shared parts: the typer app with its common options (`--config`,
`--version`), loading the config (every problem printed, exit 2), the exit codes and the small
helpers every command uses (`fail`, `when`, the stderr console), and the console-script `main`.

Exit codes: 0 ok, 1 runtime failure (e.g. an input could not be read), 2 bad usage, config or
environment (a port taken, a database folder missing or read-only), 130 interrupted (Ctrl-C).
Errors are one line on stderr; `--debug` (or MONITOR_DEBUG=1) adds the traceback. The commands live
one module per command; `monitor.cli` registers them on `app`. This module defines no command.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from monitor import __version__
from monitor.errors import ConfigError, MonitorError, SetupError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from monitor.config import Settings

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

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
    debug: bool = False


_debug = bool(os.environ.get("MONITOR_DEBUG"))  # set by --debug too; read by `main`


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
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of an unexpected error."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    global _debug
    _debug = _debug or debug
    ctx.obj = Options(config, debug=_debug)


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


def fail_with(exc: MonitorError) -> typer.Exit:
    """The one-line message of `exc` and its exit code: 2 for the environment (SetupError), else 1."""
    return fail(str(exc), EXIT_USAGE if isinstance(exc, SetupError) else EXIT_FAILURE)


def refuse_moved_database(settings: Settings) -> None:
    """Exit 2 when the SQLite database is still where monitor used to look for it (relative to the
    working directory) and not where the config puts it now: going on would start a second one."""
    from monitor.config.database_location import database_moved_message, old_database_location

    old = old_database_location(settings)
    if old is not None:
        raise fail(database_moved_message(settings, old), EXIT_USAGE)


def open_database(settings: Settings) -> Engine:
    """The engine of a command that only reads: the database must exist at its current schema
    (nothing is created or upgraded). Problems are one line and exit 2 (environment) or 1."""
    from monitor.store import db

    refuse_moved_database(settings)
    try:
        engine = db.make_engine(settings.database.url, create=False)
        try:
            db.ensure_schema(engine, upgrade=False)
        except MonitorError:
            engine.dispose()
            raise
    except MonitorError as exc:
        raise fail_with(exc) from None
    return engine


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else "—"


def main() -> None:
    """Console-script entry point: an unexpected error is one line (exit 1), its traceback only
    with --debug."""
    try:
        app()
    except Exception as exc:  # a bug or an error nobody translated: say what it was, briefly
        if _debug:
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        stderr.print(
            f"[red]error:[/red] unexpected {type(exc).__name__}"
            + (f": {escape(detail)}" if detail else "")
            + " (run with --debug for the traceback)"
        )
        sys.exit(EXIT_FAILURE)
