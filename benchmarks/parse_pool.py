"""Benchmark: what parsing in worker processes costs on a normal feed, and what it saves when huge
feeds arrive.

    python benchmarks/parse_pool.py [--rounds 200] [--huge-items 300000] [--normal-feeds 20]

1. A normal feed (50 items with a paragraph of HTML each): the median time of one parse through
   the daemon's `ParsePool` (warm workers: the body goes to a worker, the items come back pickled)
   beside `feeds.parse_feed` in this process and `feedparser.parse` alone, in the same run.
2. Starvation: two feeds of HUGE_ITEMS tiny items (about 10 MB each at 300,000) arrive together
   with NORMAL_FEEDS normal feeds. The old way, two parse threads and a 30 s deadline that counted
   the wait for a thread, beside the pool (two workers, 30 s of CPU a feed): how many normal feeds
   were parsed, and the longest a normal feed waited for its items.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import feedparser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from monitor.errors import FeedParseError
from monitor.feeds import parse_feed
from monitor.parse_pool import ParsePool

FETCHED_AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PARAGRAPH = (
    "Wang Yi said on Monday that Taiwan is the first red line that must not be crossed, "
    "and that China and Russia would deepen their coordination on security matters. "
)


def rss(items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{items}</channel></rss>"
    ).encode()


def normal_feed(n: int = 0) -> bytes:
    return rss(
        "".join(
            f"<item><guid>f{n}-{i}</guid><title>Foreign minister heads to Moscow ({n}/{i})</title>"
            f"<link>https://example.org/{n}/{i}</link>"
            f"<description>&lt;p&gt;{PARAGRAPH * 4}&lt;/p&gt;</description>"
            "<pubDate>Mon, 18 Sep 2023 08:00:00 GMT</pubDate></item>"
            for i in range(50)
        )
    )


def huge_feed(items: int) -> bytes:
    return rss("".join(f"<item><title>t{i}</title></item>" for i in range(items)))


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def cost_on_a_normal_feed(rounds: int) -> list[tuple[str, float]]:
    body = normal_feed()
    in_process, alone, pooled = [], [], []
    pool = ParsePool()
    try:
        await pool.parse(body, fetched_at=FETCHED_AT)  # start a worker
        for _ in range(rounds):
            started = time.perf_counter()
            feedparser.parse(io.BytesIO(body), sanitize_html=True, resolve_relative_uris=True)
            alone.append(time.perf_counter() - started)
            started = time.perf_counter()
            parse_feed(body, fetched_at=FETCHED_AT)
            in_process.append(time.perf_counter() - started)
            started = time.perf_counter()
            await pool.parse(body, fetched_at=FETCHED_AT)
            pooled.append(time.perf_counter() - started)
    finally:
        await pool.close()
    return [
        (f"feedparser.parse alone ({len(body) // 1024} KB, 50 items)", median_ms(alone)),
        ("parse_feed in this process (the old way)", median_ms(in_process)),
        ("ParsePool.parse, warm worker (the daemon now)", median_ms(pooled)),
    ]


async def starvation_with_threads(huge: bytes, normals: list[bytes]) -> tuple[int, float]:
    """The old design: two threads, a 30 s deadline counted from the call (queue included)."""
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=2)
    started = time.perf_counter()
    waits: list[float] = []

    async def one(body: bytes) -> bool:
        call = functools.partial(parse_feed, body, fetched_at=FETCHED_AT)
        try:
            async with asyncio.timeout(30):
                await loop.run_in_executor(executor, call)
        except TimeoutError:
            return False
        waits.append(time.perf_counter() - started)
        return True

    outcomes = await asyncio.gather(one(huge), one(huge), *(one(body) for body in normals))
    executor.shutdown(wait=True, cancel_futures=True)
    return sum(outcomes[2:]), max(waits[2:], default=0.0) if len(waits) > 2 else float("nan")


async def starvation_with_pool(huge: bytes, normals: list[bytes]) -> tuple[int, float]:
    pool = ParsePool()
    started = time.perf_counter()
    waits: list[float] = []

    async def one(body: bytes, normal: bool) -> bool:
        try:
            await pool.parse(body, fetched_at=FETCHED_AT)
        except FeedParseError:
            return False
        if normal:
            waits.append(time.perf_counter() - started)
        return True

    try:
        outcomes = await asyncio.gather(
            one(huge, False), one(huge, False), *(one(body, True) for body in normals)
        )
    finally:
        await pool.close()
    return sum(outcomes[2:]), max(waits, default=float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--huge-items", type=int, default=300_000)
    parser.add_argument("--normal-feeds", type=int, default=20)
    args = parser.parse_args()

    rows = asyncio.run(cost_on_a_normal_feed(args.rounds))
    base = rows[1][1]
    print(f"One parse of a normal feed, median of {args.rounds} (ms)")
    print(f"{'':<52} {'ms':>8} {'vs old way':>11}")
    for name, ms in rows:
        print(f"{name:<52} {ms:>8.2f} {ms - base:>+10.2f}")

    huge = huge_feed(args.huge_items)
    normals = [normal_feed(n) for n in range(args.normal_feeds)]
    print()
    print(
        f"Two huge feeds ({len(huge) / 1e6:.1f} MB, {args.huge_items:,} items each) and "
        f"{args.normal_feeds} normal feeds, parsed together"
    )
    print(f"{'':<44} {'normal feeds parsed':>20} {'longest wait (s)':>17}")
    for name, run in (
        ("2 threads, 30 s deadline incl. queue (old)", starvation_with_threads),
        ("ParsePool, 2 workers, 30 s CPU a feed (now)", starvation_with_pool),
    ):
        parsed, wait = asyncio.run(run(huge, normals))
        print(f"{name:<44} {f'{parsed}/{len(normals)}':>20} {wait:>17.2f}")


if __name__ == "__main__":
    main()
