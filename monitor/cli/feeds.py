"""`monitor feeds`: the health of each feed of the config (status, last success, failing since,
items, next poll, the last error), the outbox counts, `--json`, and `--check` for a monitoring
system (one line, exit 1 while feeds fail). It reads the database and changes nothing.

The table keeps every value whole: columns as wide as their widest value, a feed's error on a
line of its own below it (wrapped at word boundaries on a terminal, never in a pipe), the optional
columns only when the terminal has room for them.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from monitor.cli.app import (
    EXIT_FAILURE,
    EXIT_USAGE,
    count,
    fail,
    in_database,
    iso,
    load_settings,
    when,
    wrapped,
)

if TYPE_CHECKING:
    from monitor.store.feeds import FeedHealth


def feeds(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per feed, one per line.")
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Print one status line for a monitoring system; exit 1 while feeds fail.",
        ),
    ] = False,
    failing_for: Annotated[
        str | None,
        typer.Option(
            "--failing-for",
            metavar="AGE",
            help="With --check: count only the feeds failing for this long (e.g. 30m, 2h).",
        ),
    ] = None,
) -> None:
    """Show the health of each feed of the config.

    Each feed's status, last success, since when it has been failing, its items, and its last
    error below it; then the outbox counts. Times are UTC. Nothing in the database changes.
    --check prints one line (FEEDS OK or FEEDS WARNING, Nagios style) and exits 1 while a feed
    fails, for cron, Nagios or Icinga; with --failing-for, only the feeds failing for that long
    count.

    \b
    Examples:
      monitor feeds
      monitor feeds --check
      monitor feeds --check --failing-for 1h
      monitor feeds --json | jq -r 'select(.failures > 0) | .feed'
    """
    from monitor.durations import parse_duration
    from monitor.store.alerts import alert_counts
    from monitor.store.feeds import feed_health

    if as_json and check:
        raise fail("give --json or --check, not both", EXIT_USAGE)
    grace = None
    if failing_for is not None:
        if not check:
            raise fail("--failing-for goes with --check", EXIT_USAGE)
        try:
            grace = parse_duration(failing_for)
        except ValueError as exc:
            raise fail(f"--failing-for: {exc}", EXIT_USAGE) from None
    settings = load_settings(ctx)
    rows, counts = in_database(settings, lambda s: (feed_health(s), alert_counts(s)))
    stored = {row.name: row for row in rows}
    # The config's feeds, in its order: one removed from it is not shown, one added is "never
    # polled" until the service has polled it, one with `enabled: false` is "disabled".
    configured = [Feed(f.name, stored.get(f.name), f.enabled) for f in settings.all_feeds]
    if check:
        cutoff = datetime.now(UTC) - grace if grace else None
        line, failing = check_line(configured, cutoff, failing_for)
        typer.echo(line)
        raise typer.Exit(EXIT_FAILURE if failing else 0)
    if as_json:
        for feed in configured:
            typer.echo(json.dumps(feed_json(feed), ensure_ascii=False))
        return
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for line in feed_table(configured, width):
        typer.echo(line)
    typer.echo(summary_line(configured))
    typer.echo(
        f"outbox: {counts['pending']} pending, {counts['sent']} sent, {counts['failed']} given up"
    )
    if counts["failed"] or counts["pending"]:
        typer.echo("monitor alerts lists the alerts pending and given up, with their reasons")


@dataclass(frozen=True, slots=True)
class Feed:
    """A feed of the config and what the database holds of it (None: never polled). A disabled
    feed is not polled: it is never failing, and its failures of before are not shown."""

    name: str
    health: FeedHealth | None
    enabled: bool = True

    @property
    def failing(self) -> bool:
        return self.enabled and self.health is not None and self.health.consecutive_failures > 0

    @property
    def polled(self) -> FeedHealth | None:
        """Its health while it is polled: None for a disabled feed or one never polled."""
        return self.health if self.enabled else None


def feed_json(feed: Feed) -> dict[str, Any]:
    """The `--json` record of a feed; its keys are documented in the README. A disabled feed says
    so as its status, as the table does, and without its error of when it was polled."""
    h = feed.health
    return {
        "feed": feed.name,
        "enabled": feed.enabled,
        "status": "disabled" if not feed.enabled else h.last_status if h else None,
        "last_poll": iso(h.last_polled_at) if h else None,
        "last_success": iso(h.last_success_at) if h else None,
        "failing_since": iso(h.failing_since) if feed.failing and h else None,
        "failures": h.consecutive_failures if feed.failing and h else 0,
        "last_error": feed.polled.last_error if feed.polled else None,
        "new_items": h.last_new_items if h else None,
        "next_poll": iso(h.next_poll_at) if feed.polled and h else None,
        "items": h.item_count if h else 0,
        "alerts_given_up": h.failed_alert_count if h else 0,
    }


def check_line(
    configured: list[Feed], cutoff: datetime | None = None, grace: str | None = None
) -> tuple[str, bool]:
    """The one line of `--check` (Nagios plugin style, with performance data) and whether any
    feed fails (with `cutoff`: has been failing since then or earlier, for `grace`). Only the
    enabled feeds are checked; the disabled ones are counted at the end."""
    disabled = sum(not feed.enabled for feed in configured)
    configured = [feed for feed in configured if feed.enabled]
    aside = f"; {disabled} disabled" if disabled else ""
    failing = [
        feed
        for feed in configured
        if feed.failing
        and (
            cutoff is None or feed.health is None or (feed.health.failing_since or cutoff) <= cutoff
        )
    ]
    recent = sum(feed.failing for feed in configured) - len(failing)
    total = len(configured)
    perfdata = f"failing={len(failing)};;;0;{total}"
    if not failing:
        also = f" for {grace} ({recent} for less)" if recent else ""
        return f"FEEDS OK - {count(total, 'feed')}, none failing{also}{aside} | {perfdata}", False
    details = "; ".join(
        f"{feed.name} since {when(feed.health.failing_since)} UTC"
        + (f": {feed.health.last_error}" if feed.health.last_error else "")
        for feed in failing
        if feed.health is not None
    ).replace("|", "/")  # a | starts the performance data
    also = f" for {grace} or more" if cutoff else ""
    line = f"FEEDS WARNING - {len(failing)} of {count(total, 'feed')} failing{also}: {details}"
    if recent:
        line += f"; {recent} more for less than {grace}"
    line += aside
    return f"{' '.join(line.split())} | {perfdata}", True


def summary_line(configured: list[Feed]) -> str:
    failing = sum(feed.failing for feed in configured)
    never = sum(_status(feed) == "never polled" for feed in configured)
    disabled = sum(not feed.enabled for feed in configured)
    parts = [count(len(configured), "feed"), f"{failing} failing"]
    if never:
        parts.append(f"{never} never polled")
    if disabled:
        parts.append(f"{disabled} disabled")
    return ", ".join(parts) + "; times in UTC"


@dataclass(frozen=True, slots=True)
class _Column:
    title: str
    cell: Any  # Feed -> str
    right: bool = False


def _date(moment: datetime | None, none: str = "-") -> str:
    return when(moment) if moment else none


def _status(feed: Feed) -> str:
    if not feed.enabled:
        return "disabled"
    # A feed the service has registered but not polled yet has no status either.
    return feed.health.last_status if feed.health and feed.health.last_status else "never polled"


_REQUIRED = (
    _Column("status", _status),
    _Column(
        "last success", lambda f: _date(f.health.last_success_at, "never") if f.health else "-"
    ),
    _Column("failing since", lambda f: _date(f.polled.failing_since) if f.polled else "-"),
    _Column("items", lambda f: str(f.health.item_count) if f.health else "0", right=True),
)
# Shown when the terminal has room, in this order (always in a pipe).
_OPTIONAL = (
    _Column("next poll", lambda f: _date(f.polled.next_poll_at) if f.polled else "-"),
    _Column("last poll", lambda f: _date(f.health.last_polled_at) if f.health else "-"),
    _Column("new", lambda f: str(f.health.last_new_items or 0) if f.health else "-", right=True),
)
_GAP = "  "
_MIN_NAME = 12


def feed_table(configured: list[Feed], width: int | None) -> list[str]:
    """The feeds as aligned columns that fit `width` (None: a pipe, every column, nothing
    wrapped); a feed's last error on the line below it, indented."""
    rows = [[column.cell(feed) for column in (*_REQUIRED, *_OPTIONAL)] for feed in configured]
    widths = [
        max([len(column.title), *(len(row[i]) for row in rows)])
        for i, column in enumerate((*_REQUIRED, *_OPTIONAL))
    ]
    longest_name = max([len("feed"), *(len(feed.name) for feed in configured)])
    shown = len(_REQUIRED)
    if width is None:
        shown, name_width = len(widths), longest_name
    else:
        used = sum(widths[:shown]) + len(_GAP) * shown
        while shown < len(widths) and used + widths[shown] + len(_GAP) + longest_name <= width:
            used += widths[shown] + len(_GAP)
            shown += 1
        name_width = min(longest_name, max(_MIN_NAME, width - used))
    columns = (*_REQUIRED, *_OPTIONAL)[:shown]

    def line(name: str, cells: list[str]) -> str:
        aligned = [
            cell.rjust(widths[i]) if column.right else cell.ljust(widths[i])
            for i, (column, cell) in enumerate(zip(columns, cells, strict=False))
        ]
        return _GAP.join([name.ljust(name_width), *aligned]).rstrip()

    lines = [line("feed", [column.title for column in columns])]
    for feed, row in zip(configured, rows, strict=True):
        if len(feed.name) > name_width:  # a long name on a line of its own, the values below
            lines.append(feed.name)
            lines.append(line("", row[:shown]))
        else:
            lines.append(line(feed.name, row[:shown]))
        if feed.polled is not None and feed.polled.last_error:
            lines.extend(_error_lines(feed.polled, width))
    return lines


def _error_lines(health: FeedHealth, width: int | None) -> list[str]:
    failures = health.consecutive_failures
    text = f"{count(failures, 'failure')}: " if failures else ""
    text += " ".join(health.last_error.split()) if health.last_error else ""
    return wrapped(text, width)
