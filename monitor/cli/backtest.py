"""`monitor backtest`: what a watchlist (or `--query`) would have matched in the items stored over
a period by publication date: matches per day and the stories with the most hits. Nothing is stored or sent.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from monitor.cli.app import (
    EXIT_USAGE,
    count,
    fail,
    fail_with,
    load_settings,
    open_database,
    stderr,
    when,
)
from monitor.errors import QueryError

if TYPE_CHECKING:
    pass


def backtest(
    ctx: typer.Context,
    watchlist: Annotated[
        str | None,
        typer.Argument(metavar="WATCHLIST", help="A watchlist of the config (or use --query)."),
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(
            "--query", "-q", metavar="QUERY", help="A query to try instead of a watchlist."
        ),
    ] = None,
    since: Annotated[
        str,
        typer.Option(
            "--since",
            metavar="AGE",
            help="How far back, by publication date (an undated item: when first seen):"
            " 90s, 10m, 2h, 30d.",
        ),
    ] = "30d",
    top: Annotated[int, typer.Option("--top", metavar="N", help="How many stories to list.")] = 10,
) -> None:
    """What a watchlist would have matched in stored items.

    Runs the watchlist (or --query) over the stored items published in the window and prints the
    matches per day and the stories with the most hits. Nothing is stored or sent. A watchlist
    with enabled: false runs too: try it here before enabling it.

    \b
    Examples:
      monitor backtest taiwan-red-line
      monitor backtest taiwan-red-line --since 7d --top 20
      monitor backtest --query '@taiwan NEAR/10 @red-line' --since 90d
    """
    from monitor.core.match import Matcher, WatchlistRule
    from monitor.durations import parse_duration
    from monitor.errors import MonitorError
    from monitor.model import Article
    from monitor.store import db
    from monitor.store.stories import items_before, items_since

    settings = load_settings(ctx)
    if (watchlist is None) == (query is None):
        raise fail("give either a WATCHLIST name or --query", EXIT_USAGE)
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise fail(f"--since: {exc}", EXIT_USAGE) from None
    label = "--query"
    if watchlist is not None:
        # A disabled one too: backtesting is how one tries a watchlist before enabling it.
        if watchlist not in settings.all_watchlists:
            known = ", ".join(settings.all_watchlists) or "none"
            raise fail(f"no watchlist {watchlist!r} (watchlists: {known})", EXIT_USAGE)
        w = settings.all_watchlists[watchlist]
        rule = WatchlistRule(w.name, w.query, tuple(w.languages), tuple(w.feeds))
        label = w.name if w.enabled else f"{w.name} (disabled)"
    else:
        rule = WatchlistRule("--query", query or "")
    entities = {name: list(e.aliases) for name, e in settings.entities.items()}
    try:
        matcher = Matcher.compile([rule], entities)
    except QueryError as exc:
        stderr.print(f"[red]error:[/red] {escape(exc.message)}\n{escape(exc.pointer())}")
        raise typer.Exit(EXIT_USAGE) from None
    cutoff = datetime.now(UTC) - window
    per_day: Counter[str] = Counter()
    stories: dict[int, tuple[int, Any]] = {}
    scanned = 0
    engine = open_database(settings)
    try:
        try:
            with db.read_session(engine, streaming=True) as session:
                for item in items_since(session, cutoff):
                    scanned += 1
                    article = Article(
                        item.title, item.text, item.language, item.feed_name, item.link
                    )
                    found = matcher.match(article)
                    if not found:
                        continue
                    published = item.published_at or item.fetched_at
                    day = published.astimezone(UTC).date().isoformat()
                    per_day[day] += 1
                    hits = len(found[0].hits)
                    if item.story_id not in stories or stories[item.story_id][0] < hits:
                        stories[item.story_id] = (hits, item)
            older, oldest = 0, None
            if not per_day:
                with db.read_session(engine) as session:
                    older, oldest = items_before(session, cutoff)
        finally:
            engine.dispose()
    except MonitorError as exc:
        raise fail_with(exc) from None
    out = Console(highlight=False)
    out.print(
        f"{label}: {sum(per_day.values())} of {scanned} items published since"
        f" {cutoff:%Y-%m-%d %H:%M} UTC",
        soft_wrap=True,
    )
    if older and oldest is not None:
        # Nothing matched in the window, and it left stored items out: say how far back they go
        # (in whole days, an hour to spare, so that the window still holds the oldest later on).
        reach = math.ceil((datetime.now(UTC) - oldest + timedelta(hours=1)) / timedelta(days=1))
        out.print(
            f"{count(older, 'stored item')} {'was' if older == 1 else 'were'} published before"
            f" that, the oldest on {oldest:%Y-%m-%d}; --since {reach}d reaches back to it",
            soft_wrap=True,
        )
    if per_day:
        days = Table(title="matches per day", title_justify="left")
        days.add_column("day")
        days.add_column("items", justify="right")
        for day, matched in sorted(per_day.items()):
            days.add_row(day, str(matched))
        out.print(days)
        best = Table(title=f"top {top} stories (most hits)", title_justify="left", expand=True)
        for column in ("hits", "feed", "published", "title"):
            best.add_column(column, overflow="fold")
        ranked = sorted(stories.values(), key=lambda pair: -pair[0])[:top]
        for hits, item in ranked:
            dated = when(item.published_at or item.fetched_at)
            best.add_row(str(hits), Text(item.feed_name), dated, Text(item.title))
        out.print(best)
