"""The sender (monitor/outbox.py) when the database fails it: a delivered alert whose "sent" write
fails is not sent again (FAULTS 74). Real databases (SQLite, PostgreSQL): a trigger makes the write
fail as a full disk does. Time is virtual (tests/virtualtime.py): the sender's waits pass at once."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from servicekit import RecordingNotifier
from sqlalchemy import Engine, event, select, text, update
from virtualtime import VirtualTime

from monitor.config import parse_config
from monitor.daemon import Service
from monitor.store import db
from monitor.store.tables import alerts
from monitor.store.tables import feeds as feed_table

FEED = f"""<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>
<item><guid>wx-1</guid><title>Weather</title><link>https://example.org/wx-1</link>
<pubDate>{format_datetime(datetime.now(UTC))}</pubDate>
<description>Sunny all week</description></item></channel></rss>"""


PATIENCE = 60.0


def build(database_url: str, tmp_path: Path, notifier: RecordingNotifier) -> Service:
    (tmp_path / "feed.xml").write_text(FEED, "utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            database: {{url: "{database_url}"}}
            service: {{listen: null}}
            watchlists: {{sunny: {{query: sunny}}}}
            feeds: [{{name: weather, url: feed.xml}}]
            """
        ),
        "utf-8",
    )
    service = Service.build(
        parse_config(config.read_text("utf-8"), str(config)), notifiers={"console": notifier}
    )
    service.prepare(now=datetime.now(UTC), alone=True)
    return service


def refuse_sent_writes(engine: Engine, refuse: bool) -> None:
    """While `refuse`, every write that marks an alert sent fails as on a full disk."""
    with db.transaction(engine) as session:
        if engine.dialect.name == "sqlite":
            session.execute(text("DROP TRIGGER IF EXISTS refuse_sent"))
            if refuse:
                session.execute(
                    text(
                        "CREATE TRIGGER refuse_sent BEFORE UPDATE OF status ON alerts "
                        "WHEN NEW.status = 'sent' BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
                    )
                )
        else:
            session.execute(text("DROP TRIGGER IF EXISTS refuse_sent ON alerts"))
            if refuse:
                session.execute(
                    text(
                        "CREATE OR REPLACE FUNCTION refuse_sent() RETURNS trigger AS $$ BEGIN "
                        "IF NEW.status = 'sent' THEN RAISE EXCEPTION "
                        "'could not extend file: No space left on device'; END IF; RETURN NEW; END "
                        "$$ LANGUAGE plpgsql"
                    )
                )
                session.execute(
                    text(
                        "CREATE TRIGGER refuse_sent BEFORE UPDATE ON alerts FOR EACH ROW "
                        "EXECUTE FUNCTION refuse_sent()"
                    )
                )


def expire_leases(engine: Engine) -> None:
    """What five minutes do to a lease (leases are timed by the database's clock, not ours)."""
    with db.transaction(engine) as session:
        past = datetime.now(UTC) - timedelta(days=1)
        session.execute(
            update(alerts).where(alerts.c.lease_owner.is_not(None)).values(lease_until=past)
        )


def statuses(engine: Engine) -> list[str]:
    try:
        with db.read_session(engine) as session:
            return list(session.execute(select(alerts.c.status)).scalars())
    finally:
        engine.dispose()


def test_fault_74_a_sent_write_that_fails_for_40_s_is_retried_and_the_alert_not_sent_again(
    database_url: str, tmp_path: Path
) -> None:
    notifier = RecordingNotifier()
    service = build(database_url, tmp_path, notifier)
    engine = service.engine

    async def main() -> None:
        try:
            (polled,) = await service.poll_all()
            assert polled.alerts == 1
            await asyncio.to_thread(refuse_sent_writes, engine, True)

            async def disk_freed_after_40_s() -> None:
                await asyncio.sleep(40)
                await asyncio.to_thread(refuse_sent_writes, engine, False)

            freeing = asyncio.create_task(disk_freed_after_40_s())
            await service.deliver_tick()
            await freeing
            # Five minutes on, whatever lease was left has expired: another round sends nothing.
            await asyncio.to_thread(expire_leases, engine)
            await service.deliver_tick()
        finally:
            await service.close()

    with VirtualTime(datetime.now(UTC)) as clock:
        clock.wait_while(lambda: service.poller.parsing)
        clock.run(main())
    assert len(notifier.sent) == 1
    assert statuses(engine) == ["sent"]


def test_fault_74_an_alert_sent_while_the_disk_stays_full_past_its_lease_is_not_sent_again(
    database_url: str, tmp_path: Path
) -> None:
    notifier = RecordingNotifier()
    service = build(database_url, tmp_path, notifier)
    engine = service.engine

    async def main() -> None:
        try:
            await service.poll_all()
            await asyncio.to_thread(refuse_sent_writes, engine, True)
            await (
                service.deliver_tick()
            )  # sent; the write keeps failing until the lease nears its end
            await asyncio.to_thread(expire_leases, engine)
            await service.deliver_tick()  # claimed again: remembered as sent, still not written
            assert statuses(engine) == ["pending"]
            await asyncio.to_thread(refuse_sent_writes, engine, False)
            await asyncio.to_thread(expire_leases, engine)
            await service.deliver_tick()  # claimed again: now recorded
        finally:
            await service.close()

    with VirtualTime(datetime.now(UTC)) as clock:
        clock.wait_while(lambda: service.poller.parsing)
        clock.run(main())
    assert len(notifier.sent) == 1
    assert statuses(engine) == ["sent"]


class HeldNotifier:
    """A channel whose send waits until `go` is set (Telegram taking its time to answer)."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.sent = 0

    async def send(self, alert: object) -> None:
        await self.go.wait()
        self.sent += 1

    async def close(self) -> None:
        return None


POLL_WRITES = 8  # more than the default pool's worker threads on this machine (cores + 4, ≥ 5)


def test_a_sent_write_goes_before_the_poll_writes_waiting_for_the_lock(tmp_path: Path) -> None:
    """While a poll holds SQLite's write lock, eight more poll writes queue for it (filling every
    worker thread of the default pool) and Telegram accepts an alert: its "sent" mark is written
    right after the holder, before any of the queued poll writes. Before, it waited for a worker
    thread behind them all, then for the lock behind them all, while its lease ran down."""
    notifier = HeldNotifier()
    service = build(f"sqlite:///{tmp_path / 'monitor.db'}", tmp_path, RecordingNotifier())
    service.outbox.notifiers["console"] = notifier  # type: ignore[assignment]
    engine = service.engine
    lock = db.writer_lock(engine)
    assert lock is not None
    commits: list[str] = []  # the thread of each write transaction, in the order they commit

    @event.listens_for(engine, "commit")
    def committed(_connection: object) -> None:
        commits.append(threading.current_thread().name)

    holding, release = threading.Event(), threading.Event()

    def long_poll_write() -> None:
        with db.transaction(engine) as session:
            session.execute(update(feed_table).values(last_error="held"))
            holding.set()
            release.wait(PATIENCE)

    def poll_write() -> None:
        with db.transaction(engine) as session:
            session.execute(update(feed_table).values(last_error="queued"))

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(PATIENCE):  # only a failing test waits this long
            while not condition():
                await asyncio.sleep(0.01)

    async def main() -> None:
        try:
            (polled,) = await service.poll_all()
            assert polled.alerts == 1
            delivering = asyncio.create_task(service.deliver_tick())  # claims, then sends
            await until(lambda: service.outbox.in_flight != set())
            holder = threading.Thread(target=long_poll_write, name="holder")
            holder.start()
            await asyncio.to_thread(holding.wait, PATIENCE)
            commits.clear()
            queued = [
                asyncio.create_task(asyncio.to_thread(poll_write)) for _ in range(POLL_WRITES)
            ]
            await until(lambda: lock.waiting >= 5)  # every worker thread waits for the lock
            notifier.go.set()  # Telegram answers: the "sent" mark is written
            await until(lambda: lock.urgent_waiting == 1)
            release.set()
            stats = await delivering
            await asyncio.gather(*queued)
            holder.join()
            assert stats.sent == 1
        finally:
            release.set()
            await service.close()

    asyncio.run(main())
    assert commits[0] == "holder"
    assert commits[1].startswith("outbox-db")
    assert all(name.startswith("asyncio") for name in commits[2:]), commits
    assert len(commits) == 2 + POLL_WRITES
    assert statuses(engine) == ["sent"]
