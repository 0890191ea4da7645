"""One clock for every replica: the database's.

Replicas compare times with each other through the rows they share — a feed's `next_poll_at` and
`last_polled_at`, lease ends, an alert's `next_attempt_at` — so every such time is written from
the database's clock, never from the host's: a host whose clock runs 30 s ahead would otherwise
find every feed it polled "polled in the future" and poll it again at once, and hold its alerts
30 s back.

`DatabaseClock` is read from the database now and then (`observe`, with a time the caller read in
a transaction it had anyway) and carried forward in between by the monotonic clock, so `now()`
costs no round trip and never goes back when the host's clock is stepped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class DatabaseClock:
    """The database's time, as of the last `observe`, plus the monotonic time elapsed since.

    Before the first `observe` it is the host's clock. Safe to use from several threads."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        host: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._monotonic = monotonic
        self._host = host
        # (the database's time, the monotonic time it was read at), replaced whole by `observe`:
        # a reader on another thread gets one pair or the other, never half of each, without a
        # lock (`now` is read at every poll).
        self._observed: tuple[datetime, float] | None = None

    def observe(self, database_now: datetime) -> None:
        """The database's time, as just read."""
        self._observed = (database_now.astimezone(UTC), self._monotonic())

    @property
    def synchronised(self) -> bool:
        return self._observed is not None

    def now(self) -> datetime:
        observed = self._observed
        if observed is None:
            return self._host()
        return observed[0] + timedelta(seconds=self._monotonic() - observed[1])

    __call__ = now
