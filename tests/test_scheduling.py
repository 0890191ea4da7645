"""When `monitor run` polls a feed: a claim takes the feeds due in the next few seconds as well,
each poll starts at its feed's due time (not at the next claim after it), no more than the limits
are held or run at once, and on stop the feeds claimed but not started go back at once.

Time is virtual (tests/virtualtime.py) and the polls are stand-ins that record when they start;
the claims, leases and releases are the real ones, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import ctypes
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from servicekit import service_config
from sqlalchemy import select, update
from virtualtime import VirtualTime

from monitor.config import FeedSettings, load_config
from monitor.daemon import Service, memory
from monitor.daemon.service import MAX_CLAIMED_FEEDS, MAX_CONCURRENT_POLLS
from monitor.pipeline import PollResult
from monitor.store import db
from monitor.store._shared import database_now
from monitor.store.feeds import FeedState
from monitor.store.tables import feeds as feed_table


class StandInPolls:
    """Replaces the poller's `poll`: records the loop time each feed's poll starts, waits until
    `finish` is set (a poll under way), then records it as polled."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.started: dict[str, float] = {}
        self.finish = asyncio.Event()
        self.status = "ok"  # what every poll answers

    async def poll(
        self, state: FeedState, feed: FeedSettings, *, force: bool = False
    ) -> PollResult:
        self.started[state.name] = asyncio.get_running_loop().time()
        await self.finish.wait()
        await asyncio.to_thread(self._release, state.id)
        return PollResult(state.name, self.status)

    def _release(self, feed_id: int) -> None:
        """What a poll's record does to the schedule: due again an hour later, lease given back."""
        with db.transaction(self.service.engine) as session:
            session.execute(
                update(feed_table)
                .where(feed_table.c.id == feed_id, feed_table.c.lease_owner == self.service.owner)
                .values(
                    next_poll_at=database_now(session) + timedelta(hours=1),
                    lease_owner=None,
                    lease_until=None,
                )
            )


Build = Callable[[list[str]], tuple[Service, StandInPolls]]


@pytest.fixture
def build(database_url: str, tmp_path: Path) -> Iterator[Build]:
    """build(names) -> a Service over feeds of those names, all due now, with stand-in polls."""
    made: list[Service] = []

    def make(names: list[str]) -> tuple[Service, StandInPolls]:
        urls = {name: f"http://127.0.0.1:9/{name}.xml" for name in names}
        settings = load_config(service_config(tmp_path / "config.yaml", database_url, urls))
        service = Service.build(settings, notifiers={})
        service.prepare(alone=True)
        polls = StandInPolls(service)
        service.poller.poll = polls.poll  # type: ignore[method-assign]
        made.append(service)
        return service, polls

    yield make
    for service in made:
        service.engine.dispose()


def due_in(service: Service, seconds: dict[str, float]) -> None:
    """Make each named feed due that many seconds after the database's now."""
    with db.transaction(service.engine) as session:
        now = database_now(session)
        for name, after in seconds.items():
            session.execute(
                update(feed_table)
                .where(feed_table.c.name == name)
                .values(next_poll_at=now + timedelta(seconds=after))
            )


def held_by(service: Service) -> set[str]:
    """The feeds whose lease `service` holds now."""
    with db.read_session(service.engine) as session:
        rows = session.execute(
            select(feed_table.c.name).where(feed_table.c.lease_owner == service.owner)
        )
        return {row.name for row in rows}


async def settle() -> None:
    """Let every task that can run now run (virtual time does not move while they do)."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_feed_due_in_seconds_is_claimed_ahead_and_polled_at_its_due_time(build: Build) -> None:
    """Before, a feed due 4 s after a claim waited for the claim after it and then for a slot:
    its poll started up to a tick late. Now one claim takes it, and its poll starts when due."""
    service, polls = build(["now", "soon", "later"])
    due_in(service, {"now": -1, "soon": 4, "later": 60})
    marks: dict[str, float] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        polls.finish.set()
        marks["claim"] = loop.time()
        await service.poll_tick()
        claimed = held_by(service)
        await settle()
        marks["now_started"] = polls.started.get("now", -1.0)
        soon_before = "soon" in polls.started
        await asyncio.sleep(3.0)
        soon_at_3s = "soon" in polls.started
        await asyncio.sleep(2.0)  # no claim in between: the one claim holds it
        assert (claimed, soon_before, soon_at_3s) == ({"now", "soon"}, False, False)
        await service.drain()

    with VirtualTime(datetime.now(UTC)) as clock:
        clock.run(main())
    assert set(polls.started) == {"now", "soon"}  # "later" was neither claimed nor polled
    assert polls.started["now"] - marks["claim"] < 0.1  # due: polled at once
    # Due 4 s after the database's now that was read just before the claim; started then, give
    # or take the real time the claim took (the virtual clock stands still while it runs).
    assert 3.0 <= polls.started["soon"] - marks["claim"] <= 4.0


def test_at_most_100_feeds_are_held_and_50_polled_at_once(build: Build) -> None:
    names = [f"f{i:03d}" for i in range(MAX_CLAIMED_FEEDS + 30)]
    service, polls = build(names)
    counts: dict[str, int] = {}

    async def main() -> None:
        await service.poll_tick()
        await settle()
        counts.update(
            held=len(held_by(service)), in_flight=len(service.in_flight), polling=len(polls.started)
        )
        polls.finish.set()  # the polls end; what waited for a slot or a claim starts
        async with asyncio.timeout(600):
            while len(polls.started) < len(names) or service.in_flight:
                await asyncio.sleep(0.1)
        counts["polled"] = len(polls.started)
        await service.drain()

    with VirtualTime(datetime.now(UTC)) as clock:
        clock.run(main())
    assert counts == {
        "held": MAX_CLAIMED_FEEDS,
        "in_flight": MAX_CLAIMED_FEEDS,
        "polling": MAX_CONCURRENT_POLLS,
        "polled": len(names),  # every poll that ended made room for another claim
    }


@pytest.mark.parametrize(("status", "trimmed"), [("ok", 2), ("not_modified", 0)])
def test_the_heap_is_trimmed_once_every_50_polls_that_stored_something(
    build: Build, monkeypatch: pytest.MonkeyPatch, status: str, trimmed: int
) -> None:
    """What the polls freed on their worker threads goes back to the system every
    `TRIM_EVERY_POLLS` polls (`daemon.memory`): not after each poll, and not never. 304s and
    unchanged bodies free next to nothing there: a round of them does not pay for a trim (a few
    milliseconds each, every 50 polls, on the event loop)."""
    names = [f"f{i:03d}" for i in range(2 * memory.TRIM_EVERY_POLLS + 10)]
    service, polls = build(names)
    polls.status = status
    trims: list[int] = []

    def trim() -> bool:
        trims.append(len(polls.started))
        return True

    monkeypatch.setattr(memory, "trim", trim)

    async def main() -> None:
        polls.finish.set()
        await service.poll_tick()
        async with asyncio.timeout(600):
            while len(polls.started) < len(names) or service.in_flight:
                await asyncio.sleep(0.1)
        await service.drain()

    with VirtualTime(datetime.now(UTC)) as clock:
        clock.run(main())
    assert len(polls.started) == len(names)
    assert len(trims) == trimmed


def test_trimming_and_limiting_the_arenas_work_on_this_glibc() -> None:
    assert memory.limit_arenas()
    assert memory.trim()


_LARGE_BLOCKS = """
import ctypes, sys
from monitor.daemon import memory
if sys.argv[1] == "limited":
    memory.limit_arenas()
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(8_000_000))  # as the language model's table once read
mapped = libc.mallinfo2().hblks
block = libc.malloc(4_000_000)  # a poll's large buffer
print(libc.mallinfo2().hblks - mapped)
libc.free(block)
"""


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="glibc 2.33 or later")
@pytest.mark.parametrize(("mode", "mapped"), [("limited", "1"), ("as glibc has it", "0")])
def test_after_a_large_block_is_freed_the_next_is_still_mapped_on_its_own(
    mode: str, mapped: str
) -> None:
    """glibc raises its mmap threshold when a large mapped block is freed, and the next large
    block then lands in the heap, where it stays resident after it is freed: `limit_arenas` fixes
    the threshold (in a fresh process: the threshold is per process)."""
    done = subprocess.run(
        [sys.executable, "-c", _LARGE_BLOCKS, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.stdout.strip() == mapped


def test_on_stop_the_feeds_claimed_but_not_started_are_handed_back_at_once(build: Build) -> None:
    """A stop while a poll runs and a feed waits for its due time: the waiting feed's lease is
    given back before the running poll is over, its poll never starts, and it stays due when it
    was (the next process polls it then)."""
    service, polls = build(["running", "waiting"])
    due_in(service, {"running": -1, "waiting": 5})
    seen: dict[str, object] = {}

    async def main() -> None:
        await service.poll_tick()
        await settle()
        seen["held"] = held_by(service)
        seen["due"] = next_poll_at(service)["waiting"]
        draining = asyncio.create_task(service.drain(grace=60))
        await settle()
        await asyncio.sleep(0.5)  # the release is written on a thread
        seen["held while the poll runs"] = held_by(service)
        polls.finish.set()
        await draining
        seen["held after"] = held_by(service)

    with VirtualTime(datetime.now(UTC)) as clock:
        clock.run(main())
    assert seen["held"] == {"running", "waiting"}
    assert seen["held while the poll runs"] == {"running"}
    assert seen["held after"] == set()
    assert set(polls.started) == {"running"}
    assert next_poll_at(service)["waiting"] == seen["due"]


def next_poll_at(service: Service) -> dict[str, datetime]:
    with db.read_session(service.engine) as session:
        rows = session.execute(select(feed_table.c.name, feed_table.c.next_poll_at))
        return {row.name: row.next_poll_at for row in rows}
