"""Quiet polls — a 304, or a body identical to the last — have their poll state written for many
feeds at once, and the daemon claims more due feeds as soon as polls end: a round of 304s goes at
the pace of the HTTP client. On real parts: feeds on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from httpserver import LoopbackServer
from sqlalchemy import Engine, event, select

from monitor.config import Settings, parse_config
from monitor.daemon import Service
from monitor.daemon.service import MAX_CLAIMED_FEEDS, MAX_CONCURRENT_POLLS, REFILL_BATCH
from monitor.store import db
from monitor.store.tables import feeds


def settings_with(database_url: str, server: LoopbackServer, n: int, tmp_path: Path) -> Settings:
    lines = [
        f"database: {{url: '{database_url}'}}",
        f"fetch: {{allow_private: true, per_host: {MAX_CONCURRENT_POLLS}}}",
        "service: {listen: null}",
        "watchlists: {sunny: {query: sunny}}",
        "feeds:",
        *(f"  - {{name: f{i:03d}, url: '{server.url(f'/etag?feed={i}')}'}}" for i in range(n)),
    ]
    config = tmp_path / "config.yaml"
    config.write_text("\n".join(lines) + "\n", "utf-8")
    return parse_config(config.read_text("utf-8"), str(config))


@contextlib.contextmanager
def poll_state_writes() -> Iterator[list[bool]]:
    """One entry per statement that writes a poll's state (True: an executemany)."""
    sent: list[bool] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE FEEDS") and "last_status=" in statement:
            sent.append(many)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


@contextlib.contextmanager
def claims() -> Iterator[list[str]]:
    """One entry per statement that leases feeds to a process (a claim)."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE FEEDS SET LEASE_OWNER"):
            sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def feed_rows(settings: Settings) -> list[Any]:
    engine = db.make_engine(settings.database.url)
    try:
        with db.read_session(engine) as session:
            return list(session.execute(select(feeds).order_by(feeds.c.name)))
    finally:
        engine.dispose()


def test_a_round_of_304s_writes_every_feeds_poll_state_in_one_statement(
    database_url: str, http_server: LoopbackServer, tmp_path: Path
) -> None:
    settings = settings_with(database_url, http_server, 30, tmp_path)

    async def go() -> None:
        service = Service.build(settings, notifiers={})
        service.prepare(now=datetime.now(UTC), alone=True)
        try:
            assert {r.status for r in await service.poll_all()} == {"ok"}
            service.poller.quiet.delay = 3600  # nothing written but by the round's own flush
            with poll_state_writes() as writes:
                results = await service.poll_all()
            assert {r.status for r in results} == {"not_modified"}
            # One statement for the 30 feeds, not 30 transactions: an executemany on SQLite,
            # one UPDATE of the values in arrays on PostgreSQL.
            assert writes == [database_url.startswith("sqlite")]
        finally:
            await service.close()

    asyncio.run(go())
    rows = feed_rows(settings)
    assert len(rows) == 30
    assert {(r.last_status, r.lease_owner, r.consecutive_failures) for r in rows} == {
        ("not_modified", None, 0)
    }
    assert all(r.etag == '"v1"' for r in rows)


def test_the_daemon_claims_more_due_feeds_as_polls_end_and_writes_what_waits_when_it_stops(
    database_url: str, http_server: LoopbackServer, tmp_path: Path
) -> None:
    n = MAX_CONCURRENT_POLLS * 2 + 20
    settings = settings_with(database_url, http_server, n, tmp_path)

    async def settled(service: Service) -> None:
        """Until no poll and no claim is under way (each waited for, not slept on)."""
        async with asyncio.timeout(300):
            while service.in_flight or service.refilling is not None:
                pending = [*service.in_flight.values()]
                if service.refilling is not None:
                    pending.append(service.refilling)  # type: ignore[arg-type]
                await asyncio.wait(pending)

    async def go() -> None:
        service = Service.build(settings, notifiers={})
        service.prepare(now=datetime.now(UTC), alone=True)
        try:
            # One tick of `monitor run` claims 50; each poll that ends makes room for the next.
            await service.poll_tick()
            await settled(service)
            await service.poller.flush()
            assert {r.last_status for r in feed_rows(settings)} == {"ok"}
            # Every feed due again: 304s now, their state waiting to be written together.
            service.poller.quiet.delay = 3600
            with db.transaction(service.engine) as session:
                session.execute(
                    feeds.update().values(next_poll_at=datetime(2000, 1, 1, tzinfo=UTC))
                )
            with claims() as claimed:
                await service.poll_tick()
                await settled(service)
            # The tick's claim, then one for every REFILL_BATCH polls that end at most (and one
            # that finds nothing left): not one transaction per poll.
            assert 2 <= len(claimed) <= 2 + (n - MAX_CLAIMED_FEEDS) // REFILL_BATCH
            assert service.poller.quiet.waiting == n
            assert {r.last_status for r in feed_rows(settings)} == {"ok"}  # not written yet
        finally:
            await service.close()  # the stop writes what waits

    asyncio.run(go())
    rows = feed_rows(settings)
    assert len(rows) == n
    assert {(r.last_status, r.lease_owner) for r in rows} == {("not_modified", None)}


def test_polls_that_end_are_replaced_by_one_claim_per_batch_of_free_slots(
    database_url: str, http_server: LoopbackServer, tmp_path: Path
) -> None:
    """With more feeds due than slots, a poll that ends leaves its slot free until REFILL_BATCH
    are: then one claim fills them all (a claim is a write transaction)."""
    settings = settings_with(database_url, http_server, 1, tmp_path)

    async def go() -> None:
        service = Service.build(settings, notifiers={})
        service.prepare(now=datetime.now(UTC), alone=True)
        claimed: list[int] = []

        async def claim() -> None:
            claimed.append(MAX_CLAIMED_FEEDS - len(service.in_flight))

        service.poll_tick = claim  # type: ignore[method-assign]
        never = asyncio.get_running_loop().create_future()
        try:
            service.in_flight = {i: never for i in range(MAX_CLAIMED_FEEDS)}  # type: ignore[misc]
            service.more_due = True
            for feed_id in range(REFILL_BATCH - 1):
                service._forget(feed_id, never)
                assert service.refilling is None
            service._forget(REFILL_BATCH - 1, never)
            assert service.refilling is not None
            await service.refilling
            assert claimed == [REFILL_BATCH]
        finally:
            never.cancel()
            await service.close()

    asyncio.run(go())
