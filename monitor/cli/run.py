"""`monitor run` (the daemon, until SIGTERM) and `monitor once` (poll every feed once, deliver what
is due, print a summary, exit): both build the service from the config, take the SQLite lock and
set up logging without secrets. Scheduling, polling and delivery are `monitor.daemon`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from monitor.cli.app import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    fail_with,
    load_settings,
    refuse_moved_database,
    stderr,
    when,
)

if TYPE_CHECKING:
    from monitor.config import Settings


def once(
    ctx: typer.Context,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when any feed failed (default: exit 0).")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Poll also the feeds that wait out a server's Retry-After or back off after "
            "failures (default: leave them until their next poll time).",
        ),
    ] = False,
) -> None:
    """Poll every feed once, deliver what is due, and exit.

    For cron: polls every feed, matches, delivers the alerts that are due and prints a summary.
    A feed that waits out a Retry-After or backs off after failures is left alone unless --force.
    Exit 0 even when feeds failed, unless --strict. Ctrl-C stops the polls (their feeds are polled by the next run), sends the alerts already
    queued, says what is left and exits 130; a second Ctrl-C stops at once.

    \b
    Examples:
      monitor once
      monitor once --config /etc/news-monitor/config.yaml --strict
    """
    from monitor.daemon import Service, configure_logging, sqlite_lock
    from monitor.errors import MonitorError

    settings = load_settings(ctx)
    refuse_moved_database(settings)
    # Only errors: the summary at the end lists the feeds that failed.
    configure_logging(settings.service.log_format, level=logging.ERROR, secrets=_secrets(settings))
    try:
        with sqlite_lock(settings.database.url) as alone:
            service = Service.build(settings)
            try:
                service.prepare(alone=alone)
            except BaseException:
                service.engine.dispose()
                raise
            run = asyncio.run(_once(service, force=force))
    except MonitorError as exc:
        raise fail_with(exc) from None
    except KeyboardInterrupt:  # before the polls began (e.g. waiting for the database)
        raise _interrupted_at_start() from None
    results, delivered, waiting = run.results, run.delivered, run.waiting
    failed = [r for r in results if r.failed]
    counts = Counter(r.status for r in results)
    new = sum(r.new_items for r in results)
    updated = sum(r.updated_items for r in results)
    alerts = sum(r.alerts for r in results)
    too_old = sum(r.too_old for r in results)
    parts = [f"{counts[s]} {label}" for s, label in _STATUS_LABELS if counts[s]]
    stderr.print(
        f"polled {len(results)} feed{'s' if len(results) != 1 else ''}: {', '.join(parts) or 'none'}; "
        f"{new} new and {updated} updated items; {alerts} alerts queued, {delivered.sent} sent"
        + (f", {delivered.retried} to retry" if delivered.retried else "")
        + (f", {delivered.failed} given up" if delivered.failed else "")
        + (
            f"; {delivered.edited} sent before edited to list new sources"
            if delivered.edited
            else ""
        )
        + (
            f"; {too_old} match{'es' if too_old != 1 else ''} too old to alert (alert_max_age)"
            if too_old
            else ""
        )
    )
    for result in failed:
        stderr.print(f"  [red]failed[/red] {escape(result.feed)}: {escape(result.error or '')}")
    if waiting:
        stderr.print(
            f"not polled, waiting as asked or backing off after failures "
            f"(--force polls {'them' if len(waiting) > 1 else 'it'} now):"
        )
    for feed in waiting:
        stderr.print(
            f"  waiting {escape(feed.name)} until {when(feed.next_poll_at)} UTC: "
            f"{escape(feed.last_error or '')}"
        )
    if run.interrupted:
        skipped = run.feeds - len(results)
        stderr.print(
            f"interrupted: {skipped} of {run.feeds} feed{'s' if run.feeds != 1 else ''} not "
            f"polled, {run.pending} alert{'s' if run.pending != 1 else ''} still pending; "
            "the next `monitor once` or `monitor run` takes them up"
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed and strict:
        raise typer.Exit(EXIT_FAILURE)


_STATUS_LABELS = (
    ("ok", "with news"),
    ("unchanged", "unchanged"),
    ("not_modified", "not modified"),
    ("retry_later", "asked us to wait"),
    ("error", "failed"),
)


@dataclass
class _OnceRun:
    results: list[Any] = field(default_factory=list)
    delivered: Any = None
    feeds: int = 0
    interrupted: bool = False
    pending: int = 0
    waiting: list[Any] = field(default_factory=list)  # feeds left alone: Retry-After, back-off


async def _once(service: Any, *, force: bool) -> _OnceRun:
    """Poll, then deliver. The first Ctrl-C cancels the polls (their leases are given back) and
    goes on to deliver what is queued; the second cancels the delivery too."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from monitor.outbox import DeliveryStats

    run = _OnceRun(delivered=DeliveryStats())
    loop = asyncio.get_running_loop()
    current: asyncio.Task[Any] | None = None

    def interrupt() -> None:
        run.interrupted = True
        if current is not None:
            current.cancel()

    def count(n: int) -> None:
        run.feeds = n
        progress.update(task, total=n)

    def done(result: Any) -> None:
        run.results.append(result)
        progress.update(task, advance=1, description=result.feed)

    progress = Progress(
        TextColumn("polling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        with progress:
            task = progress.add_task("", total=None)
            current = asyncio.ensure_future(
                service.poll_all(on_result=done, total=count, force=force)
            )
            with contextlib.suppress(asyncio.CancelledError):
                await current
        if run.interrupted:
            stderr.print("interrupted: polls stopped; sending the alerts already queued")
        current = asyncio.ensure_future(service.deliver_tick())
        with contextlib.suppress(asyncio.CancelledError):
            run.delivered = await current
        if run.interrupted:
            run.pending = await asyncio.to_thread(service.pending_alerts)
        if not force and not run.interrupted:
            polled = {result.feed for result in run.results}
            waiting = await asyncio.to_thread(service.waiting)
            run.waiting = [feed for feed in waiting if feed.name not in polled]  # not just now
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        await service.close()
    return run


def run(ctx: typer.Context) -> None:
    """Run the service: poll, match and deliver until stopped.

    Polls each feed on its schedule, matches, delivers alerts and serves /healthz and /metrics on
    service.listen. SIGTERM or Ctrl-C stops it after the work under way; SIGHUP (or monitor
    reload) reads the config again.

    \b
    Examples:
      monitor run
      monitor run --config /etc/news-monitor/config.yaml
    """
    from monitor.core.collector import collect_less_often, freeze_survivors
    from monitor.daemon import Service, configure_logging, memory, run_forever, sqlite_lock
    from monitor.daemon.run import ExitDeadline
    from monitor.errors import MonitorError

    memory.limit_arenas()  # before the first worker thread
    # Until the event loop takes over SIGTERM, it means "stop now, cleanly": exit 0, not 143.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload while starting: the file is read now
    settings = load_settings(ctx)
    refuse_moved_database(settings)
    configure_logging(settings.service.log_format, secrets=_secrets(settings))
    try:
        with sqlite_lock(settings.database.url) as alone:
            service = Service.build(settings)
            try:
                service.prepare(alone=alone)
            except BaseException:
                service.engine.dispose()
                raise
            # What it has built to start (libraries, config, matcher) lives as long as it does:
            # out of the collector's way from now on (`core.collector`).
            freeze_survivors()
            collect_less_often()
            exit_deadline = ExitDeadline()

            async def until_stopped() -> None:
                await run_forever(
                    service, config=ctx.obj.config.absolute(), on_stopping=exit_deadline.arm
                )
                exit_deadline.stopped = True

            asyncio.run(until_stopped())
        # Stopped: what is left is Python's teardown, which would wait for the threads of the
        # polls the stop cancelled, and take seconds of its own on a loaded machine.
        exit_deadline.exit_now()
    except MonitorError as exc:
        raise fail_with(exc) from None
    except KeyboardInterrupt:  # before the service took over SIGINT
        raise _interrupted_at_start() from None


def _interrupted_at_start() -> typer.Exit:
    stderr.print("interrupted while starting: nothing was polled or sent")
    return typer.Exit(EXIT_INTERRUPTED)


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
