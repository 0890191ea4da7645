"""Claims and lease renewals do not wait for the worker threads: when every one of them is busy
(storing, parsing, waiting for a lock), a replica still claims due feeds and renews the leases of
the polls it has under way, so no lease expires behind its own work and no feed is polled twice.
On real parts: feeds on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from httpserver import LoopbackServer
from servicekit import feed, serve, service_config
from sqlalchemy import select, update

from monitor.config import load_config
from monitor.daemon import Service
from monitor.store import db
from monitor.store.tables import feeds as feed_table

WORKERS = 2
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
PATIENCE = 60.0  # only a failing test waits this long


@pytest.fixture
def busy_workers() -> Iterator[threading.Event]:
    """Set when the worker threads may go on; until then each one the test fills is held."""
    release = threading.Event()
    yield release
    release.set()


def lease_ends(engine_url: str) -> dict[str, datetime | None]:
    engine = db.make_engine(engine_url)
    try:
        with db.read_session(engine) as session:
            rows = session.execute(select(feed_table.c.name, feed_table.c.lease_until))
            return {row.name: row.lease_until for row in rows}
    finally:
        engine.dispose()


def age_leases(engine_url: str) -> None:
    """Every lease ends long ago unless renewed (renewing writes DB now + `service.lease`)."""
    engine = db.make_engine(engine_url)
    try:
        with db.transaction(engine) as session:
            session.execute(
                update(feed_table)
                .where(feed_table.c.lease_owner.is_not(None))
                .values(lease_until=LONG_AGO)
            )
    finally:
        engine.dispose()


def test_claims_and_renewals_go_on_while_every_worker_thread_is_busy(
    database_url: str,
    feeds: LoopbackServer,
    tmp_path: Path,
    busy_workers: threading.Event,
) -> None:
    serve(feeds, feed("first"))
    names = {"a": feeds.url("/a.xml"), "b": feeds.url("/a.xml?b"), "c": feeds.url("/a.xml?c")}
    settings = load_config(service_config(tmp_path / "config.yaml", database_url, names))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        workers = ThreadPoolExecutor(WORKERS, thread_name_prefix="worker")
        loop.set_default_executor(workers)
        service = Service.build(settings, notifiers={})
        service.prepare(alone=True)
        held = [asyncio.to_thread(busy_workers.wait) for _ in range(WORKERS)]
        holding = asyncio.gather(*held)
        try:
            await asyncio.wait_for(service.poll_tick(), PATIENCE)
            assert set(service.in_flight) and len(service.in_flight) == len(names)
            claimed = lease_ends(database_url)
            assert all(end is not None and end > LONG_AGO for end in claimed.values())

            age_leases(database_url)
            await asyncio.wait_for(service.renew_leases(), PATIENCE)
            renewed = lease_ends(database_url)
            assert all(end is not None and end > LONG_AGO for end in renewed.values()), renewed
            assert not any(task.done() for task in service.in_flight.values())  # still held
        finally:
            busy_workers.set()
            await holding
            await service.drain()
            await service.close()

    asyncio.run(scenario())
