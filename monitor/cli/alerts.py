"""`monitor alerts`: the alerts not sent, pending (with why: attempts, last error, next try) and
given up; `--retry` queues those given up again, `--purge` deletes them. The outbox's rows are
`monitor.store.alerts`'; this module only reads, asks for those two changes and prints.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from monitor.cli.app import (
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
    from monitor.store.alerts import UnsentAlert


def alerts(
    ctx: typer.Context,
    ids: Annotated[
        list[int] | None,
        typer.Argument(metavar="ALERT", help="Only these alerts (their numbers, e.g. 12)."),
    ] = None,
    retry: Annotated[
        bool,
        typer.Option("--retry", help="Queue the alerts given up again, with every attempt."),
    ] = False,
    purge: Annotated[bool, typer.Option("--purge", help="Delete the alerts given up.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per alert, one per line.")
    ] = False,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", metavar="N", help="List at most N pending and N given up (0: all)."
        ),
    ] = 20,
) -> None:
    """List the alerts waiting or given up, and why.

    A pending alert shows its attempts so far, its last error and its next try; one given up
    shows why. --retry queues those given up again (the running service or the next once sends
    them), --purge deletes them; both say how many, and take alert numbers to act on only those.

    \b
    Examples:
      monitor alerts
      monitor alerts --retry
      monitor alerts --retry 12 15
      monitor alerts --purge
      monitor alerts --json | jq -r 'select(.status == "given_up") | .last_error'
    """
    from monitor.store.alerts import (
        alert_counts,
        purge_failed_alerts,
        retry_failed_alerts,
        unsent_alerts,
    )

    if retry and purge:
        raise fail("give --retry or --purge, not both", EXIT_USAGE)
    if limit < 0:
        raise fail("--limit: give a number of alerts, or 0 for all", EXIT_USAGE)
    settings = load_settings(ctx)
    chosen = ids or None
    if retry:
        changed = in_database(
            settings, lambda s: retry_failed_alerts(s, datetime.now(UTC), chosen), write=True
        )
        typer.echo(_changed(changed, "re-queued", chosen))
        return
    if purge:
        changed = in_database(settings, lambda s: purge_failed_alerts(s, chosen), write=True)
        typer.echo(_changed(changed, "purged", chosen))
        return
    counts, pending, given_up = in_database(
        settings,
        lambda s: (
            alert_counts(s),
            unsent_alerts(s, "pending", limit or None, chosen),
            unsent_alerts(s, "failed", limit or None, chosen),
        ),
    )
    if as_json:
        for alert in [*pending, *given_up]:
            typer.echo(json.dumps(alert_json(alert), ensure_ascii=False))
        return
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for heading, shown, total in (
        ("pending", pending, len(pending) if chosen else counts["pending"]),
        ("given up", given_up, len(given_up) if chosen else counts["failed"]),
    ):
        if not total:
            continue
        more = f", the {len(shown)} {'soonest' if heading == 'pending' else 'newest'} shown"
        typer.echo(f"{heading}: {count(total, 'alert')}{more if len(shown) < total else ''}")
        for alert in shown:
            typer.echo("\n".join(alert_lines(alert, width)))
    if counts["failed"] and not chosen:
        typer.echo("monitor alerts --retry sends those given up again; --purge deletes them")
    if not pending and not given_up:
        typer.echo("no alerts pending or given up" if not chosen else "no such alert unsent")


def alert_json(alert: UnsentAlert) -> dict[str, Any]:
    """The `--json` record of an alert; its keys are documented in the README."""
    pending = alert.status == "pending"
    return {
        "alert": alert.id,
        "status": "pending" if pending else "given_up",
        "watchlist": alert.watchlist,
        "channel": alert.channel,
        "recipient": alert.recipient,
        "feed": alert.feed_name,
        "title": alert.title,
        "queued": iso(alert.created_at),
        "attempts": alert.attempts,
        "last_error": alert.last_error,
        "next_try": iso(alert.next_attempt_at) if pending else None,
    }


def alert_lines(alert: UnsentAlert, width: int | None) -> list[str]:
    """An alert in a few lines that keep their words whole at `width` (None: a pipe, no wrapping):
    who it is for, what it is about, and why it is not sent."""
    to = f"{alert.channel} {alert.recipient}".strip()
    tried = f"{alert.attempts} attempt{'' if alert.attempts == 1 else 's'}"
    if alert.status == "pending":
        state = (
            f"{tried}, next try {when(alert.next_attempt_at)} UTC"
            if alert.attempts
            else (f"not tried yet, due {when(alert.next_attempt_at)} UTC")
        )
    else:
        state = f"given up after {tried}"
    lines = [
        f"#{alert.id} {alert.watchlist} → {to}",
        f"queued {when(alert.created_at)} UTC, {state}",
        f"{alert.feed_name}: {' '.join(alert.title.split())}",
    ]
    if alert.last_error:
        lines.append(f"last error: {alert.last_error}")
    return [lines[0], *(part for line in lines[1:] for part in wrapped(line, width))]


def _changed(changed: int, done: str, chosen: list[int] | None) -> str:
    of = f" of alerts {', '.join(map(str, chosen))}" if chosen else ""
    line = f"{done} {count(changed, 'alert')} given up{of}"
    if done == "re-queued" and changed:
        line += ": the running service (or the next monitor once) sends them"
    return line
