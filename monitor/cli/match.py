"""`monitor match`: match texts (files, pages, feeds, URLs, stdin) against the configured watchlists
and print the hits as tables, or one JSON line per item with `--json`. Nothing is stored or sent;
reading the inputs is `monitor.inputs`' job and matching the core's.
"""

from __future__ import annotations

import sys
from json.encoder import encode_basestring
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from monitor.cli.app import EXIT_FAILURE, EXIT_USAGE, load_settings, stderr
from monitor.errors import QueryError

if TYPE_CHECKING:
    from monitor.config import FeedSettings, Settings
    from monitor.model import Article, Match


def match(
    ctx: typer.Context,
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE|URL|-",
            help=(
                "What to match: a .txt file (first non-empty line is the title), an .html page, "
                "a feed file, an http(s) URL, or - for standard input."
            ),
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per item, one per line.")
    ] = False,
    query: Annotated[
        str | None,
        typer.Option(
            "--query",
            "-q",
            metavar="QUERY",
            help="A query to try instead of the configured watchlists (the config's entities apply).",
        ),
    ] = None,
) -> None:
    """Match texts against the watchlists (nothing is stored).

    Each input is matched against the configured watchlists (or one --query); a feed file or URL
    item by item. Each item's language is found as the service finds it, for lang: and
    languages:. Exit 1 when an input could not be read.

    \b
    Examples:
      monitor match article.txt page.html
      monitor match --query '@taiwan NEAR/10 @red-line' examples/feeds/sample.xml
      curl -s https://example.org/news | monitor match --json -
    """
    settings = load_settings(ctx)
    from monitor.core.match import Matcher, WatchlistRule
    from monitor.fetch import FetchPolicy
    from monitor.inputs import read_inputs
    from monitor.watchlists import compile_watchlists

    try:
        if query is None:
            matcher = compile_watchlists(settings)
        else:
            entities = {name: list(e.aliases) for name, e in settings.entities.items()}
            matcher = Matcher.compile([WatchlistRule(QUERY_WATCHLIST, query)], entities)
    except QueryError as exc:  # config validation parses the watchlists' queries too
        stderr.print(f"[red]error:[/red] {escape(exc.message)}")
        if query is not None:
            stderr.print(escape(exc.pointer()), highlight=False)
        raise typer.Exit(EXIT_USAGE) from None

    failed = 0
    report = _JsonReport() if as_json else _TableReport(len(matcher.names))
    feeds = _ConfiguredFeeds(settings)
    needs_language = matcher.uses_language
    results = read_inputs(
        inputs,
        policy=FetchPolicy.from_settings(settings),
        stdin=sys.stdin.buffer,
        base_dir=Path.cwd(),
    )
    for result in results:
        if result.error is not None:
            failed += 1
            stderr.print(f"[red]error:[/red] {escape(str(result.error))}")
            continue
        feed = feeds.of(result.name)
        for article in result.articles:
            article = _as_the_service_sees_it(article, feed, needs_language)
            report.add(result.name, article, matcher.match(article))
    report.finish()
    if failed:
        stderr.print(f"{failed} of {len(inputs)} input{'s' if len(inputs) != 1 else ''} failed")
        raise typer.Exit(EXIT_FAILURE)


# The name under which a --query matches (as `monitor backtest --query` names it).
QUERY_WATCHLIST = "--query"


class _ConfiguredFeeds:
    """The configured feed an input is, if it is one: the same URL, or the same file as a local
    feed path (relative to the config file)."""

    def __init__(self, settings: Settings) -> None:
        from monitor.inputs import is_url

        self.feeds: dict[str, FeedSettings] = {}
        for feed in settings.feeds:
            where = feed.url if is_url(feed.url) else _file_key(Path(settings.config_dir, feed.url))
            self.feeds.setdefault(where, feed)

    def of(self, spec: str) -> FeedSettings | None:
        from monitor.inputs import STDIN, is_url

        if not self.feeds or spec == STDIN:
            return None
        return self.feeds.get(spec if is_url(spec) else _file_key(Path.cwd() / spec))


def _file_key(path: Path) -> str:
    return str(path.resolve())


def _as_the_service_sees_it(article: Article, feed: FeedSettings | None, language: bool) -> Article:
    """The item with what `monitor run` would give it before matching: its feed's name as its
    source when the input is a configured feed, and, when a watchlist filters on it, its language,
    found by the service's own function from the same tags and text."""
    from dataclasses import replace

    from monitor.language import item_language

    source = feed.name if feed is not None else article.source
    if not language:
        return replace(article, source=source) if source != article.source else article
    hints = (feed.language,) if feed is not None else ()
    found = item_language(article.language, hints, article.title, article.body)
    return replace(article, language=found, source=source)


class _JsonReport:
    """SPEC §7: `{"input", "title", "matches": [{"watchlist", "hits": [{term, field, start, end}]}]}`,
    one line per item, byte for byte what `json.dumps(record, ensure_ascii=False)` writes.

    The line is put together here, with json's own string encoder for every string, because
    json.dumps spends most of its time on the dicts of a record with dozens of matches."""

    def add(self, name: str, article: Article, matches: list[Match]) -> None:
        sys.stdout.write(json_record(name, article.title, matches) + "\n")

    def finish(self) -> None:
        sys.stdout.flush()


def json_record(name: str, title: str, matches: list[Match]) -> str:
    """The `--json` line of one item (without its newline)."""
    encode = encode_basestring
    terms: dict[str, str] = {}  # a term's JSON, made once per item: its hits often repeat it
    found = []
    for match in matches:
        hits = []
        for term, field, start, end in match.hits:
            term_json = terms.get(term)
            if term_json is None:
                term_json = terms[term] = encode(term)
            field_json = _FIELD_JSON.get(field) or encode(field)
            hits.append(
                f'{{"term": {term_json}, "field": {field_json}, "start": {start}, "end": {end}}}'
            )
        found.append(f'{{"watchlist": {encode(match.watchlist)}, "hits": [{", ".join(hits)}]}}')
    return f'{{"input": {encode(name)}, "title": {encode(title)}, "matches": [{", ".join(found)}]}}'


_FIELD_JSON = {"title": '"title"', "body": '"body"'}


class _TableReport:
    """Per matched item: its input and title, then a table of watchlists with the hits highlighted
    in a snippet of the text around them."""

    def __init__(self, watchlists: int) -> None:
        self.console = Console(highlight=False)
        self.items = 0
        self.matched = 0
        self.watchlists = watchlists

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
