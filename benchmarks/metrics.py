"""Benchmark: what one scrape of /metrics costs as the number of feeds grows.

    python benchmarks/metrics.py [--feeds 1000 10000] [--scrapes 20]

Each scrape reads the database (feeds failing or gone, each feed's last success, the outbox per
channel) and renders the text format, as the `/metrics` handler does. An SQLite database is filled
with FEEDS feeds (a tenth failing, each with a last success) and 1,000 pending alerts. Printed:
CPU time and wall time per scrape and the size of the answer, beside the naive baseline in the same
run: the one count (`count_gone`) the endpoint made before, with the counters only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import generate_latest
from sqlalchemy import insert, update

from monitor.daemon.health import Metrics
from monitor.store import db
from monitor.store.alerts import outbox_backlog
from monitor.store.feeds import count_gone, feeds_for_metrics, sync_feeds
from monitor.store.tables import alerts, feeds, items, stories

ALERTS = 1000


def fill(url: str, count: int) -> None:
    now = datetime.now(UTC)
    engine = db.make_engine(url)
    try:
        db.ensure_schema(engine, upgrade=True)
        with db.transaction(engine) as session:
            ids = sync_feeds(
                session, [(f"feed-{n}", f"https://example.org/{n}.xml") for n in range(count)], now
            )
            session.execute(update(feeds).values(last_polled_at=now, last_success_at=now))
            failing = [ids[f"feed-{n}"] for n in range(0, count, 10)]
            session.execute(
                update(feeds).where(feeds.c.id.in_(failing)).values(consecutive_failures=2)
            )
            story = session.execute(
                insert(stories).values(content_hash="h", created_at=now).returning(stories.c.id)
            ).scalar_one()
            item = session.execute(
                insert(items)
                .values(
                    feed_id=ids["feed-0"],
                    identity="i",
                    story_id=story,
                    title="t",
                    text="t",
                    content_hash="h",
                    hash_version=1,
                    fetched_at=now,
                )
                .returning(items.c.id)
            ).scalar_one()
            session.execute(
                insert(alerts),
                [
                    {
                        "story_id": story,
                        "item_id": item,
                        "watchlist": "w",
                        "channel": f"channel-{n % 5}",
                        "recipient": str(n),
                        "next_attempt_at": now,
                        "created_at": now - timedelta(seconds=n),
                    }
                    for n in range(ALERTS)
                ],
            )
    finally:
        engine.dispose()


def measure(url: str, scrapes: int, *, full: bool) -> tuple[float, float, int]:
    """Median CPU and wall seconds per scrape, and the answer's size in bytes."""
    engine = db.make_engine(url)
    metrics = Metrics()
    cpu, wall = [], []
    size = 0
    try:
        for _ in range(scrapes):
            started, started_cpu = time.perf_counter(), time.process_time()
            with db.read_session(engine) as session:
                if full:
                    state = feeds_for_metrics(session)
                    backlog = outbox_backlog(session)
                    metrics.record_state(state, backlog, set(), datetime.now(UTC))
                else:
                    metrics.feeds_gone.set(count_gone(session))
            body = generate_latest(metrics.registry)
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started)
            size = len(body)
    finally:
        engine.dispose()
    return statistics.median(cpu), statistics.median(wall), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    print(f"{'feeds':>6}  {'scrape':<28} {'CPU ms':>8} {'wall ms':>8} {'bytes':>9}")
    for count in args.feeds:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'monitor.db'}"
            fill(url, count)
            for label, full in (("before: count_gone only", False), ("now: every metric", True)):
                cpu, wall, size = measure(url, args.scrapes, full=full)
                print(f"{count:>6}  {label:<28} {cpu * 1000:>8.1f} {wall * 1000:>8.1f} {size:>9,}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
