"""/healthz names a polling stall: a poll round that has not ended two minutes after it started,
or every poll slot busy for two minutes. `health_report` is judged at a loop time the test
gives, so no test waits for the minutes to pass; the service's state comes from its own code (a
real `Ticker` running the round, `poll_tick` seeing the slots full)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from monitor.config import parse_config
from monitor.daemon import Service
from monitor.daemon.health import STALL_SECONDS, health_report
from monitor.daemon.service import MAX_CONCURRENT_POLLS
from monitor.daemon.ticks import Ticker


def service_without_feeds(tmp_path: Path) -> Service:
    """The service of a config with a watchlist and no feed: nothing is ever due, so a poll tick
    claims nothing and starts no poll."""
    config = tmp_path / "config.yaml"
    text = f'database: {{url: "sqlite:///{tmp_path / "monitor.db"}"}}\n'
    text += "watchlists: {sunny: {query: sunny}}\n"
    config.write_text(text, "utf-8")
    service = Service.build(parse_config(text, str(config)))
    service.prepare(now=datetime.now(UTC), alone=True)
    return service


def test_a_poll_round_that_has_not_ended_after_two_minutes_is_a_stall(tmp_path: Path) -> None:
    service = service_without_feeds(tmp_path)
    reports: dict[str, dict[str, object]] = {}

    async def scenario() -> None:
        entered, release, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def round_that_hangs() -> None:  # as when the database stops answering
            entered.set()
            await release.wait()

        ticker = service.tickers["poll"] = Ticker("poll", 5.0, round_that_hangs)
        ticking = asyncio.create_task(ticker.run(stop))
        await entered.wait()
        assert ticker.started_at is not None
        started = ticker.started_at
        reports["slow"] = health_report(service, started + STALL_SECONDS - 1)
        reports["stalled"] = health_report(service, started + STALL_SECONDS + 1)
        stop.set()
        release.set()
        await ticking
        assert ticker.finished_at is not None
        reports["ended"] = health_report(service, ticker.finished_at + 3600)

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(service.close())
    assert (reports["slow"]["status"], reports["slow"]["reason"]) == ("ok", None)
    assert (reports["stalled"]["status"], reports["stalled"]["reason"]) == (
        "stalled",
        "polling stalled: the poll round started 121 s ago has not ended "
        "(is the database answering?)",
    )
    # A round that ended is not a stall, however long ago: the next one is not due yet.
    assert (reports["ended"]["status"], reports["ended"]["reason"]) == ("ok", None)
    assert reports["ended"]["last_poll_round_seconds_ago"] == 3600.0


def test_every_poll_slot_busy_for_two_minutes_is_a_stall(tmp_path: Path) -> None:
    service = service_without_feeds(tmp_path)
    reports: dict[str, dict[str, object]] = {}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        service.polling.update(range(MAX_CONCURRENT_POLLS))  # as many polls under way as slots
        full_at = loop.time()
        await service.poll_tick()
        assert service.polls_full_since is not None
        assert full_at <= service.polls_full_since <= loop.time()
        seen_full = service.polls_full_since
        reports["busy"] = health_report(service, seen_full + STALL_SECONDS - 1)
        await service.poll_tick()  # still full: the stall is counted from when it was first seen
        reports["stalled"] = health_report(service, seen_full + 300)
        service.polling.discard(0)  # a poll ended
        await service.poll_tick()
        reports["freed"] = health_report(service, seen_full + 300)

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(service.close())
    assert (reports["busy"]["status"], reports["busy"]["reason"]) == ("ok", None)
    assert reports["busy"]["polls_in_flight"] == MAX_CONCURRENT_POLLS
    assert (reports["stalled"]["status"], reports["stalled"]["reason"]) == (
        "stalled",
        f"polling stalled: all {MAX_CONCURRENT_POLLS} poll slots have been busy for 300 s "
        "while due feeds wait",
    )
    assert (reports["freed"]["status"], reports["freed"]["reason"]) == ("ok", None)
