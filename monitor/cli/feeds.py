"""`monitor feeds`: the health of each configured feed (last poll, status, new items, failures, next
poll, items), the outbox counts and the alerts given up on, read from the database. It changes
nothing in the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from monitor.cli.app import fail_with, load_settings, open_database, when

if TYPE_CHECKING:
    pass


def feeds(ctx: typer.Context) -> None:
    """Show the health of each configured feed.

    Each feed's last poll, status, new items, failures and next poll, the outbox counts and the
    alerts given up with their reasons. Nothing in the database changes.

    \b
    Example:
      monitor feeds --config /etc/news-monitor/config.yaml
    """
    from monitor.errors import MonitorError
    from monitor.store import db
    from monitor.store.alerts import alert_counts
    from monitor.store.feeds import feed_health

    settings = load_settings(ctx)
    engine = open_database(settings)
    try:
        try:
            with db.read_session(engine) as session:
                rows = feed_health(session)
                counts = alert_counts(session)
        finally:
            engine.dispose()
    except MonitorError as exc:
        raise fail_with(exc) from None
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
            when(row.last_polled_at),
            Text(status, style=style),
            str(row.last_new_items or 0),
            Text(str(row.consecutive_failures), style=style),
            when(row.next_poll_at),
            str(row.item_count),
            Text(row.last_error or ""),
        )
    out = Console(highlight=False)
    out.print(table)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "empty"
    out.print(f"outbox: {summary}")
    if counts["failed"] or counts["pending"]:
        out.print("monitor alerts lists the alerts pending and given up, with their reasons")
