"""The poll state of quiet polls — a 304, or a body identical to the last — written for many feeds
at once.

Such a poll changes nothing but the feed's times and validators (last poll, next poll, ETag,
Last-Modified, body hash) and gives its lease back. Written one transaction per poll, they held
the daemon's 304s to a fraction of what its HTTP client does; here they wait at most `delay`
seconds (or until `most` are waiting) and are written together, one statement for all. `flush()`
writes what waits now (the end of `monitor once`, a stop).

Losing a batch (a crash, the database unreachable) is harmless: each of its feeds keeps its old
poll state, so it is due again once its lease has expired (`service.lease`), and is polled again
— one more conditional GET, answered 304 again. Nothing stored, matched or alerted depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import Engine

from monitor.errors import StoreError
from monitor.store import db
from monitor.store.feeds import QuietPoll, record_quiet_polls

__all__ = ["QuietPolls"]

log = logging.getLogger("monitor.pipeline")

FLUSH_DELAY_SECONDS = 0.5
FLUSH_MOST = 500


class QuietPolls:
    """Quiet polls waiting to be written. Use it in one event loop; `close()` it there."""

    def __init__(
        self,
        engine: Engine,
        owner: str,
        *,
        delay: float = FLUSH_DELAY_SECONDS,
        most: int = FLUSH_MOST,
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.delay = delay
        self.most = most
        self._waiting: list[QuietPoll] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writing: set[asyncio.Task[None]] = set()
        self.batches = 0  # written so far (for tests and benchmarks)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, poll: QuietPoll) -> None:
        """Queue a quiet poll; it is written within `delay` seconds."""
        self._waiting.append(poll)
        if len(self._waiting) >= self.most:
            self._start_write()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._start_write)

    def _start_write(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, batch: list[QuietPoll]) -> None:
        def write() -> None:
            with db.transaction(self.engine) as session:
                record_quiet_polls(session, batch, self.owner)

        try:
            await asyncio.to_thread(write)
            self.batches += 1
        except StoreError as exc:
            # Harmless: these feeds are due again when their leases expire (see above).
            log.error("poll.record_failed feeds=%s error=%s", len(batch), exc)

    async def flush(self) -> None:
        """Write what waits now, and wait for every write under way."""
        self._start_write()
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    async def close(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.flush()
