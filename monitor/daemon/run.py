"""`monitor run`: the scheduler's ticks, the health endpoint, the bot, and a clean stop on SIGTERM or
SIGINT.

APScheduler 3 (AsyncIOScheduler, in-memory job store) only ticks: every couple of seconds it claims
what is due and starts those polls, and every second the outbox sends what is due. On SIGTERM/SIGINT
the service stops claiming, lets in-flight polls finish for a few seconds, cancels the rest and
gives their leases back, then exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.daemon.health import start_health_server
from monitor.daemon.leader import start_bot
from monitor.daemon.service import (
    DELIVER_TICK_SECONDS,
    FLUSH_SECONDS,
    POLL_TICK_SECONDS,
    PRUNE_EVERY_SECONDS,
    Service,
)
from monitor.errors import StoreError

log = logging.getLogger("monitor.daemon")


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
