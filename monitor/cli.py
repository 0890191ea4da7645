"""The `monitor` command line (SPEC §7) and the composition root: the only module that reads the
config file; it builds the matcher and the HTTP policy and passes plain values down.

Exit codes: 0 ok, 1 runtime failure (e.g. an input could not be read), 2 bad usage or config.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
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


def _fail(message: str, code: int = EXIT_FAILURE) -> typer.Exit:
    stderr.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


@app.command()
def once(
    ctx: typer.Context,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when any feed failed (default: exit 0).")
    ] = False,
) -> None:
    """Poll every feed once, match, deliver what is due, and exit (cron-friendly)."""
    from monitor.daemon import AlreadyRunningError, Service, configure_logging, sqlite_lock
    from monitor.errors import MonitorError

    settings = _load_settings(ctx)
    # Only errors: the summary at the end lists the feeds that failed.
    configure_logging(settings.service.log_format, level=logging.ERROR, secrets=_secrets(settings))
    try:
        with sqlite_lock(settings.database.url) as alone:
            service = Service.build(settings)
            service.prepare(now=datetime.now(UTC), alone=alone)
            results, delivered = asyncio.run(_once(service))
    except (AlreadyRunningError, MonitorError) as exc:
        raise _fail(str(exc)) from None
    failed = [r for r in results if r.failed]
    counts = Counter(r.status for r in results)
    new = sum(r.new_items for r in results)
    updated = sum(r.updated_items for r in results)
    alerts = sum(r.alerts for r in results)
    parts = [f"{counts[s]} {label}" for s, label in _STATUS_LABELS if counts[s]]
    stderr.print(
        f"polled {len(results)} feed{'s' if len(results) != 1 else ''}: {', '.join(parts) or 'none'}; "
        f"{new} new and {updated} updated items; {alerts} alerts queued, {delivered.sent} sent"
        + (f", {delivered.retried} to retry" if delivered.retried else "")
        + (f", {delivered.failed} given up" if delivered.failed else "")
    )
    for result in failed:
        stderr.print(f"  [red]failed[/red] {escape(result.feed)}: {escape(result.error or '')}")
    if failed and strict:
        raise typer.Exit(EXIT_FAILURE)


_STATUS_LABELS = (
    ("ok", "with news"),
    ("unchanged", "unchanged"),
    ("not_modified", "not modified"),
    ("retry_later", "asked us to wait"),
    ("error", "failed"),
)


async def _once(service: Any) -> tuple[list[Any], Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("polling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )
    try:
        with progress:
            task = progress.add_task("", total=None)
            results = await service.poll_all(
                on_result=lambda r: progress.update(task, advance=1, description=r.feed),
                total=lambda n: progress.update(task, total=n),
            )
        delivered = await service.deliver_tick()
    finally:
        await service.close()
    return results, delivered


@app.command()
def run(ctx: typer.Context) -> None:
    """The daemon: poll on schedule, match, deliver, serve /healthz and /metrics. SIGTERM stops it."""
    from monitor.daemon import (
        AlreadyRunningError,
        Service,
        configure_logging,
        run_forever,
        sqlite_lock,
    )
    from monitor.errors import MonitorError

    # Until the event loop takes over SIGTERM, it means "stop now, cleanly": exit 0, not 143.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    settings = _load_settings(ctx)
    configure_logging(settings.service.log_format, secrets=_secrets(settings))
    try:
        with sqlite_lock(settings.database.url) as alone:
            service = Service.build(settings)
            service.prepare(now=datetime.now(UTC), alone=alone)
            asyncio.run(run_forever(service))
    except (AlreadyRunningError, MonitorError) as exc:
        raise _fail(str(exc)) from None


def _secrets(settings: Settings) -> tuple[str, ...]:
    """Values that must never reach a log: the bot token and the SMTP password."""
    found = []
    if settings.telegram is not None:
        found.append(settings.telegram.token.get_secret_value())
    if settings.email is not None and settings.email.password is not None:
        found.append(settings.email.password.get_secret_value())
    return tuple(secret for secret in found if secret)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)


@app.command()
def feeds(ctx: typer.Context) -> None:
    """The health of each feed: last poll, status, new items, failures, next poll."""
    from monitor.errors import MonitorError
    from monitor.store import db
    from monitor.store.alerts import alert_counts, failed_alerts
    from monitor.store.feeds import feed_health

    settings = _load_settings(ctx)
    try:
        engine = db.make_engine(settings.database.url)
        try:
            db.ensure_schema(engine, upgrade=False)
            with db.read_session(engine) as session:
                rows = feed_health(session)
                counts = alert_counts(session)
                given_up = failed_alerts(session, limit=10)
        finally:
            engine.dispose()
    except MonitorError as exc:
        raise _fail(str(exc)) from None
    table = Table(expand=True)
    for column in ("feed", "last poll UTC", "status", "new", "failures", "next poll UTC", "items"):
        table.add_column(column, overflow="fold")
    table.add_column("error", overflow="fold", ratio=1)
    configured = {f.name for f in settings.feeds}
    for row in rows:
        if row.name not in configured and not row.active:
            continue
        status = row.last_status or "never polled"
        style = "red" if row.consecutive_failures else ""
        table.add_row(
            Text(row.name),
            _when(row.last_polled_at),
            Text(status, style=style),
            str(row.last_new_items or 0),
            Text(str(row.consecutive_failures), style=style),
            _when(row.next_poll_at),
            str(row.item_count),
            Text(row.last_error or ""),
        )
    out = Console(highlight=False)
    out.print(table)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "empty"
    out.print(f"outbox: {summary}")
    if given_up:
        failed = Table(title="alerts given up (newest first)", title_justify="left", expand=True)
        for column in ("alert", "watchlist", "channel", "attempts", "feed", "reason"):
            failed.add_column(column, overflow="fold")
        for alert in given_up:
            failed.add_row(
                str(alert.id),
                Text(alert.watchlist),
                Text(f"{alert.channel} {alert.recipient}".strip()),
                str(alert.attempts),
                Text(alert.feed_name),
                Text(alert.last_error or ""),
            )
        out.print(failed)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else "—"


@app.command()
def backtest(
    ctx: typer.Context,
    watchlist: Annotated[
        str | None, typer.Argument(help="A watchlist of the config (or use --query).")
    ] = None,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="A query to try instead of a watchlist.")
    ] = None,
    since: Annotated[str, typer.Option("--since", help="How far back: 90s, 10m, 2h, 30d.")] = "30d",
    top: Annotated[int, typer.Option("--top", help="How many stories to list.")] = 10,
) -> None:
    """What a watchlist (or --query) would have matched in stored items. Nothing is sent."""
    from monitor.core.match import Matcher, WatchlistRule
    from monitor.durations import parse_duration
    from monitor.errors import MonitorError
    from monitor.model import Article
    from monitor.store import db
    from monitor.store.stories import items_since

    settings = _load_settings(ctx)
    if (watchlist is None) == (query is None):
        raise _fail("give either a WATCHLIST name or --query", EXIT_USAGE)
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise _fail(f"--since: {exc}", EXIT_USAGE) from None
    if watchlist is not None:
        if watchlist not in settings.watchlists:
            known = ", ".join(settings.watchlists) or "none"
            raise _fail(f"no watchlist {watchlist!r} (watchlists: {known})", EXIT_USAGE)
        w = settings.watchlists[watchlist]
        rule = WatchlistRule(w.name, w.query, tuple(w.languages), tuple(w.feeds))
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
    try:
        engine = db.make_engine(settings.database.url)
        try:
            db.ensure_schema(engine, upgrade=False)
            with db.read_session(engine) as session:
                for item in items_since(session, cutoff):
                    scanned += 1
                    article = Article(
                        item.title, item.text, item.language, item.feed_name, item.link
                    )
                    found = matcher.match(article)
                    if not found:
                        continue
                    day = (item.published_at or item.fetched_at).astimezone(UTC).date().isoformat()
                    per_day[day] += 1
                    hits = len(found[0].hits)
                    if item.story_id not in stories or stories[item.story_id][0] < hits:
                        stories[item.story_id] = (hits, item)
        finally:
            engine.dispose()
    except MonitorError as exc:
        raise _fail(str(exc)) from None
    out = Console(highlight=False)
    out.print(
        f"{rule.name}: {sum(per_day.values())} of {scanned} items since {cutoff:%Y-%m-%d %H:%M} UTC"
    )
    if per_day:
        days = Table(title="matches per day", title_justify="left")
        days.add_column("day")
        days.add_column("items", justify="right")
        for day, count in sorted(per_day.items()):
            days.add_row(day, str(count))
        out.print(days)
        best = Table(title=f"top {top} stories (most hits)", title_justify="left", expand=True)
        for column in ("hits", "feed", "published", "title"):
            best.add_column(column, overflow="fold")
        ranked = sorted(stories.values(), key=lambda pair: -pair[0])[:top]
        for hits, item in ranked:
            best.add_row(
                str(hits), Text(item.feed_name), _when(item.published_at), Text(item.title)
            )
        out.print(best)


@app.command("send-test")
def send_test(
    ctx: typer.Context,
    channel: Annotated[str, typer.Argument(help="A channel of the config.")],
) -> None:
    """Send a sample alert through a channel (to each of its recipients) and report the result."""
    from monitor.daemon import notifiers_for
    from monitor.errors import DeliveryError
    from monitor.model import Alert, Hit

    settings = _load_settings(ctx)
    if channel not in settings.channels:
        known = ", ".join(settings.channels) or "none"
        raise _fail(f"no channel {channel!r} (channels: {known})", EXIT_USAGE)
    notifier = notifiers_for(settings).get(channel)
    if notifier is None:
        raise _fail(
            f"channel {channel!r} cannot send: its section (email: or telegram:) is missing"
        )
    recipients = _channel_recipients(settings, channel)
    body = "A sample alert from news-monitor: قضية تايوان هي «أول خط أحمر» (the first red line)."
    start = body.index("تايوان")
    red = body.index("خط أحمر")
    failures = 0

    async def send_all() -> None:
        nonlocal failures
        try:
            for recipient in recipients:
                alert = Alert(
                    id=0,
                    watchlist="send-test",
                    channel=channel,
                    recipient=recipient,
                    title="Test alert from news-monitor",
                    body=body,
                    link="https://example.org/news-monitor/send-test",
                    source="send-test",
                    published=datetime.now(UTC),
                    hits=(
                        Hit("تايوان", "body", start, start + 6),
                        Hit("خط أحمر", "body", red, red + 7),
                    ),
                )
                label = recipient or channel
                try:
                    await notifier.send(alert)
                except DeliveryError as exc:
                    failures += 1
                    kind = "permanent" if exc.permanent else "temporary"
                    stderr.print(
                        f"[red]failed[/red] {escape(label)}: {escape(exc.reason)} ({kind})"
                    )
                else:
                    stderr.print(f"sent to {escape(label)}")
        finally:
            await notifier.close()

    asyncio.run(send_all())
    if failures:
        raise typer.Exit(EXIT_FAILURE)


def _channel_recipients(settings: Settings, channel: str) -> list[str]:
    config = settings.channels[channel]
    if config.type == "telegram":
        return [str(chat) for chat in getattr(config, "chat_ids", ())]
    if config.type == "email":
        return list(getattr(config, "to", ()))
    return [""]


db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply the schema migrations (run and once also do this by themselves)."""
    from monitor.errors import MonitorError
    from monitor.store import db

    settings = _load_settings(ctx)
    try:
        engine = db.make_engine(settings.database.url)
        try:
            before, after = db.upgrade(engine)
        finally:
            engine.dispose()
    except MonitorError as exc:
        raise _fail(str(exc)) from None
    if before == after:
        typer.echo(f"database is up to date (revision {after})")
    else:
        typer.echo(f"database upgraded from {before or 'empty'} to revision {after}")


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
