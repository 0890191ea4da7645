"""`monitor run`: the periodic jobs, the health endpoint, the bot, and a clean stop on SIGTERM or
SIGINT, and a reload of the config on SIGHUP (`daemon.reload`).

Three `Ticker`s run on the event loop's monotonic clock, so a wall clock stepped back or forward
does not stop or bunch them (`daemon.ticks`): every couple of seconds the poll job claims what is
due and starts those polls, every second the delivery job sends what is due, every hour the prune
job drops old items. Beside them the election (`daemon.leader`) decides, every second, whether this
process is the leader that runs the subscriber bot, sends digests and prunes. On SIGTERM/SIGINT the
service stops claiming, stops the bot and hands the leadership on, lets in-flight polls finish for
a few seconds (a parse is stopped at once), cancels the rest and gives their leases back, sends what is
due, then exits 0, all within `STOP_SECONDS`. What is left running after that cannot hold the process
past `EXIT_SECONDS` (`ExitDeadline`)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from monitor.daemon.health import start_health_server
from monitor.daemon.leader import Leadership
from monitor.daemon.reload import Reloader, ReloadOutcome
from monitor.daemon.service import (
    DELIVER_TICK_SECONDS,
    FLUSH_SECONDS,
    POLL_TICK_SECONDS,
    PRUNE_EVERY_SECONDS,
    SHUTDOWN_GRACE_SECONDS,
    Service,
)
from monitor.daemon.ticks import Ticker
from monitor.errors import SetupError, StoreError

log = logging.getLogger("monitor.daemon")

# From SIGTERM to the last delivery: SPEC's 10 s, less what closing the process takes.
STOP_SECONDS = 8.0
# From SIGTERM to the process's exit, whatever is still running then.
EXIT_SECONDS = 9.0


class ExitDeadline:
    """The end of a stopped `monitor run` process: at once when the stop is done (`exit_now`), or
    `seconds` after the stop began (`arm`) if it is still running then.

    A cancelled poll's thread goes on with its transaction (a thread cannot be interrupted), and
    Python waits for every such thread before it exits: one waiting for a story lock, a row lock
    or an unreachable database would hold a stopped service for as long as that lasts. And on a
    loaded machine the interpreter's own teardown takes seconds, for nothing: the stop has closed
    what needs closing. What such a thread had not committed, the database rolls back when the
    connection goes. Exits 0 if the stop had done its work (`stopped`), 1 otherwise. Only for the
    process's entry point: it calls os._exit."""

    def __init__(self, seconds: float = EXIT_SECONDS) -> None:
        self.seconds = seconds
        self.stopped = False
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.seconds, self._overdue)
            self._timer.daemon = True
            self._timer.start()

    def _overdue(self) -> None:
        me = threading.current_thread()
        running = ",".join(
            sorted(t.name for t in threading.enumerate() if t is not me and not t.daemon)
        )
        if self.stopped:
            log.warning("run.exit_forced after=%ss still_running=%s", self.seconds, running)
        else:
            log.error("run.stop_overdue after=%ss still_running=%s", self.seconds, running)
        self.exit_now()

    def exit_now(self) -> None:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0 if self.stopped else 1)


async def run_forever(
    service: Service,
    *,
    stop: asyncio.Event | None = None,
    config: Path | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> None:
    """`monitor run`: tick until SIGTERM/SIGINT (or `stop`), then shut down cleanly, calling
    `on_stopping` first. SIGHUP (or a POST to /-/reload) reloads `config`, the file the service
    was started with."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    begun = False

    def stopping() -> None:
        # Called by the signal itself: on a loaded machine the loop may take a second more to
        # get back to the task that waits for `stop`.
        nonlocal begun
        if not begun and on_stopping is not None:
            on_stopping()
        begun = True
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stopping)
    reloader = Reloader(service, config) if config is not None else None
    reloads: set[asyncio.Task[ReloadOutcome]] = set()

    def hangup() -> None:
        if stop.is_set():
            return
        if reloader is None:
            log.warning("reload.unavailable: this service was not started from a config file")
            return
        task = loop.create_task(reloader.reload(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, hangup)
    runner = None
    listen = service.settings.service.listen
    if listen:
        try:
            runner = await start_health_server(service, listen, reloader)
        except OSError as exc:
            await service.close()
            raise SetupError(
                f"cannot listen on {listen} (service.listen): {_why(exc)}; stop what uses it "
                "(another monitor?), or set service.listen to a free HOST:PORT or null"
            ) from None
        log.info("health.listening address=%s", listen)
    leadership = Leadership(service)
    electing = asyncio.create_task(leadership.run(stop), name="leadership")
    tickers = service.tickers = {
        ticker.name: ticker
        for ticker in (
            Ticker("poll", POLL_TICK_SECONDS, service.poll_tick),
            Ticker("deliver", DELIVER_TICK_SECONDS, service.deliver_tick),
            Ticker(
                "prune", PRUNE_EVERY_SECONDS, service.prune_tick, first_after=PRUNE_EVERY_SECONDS
            ),
        )
    }
    ticking = {
        name: asyncio.create_task(t.run(stop), name=f"tick:{name}") for name, t in tickers.items()
    }
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
        deadline = loop.time() + STOP_SECONDS
        stopping()  # if `stop` was set by the caller, not by a signal

        def left() -> float:
            return max(0.0, deadline - loop.time())

        stop.set()
        for task in list(reloads):  # a reload swaps between awaits: cancelled, nothing is half-done
            task.cancel()
        ticking["prune"].cancel()
        electing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await electing
        # The poll job only claims and starts polls: its run in progress ends quickly, and what
        # it claimed is then drained with the rest.
        await _finish(ticking["poll"], min(SHUTDOWN_GRACE_SECONDS, left()))
        # In-flight polls get what is left but the flush (parses are stopped at once); the bot
        # stops and the role is handed on meanwhile, and the delivery round in progress goes on.
        grace = max(0.0, left() - FLUSH_SECONDS)
        await asyncio.gather(service.drain(grace), leadership.stop())
        await _finish(ticking["deliver"], left())
        if left() > 0:
            with contextlib.suppress(StoreError, TimeoutError):
                # flush what the drained polls queued, within the time SIGTERM allows
                await asyncio.wait_for(service.deliver_tick(), left())
        if runner is not None:
            await runner.cleanup()
        await service.close()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        log.info("run.stopped")


async def _finish(task: asyncio.Task[None], timeout: float) -> None:
    """Let a ticker's run in progress end (it stops after it), for at most `timeout` seconds."""
    await asyncio.wait([task], timeout=timeout)
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address"
    return exc.strerror or str(exc)
