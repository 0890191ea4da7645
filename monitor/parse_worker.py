"""The parse worker: a process that reads feed bodies on stdin, parses each (`feeds.parse_feed`)
within a CPU-time budget, and writes the outcome on stdout. `parse_pool` starts and feeds it.

Started by the pool as `python -m monitor.parse_worker MEMORY_BYTES`, never by hand. Each message,
both ways, is a 4-byte big-endian length and a pickle: a `Job` in, a `Reply` out. Both ends are
this package, so the pickles are trusted.

Budgets: the process may map at most MEMORY_BYTES (RLIMIT_AS; a parse that needs more gets a
MemoryError, and the worker answers and exits, leaving no fragmented heap behind), and each job may
use at most its `cpu_seconds` of CPU time (ITIMER_PROF counts CPU time, so a busy machine does not
fail a feed that a quiet one parses). A worker stuck where no signal reaches it is killed by the
pool.
"""

from __future__ import annotations

import pickle
import resource
import signal
import struct
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Literal

from monitor.errors import FeedParseError
from monitor.feeds import ParsedFeed, parse_feed

HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class Job:
    body: bytes
    url: str
    headers: dict[str, str]
    fetched_at: datetime
    source: str | None
    cpu_seconds: float


@dataclass(frozen=True)
class Reply:
    """`parsed` (with `feed`), or `refused`: not a feed, over budget, or the parser failed; with
    `reason`. `retire`: the worker exits after this reply."""

    outcome: Literal["parsed", "refused"]
    feed: ParsedFeed | None = None
    reason: str = ""
    retire: bool = False


class _OverBudget(BaseException):  # not Exception: the parser catches those
    pass


def _over_budget(signum: int, frame: object) -> None:
    raise _OverBudget


def read_message(stream: BinaryIO) -> bytes | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    return stream.read(size)


def write_message(stream: BinaryIO, reply: Reply) -> None:
    payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(payload)) + payload)
    stream.flush()


def handle(job: Job, memory_bytes: int) -> Reply:
    over_cpu = f"over budget: parsing took more than {job.cpu_seconds:g} s of CPU time"
    try:
        signal.setitimer(signal.ITIMER_PROF, job.cpu_seconds)
        try:
            feed = parse_feed(
                job.body,
                url=job.url,
                headers=job.headers,
                fetched_at=job.fetched_at,
                source=job.source,
            )
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
    except _OverBudget:
        return Reply("refused", reason=over_cpu)
    except MemoryError:
        reason = f"over budget: parsing needed more than {memory_bytes // 2**20} MB of memory"
        return Reply("refused", reason=reason, retire=True)
    except FeedParseError as exc:
        return Reply("refused", reason=str(exc))
    except Exception as exc:  # a parser bug: this feed fails, the worker goes on
        return Reply(
            "refused", reason=f"not a feed: the parser failed ({type(exc).__name__}: {exc})"
        )
    return Reply("parsed", feed)


def main(argv: list[str]) -> int:
    memory_bytes = int(argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGPROF, _over_budget)
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # Ctrl-C reaches the whole group; the pool stops us
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies on the pipe
    while (message := read_message(stdin)) is not None:
        try:
            reply = handle(pickle.loads(message), memory_bytes)
            write_message(stdout, reply)
        except _OverBudget:  # the timer fired just as the parse ended
            reply = Reply("refused", reason="over budget: parsing took too much CPU time")
            write_message(stdout, reply)
        except MemoryError:  # the reply itself did not fit
            write_message(stdout, Reply("refused", reason="over budget: memory", retire=True))
            return 0
        if reply.retire:
            return 0
    return 0


if __name__ == "__main__":
    # Through the module's own name, so that what it pickles names `monitor.parse_worker`, not
    # `__main__`.
    from monitor import parse_worker

    sys.exit(parse_worker.main(sys.argv))
