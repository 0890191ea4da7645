"""Replicas take turns deciding a story only where they could disagree: on PostgreSQL, two
transactions about unrelated stories (no indexed fingerprint hash in common) do not wait for each
other, two about the same story do, and the locks are taken in ascending order so that two
transactions wanting overlapping hashes cannot deadlock.

Each transaction runs in a thread of its own; the test watches only its own connections (by
backend pid) in `pg_locks` and `pg_blocking_pids`."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from httpserver import LoopbackServer
from replicas import Cluster, eventually
from servicekit import service_config
from sqlalchemy import Engine, text

from monitor.config import load_config
from monitor.core import stories
from monitor.daemon import Service
from monitor.pipeline import PollResult
from monitor.store import db
from monitor.store.story_locks import lock_stories

PATIENCE = 60.0  # only a failing test waits this long


def fresh_keys(count: int) -> list[int]:
    """`count` hash-like keys (below 2**61) no other test uses, ascending."""
    return sorted(uuid.uuid4().int % (2**61 - 1) for _ in range(count))


@dataclass
class Transaction:
    """A transaction in its own thread: takes `lock_stories(keys)`, sets `locked`, then holds
    the locks until `finish` is set, and commits."""

    engine: Engine
    keys: list[int]
    locked: threading.Event = field(default_factory=threading.Event)
    finish: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None
    started: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Transaction:
        self.thread.start()
        assert self.started.wait(PATIENCE)
        return self

    def _run(self) -> None:
        try:
            with db.transaction(self.engine) as session:
                self.pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
                self.started.set()
                lock_stories(session, self.keys)
                self.locked.set()
                self.finish.wait()  # the fixture sets it if the test fails
        except BaseException as exc:
            self.error = exc
            self.started.set()
            raise

    def end(self) -> None:
        self.finish.set()
        self.thread.join(PATIENCE)
        assert not self.thread.is_alive()
        assert self.error is None


@pytest.fixture
def engine(postgresql_url: str) -> Iterator[Engine]:
    engine = db.make_engine(postgresql_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def transactions(engine: Engine) -> Iterator[list[Transaction]]:
    """The test's transactions; each one still open at the end is ended."""
    started: list[Transaction] = []
    yield started
    for transaction in started:
        transaction.finish.set()
    for transaction in started:
        transaction.thread.join(PATIENCE)


def blockers(engine: Engine, waiting: Transaction) -> set[int]:
    """The backends `waiting` waits for (empty while it waits for none)."""
    with engine.connect() as connection:
        pids = connection.execute(
            text("SELECT pg_blocking_pids(:pid)"), {"pid": waiting.pid}
        ).scalar_one()
    return set(pids)


def held_keys(engine: Engine, transaction: Transaction) -> set[int]:
    """The advisory keys `transaction` holds (a bigint key is classid · 2**32 + objid)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT (classid::bigint << 32) | objid::bigint AS key FROM pg_locks "
                "WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND pid = :pid"
            ),
            {"pid": transaction.pid},
        )
        return {row.key for row in rows}


def test_unrelated_stories_do_not_wait_for_each_other_and_one_story_does(
    engine: Engine, transactions: list[Transaction]
) -> None:
    story, unrelated = fresh_keys(8), fresh_keys(8)
    copy = [*fresh_keys(6), *story[2:4]]  # a near-copy shares some of the story's hashes

    def begin(keys: list[int]) -> Transaction:
        transaction = Transaction(engine, keys)
        transactions.append(transaction)
        return transaction.start()

    first = begin(story)
    assert first.locked.wait(PATIENCE)

    other = begin(unrelated)
    assert other.locked.wait(PATIENCE), "a transaction on an unrelated story waited"
    assert not first.finish.is_set()  # while the first still holds its story

    second = begin(copy)
    assert eventually(lambda: blockers(engine, second) == {first.pid}, "the copy waits")
    assert not second.locked.is_set()
    first.end()
    assert second.locked.wait(PATIENCE)  # and goes on once the first has committed
    second.end()
    other.end()


def test_the_locks_are_taken_in_ascending_order(
    engine: Engine, transactions: list[Transaction]
) -> None:
    low, middle, high = fresh_keys(3)
    holder = Transaction(engine, [middle])
    transactions.append(holder)
    holder.start()
    assert holder.locked.wait(PATIENCE)

    taker = Transaction(engine, [high, low, middle])  # in any order
    transactions.append(taker)
    taker.start()
    assert eventually(lambda: blockers(engine, taker) == {holder.pid}, "it waits for the middle")
    # Waiting for the middle key, it holds the lower one and not yet the higher one: a
    # transaction that holds the higher key and wants the middle one cannot deadlock with it.
    assert held_keys(engine, taker) == {low}
    holder.end()
    assert taker.locked.wait(PATIENCE)
    assert held_keys(engine, taker) == {low, middle, high}
    taker.end()


def test_no_lock_is_taken_without_a_key(engine: Engine, transactions: list[Transaction]) -> None:
    none = Transaction(engine, [])
    transactions.append(none)
    none.start()
    assert none.locked.wait(PATIENCE)
    assert held_keys(engine, none) == set()
    none.end()


# ---- two replicas, copies of one story at the same moment ---------------------------------------

COPIED = (
    "Taiwan said on Monday that the blockade drill crossed a red line, and the defence ministry "
    "in Taipei put its forces on alert as warships gathered east of the island while officials "
    "in Washington and Tokyo called for calm and talks between the two sides of the strait"
)


def copy_feed(title: str) -> bytes:
    published = format_datetime(datetime.now(UTC))
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"<item><guid>{title}</guid><title>{title}</title><pubDate>{published}</pubDate>"
        f"<description>{COPIED}</description></item></channel></rss>"
    ).encode()


def waiting_for(engine: Engine, holder: Transaction, application_name: str) -> int:
    """How many backends of `application_name` wait for `holder`."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                    "AND :holder = ANY(pg_blocking_pids(pid))"
                ),
                {"name": application_name, "holder": holder.pid},
            ).scalar_one()
        )


def test_two_replicas_storing_copies_of_one_story_at_once_make_one_story(
    engine: Engine,
    postgresql_url: str,
    http_server: LoopbackServer,
    tmp_path: Path,
    transactions: list[Transaction],
) -> None:
    """Two pollers, as two replicas, store a copy each of one wire story (other headlines, the
    same body) at the same moment: both wait on the story's hashes, take turns, and the second
    joins the first's story, so the desk gets one alert."""
    http_server.respond("/a.xml", body=copy_feed("Blockade crossed a red line, Taiwan says"))
    http_server.respond("/b.xml", body=copy_feed("Taiwan: drill is a red line"))
    urls = {"a": http_server.url("/a.xml"), "b": http_server.url("/b.xml")}
    settings = load_config(service_config(tmp_path / "config.yaml", postgresql_url, urls))
    first = Service.build(settings, notifiers={})
    first.prepare(alone=True)  # the schema and the feeds
    asyncio.run(first.close())

    # Everyone deciding this story waits for the test until both pollers are at the lock.
    holder = Transaction(engine, list(stories.fingerprint(COPIED)[: stories.INDEXED]))
    transactions.append(holder)
    holder.start()
    assert holder.locked.wait(PATIENCE)

    results: list[PollResult] = []

    def replica() -> None:
        async def poll_one() -> None:
            service = Service.build(settings, notifiers={})
            try:
                (state,) = await asyncio.to_thread(service._claim, 1, everything=True)
                results.append(await service._poll_one(state, force=False))
            finally:
                await service.close()

        asyncio.run(poll_one())

    pollers = [threading.Thread(target=replica) for _ in range(2)]
    for poller in pollers:
        poller.start()
    name = f"monitor {socket.gethostname()}:{os.getpid()}"
    eventually(lambda: waiting_for(engine, holder, name) == 2, "both pollers wait for the story")
    holder.end()
    for poller in pollers:
        poller.join(PATIENCE)
    assert sorted(r.new_items for r in results) == [1, 1]

    with engine.connect() as connection:
        story_ids = connection.execute(text("SELECT DISTINCT story_id FROM items")).scalars().all()
        alerts = connection.execute(text("SELECT count(*) FROM alerts")).scalar_one()
    assert len(story_ids) == 1
    assert alerts == 1
    assert sum(r.alerts for r in results) == 1


# ---- SIGTERM while a poll waits for a story -----------------------------------------------------


def one_feed(feed_url: str) -> Callable[[str, str, str], str]:
    def config(name: str, api_url: str, listen: str) -> str:
        return (
            'database: {url: "{database_url}"}\n'
            "fetch: {allow_private: true}\n"
            f'service: {{listen: "{listen}"}}\n'
            f"feeds:\n  - {{name: a, url: '{feed_url}'}}\n"
            "watchlists:\n  taiwan: {query: Taiwan, notify: [console]}\n"
            "channels:\n  console: {type: console}\n"
        )

    return config


def test_a_replica_whose_poll_waits_for_a_story_still_stops_on_sigterm(
    engine: Engine,
    postgresql_url: str,
    http_server: LoopbackServer,
    tmp_path: Path,
    transactions: list[Transaction],
) -> None:
    """The poll is cancelled, but its transaction goes on waiting in a thread that nothing can
    interrupt (here for as long as the test holds the story): the process exits all the same, and
    cleanly, and the database drops the waiting transaction with its connection."""
    http_server.respond("/a.xml", body=copy_feed("Blockade crossed a red line, Taiwan says"))
    holder = Transaction(engine, list(stories.fingerprint(COPIED)[: stories.INDEXED]))
    transactions.append(holder)
    holder.start()
    assert holder.locked.wait(PATIENCE)

    with Cluster(tmp_path, postgresql_url, one_feed(http_server.url("/a.xml")), str) as cluster:
        replica = cluster.start("r")
        name = f"monitor {replica.owner}"
        eventually(lambda: waiting_for(engine, holder, name) == 1, "the poll waits for the story")
        try:
            code = replica.terminate(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {PATIENCE:g} s after SIGTERM:\n{replica.output()}")
        output = replica.output()
        assert code == 0, output
        assert "run.stopped" in output
        assert "Traceback" not in output, output
        assert not holder.finish.is_set()  # the story was held throughout
    holder.end()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM items")).scalar_one() == 0
