"""The daemon's periodic jobs (claim due polls, deliver due alerts, prune), each run again and again
on the event loop's clock, which is monotonic.

Why not a wall-clock scheduler: the intervals here are "every 2 seconds", not "at 08:00". A
scheduler that computes its next wake-up from the wall clock stops for an hour when NTP or a VM
restore steps the clock back an hour, and fires everything at once when it jumps ahead. The event
loop's clock (`loop.time()`, CLOCK_MONOTONIC) only ever moves forward at the pace of real time. What
is due is decided elsewhere, by times stored in the database (`next_poll_at`, `next_attempt_at`).

A job is never run twice at once: while a run goes on (a delivery round waiting for Telegram's rate
limit, a claim waiting for a database lock), the next one simply starts when it ends. That is
normal under load, so it is not logged. A run that raises is logged and the job goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("monitor.daemon")

Job = Callable[[], Awaitable[object]]


class Ticker:
    """Runs `job` every `every` seconds of the event loop's clock until `stop` is set.

    The first run starts after `first_after` seconds (0: at once). A run that takes longer than
    `every` is followed by the next one at once, without runs to catch up. `started_at`,
    `finished_at` (loop times, None before the first run) and `running` say how it goes, for
    /healthz.
    """

    def __init__(self, name: str, every: float, job: Job, *, first_after: float = 0.0) -> None:
        if every <= 0:
            raise ValueError(f"tick interval must be positive, not {every!r}")
        self.name = name
        self.every = every
        self.job = job
        self.first_after = first_after
        self.runs = 0
        self.running = False
        self.started_at: float | None = None
        self.finished_at: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.first_after
        while not await _stopped_before(stop, due - loop.time()):
            self.running = True
            self.started_at = loop.time()
            try:
                await self.job()
            except Exception:
                log.exception("tick.failed job=%s", self.name)
            finally:
                self.running = False
                self.finished_at = loop.time()
                self.runs += 1
            due = max(due + self.every, loop.time())


async def _stopped_before(stop: asyncio.Event, delay: float) -> bool:
    """Wait up to `delay` seconds (loop clock) for `stop`; True if it was set."""
    if delay > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
    return stop.is_set()
