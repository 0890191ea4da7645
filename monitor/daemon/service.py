"""Everything one process needs to poll and deliver, built from the settings (`Service.build`): the
poller, the outbox and its notifiers, the feeds of the config.

The database is the schedule: each feed's `next_poll_at` says when it is due, and a claim (a row
lease timed by the database clock) makes one process poll it. A claim of `monitor run` also takes
the feeds due in the next few seconds and starts each poll at its feed's due time, so that a poll
waits neither for the next claim nor, within the limits, for a slot. The ticks that drive a
`Service` live in `daemon.run` (`monitor run`) and `cli.run` (`monitor once`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from monitor.config import FeedSettings, Settings, TelegramChannel
from monitor.core import stories
from monitor.daemon import memory
from monitor.daemon.budgets import SharedSendBudget
from monitor.daemon.clock import DatabaseClock
from monitor.daemon.health import Metrics
from monitor.daemon.ticks import Ticker
from monitor.errors import StoreError
from monitor.fetch import FetchPolicy
from monitor.notify import Notifier
from monitor.notify.console import ConsoleNotifier
from monitor.outbox import DeliveryStats, Outbox
from monitor.pipeline import (
    QUIET_STATUSES,
    Poller,
    PollResult,
    digests_for,
    routes_for,
    telegram_channels_of,
)
from monitor.store import db
from monitor.store._shared import database_now
from monitor.store.alerts import Backlog, alert_counts, outbox_backlog, renew_alert_leases
from monitor.store.feeds import (
    FeedsForMetrics,
    FeedState,
    WaitingFeed,
    claim_due_feeds,
    feeds_for_metrics,
    release_feed,
    release_feeds,
    release_leases,
    renew_feed_leases,
    sync_feeds,
    waiting_feeds,
)
from monitor.store.stories import forget_story_hashes, prune
from monitor.watchlists import compile_watchlists

if TYPE_CHECKING:
    from monitor.notify.telegram import SendSlots

log = logging.getLogger("monitor.daemon")

T = TypeVar("T")


POLL_TICK_SECONDS = 2.0
DELIVER_TICK_SECONDS = 1.0
PRUNE_EVERY_SECONDS = 3600.0
MAX_CONCURRENT_POLLS = 50  # polls running at once
# Feeds one process holds: polls running, and feeds claimed ahead that wait for their due time.
MAX_CLAIMED_FEEDS = 100
# A tick claims the feeds due before the tick after next, and starts each at its due time: a feed
# claimed only once due would wait up to a tick for its claim, and then for a free poll slot.
CLAIM_AHEAD_SECONDS = 3 * POLL_TICK_SECONDS
# A claim is a write transaction on the leases' one thread: polls that end make room for more
# due feeds, claimed once this many are free rather than one transaction per poll (a round of
# 304s ends polls faster than claims of one feed each commit).
REFILL_BATCH = MAX_CONCURRENT_POLLS // 2
# `monitor once` claims every feed in pages, polling each page while it claims the next.
ONCE_FIRST_PAGE = MAX_CONCURRENT_POLLS
ONCE_PAGE = 500
SHUTDOWN_GRACE_SECONDS = 6.0
FLUSH_SECONDS = 2.0
RELEASE_SECONDS = 1.0  # giving the cancelled polls' leases back at a stop, at most


EMAIL_TIMEOUT_SECONDS = 8.0  # one SMTP exchange; keeps SIGTERM's 10 s promise


def notifiers_for(
    settings: Settings,
    *,
    slots: SendSlots | None = None,
    reuse: Mapping[str, Notifier] | None = None,
) -> dict[str, Notifier]:
    """A notifier for every configured channel this build can deliver to. `slots`: where the
    Telegram notifier books its send slots when other processes send for the same bot. `reuse`:
    notifiers of the running service to keep, by kind ("telegram", "email"), on a reload."""
    from monitor.notify.email import EmailNotifier

    reuse = reuse or {}
    notifiers: dict[str, Notifier] = {}
    email: Notifier | None = reuse.get("email")
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

        # One notifier, so one rate limiter covers every chat of the bot (30 messages/s); with
        # `slots`, the limits are shared with the other replicas too.
        previews = [
            name
            for name, channel in settings.channels.items()
            if channel.type == "telegram" and getattr(channel, "link_preview", False)
        ]
        if settings.telegram.link_preview:
            previews.append(SUBSCRIBERS_CHANNEL)
        telegram = reuse.get("telegram") or TelegramNotifier(
            settings.telegram.token.get_secret_value(),
            settings.telegram.api_url,
            subscriber_channels=(SUBSCRIBERS_CHANNEL,),
            preview_channels=previews,
            slots=slots,
        )
        for name, channel in settings.channels.items():
            if channel.type == "telegram":
                notifiers[name] = telegram
        notifiers[SUBSCRIBERS_CHANNEL] = telegram
        notifiers[SUBSCRIBERS_DIGEST_CHANNEL] = telegram
    return notifiers


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
    # Every time this process writes for other processes to compare comes from here (`prepare`
    # and each claim keep it in step with the database's clock).
    clock: Callable[[], datetime] = field(default_factory=DatabaseClock)
    # The feeds this process holds (claimed, polling or waiting to), by id: their leases renew.
    in_flight: dict[int, asyncio.Task[PollResult]] = field(default_factory=dict)
    polling: set[int] = field(default_factory=set)  # those of them whose poll has started
    poll_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_POLLS)
    )
    # Whether this process is the leader (`daemon.leader`): it sends digests and prunes. True for
    # `monitor once` and on SQLite; `monitor run` on PostgreSQL starts as a follower.
    leading: bool = True
    last_tick: float = field(default_factory=time.monotonic)
    tickers: dict[str, Ticker] = field(default_factory=dict)  # `monitor run`'s periodic jobs
    polls_full_since: float | None = None  # loop time since when every poll slot has been busy
    last_renewal: float = field(default_factory=time.monotonic)
    polls_since_trim: int = 0  # polls (not quiet ones) since the heap was trimmed (`daemon.memory`)
    send_budget: SharedSendBudget | None = None  # PostgreSQL: Telegram's limits, shared
    # What /healthz says of the subscriber bot (`daemon.leader`); None without `telegram:`.
    bot_status: str | None = None
    bot_trouble: bool = False
    # The last claim got all the room it asked for: more feeds may be due, and a poll that ends
    # makes room for them at once rather than at the next tick (`_refill`).
    more_due: bool = False
    claiming: asyncio.Lock = field(default_factory=asyncio.Lock)
    refilling: asyncio.Task[None] | None = None
    accepting: bool = True  # False once draining: nothing more is claimed
    bot: Any = None  # the subscriber bot, while this process (the leader) runs it
    # Claims and lease renewals run on a thread of their own: behind polls that hold every worker
    # thread (storing, parsing, waiting for a lock), a renewal would come too late and the lease
    # expire, so that another replica polls the same feed again.
    leasing: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="leases")
    )

    def __post_init__(self) -> None:
        self.poller.on_fetch = self.metrics.fetch_duration.observe

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        notifiers: dict[str, Notifier] | None = None,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
    ) -> Service:
        """`clock`: the time every write is made with; by default the database's
        (`DatabaseClock`), which tests may replace with a fixed one."""
        clock = clock or DatabaseClock()
        owner = f"{socket.gethostname()}:{os.getpid()}"
        engine = db.make_engine(settings.database.url, application_name=f"monitor {owner}")
        rng = rng or random.Random()
        poller = Poller(
            engine,
            compile_watchlists(settings),
            routes_for(settings),
            policy=FetchPolicy.from_settings(settings),
            base_dir=settings.config_dir,
            owner=owner,
            digests=digests_for(settings),
            subscribers=settings.telegram is not None,
            telegram_channels=telegram_channels_of(settings),
            per_host=settings.fetch.per_host,
            rng=rng,
            clock=clock,
            gone_after=settings.fetch.gone_after,
            story_rules=_story_rules(settings),
        )
        send_budget = None
        if notifiers is None:
            if engine.dialect.name == "postgresql":  # replicas may send for the same bot
                send_budget = SharedSendBudget(engine)
            notifiers = notifiers_for(settings, slots=send_budget)
        digests: set[str] = set(digests_for(settings))
        access = None
        bursts = {
            name: channel.burst
            for name, channel in settings.channels.items()
            if isinstance(channel, TelegramChannel)
        }
        if settings.telegram is not None:
            from monitor.core.access import AccessPolicy
            from monitor.store.subscribers import SUBSCRIBERS_CHANNEL, SUBSCRIBERS_DIGEST_CHANNEL

            digests.add(SUBSCRIBERS_DIGEST_CHANNEL)
            access = AccessPolicy.of(settings.telegram.subscriptions, settings.telegram.allow)
            bursts[SUBSCRIBERS_CHANNEL] = settings.telegram.burst
        outbox = Outbox(
            engine,
            notifiers,
            owner=owner,
            lease=settings.service.lease,
            rng=rng,
            clock=clock,
            digest_channels=digests,
            access=access,
            burst_limits=bursts,
        )
        feeds = {feed.name: feed for feed in settings.feeds}
        return cls(
            settings, engine, poller, outbox, feeds, owner, clock=clock, send_budget=send_budget
        )

    async def reconfigure(self, settings: Settings) -> None:
        """Work with `settings` from the next claim on (`daemon.reload`): the feed table first
        (a new feed is due now); a StoreError there changes nothing. Polls and deliveries in
        flight finish with what they started with."""
        matcher = await asyncio.to_thread(compile_watchlists, settings)
        feeds = {feed.name: feed for feed in settings.feeds}

        def sync() -> None:
            with db.transaction(self.engine) as session:
                self._observe(session)
                sync_feeds(session, [(f.name, f.url) for f in feeds.values()], self.clock())

        await asyncio.to_thread(sync)
        reuse: dict[str, Notifier] = {}
        for notifier in self.outbox.notifiers.values():
            kind = type(notifier).__name__
            if kind == "TelegramNotifier":  # its token cannot change without a restart
                reuse["telegram"] = notifier
            elif kind == "EmailNotifier" and settings.email == self.settings.email:
                reuse["email"] = notifier
        notifiers = notifiers_for(settings, slots=self.send_budget, reuse=reuse)
        digests = set(digests_for(settings)) | (
            self.outbox.digest_channels - set(digests_for(self.settings))  # the subscribers'
        )
        # The routes before the matcher: a poll reads the matcher first, then the routes, so one
        # in flight never pairs a new watchlist with old routes.
        await self.poller.use_fetch(
            FetchPolicy.from_settings(settings), settings.fetch.per_host, settings.fetch.gone_after
        )
        self.poller.routes = routes_for(settings)
        self.poller.digests = dict(digests_for(settings))
        self.poller.story_rules = _story_rules(settings)
        self.poller.matcher = matcher
        self.outbox.reconfigure(notifiers, digests)
        self.settings = settings
        self.feeds = feeds
        if self.bot is not None:
            self.bot.use_watchlists({n: w.description for n, w in settings.watchlists.items()})

    def lead(self, leading: bool) -> None:
        """Become the leader, or stop being it: only the leader sends digests and prunes."""
        self.leading = leading
        self.outbox.send_digests = leading
        self.metrics.leader.set(1 if leading else 0)

    def prepare(self, *, now: datetime | None = None, alone: bool = False) -> None:
        """Bring the schema up to date and the feed table in line with the config (new feeds are
        due at `now`, by default the database's now). `alone`: this process holds the SQLite
        lock, so leases left by a crashed predecessor are void."""
        db.ensure_schema(self.engine, upgrade=True)
        with db.transaction(self.engine) as session:
            self._observe(session)
            now = now or self.clock()
            sync_feeds(session, [(f.name, f.url) for f in self.feeds.values()], now)
            if alone:
                released = release_leases(session, None)
                if released:
                    log.info("start.released_stale_leases count=%s", released)

    async def close(self) -> None:
        await self.poller.close()
        await self.outbox.close()
        if self.send_budget is not None:
            self.send_budget.close()
        self.leasing.shutdown()
        self.engine.dispose()

    async def _on_leasing_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.leasing, work)

    # ---- polling ---------------------------------------------------------------------------------

    def _observe(self, session: Session) -> datetime:
        """The database's clock, read now and handed to `self.clock` when it follows it."""
        now = database_now(session)
        if isinstance(self.clock, DatabaseClock):
            self.clock.observe(now)
        return now

    def _claim(
        self,
        limit: int,
        *,
        everything: bool,
        waiting: bool = False,
        ahead: timedelta = timedelta(0),
    ) -> list[FeedState]:
        with db.transaction(self.engine) as session:
            now = self._observe(session)
            return claim_due_feeds(
                session,
                self.owner,
                self.settings.service.lease,
                limit,
                include_not_due=everything,
                include_waiting=waiting,
                ahead=ahead,
                now=now,
            )

    def state_for_metrics(self) -> tuple[FeedsForMetrics, dict[str, Backlog]]:
        """The feeds (failing, gone, last successes) and the outbox per channel, for /metrics."""
        with db.read_session(self.engine) as session:
            return feeds_for_metrics(session), outbox_backlog(session)

    def waiting(self) -> list[WaitingFeed]:
        """The feeds waiting out a Retry-After or a back-off (`poll_all` leaves them alone)."""
        with db.read_session(self.engine) as session:
            return waiting_feeds(session)

    async def _poll_one(self, state: FeedState, *, force: bool) -> PollResult:
        feed = self.feeds.get(state.name)
        if feed is None:  # dropped from the config while claimed
            await asyncio.to_thread(self._release, state.id)
            return PollResult(state.name, "error", error="no longer in the config")
        self.metrics.polls_running += 1
        started = time.monotonic()
        try:
            result = await self.poller.poll(state, feed, force=force)
        finally:
            self.metrics.polls_running -= 1
        self.metrics.poll_duration.observe(time.monotonic() - started)
        self.metrics.record_poll(result)
        # A quiet poll (a 304, an unchanged body) frees next to nothing on the worker threads,
        # and a trim costs a few milliseconds of this thread's time: only the others count.
        if result.status not in QUIET_STATUSES:
            self.polls_since_trim += 1
        if self.polls_since_trim >= memory.TRIM_EVERY_POLLS:
            self.polls_since_trim = 0
            memory.trim()
        return result

    def _release(self, feed_id: int) -> None:
        with db.transaction(self.engine) as session:
            release_feed(session, feed_id, self.owner)

    async def poll_all(
        self,
        *,
        on_result: Callable[[PollResult], None] | None = None,
        total: Callable[[int], None] | None = None,
        force: bool = False,
    ) -> list[PollResult]:
        """`monitor once`: claim every active feed, due or not, poll them concurrently, return.
        Feeds waiting out a Retry-After or a back-off are left alone unless `force`.

        The feeds are claimed a page at a time (`ONCE_FIRST_PAGE`, then `ONCE_PAGE`), the polls
        of each page started as soon as it is claimed: one claim of every feed held the first
        poll back until all were claimed (12 ms for 1,000 feeds, a tenth of a round of 304s).
        `total` is told how many feeds were claimed once the last page is."""
        semaphore = asyncio.Semaphore(MAX_CONCURRENT_POLLS)
        finished: set[int] = set()
        states: list[FeedState] = []
        tasks: list[asyncio.Task[PollResult]] = []

        async def one(state: FeedState) -> PollResult:
            async with semaphore:
                result = await self._poll_one(state, force=False)
            finished.add(state.id)
            if on_result is not None:
                on_result(result)
            return result

        renewing = asyncio.create_task(self._keep_renewing())
        try:
            page_size = ONCE_FIRST_PAGE
            while True:
                try:
                    page = await self._on_leasing_thread(
                        functools.partial(self._claim, page_size, everything=True, waiting=force)
                    )
                except StoreError:  # the polls under way end (and record) before it is told
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
                for state in page:
                    task = asyncio.create_task(one(state), name=f"poll:{state.name}")
                    self.in_flight[state.id] = task  # its lease is renewed until it is done
                    task.add_done_callback(functools.partial(self._forget, state.id))
                    states.append(state)
                    tasks.append(task)
                if len(page) < page_size:
                    break
                page_size = ONCE_PAGE
            if total is not None:
                total(len(states))
            results = list(await asyncio.gather(*tasks))
            await self.poller.flush()  # the 304s' poll state, written before `once` reports
            return results
        except asyncio.CancelledError:  # Ctrl-C: the feeds not polled are due for the next run
            for state in states:
                if state.id not in finished:
                    with contextlib.suppress(StoreError):
                        await asyncio.to_thread(self._release, state.id)
            raise
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _keep_renewing(self) -> None:
        while True:
            await asyncio.sleep(self.settings.service.lease.total_seconds() / 3)
            await self.renew_leases()

    def pending_alerts(self) -> int:
        """How many alerts wait in the outbox (for `monitor once`'s last word after Ctrl-C)."""
        with db.read_session(self.engine) as session:
            return alert_counts(session)["pending"]

    async def poll_tick(self) -> None:
        """`monitor run`: claim the feeds due now or within `CLAIM_AHEAD_SECONDS`, up to
        `MAX_CLAIMED_FEEDS` held, and start each at its due time, `MAX_CONCURRENT_POLLS` at once."""
        self.last_tick = time.monotonic()
        if self.last_tick - self.last_renewal >= self.settings.service.lease.total_seconds() / 3:
            await self.renew_leases()
        async with self.claiming:
            if not self.accepting:
                return
            if len(self.polling) >= MAX_CONCURRENT_POLLS:
                if self.polls_full_since is None:
                    self.polls_full_since = asyncio.get_running_loop().time()
            else:
                self.polls_full_since = None
            room = MAX_CLAIMED_FEEDS - len(self.in_flight)
            if room <= 0:
                return
            try:
                states = await self._on_leasing_thread(
                    functools.partial(
                        self._claim,
                        room,
                        everything=False,
                        ahead=timedelta(seconds=CLAIM_AHEAD_SECONDS),
                    )
                )
            except StoreError as exc:
                log.error("poll.claim_failed error=%s", exc)
                self.more_due = False
                return
            self.more_due = len(states) == room
            for state in states:
                task = asyncio.create_task(self._poll_when_due(state), name=f"poll:{state.name}")
                self.in_flight[state.id] = task
                task.add_done_callback(functools.partial(self._forget, state.id))

    async def _poll_when_due(self, state: FeedState) -> PollResult:
        """Wait for the feed's due time (on the loop's monotonic clock), then for a poll slot,
        then poll it. Cancelled before it starts, the feed is handed back by `drain`."""
        if state.due_in > 0:
            await asyncio.sleep(state.due_in)
        async with self.poll_slots:
            self.polling.add(state.id)
            try:
                return await self._poll_one(state, force=False)
            finally:
                self.polling.discard(state.id)

    async def _refill(self) -> None:
        try:
            await self.poll_tick()
        finally:
            self.refilling = None

    async def renew_leases(self) -> None:
        """Extend the leases of the polls and deliveries under way, so that only a process that
        stopped renewing (it died) loses its work to the others, one `service.lease` later."""
        self.last_renewal = time.monotonic()
        feed_ids, alert_ids = list(self.in_flight), list(self.outbox.in_flight)
        if not feed_ids and not alert_ids:
            return
        lease = self.settings.service.lease

        def renew() -> None:
            with db.transaction(self.engine) as session:
                renew_feed_leases(session, self.owner, lease, feed_ids)
                renew_alert_leases(session, self.owner, lease, alert_ids)

        try:
            await self._on_leasing_thread(renew)
        except StoreError as exc:
            log.warning("lease.renew_failed error=%s", exc)

    def _forget(self, feed_id: int, _task: asyncio.Task[PollResult]) -> None:
        self.in_flight.pop(feed_id, None)
        if (
            self.more_due
            and self.accepting
            and self.refilling is None
            and MAX_CLAIMED_FEEDS - len(self.in_flight) >= REFILL_BATCH
        ):
            # More feeds were due than there was room for: claim them now, not at the next tick
            # (a round of 304s goes at the pace of the HTTP client, not of the ticks).
            self.refilling = asyncio.get_running_loop().create_task(self._refill())

    async def deliver_tick(self) -> DeliveryStats:
        try:
            stats = await self.outbox.deliver_due()
        except StoreError as exc:
            log.error("deliver.failed error=%s", exc)
            return DeliveryStats()
        self.metrics.record_delivery(stats)
        return stats

    async def prune_tick(self) -> None:
        if not self.leading:
            return
        now = self.clock()
        cutoff = now - self.settings.database.retention

        def prune_old() -> int:
            with db.transaction(self.engine) as session:
                forget_story_hashes(session, now - self.settings.stories.window)
                return prune(session, cutoff)

        try:
            removed = await asyncio.to_thread(prune_old)
        except StoreError as exc:
            log.error("prune.failed error=%s", exc)
            return
        if removed:
            log.info("prune.done items=%s before=%s", removed, cutoff.isoformat())

    async def drain(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Give back at once the feeds claimed ahead whose poll has not started; let in-flight
        polls finish for `grace` seconds; cancel the rest and give their leases back.

        A poll waiting for its parse, or parsing, is cancelled at once (its parse worker is
        killed): a parse may take many seconds of CPU, and the next process polls the feed again."""
        self.accepting = False
        if self.refilling is not None:  # a claim under way: its polls are drained with the rest
            await asyncio.gather(self.refilling, return_exceptions=True)
        # Feeds claimed ahead whose poll has not started go back at once, due as they were.
        waiting = {
            feed_id: task for feed_id, task in self.in_flight.items() if feed_id not in self.polling
        }
        for task in waiting.values():
            task.cancel()
        await asyncio.gather(*waiting.values(), return_exceptions=True)
        not_started = [feed_id for feed_id, task in waiting.items() if task.cancelled()]
        await self._give_back(not_started)
        tasks = {k: t for k, t in self.in_flight.items() if k not in waiting}
        if not tasks:
            if not_started:
                log.info("shutdown.drained finished=0 abandoned=0 not_started=%s", len(not_started))
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        pending = set(tasks.values())
        while pending:
            for feed_id in self.poller.parsing_feeds & tasks.keys():
                tasks[feed_id].cancel()  # also one that reached its parse since
            left = deadline - loop.time()
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(left, 0.1))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        abandoned = [feed_id for feed_id, task in tasks.items() if task.cancelled()]
        await self._give_back(abandoned)
        finished = len(tasks) - len(abandoned)
        log.info(
            "shutdown.drained finished=%s abandoned=%s not_started=%s",
            finished,
            len(abandoned),
            len(not_started),
        )

    async def _give_back(self, feed_ids: list[int]) -> None:
        """Release the leases of `feed_ids` (a stop), on the leasing thread: the default
        executor's workers may all be held by the polls being stopped (waiting for locks), and its
        queue by their next steps. At most RELEASE_SECONDS; past that the leases simply expire."""
        if not feed_ids:
            return
        try:
            await asyncio.wait_for(
                self._on_leasing_thread(functools.partial(self._release_all, feed_ids)),
                RELEASE_SECONDS,
            )
        except (StoreError, TimeoutError) as exc:
            log.warning("shutdown.release_failed feeds=%s error=%r", len(feed_ids), exc)

    def _release_all(self, feed_ids: list[int]) -> None:
        if feed_ids:
            with db.transaction(self.engine) as session:
                release_feeds(session, feed_ids, self.owner)


def _story_rules(settings: Settings) -> stories.Rules:
    return stories.Rules(settings.stories.threshold, settings.stories.window)
