"""A thread of its own for one part's database work.

The outbox's writes must not queue behind the polls' for a worker thread: with every thread of the
default pool holding a poll that waits for the database's write lock, a "sent" mark would wait for
all of them before it even asked for the lock. On its own thread it asks at once, and as an urgent
write (`db.transaction(urgent=True)`) it then goes before the poll writes waiting there.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["DatabaseThread"]

T = TypeVar("T")


class DatabaseThread:
    """Runs blocking database calls, one at a time, on a thread named `name` (started on first
    use, ended by `close`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(work, *args))

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
