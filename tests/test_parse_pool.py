"""Parsing in worker processes (monitor/parse_pool.py): the same result as in process, a CPU budget
and a memory budget per feed, a feed over budget failing alone, and workers killed at close.
Bounded work is shown by the budgets (CPU time, address space), never by the wall clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from monitor.errors import FeedParseError
from monitor.feeds import parse_feed
from monitor.parse_pool import ParsePool

FETCHED_AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def rss(items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{items}</channel></rss>"
    ).encode()


NORMAL = rss(
    "".join(
        f"<item><guid>g{i}</guid><title>Title {i}</title><link>https://example.org/{i}</link>"
        f"<description>&lt;p&gt;Body of item {i}, Taiwan and the red line.&lt;/p&gt;</description>"
        "<pubDate>Mon, 18 Sep 2023 08:00:00 GMT</pubDate></item>"
        for i in range(50)
    )
)
# About 2.5 s of CPU for feedparser (300,000 such items take 12 s): far over a 0.5 s budget.
MANY_TINY_ITEMS = rss("".join(f"<item><title>t{i}</title></item>" for i in range(60_000)))
# Few items, but one 10 MB text node: feedparser maps some 200 MB for it.
ONE_HUGE_TEXT = rss(
    "<item><title>a</title><description>" + "word " * 2_000_000 + "</description></item>"
)


def parse_in(pool: ParsePool, body: bytes) -> object:
    return pool.parse(body, url="https://example.org/feed", fetched_at=FETCHED_AT, source="f")


def test_a_parse_in_a_worker_gives_what_parse_feed_gives() -> None:
    async def main() -> object:
        pool = ParsePool()
        try:
            return await parse_in(pool, NORMAL)
        finally:
            await pool.close()

    expected = parse_feed(NORMAL, url="https://example.org/feed", fetched_at=FETCHED_AT, source="f")
    assert asyncio.run(main()) == expected


def test_not_a_feed_is_refused_with_the_parsers_reason() -> None:
    async def main() -> None:
        pool = ParsePool()
        try:
            with pytest.raises(FeedParseError, match="not a feed: an HTML page"):
                await parse_in(pool, b"<html><head><title>Login</title></head></html>")
            assert (await parse_in(pool, NORMAL)).articles  # type: ignore[attr-defined]
        finally:
            await pool.close()

    asyncio.run(main())


def test_fault_15_a_feed_over_its_cpu_budget_fails_alone() -> None:
    """Two feeds that need seconds of CPU and one normal feed, on two workers with a budget of
    0.5 s of CPU a feed: the two fail on their budget, the normal one is parsed meanwhile, and the
    pool goes on parsing afterwards."""

    async def main() -> list[object]:
        pool = ParsePool(workers=2, cpu_seconds=0.5, large_body=1024)
        try:
            first = await asyncio.gather(
                parse_in(pool, MANY_TINY_ITEMS),
                parse_in(pool, MANY_TINY_ITEMS),
                parse_in(pool, NORMAL),
                return_exceptions=True,
            )
            return [*first, await parse_in(pool, NORMAL)]
        finally:
            await pool.close()

    big, other_big, normal, after = asyncio.run(main())
    for refused in (big, other_big):
        assert isinstance(refused, FeedParseError)
        assert str(refused) == "over budget: parsing took more than 0.5 s of CPU time"
    assert len(normal.articles) == len(after.articles) == 50  # type: ignore[attr-defined]


def test_a_feed_over_its_memory_budget_fails_alone() -> None:
    async def main() -> list[object]:
        pool = ParsePool(memory_bytes=128 * 2**20)
        try:
            huge = await asyncio.gather(parse_in(pool, ONE_HUGE_TEXT), return_exceptions=True)
            return [*huge, await parse_in(pool, NORMAL)]  # in a fresh worker
        finally:
            await pool.close()

    huge, normal = asyncio.run(main())
    assert isinstance(huge, FeedParseError)
    assert str(huge) == "over budget: parsing needed more than 128 MB of memory"
    assert len(normal.articles) == 50  # type: ignore[attr-defined]


def test_close_kills_a_parse_under_way_and_refuses_the_waiting_ones() -> None:
    async def main() -> tuple[list[object], list[int | None]]:
        pool = ParsePool(workers=2, large_body=1024)
        parses = [asyncio.create_task(parse_in(pool, MANY_TINY_ITEMS)) for _ in range(3)]
        while not pool._busy:  # the first parse has its worker
            await asyncio.sleep(0)
        workers = list(pool._busy)
        await pool.close()
        outcomes = await asyncio.gather(*parses, return_exceptions=True)
        return outcomes, [worker.process.returncode for worker in workers]

    outcomes, returncodes = asyncio.run(main())
    assert all(isinstance(outcome, FeedParseError) for outcome in outcomes)
    assert returncodes == [-9]
