"""The `monitor` command line (SPEC §7) and the composition root: the only module that reads the
config file; it builds the matcher and the HTTP policy and passes plain values down.

Exit codes: 0 ok, 1 runtime failure (e.g. an input could not be read), 2 bad usage or config.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from monitor import __version__
from monitor.errors import ConfigError, QueryError

if TYPE_CHECKING:
    from monitor.config import Settings
    from monitor.fetch import FetchPolicy
    from monitor.model import Article, Match

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


def _load_settings(ctx: typer.Context) -> Settings:
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


@app.command()
def check(ctx: typer.Context) -> None:
    """Validate the config: list every error (exit 2) or print a summary (exit 0)."""
    from monitor.config import summary

    settings = _load_settings(ctx)
    typer.echo(summary(settings))
    typer.echo(f"{ctx.obj.config}: OK")


@app.command()
def match(
    ctx: typer.Context,
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE|URL|-...",
            help=(
                "What to match: a .txt file (first non-empty line is the title), an .html page, "
                "a feed file, an http(s) URL, or - for standard input."
            ),
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per item (SPEC §7), one per line.")
    ] = False,
) -> None:
    """Match texts against the configured watchlists, without storing or alerting anything."""
    settings = _load_settings(ctx)
    from monitor.inputs import read_inputs
    from monitor.watchlists import compile_watchlists

    try:
        matcher = compile_watchlists(settings)
    except QueryError as exc:  # config validation parses queries too; this is a safety net
        stderr.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(EXIT_USAGE) from None

    failed = 0
    report = _JsonReport() if as_json else _TableReport(settings)
    results = read_inputs(
        inputs,
        policy=_fetch_policy(settings),
        stdin=sys.stdin.buffer,
        base_dir=Path.cwd(),
    )
    for result in results:
        if result.error is not None:
            failed += 1
            stderr.print(f"[red]error:[/red] {escape(str(result.error))}")
            continue
        for article in result.articles:
            report.add(result.name, article, matcher.match(article))
    report.finish()
    if failed:
        stderr.print(f"{failed} of {len(inputs)} input{'s' if len(inputs) != 1 else ''} failed")
        raise typer.Exit(EXIT_FAILURE)


def _fetch_policy(settings: Settings) -> FetchPolicy:
    from monitor.fetch import FetchPolicy

    return FetchPolicy(
        timeout=settings.defaults.timeout.total_seconds(),
        max_body=settings.fetch.max_body,
        user_agent=settings.fetch.user_agent,
        allow_private=settings.fetch.allow_private,
        proxy=settings.fetch.proxy,
    )


class _JsonReport:
    """SPEC §7: `{"input", "title", "matches": [{"watchlist", "hits": [{term, field, start, end}]}]}`."""

    def add(self, name: str, article: Article, matches: list[Match]) -> None:
        record: dict[str, Any] = {
            "input": name,
            "title": article.title,
            "matches": [
                {
                    "watchlist": m.watchlist,
                    "hits": [
                        {"term": h.term, "field": h.field, "start": h.start, "end": h.end}
                        for h in m.hits
                    ],
                }
                for m in matches
            ],
        }
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")

    def finish(self) -> None:
        sys.stdout.flush()


class _TableReport:
    """Per matched item: its input and title, then a table of watchlists with the hits highlighted
    in a snippet of the text around them."""

    def __init__(self, settings: Settings) -> None:
        self.console = Console(highlight=False)
        self.items = 0
        self.matched = 0
        self.watchlists = len(settings.watchlists)

    def add(self, name: str, article: Article, matches: list[Match]) -> None:
        self.items += 1
        if not matches:
            return
        self.matched += 1
        heading = Text(name, style="bold")
        if article.title:
            heading.append(" — ")
            heading.append(article.title)
        table = Table(show_lines=True, expand=True, title=heading, title_justify="left")
        widest = max((len(m.watchlist) for m in matches), default=10)
        table.add_column("watchlist", overflow="fold", min_width=min(widest, 30))
        table.add_column("hits", overflow="fold", ratio=1)
        for m in matches:
            table.add_row(Text(m.watchlist), _highlighted(article, m))
        self.console.print(table)

    def finish(self) -> None:
        self.console.print(
            f"{self.matched} of {self.items} item{'s' if self.items != 1 else ''} matched "
            f"({self.watchlists} watchlist{'s' if self.watchlists != 1 else ''})"
        )


def _highlighted(article: Article, m: Match) -> Text:
    """The snippet around the first hit of each field, every hit in it reversed and bold."""
    from monitor.core.render import snippet

    cell = Text()
    for field, text in (("title", article.title), ("body", article.body)):
        hits = [h for h in m.hits if h.field == field]
        if not hits:
            continue
        cut = snippet(text, hits)
        if cell:
            cell.append("\n")
        cell.append(f"{field}: ", style="dim")
        if cut.cut_before:
            cell.append("…")
        shown = Text(cut.text)
        for start, end in cut.marks:
            shown.stylize("bold reverse", start, end)
        cell.append(shown)
        if cut.cut_after:
            cell.append("…")
    if m.hits:
        cell.append(f"\nterms: {', '.join(sorted({h.term for h in m.hits}))}", style="dim")
    else:
        cell.append("(matched without a term: NOT or a filter)", style="dim")
    return cell


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
