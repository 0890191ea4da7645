"""The `monitor` command line's shared parts: the typer app with its common options (`--config`,
`--version`), loading the config (every problem printed, exit 2), the exit codes and the small
helpers every command uses (`fail`, `when`, the stderr console), and the console-script `main`.

Exit codes: 0 ok, 1 runtime failure (e.g. an input could not be read), 2 bad usage, config or
environment (a port taken, a database folder missing or read-only), 130 interrupted (Ctrl-C).
Errors are one line on stderr; `--debug` (or MONITOR_DEBUG=1) adds the traceback. The commands live
one module per command; `monitor.cli` registers them on `app`. This module defines no command.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup

from monitor import __version__
from monitor.errors import ConfigError, MonitorError, SetupError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from monitor.config import Settings

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

CONFIG_HELP = "The YAML config file (default: ./config.yaml, or $MONITOR_CONFIG)."
ConfigAfterCommand = Annotated[
    Path | None, typer.Option("--config", "-c", metavar="PATH", help=CONFIG_HELP)
]
Command = TypeVar("Command", bound=Callable[..., Any])
T = TypeVar("T")


def config_after_command(command: Command) -> Command:
    """`command` taking `--config` after its name too (`monitor feeds --config x.yaml`), as people
    write it, with the same meaning as before the name."""
    signature = inspect.signature(command, eval_str=True)
    extra = inspect.Parameter(
        "config_after_command",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=ConfigAfterCommand,
    )

    @functools.wraps(command)
    def with_config(*args: Any, config_after_command: Path | None = None, **kwargs: Any) -> Any:
        if config_after_command is not None:
            ctx: typer.Context = kwargs["ctx"]  # every command takes its context as `ctx`
            ctx.obj = replace(ctx.obj, config=config_after_command)
        return command(*args, **kwargs)

    with_config.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), extra]
    )
    with_config.__annotations__ = {
        **{name: p.annotation for name, p in signature.parameters.items()},
        "config_after_command": ConfigAfterCommand,
    }
    return cast("Command", with_config)


def _argument_name(argument: TyperArgument) -> str:
    name = argument.metavar or (argument.name or "").upper()
    return name + "..." if argument.nargs != 1 else name


def _one_line(error: Exception, ctx: Any) -> Exception:
    """A usage error (an unknown option or command, a missing argument or option value) as one
    line that says where to look, instead of the usage, a hint and the error on four; other
    errors as they are. `ctx` is the context being parsed, for an error raised without one (an
    option given without its value)."""
    # click's UsageError: typer ships its own copy of click from 0.22 on, so it is told by name.
    usage_error = any(kind.__name__ == "UsageError" for kind in type(error).__mro__)
    usage_context = getattr(error, "ctx", None) or (ctx if usage_error else None)
    format_message = getattr(error, "format_message", None)
    # (`monitor` alone shows the help through a usage error of its own: left as it is)
    if usage_context is None or format_message is None or "Help" in type(error).__name__:
        return error
    message = " ".join(str(format_message()).split()).rstrip(".")
    stderr.print(f"[red]error:[/red] {escape(message)}; see {usage_context.command_path} --help")
    return typer.Exit(EXIT_USAGE)


class MonitorGroup(TyperGroup):
    """A group of commands whose usage errors are one line. The root group makes every command
    below it a MonitorCommand (and every group a MonitorGroup), however it was registered, so
    that all help and usage errors read alike."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pending: list[Any] = list(self.commands.values())
        while pending:
            command = pending.pop()
            # Both subclasses only change behaviour, not state: switching the class is safe.
            if type(command) is TyperCommand:
                command.__class__ = MonitorCommand
            elif type(command) is TyperGroup:
                command.__class__ = MonitorGroup
            pending.extend(getattr(command, "commands", {}).values())

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as error:
            raise _one_line(error, ctx) from None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except Exception as error:
            raise _one_line(error, ctx) from None


class MonitorCommand(TyperCommand):
    """A command whose help names its arguments as people write them (`FILE|URL|-...`, not
    `{FILE|URL|-...} <list[str]>`), options with their metavars, and whose usage errors are one
    line."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as error:
            raise _one_line(error, ctx) from None

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            if isinstance(param, TyperArgument):
                arguments.append((_argument_name(param), param.help or ""))
            elif (record := param.get_help_record(ctx)) is not None:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


app = typer.Typer(
    name="monitor",
    cls=MonitorGroup,
    help="""Watch news feeds and alert people when a story matches a watchlist.

    Feeds in many languages are polled, their stories matched against watchlists and the alerts
    sent on Telegram, by email or to the console. --config may come before or after the command.

    \b
    Examples:
      monitor --config /etc/news-monitor/config.yaml check
      monitor once --config config.yaml
      monitor feeds --check
      monitor COMMAND --help
    """,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no type noise such as <bool> or <list[str]>
    context_settings={"help_option_names": ["-h", "--help"]},
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
            metavar="PATH",
            help=CONFIG_HELP,
            show_default=False,
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


def in_database(settings: Settings, work: Callable[[Session], T], *, write: bool = False) -> T:
    """`work` done in a session of the config's database (a transaction if `write`), which must
    exist: nothing to list or change without it. Problems are one line and exit 2 or 1."""
    from monitor.store import db

    engine = open_database(settings)
    try:
        session_of = db.transaction if write else db.read_session
        with session_of(engine) as session:
            return work(session)
    except MonitorError as exc:
        raise fail_with(exc) from None
    finally:
        engine.dispose()


def wrapped(text: str, width: int | None) -> list[str]:
    """`text` indented below what it is about, wrapped between words at `width` (None: a pipe,
    one line); a URL or a date is never cut."""
    if width is None:
        return [f"  {text}"]
    return textwrap.wrap(
        text,
        max(width, 40),
        initial_indent="  ",
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else "—"


def iso(moment: datetime | None) -> str | None:
    """A time as JSON shows it: UTC, to the second, with a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def count(n: int, noun: str) -> str:
    """`1 alert`, `3 alerts`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
