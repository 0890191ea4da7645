"""`monitor run`'s timing: its periodic jobs under a wall clock that steps, long delivery rounds,
/healthz and the stop on SIGTERM. Time is virtual (tests/virtualtime.py): an hour passes in
milliseconds, and the wall clock steps as NTP steps it, with nothing sleeping for real."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import aiohttp
import pytest
from virtualtime import VirtualTime

from monitor.config import Settings, parse_config
from monitor.daemon import Service, run_forever
from monitor.model import Alert
from monitor.outbox import DeliveryStats

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            database: {{url: "sqlite:///{tmp_path / "monitor.db"}"}}
            service: {{listen: null}}
            watchlists:
              sunny: {{query: sunny}}
            """
        ),
        "utf-8",
    )
    return parse_config(config.read_text("utf-8"), str(config))


class Ticks:
    """Stands in for the service's poll and delivery steps: records when each ran (loop time)."""

    def __init__(self, delivery_takes: float = 0.0) -> None:
        self.polls: list[float] = []
        self.deliveries: list[float] = []
        self.delivery_takes = delivery_takes

    async def poll(self) -> None:
        self.polls.append(asyncio.get_running_loop().time())

    async def deliver(self) -> DeliveryStats:
        self.deliveries.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.delivery_takes)  # e.g. waiting for Telegram's rate limit
        return DeliveryStats()


def run_with(
    tmp_path: Path, ticks: Ticks, clock: VirtualTime, scenario: Callable[[], object]
) -> None:
    """`run_forever` with the steps replaced by `ticks`, while `scenario` plays out."""
    service = Service.build(settings(tmp_path), notifiers={})
    service.prepare(now=datetime.now(UTC), alone=True)
    service.poll_tick = ticks.poll  # type: ignore[method-assign]
    service.deliver_tick = ticks.deliver  # type: ignore[method-assign]

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(run_forever(service, stop=stop))
        await scenario()  # type: ignore[misc]
        stop.set()
        await running

    clock.run(main())


def between(times: list[float], start: float, end: float) -> int:
    return sum(start <= t < end for t in times)


def test_fault_68_ticks_go_on_when_the_wall_clock_steps_back_an_hour(tmp_path: Path) -> None:
    """NTP steps the clock back an hour while the daemon runs: polling and delivery go on (a
    scheduler on the wall clock waited for that hour, silently)."""
    ticks = Ticks()
    marks: dict[str, float] = {}

    with VirtualTime(START) as clock:

        async def scenario() -> None:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(60)
            marks["step"] = loop.time()
            clock.step_wall_clock(-3600)
            await asyncio.sleep(120)
            clock.step_wall_clock(+86400)  # and forward a day: no burst of ticks either
            marks["jump"] = loop.time()
            await asyncio.sleep(60)
            marks["end"] = loop.time()

        run_with(tmp_path, ticks, clock, scenario)

    step, jump, end = marks["step"], marks["jump"], marks["end"]
    # A poll tick every 2 s and a delivery tick every second, whatever the wall clock says.
    assert 58 <= between(ticks.polls, step, jump) <= 61
    assert 118 <= between(ticks.deliveries, step, jump) <= 121
    assert 28 <= between(ticks.polls, jump, end) <= 31
    assert 58 <= between(ticks.deliveries, jump, end) <= 61


def test_a_long_delivery_round_delays_the_next_without_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery round that waits 30 s for Telegram's rate limit is normal under load: the next
    round starts when it ends, and nothing is logged each second meanwhile."""
    ticks = Ticks(delivery_takes=30.0)
    caplog.set_level(logging.DEBUG)

    marks: dict[str, float] = {}

    with VirtualTime(START) as clock:

        async def scenario() -> None:
            marks["start"] = asyncio.get_running_loop().time()
            await asyncio.sleep(125)
            marks["stop"] = asyncio.get_running_loop().time()

        run_with(tmp_path, ticks, clock, scenario)

    start, stop = marks["start"], marks["stop"]
    # At 0, 30, 60, 90 and 120 s: one round at a time, the next as soon as one ends.
    assert between(ticks.deliveries, start, stop) == 5
    assert 62 <= between(ticks.polls, start, stop) <= 64  # polling is not held up by delivery
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


# ---- /healthz ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HangingNotifier:
    """A channel whose sends never return (a bug, a peer that accepted and went silent)."""

    def __init__(self) -> None:
        self.tried: list[Alert] = []

    async def send(self, alert: Alert) -> None:
        self.tried.append(alert)
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


def test_healthz_says_delivery_stalled_with_the_reason(tmp_path: Path) -> None:
    """A send that never returns holds the delivery round: after two minutes without an alert sent
    or recorded, /healthz answers 503 and says why (polling goes on all along)."""
    port = free_port()
    (tmp_path / "feed.xml").write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><guid>1</guid>'
        f"<pubDate>{format_datetime(datetime.now(UTC))}</pubDate>"
        "<title>Weather</title><description>Sunny all week</description></item></channel></rss>",
        "utf-8",
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            database: {{url: "sqlite:///{tmp_path / "monitor.db"}"}}
            service: {{listen: "127.0.0.1:{port}"}}
            watchlists: {{sunny: {{query: sunny}}}}
            feeds: [{{name: weather, url: feed.xml}}]
            """
        ),
        "utf-8",
    )
    notifier = HangingNotifier()
    service = Service.build(
        parse_config(config.read_text("utf-8"), str(config)), notifiers={"console": notifier}
    )
    service.prepare(now=datetime.now(UTC), alone=True)
    answers: list[tuple[int, dict[str, object]]] = []

    async def healthz() -> None:
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            answers.append((response.status, await response.json()))

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(run_forever(service, stop=stop))
        await asyncio.sleep(60)
        await healthz()  # the send hangs for a minute: a slow round, not yet a stall
        await asyncio.sleep(90)
        await healthz()
        stop.set()
        await running

    with VirtualTime(datetime.now(UTC)) as clock:
        clock.wait_while(lambda: service.poller.parsing)
        clock.run(main())
    assert len(notifier.tried) == 1
    (early_status, early), (late_status, late) = answers
    assert (early_status, early["status"], early["reason"]) == (200, "ok", None)
    assert (late_status, late["status"]) == (503, "stalled")
    assert re.fullmatch(
        r"delivery stalled: the delivery round started 1[45]\d s ago has sent or recorded no "
        r"alert for 1[45]\d s",
        str(late["reason"]),
    )
    assert late["polls_in_flight"] == 0  # polling itself went on
