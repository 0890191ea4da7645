"""The leader: the one process that polls Telegram for subscriber commands (getUpdates admits one
poller per bot), sends digests (a recipient's digest must not be split between two processes) and
prunes old items.

On SQLite the process holding the database's lock file is the only one, hence the leader. On
PostgreSQL the replicas elect one through a lease row (`monitor.store.leadership`), timed by the
database clock and renewed every second:

* a replica takes the role when nobody holds it or its lease has expired, so the leader's death
  (or its hanging, or losing the database) hands the role on within `LEASE` plus a second;
* the leader counts its lease on its own monotonic clock from *before* the request that renewed
  it, minus a safety margin, and when it could not renew in time it stops its bot while there is
  still `STOP_SECONDS` left: so it has stopped polling before any other replica can take over, and
  two getUpdates loops never run at once;
* a cut database connection costs nothing: the lease is a row, not a session, and the next renewal
  goes over a new connection;
* on a clean stop the leader stops its bot and gives the role up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from monitor.core.timing import bot_start_delay
from monitor.errors import BotError, StoreError
from monitor.store import db
from monitor.store.leadership import Lease, lead, resign

if TYPE_CHECKING:
    from monitor.daemon.service import Service

log = logging.getLogger("monitor.daemon")

ROLE = "leader"
LEASE = timedelta(seconds=6)
RENEW_SECONDS = 1.0  # how often the leader renews and the others try to take over
SAFETY_SECONDS = 1.0  # of the lease, never counted on (scheduling delays, clock rates)
STOP_SECONDS = 2.0  # what stopping the bot may take; begun this long before the lease runs out


async def launch_bot(service: Service) -> Any:
    """The Telegram subscriber bot of `service`'s settings, started (`telegram:` must be set).
    `BotError` when it cannot start (`token_rejected` on it tells a refused token)."""
    from monitor.bot import SubscriberBot

    telegram = service.settings.telegram
    assert telegram is not None
    descriptions = {name: w.description for name, w in service.settings.watchlists.items()}
    bot = SubscriberBot.from_settings(telegram, service.engine, descriptions, clock=service.clock)
    await bot.start()
    return bot


async def start_bot(service: Service) -> Any:
    """The Telegram subscriber bot, started, when `telegram:` is configured (None otherwise, or if
    it could not start: logged)."""
    if service.settings.telegram is None:
        return None
    try:
        return await launch_bot(service)
    except BotError as exc:
        log.error("bot.failed error=%s", exc)
        return None


class Leadership:
    """Keeps `service.leading` true exactly while this process is the leader, and runs the
    leader's bot then. `run()` until the service stops, then `stop()`."""

    def __init__(
        self,
        service: Service,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.monotonic = monotonic
        self.elected = service.engine.dialect.name == "postgresql"
        service.lead(not self.elected)  # on PostgreSQL, a follower until elected
        self.term: int | None = None
        self._valid_until = 0.0  # monotonic: the end of our lease, less the safety margin
        self._bot: Any = None
        self._starting: asyncio.Task[Any] | None = None
        self._bot_failures = 0  # failed starts in a row
        self._next_start = 0.0  # monotonic: when the bot may be started (again)
        self._bot_rejected: str | None = None  # Telegram refused the token: not tried again
        self._bot_error = ""
        self._failing = False
        self._show_bot()
        # A thread of its own: renewing must not queue behind polls that are busy storing.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="leadership")

    @property
    def leading(self) -> bool:
        return self.service.leading

    async def run(self, stop: asyncio.Event) -> None:
        """Take part in the election every `RENEW_SECONDS` until `stop` is set."""
        if not self.elected:
            self._become_leader()
        while not stop.is_set():
            if self.elected:
                try:
                    await self.round()
                except Exception:  # a bug here must not end the election for good
                    log.exception("leader.round_failed")
                if self.leading and self.monotonic() >= self._valid_until - STOP_SECONDS:
                    await self._step_down("lease not renewed in time")
            await self.tend_bot()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RENEW_SECONDS)

    async def round(self) -> None:
        """One election round: renew the lease, or take it, or step down in time."""
        started = self.monotonic()
        # A leader needs the answer before its time to stop, whatever happens to the request.
        budget = self._valid_until - STOP_SECONDS - started if self.leading else RENEW_SECONDS * 2
        lease: Lease | None = None
        try:
            if budget <= 0:
                raise TimeoutError
            lease = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self._thread, self._lead), budget
            )
        except (StoreError, TimeoutError) as exc:
            if not self._failing:
                log.warning(
                    "leader.unreachable role=%s leading=%s error=%s",
                    ROLE,
                    self.leading,
                    exc or "no answer in time",
                )
                self._failing = True
            if self.leading and self.monotonic() >= self._valid_until - STOP_SECONDS:
                await self._step_down("lease not renewed in time")
            return
        self._failing = False
        if lease is None:
            if self.leading:
                await self._step_down("another replica holds the lease")
            return
        self._valid_until = started + (lease.expires_at - lease.now).total_seconds()
        self._valid_until -= SAFETY_SECONDS
        if not self.leading:
            self.term = lease.term
            log.info(
                "leader.elected role=%s term=%s owner=%s", ROLE, lease.term, self.service.owner
            )
            self._become_leader()

    def _lead(self) -> Lease | None:
        with db.transaction(self.service.engine) as session:
            return lead(
                session,
                ROLE,
                self.service.owner,
                LEASE,
                term=self.term if self.leading else None,
            )

    def _become_leader(self) -> None:
        self.service.lead(True)
        self._bot_failures = 0
        self._next_start = 0.0
        self._keep_bot()
        self._show_bot()

    async def tend_bot(self) -> asyncio.Task[Any] | None:
        """Once a round: stop a bot whose token Telegram refused, start the leader's bot when it
        is due (returns that start, which runs on in the background), update what /healthz
        says of it."""
        await self._check_bot()
        self._keep_bot()
        self._show_bot()
        return self._starting

    def _keep_bot(self) -> None:
        """The leader runs the bot; one that failed to start is tried again with back-off
        (`bot_start_delay`), except after Telegram refused the token."""
        if not self.leading or self._bot is not None or self.service.settings.telegram is None:
            return
        if self._starting is not None or self._bot_rejected is not None:
            return
        if self.monotonic() < self._next_start:
            return
        self._starting = asyncio.create_task(launch_bot(self.service), name="bot-start")
        self._starting.add_done_callback(self._started)

    def _started(self, task: asyncio.Task[Any]) -> None:
        self._starting = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._start_failed(error)
        else:
            bot = task.result()
            self._bot_failures = 0
            if self.leading:
                self._bot = self.service.bot = bot
            else:  # lost the lease while starting: stop it at once
                asyncio.get_running_loop().create_task(bot.stop())
        self._show_bot()

    def _start_failed(self, error: BaseException) -> None:
        if isinstance(error, BotError) and error.token_rejected:
            self._bot_rejected = str(error)
            log.error(
                "bot.failed error=%s action=not tried again: fix telegram.token and restart",
                error,
            )
            return
        self._bot_failures += 1
        delay = bot_start_delay(self._bot_failures)
        self._next_start = self.monotonic() + delay
        self._bot_error = str(error)
        log.error("bot.failed error=%s failures=%s retry_in=%gs", error, self._bot_failures, delay)

    async def _check_bot(self) -> None:
        """A running bot whose token Telegram refused since is stopped for good."""
        bot = self._bot
        if bot is not None and getattr(bot, "token_rejected", False):
            self._bot_rejected = bot.trouble
            await self._stop_bot()

    def _show_bot(self) -> None:
        """What /healthz says of the bot: `service.bot_status`, and whether that is trouble."""
        if self.service.settings.telegram is None:
            status, trouble = None, False
        elif self._bot_rejected is not None:
            status, trouble = f"stopped: {self._bot_rejected}", True
        elif not self.leading:
            status, trouble = "follower: the leader answers commands", False
        elif self._bot is not None:
            problem = getattr(self._bot, "trouble", None)
            status = f"not polling: {problem}" if problem else "running"
            trouble = problem is not None
        elif self._bot_failures:
            wait = max(0.0, self._next_start - self.monotonic())
            status = (
                f"not running: {self._bot_error} "
                f"(failed {self._bot_failures} times; next try in {wait:.0f} s)"
            )
            trouble = True
        else:
            status, trouble = "starting", False
        self.service.bot_status, self.service.bot_trouble = status, trouble

    async def _step_down(self, reason: str) -> None:
        log.warning("leader.lost role=%s term=%s reason=%s", ROLE, self.term, reason)
        self.service.lead(False)
        await self._stop_bot()

    async def _stop_bot(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
            self._starting = None
        bot, self._bot = self._bot, None
        self.service.bot = None
        if bot is not None:
            try:
                await asyncio.wait_for(bot.stop(), STOP_SECONDS)
            except TimeoutError:
                log.warning("bot.stop_timeout seconds=%s", STOP_SECONDS)

    async def stop(self) -> None:
        """A clean stop: the bot stops, and the role is given up for another replica to take."""
        was_leading = self.leading
        self.service.lead(False)
        await self._stop_bot()
        try:
            if self.elected and was_leading and self.term is not None:
                await self._resign(self.term)
        finally:
            self._thread.shutdown(wait=False)

    async def _resign(self, term: int) -> None:
        def give_up() -> None:
            with db.transaction(self.service.engine) as session:
                resign(session, ROLE, self.service.owner, term)

        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self._thread, give_up), STOP_SECONDS
            )
        except (StoreError, TimeoutError) as exc:  # the lease runs out by itself
            log.warning("leader.resign_failed error=%s", exc or "no answer in time")
        else:
            log.info("leader.resigned role=%s term=%s", ROLE, term)
