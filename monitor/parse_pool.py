"""Feed parsing in worker processes, so that one feed cannot starve the others (FAULTS 15, 69).

A 10 MB feed of 300,000 tiny items takes feedparser about 12 s of CPU and 300 MB of memory. In
threads, two such feeds held both parse threads, and every other feed queued behind them until its
parse deadline, which counted the queue, ran out. Here:

* Each parse runs in a worker process (`monitor.parse_worker`) under its own budget: CPU time per
  feed (`cpu_seconds`, counted by the worker's CPU clock, so a busy machine does not fail a feed)
  and address space per worker (`memory_bytes`). A feed over budget fails alone, saying which
  budget it broke; the worker goes on, or is replaced after a MemoryError.
* Bodies over `large_body` bytes get at most all workers but one: a normal feed always finds one.
* The budget counts the parse only, not the wait for a worker.
* Workers start when first needed and stay. A parse whose caller is cancelled kills its worker, and
  `close()` kills them all at once, whatever they are doing: a SIGTERM never waits for a parse.
* A worker that does not answer within `cpu_seconds × 4 + 10 s` of real time (stopped, or stuck
  where no signal reaches it) is killed too.

What it costs: the body goes to the worker and the parsed items come back pickled; see the README
("What happens to a feed") for the figure on a normal feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import sys
from collections.abc import Mapping
from datetime import datetime

from monitor.errors import FeedParseError
from monitor.feeds import ParsedFeed
from monitor.parse_worker import HEADER, Job, Reply

__all__ = ["ParsePool"]

log = logging.getLogger("monitor.parse")

DEFAULT_WORKERS = 2
DEFAULT_CPU_SECONDS = 30.0
DEFAULT_MEMORY_BYTES = 1024 * 2**20
DEFAULT_LARGE_BODY = 256 * 2**10  # bigger than most feeds (the corpus has none over 350 KB)


class _Worker:
    """One worker process and its pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, memory_bytes: int) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor.parse_worker",
            str(memory_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def run(self, job: Job) -> Reply:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            stdin.write(HEADER.pack(len(payload)) + payload)
            await stdin.drain()
            (size,) = HEADER.unpack(await stdout.readexactly(HEADER.size))
            reply: Reply = pickle.loads(await stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            returncode = await self.process.wait()
            raise FeedParseError(_death(returncode)) from None
        return reply

    async def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()


def _death(returncode: int) -> str:
    if returncode == -signal.SIGKILL:
        return "over budget: the parse worker was killed (out of memory?)"
    return f"the parse worker died (exit status {returncode})"


class ParsePool:
    """Parses feed bodies in worker processes under a CPU and a memory budget. Use it in one event
    loop, and `close()` it there."""

    def __init__(
        self,
        *,
        workers: int = DEFAULT_WORKERS,
        cpu_seconds: float = DEFAULT_CPU_SECONDS,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        large_body: int = DEFAULT_LARGE_BODY,
    ) -> None:
        if workers < 2:
            raise ValueError(f"a parse pool needs at least 2 workers, not {workers!r}")
        if not cpu_seconds > 0:
            raise ValueError(f"cpu_seconds must be positive, not {cpu_seconds!r}")
        self.cpu_seconds = cpu_seconds
        self.memory_bytes = memory_bytes
        self.large_body = large_body
        self._slots = asyncio.Semaphore(workers)
        self._large_slots = asyncio.Semaphore(workers - 1)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._closed = False

    async def parse(
        self,
        body: bytes,
        *,
        url: str = "",
        headers: Mapping[str, str] | None = None,
        fetched_at: datetime,
        source: str | None = None,
    ) -> ParsedFeed:
        """`feeds.parse_feed` in a worker. Raises FeedParseError for what is not a feed and for a
        feed over its CPU or memory budget."""
        job = Job(body, url, dict(headers or {}), fetched_at, source, self.cpu_seconds)
        lane = self._large_slots if len(body) > self.large_body else contextlib.nullcontext()
        async with lane, self._slots:
            if self._closed:
                raise FeedParseError("not parsed: the service is stopping")
            worker = self._idle.pop() if self._idle else await _Worker.start(self.memory_bytes)
            self._busy.add(worker)
            try:
                async with asyncio.timeout(self.cpu_seconds * 4 + 10):
                    reply = await worker.run(job)
            except TimeoutError:
                await worker.kill()
                raise FeedParseError(
                    f"over budget: the parse worker did not answer within "
                    f"{self.cpu_seconds * 4 + 10:g} s"
                ) from None
            except BaseException:
                # Cancelled (a SIGTERM), or the worker died: its state is unknown.
                await asyncio.shield(worker.kill())
                raise
            finally:
                self._busy.discard(worker)
            if reply.retire or self._closed:
                await worker.kill()
            else:
                self._idle.append(worker)
        if reply.feed is None:
            raise FeedParseError(reply.reason)
        return reply.feed

    @property
    def parsing(self) -> int:
        """Parses under way in a worker now."""
        return len(self._busy)

    async def close(self) -> None:
        """Kill every worker now, idle or parsing; parses still waiting are refused."""
        self._closed = True
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        await asyncio.gather(*(worker.kill() for worker in workers))
