"""The service: polling on a schedule, delivery, health endpoint, signals (`monitor run`), and the
one-shot run of `monitor once`.

The database is the schedule: each feed's `next_poll_at` says when it is due, and a claim (a row
lease timed by the database clock) makes one process poll it. APScheduler 3 (AsyncIOScheduler,
in-memory job store) only ticks: every couple of seconds it claims what is due and starts those
polls, and every second the outbox sends what is due. On SIGTERM/SIGINT the service stops claiming,
lets in-flight polls finish for a few seconds, cancels the rest and gives their leases back, then
exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from monitor.config import FeedSettings, Settings
from monitor.core import stories
from monitor.errors import MonitorError, StoreError
from monitor.fetch import FetchPolicy
from monitor.notify import Notifier
from monitor.notify.console import ConsoleNotifier
from monitor.outbox import DeliveryStats, Outbox
from monitor.pipeline import Poller, PollResult, digests_for, routes_for
from monitor.store import db
from monitor.store.feeds import FeedState, claim_due_feeds, release_feed, release_leases, sync_feeds
from monitor.store.stories import forget_story_hashes, prune
from monitor.watchlists import compile_watchlists

log = logging.getLogger("monitor.daemon")

FEED_LEASE = timedelta(minutes=2)
POLL_TICK_SECONDS = 2.0
DELIVER_TICK_SECONDS = 1.0
PRUNE_EVERY_SECONDS = 3600.0
MAX_CONCURRENT_POLLS = 50
SHUTDOWN_GRACE_SECONDS = 6.0
FLUSH_SECONDS = 2.0


class AlreadyRunningError(MonitorError):
    """Another monitor process holds this SQLite database's lock file."""


@contextlib.contextmanager
def sqlite_lock(database_url: str) -> Iterator[bool]:
    """On SQLite, one process at a time: an exclusive lock on `<database>.lock`; yields True when
    held. PostgreSQL needs none (replicas share the work through row leases): yields False."""
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        yield False
        return
    path = Path(f"{url.database}.lock")
    handle: IO[str] = path.open("a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunningError(
                f"another monitor is already running on {url.database} (lock file {path})"
            ) from None
        yield True
    finally:
        handle.close()


EMAIL_TIMEOUT_SECONDS = 8.0  # one SMTP exchange; keeps SIGTERM's 10 s promise


def notifiers_for(settings: Settings) -> dict[str, Notifier]:
    """A notifier for every configured channel this build can deliver to."""
    from monitor.notify.email import EmailNotifier

    notifiers: dict[str, Notifier] = {}
    email: EmailNotifier | None = None
    for name, channel in settings.channels.items():
        if channel.type == "console":
            notifiers[name] = ConsoleNotifier()
        elif channel.type == "email" and settings.email is not None:
            email = email or EmailNotifier.from_settings(
                settings.email, timeout=EMAIL_TIMEOUT_SECONDS
            )
            notifiers[name] = email
    if settings.telegram is not None:
        from monitor.notify.telegram import TelegramNotifier
        from monitor.store.subscribers import SUBSCRIBERS_CHANNEL, SUBSCRIBERS_DIGEST_CHANNEL

        # One notifier, so one rate limiter covers every chat of the bot (30 messages/s).
        telegram = TelegramNotifier(
            settings.telegram.token.get_secret_value(), settings.telegram.api_url
        )
        for name, channel in settings.channels.items():
            if channel.type == "telegram":
                notifiers[name] = telegram
        notifiers[SUBSCRIBERS_CHANNEL] = telegram
        notifiers[SUBSCRIBERS_DIGEST_CHANNEL] = telegram
    return notifiers


class Metrics:
    """Prometheus metrics of one process (its own registry, so tests can build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter(
            "monitor_polls", "Feed polls by outcome", ["status"], registry=self.registry
        )
        self.items = Counter("monitor_items", "New or updated items stored", registry=self.registry)
        self.alerts_enqueued = Counter(
            "monitor_alerts_enqueued", "Alerts written to the outbox", registry=self.registry
        )
        self.deliveries = Counter(
            "monitor_deliveries", "Alert deliveries by outcome", ["outcome"], registry=self.registry
        )
        self.polls_in_flight = Gauge(
            "monitor_polls_in_flight", "Feed polls running now", registry=self.registry
        )

    def record_poll(self, result: PollResult) -> None:
        self.polls.labels(result.status).inc()
        self.items.inc(result.new_items + result.updated_items)
        self.alerts_enqueued.inc(result.alerts)

    def record_delivery(self, stats: DeliveryStats) -> None:
        self.deliveries.labels("sent").inc(stats.sent)
        self.deliveries.labels("retried").inc(stats.retried)
        self.deliveries.labels("failed").inc(stats.failed)


@dataclass
class Service:
    """Everything one process needs, built from the settings by `Service.build`."""

    settings: Settings
    engine: Engine
    poller: Poller
    outbox: Outbox
    feeds: dict[str, FeedSettings]
    owner: str
    metrics: Metrics = field(default_factory=Metrics)
    in_flight: dict[int, asyncio.Task[PollResult]] = field(default_factory=dict)
    leader_connection: Any = None  # PostgreSQL: holds the bot's advisory lock while open
    last_tick: float = field(default_factory=time.monotonic)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        notifiers: dict[str, Notifier] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> Service:
        engine = db.make_engine(settings.database.url)
        owner = f"{socket.gethostname()}:{os.getpid()}"
        rng = rng or random.Random()
        policy = FetchPolicy(
            timeout=settings.defaults.timeout.total_seconds(),
            max_body=settings.fetch.max_body,
            user_agent=settings.fetch.user_agent,
            allow_private=settings.fetch.allow_private,
            proxy=settings.fetch.proxy,
        )
        poller = Poller(
            engine,
            compile_watchlists(settings),
            routes_for(settings),
            policy=policy,
            base_dir=settings.config_dir,
            owner=owner,
            digests=digests_for(settings),
            subscribers=settings.telegram is not None,
            per_host=settings.fetch.per_host,
            rng=rng,
            clock=clock,
        )
        if notifiers is None:
            notifiers = notifiers_for(settings)
        digests: set[str] = set(digests_for(settings))
        if settings.telegram is not None:
            from monitor.store.subscribers import SUBSCRIBERS_DIGEST_CHANNEL

            digests.add(SUBSCRIBERS_DIGEST_CHANNEL)
        outbox = Outbox(
            engine, notifiers, owner=owner, rng=rng, clock=clock, digest_channels=digests
        )
        feeds = {feed.name: feed for feed in settings.feeds}
        return cls(settings, engine, poller, outbox, feeds, owner)

    def prepare(self, *, now: datetime, alone: bool = False) -> None:
        """Bring the schema up to date and the feed table in line with the config. `alone`: this
        process holds the SQLite lock, so leases left by a crashed predecessor are void."""
        db.ensure_schema(self.engine, upgrade=True)
        with db.transaction(self.engine) as session:
            sync_feeds(session, [(f.name, f.url) for f in self.feeds.values()], now)
            if alone:
                released = release_leases(session, None)
                if released:
                    log.info("start.released_stale_leases count=%s", released)

    async def close(self) -> None:
        await self.poller.close()
        await self.outbox.close()
        if self.leader_connection is not None:
            self.leader_connection.close()
        self.engine.dispose()

    # ---- polling ---------------------------------------------------------------------------------

    def _claim(self, limit: int, *, everything: bool) -> list[FeedState]:
        with db.transaction(self.engine) as session:
            return claim_due_feeds(
                session, self.owner, FEED_LEASE, limit, include_not_due=everything
            )

    async def _poll_one(self, state: FeedState, *, force: bool) -> PollResult:
        feed = self.feeds.get(state.name)
        if feed is None:  # dropped from the config while claimed
            await asyncio.to_thread(self._release, state.id)
            return PollResult(state.name, "error", error="no longer in the config")
        self.metrics.polls_in_flight.inc()
        try:
            result = await self.poller.poll(state, feed, force=force)
        finally:
            self.metrics.polls_in_flight.dec()
        self.metrics.record_poll(result)
        return result

    def _release(self, feed_id: int) -> None:
        with db.transaction(self.engine) as session:
            release_feed(session, feed_id, self.owner)

    async def poll_all(
        self,
        *,
        on_result: Callable[[PollResult], None] | None = None,
        total: Callable[[int], None] | None = None,
    ) -> list[PollResult]:
        """`monitor once`: claim every active feed (due or not), poll them concurrently, return."""
        states = await asyncio.to_thread(self._claim, 10_000, everything=True)
        if total is not None:
            total(len(states))
        semaphore = asyncio.Semaphore(MAX_CONCURRENT_POLLS)

        async def one(state: FeedState) -> PollResult:
            async with semaphore:
                result = await self._poll_one(state, force=False)
            if on_result is not None:
                on_result(result)
            return result

        return list(await asyncio.gather(*(one(s) for s in states)))

    async def poll_tick(self) -> None:
        """`monitor run`: start polls for the feeds that are due, up to the concurrency limit."""
        self.last_tick = time.monotonic()
        room = MAX_CONCURRENT_POLLS - len(self.in_flight)
        if room <= 0:
            return
        try:
            states = await asyncio.to_thread(self._claim, room, everything=False)
        except StoreError as exc:
            log.error("poll.claim_failed error=%s", exc)
            return
        for state in states:
            task = asyncio.create_task(
                self._poll_one(state, force=False), name=f"poll:{state.name}"
            )
            self.in_flight[state.id] = task
            task.add_done_callback(functools.partial(self._forget, state.id))

    def _forget(self, feed_id: int, _task: asyncio.Task[PollResult]) -> None:
        self.in_flight.pop(feed_id, None)

    async def deliver_tick(self) -> DeliveryStats:
        try:
            stats = await self.outbox.deliver_due()
        except StoreError as exc:
            log.error("deliver.failed error=%s", exc)
            return DeliveryStats()
        self.metrics.record_delivery(stats)
        return stats

    async def prune_tick(self) -> None:
        now = datetime.now(UTC)
        cutoff = now - self.settings.database.retention

        def prune_old() -> int:
            with db.transaction(self.engine) as session:
                forget_story_hashes(session, now - stories.WINDOW)
                return prune(session, cutoff)

        try:
            removed = await asyncio.to_thread(prune_old)
        except StoreError as exc:
            log.error("prune.failed error=%s", exc)
            return
        if removed:
            log.info("prune.done items=%s before=%s", removed, cutoff.isoformat())

    async def drain(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Let in-flight polls finish for `grace` seconds; cancel the rest and give leases back."""
        tasks = dict(self.in_flight)
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks.values(), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        abandoned = [feed_id for feed_id, task in tasks.items() if task in pending]
        for feed_id in abandoned:
            try:
                await asyncio.to_thread(self._release, feed_id)
            except StoreError as exc:  # the lease simply expires
                log.warning("shutdown.release_failed feed=%s error=%s", feed_id, exc)
        log.info("shutdown.drained finished=%s abandoned=%s", len(done), len(abandoned))


# ---- health endpoint ---------------------------------------------------------------------------------


async def start_health_server(service: Service, listen: str) -> web.AppRunner:
    """`/healthz` (200 while the poll loop ticks) and Prometheus `/metrics` on `listen`."""

    async def healthz(_: web.Request) -> web.Response:
        age = time.monotonic() - service.last_tick
        healthy = age < max(30.0, POLL_TICK_SECONDS * 10)
        body = {"status": "ok" if healthy else "stalled", "last_tick_seconds_ago": round(age, 1)}
        return web.json_response(body, status=200 if healthy else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(service.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port))
    await site.start()
    return runner


async def run_forever(service: Service, *, stop: asyncio.Event | None = None) -> None:
    """`monitor run`: tick until SIGTERM/SIGINT (or `stop`), then shut down cleanly."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    runner = None
    if service.settings.service.listen:
        runner = await start_health_server(service, service.settings.service.listen)
        log.info("health.listening address=%s", service.settings.service.listen)
    bot = await start_bot(service)
    scheduler = AsyncIOScheduler(timezone=UTC)
    common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
    scheduler.add_job(
        service.poll_tick,
        "interval",
        seconds=POLL_TICK_SECONDS,
        next_run_time=datetime.now(UTC),
        **common,
    )
    scheduler.add_job(
        service.deliver_tick,
        "interval",
        seconds=DELIVER_TICK_SECONDS,
        next_run_time=datetime.now(UTC),
        **common,
    )
    scheduler.add_job(service.prune_tick, "interval", seconds=PRUNE_EVERY_SECONDS, **common)
    scheduler.start()
    log.info(
        "run.started feeds=%s watchlists=%s owner=%s",
        len(service.feeds),
        len(service.settings.watchlists),
        service.owner,
    )
    try:
        await stop.wait()
    finally:
        log.info("run.stopping")
        scheduler.shutdown(wait=False)
        await service.drain()
        with contextlib.suppress(StoreError, TimeoutError):
            # flush what is already due, within the time SIGTERM allows
            await asyncio.wait_for(service.deliver_tick(), FLUSH_SECONDS)
        if bot is not None:
            await bot.stop()
        if runner is not None:
            await runner.cleanup()
        await service.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        log.info("run.stopped")


async def start_bot(service: Service) -> Any:
    """The Telegram subscriber bot, when `telegram:` is configured and this process may poll.

    Only one process may call getUpdates for a token. On SQLite the lock file already makes this
    process the only one; on PostgreSQL the replica holding an advisory lock (on a connection kept
    open for the life of the process) is the one that polls.
    """
    telegram = service.settings.telegram
    if telegram is None:
        return None
    from monitor.bot import SubscriberBot, polling_lock_key
    from monitor.errors import BotError

    token = telegram.token.get_secret_value()
    if service.engine.dialect.name == "postgresql":
        connection = service.engine.connect()
        leader = connection.exec_driver_sql(
            f"SELECT pg_try_advisory_lock({polling_lock_key(token)})"
        ).scalar()
        if not leader:
            connection.close()
            log.info("bot.standby reason=another replica polls Telegram")
            return None
        service.leader_connection = connection
    bot = SubscriberBot.from_settings(telegram, service.engine, service.settings.watchlists.keys())
    try:
        await bot.start()
    except BotError as exc:
        log.error("bot.failed error=%s", exc)
        return None
    log.info("bot.started")
    return bot


# ---- logging -------------------------------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:  # already formatted (and redacted) by a filter
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(
    log_format: str,
    *,
    level: int = logging.INFO,
    stream: IO[str] | None = None,
    secrets: tuple[str, ...] = (),
) -> None:
    """Events as text (`time level logger event key=value …`) or one JSON object per line."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that log URLs (tokens are part of Telegram's) stay quiet below WARNING.
    for noisy in ("httpx", "httpcore", "apscheduler", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if secrets:
        # And whatever is still logged has the secrets redacted (on the handler: every record).
        from monitor.notify.telegram import install_token_redaction

        for secret in secrets:
            install_token_redaction(secret)
