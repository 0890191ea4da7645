"""Virtual time for tests of the daemon's timing: an hour passes in milliseconds, and the wall clock
can be stepped like NTP or a VM restore steps it, with nothing ever sleeping for real.

`VirtualTime` owns two clocks:

* a monotonic clock, the event loop's (`loop.time()`), which jumps straight to the next timer
  whenever the loop has nothing ready and no worker thread busy (threads, e.g. `asyncio.to_thread`
  database calls, are waited for in real time, with the virtual clock standing still);
* the wall clock that Python code reads (`datetime.now()`, `time.time()`: time-machine), which
  moves with the monotonic clock until `step_wall_clock` steps it.

    with VirtualTime(datetime(2026, 3, 1, 9, 0, tzinfo=UTC)) as clock:
        clock.run(main())       # asyncio.run on a virtual-time loop

Sockets between tasks of the same loop work: before the clock jumps, the loop gives the kernel
`_SETTLE` seconds of real time to hand over bytes in flight on loopback. Waiting on another thread's
server or another process does not by itself (the virtual clock would run ahead while that thread
or process works): keep servers on the same loop, and tell the clock about other work it must wait
for in real time with `wait_while` (e.g. `clock.wait_while(lambda: service.poller.parsing)`, the
feeds being parsed in worker processes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Self, TypeVar

import time_machine

T = TypeVar("T")
_REAL_WAIT = 0.05  # seconds of real time to wait for a busy worker thread before looking again
_SETTLE = 0.002  # seconds of real time for loopback bytes in flight before the clock jumps


class VirtualTime:
    def __init__(self, start: datetime) -> None:
        self.monotonic = time.monotonic()
        self._travel = time_machine.travel(start, tick=False)
        self._wall: Any = None
        self._busy: list[Callable[[], object]] = []

    def wait_while(self, busy: Callable[[], object]) -> None:
        """Never jump while `busy()` is true: wait for that work in real time."""
        self._busy.append(busy)

    @property
    def busy(self) -> bool:
        return any(busy() for busy in self._busy)

    def __enter__(self) -> Self:
        self._wall = self._travel.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._travel.stop()

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass on both clocks."""
        self.monotonic += seconds
        self._wall.shift(seconds)

    def step_wall_clock(self, seconds: float) -> None:
        """Step the wall clock alone (negative: back), as NTP does; monotonic time goes on."""
        self._wall.shift(seconds)

    def loop(self) -> asyncio.AbstractEventLoop:
        return _VirtualTimeLoop(self)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=self.loop) as runner:
            return runner.run(main)


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualTime) -> None:
        super().__init__()
        self._clock = clock
        self._busy_threads = 0
        select = self._selector.select

        def virtual_select(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            if self._busy_threads or clock.busy:
                return select(_REAL_WAIT if timeout is None else min(timeout, _REAL_WAIT))
            ready = select(0 if timeout == 0 else _SETTLE)
            if ready or timeout == 0:
                return ready
            if timeout is None:
                return select(None)
            clock.advance(timeout)
            return []

        self._selector.select = virtual_select  # type: ignore[method-assign]

    def time(self) -> float:
        return self._clock.monotonic

    def run_in_executor(  # type: ignore[override]
        self, executor: concurrent.futures.Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self._busy_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self._busy_threads -= 1
