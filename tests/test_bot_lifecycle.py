"""The bot's start and its token (issue 12, point 3): a start that fails is retried with back-off and
/healthz says how the bot is; a token Telegram refuses (401) is permanent — the bot is not
restarted, the notifier stops sending with it and leaves the alerts waiting, `send-test` says
"permanent". python-telegram-bot against the Bot API double; the evidence is the calls it got."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botapi import TOKEN, BotAPIDouble
from httpserver import LoopbackServer
from servicekit import ALICE, DESK, outbox, running, say, write_config

from monitor.core.timing import bot_start_delay
from monitor.daemon import Service
from monitor.daemon.health import health_report
from monitor.daemon.leader import Leadership

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bot_start_delay_doubles_up_to_five_minutes() -> None:
    assert [bot_start_delay(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]


def test_a_failed_start_is_retried_with_back_off_and_healthz_says_so(
    double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    """Telegram unreachable at boot: the bot is tried again after 5 s, then 10 s …, /healthz says
    "degraded" with why and when the next try is; once Telegram is back, commands are answered."""
    settings = write_config(tmp_path, f"sqlite:///{tmp_path / 'monitor.db'}", double, feeds)
    service = Service.build(settings)
    service.prepare(now=datetime.now(UTC), alone=True)
    clock = Clock()
    leadership = Leadership(service, monotonic=clock)
    double.go_down()

    def get_me_calls() -> int:
        return len(double.calls_of("getMe"))

    async def tend() -> None:
        start = await leadership.tend_bot()
        if start is not None:
            await asyncio.wait([start])
        await leadership.tend_bot()

    async def scenario() -> dict[str, object]:
        await tend()
        assert get_me_calls() == 1
        down = health_report(service, 0.0)
        clock.now += 4.9
        await tend()
        assert get_me_calls() == 1  # not before 5 s
        clock.now += 0.2
        await tend()
        assert get_me_calls() == 2
        clock.now += 9.9
        await tend()
        assert get_me_calls() == 2  # then not before 10 s
        double.go_down(False)
        clock.now += 0.2
        await tend()
        assert get_me_calls() == 3
        assert service.bot_status == "running"
        assert health_report(service, 0.0)["status"] == "ok"
        assert "/subscribe NAME" in await say(double, ALICE, "/help")
        await leadership.stop()
        return down

    try:
        down = asyncio.run(scenario())
    finally:
        asyncio.run(service.close())
    assert down["status"] == "degraded" and down["reason"] is None
    assert down["bot"] == (
        "not running: cannot start the Telegram bot: Bad Gateway (failed 1 times; next try in 5 s)"
    )


def test_a_rejected_token_is_not_retried_and_healthz_says_why(
    double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = write_config(tmp_path, f"sqlite:///{tmp_path / 'monitor.db'}", double, feeds)
    service = Service.build(settings)
    service.prepare(now=datetime.now(UTC), alone=True)
    clock = Clock()
    leadership = Leadership(service, monotonic=clock)
    double.revoke_token()

    async def scenario() -> None:
        start = await leadership.tend_bot()
        assert start is not None
        await asyncio.wait([start])
        for _ in range(3):
            clock.now += 3600
            assert await leadership.tend_bot() is None
        await leadership.stop()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(service.close())
    assert len(double.calls_of("getMe")) == 1
    report = health_report(service, 0.0)
    assert report["status"] == "degraded"
    assert str(report["bot"]).startswith(
        "stopped: cannot start the Telegram bot: Telegram rejected the bot token (401; check "
        "telegram.token)"
    )
    assert "not tried again: fix telegram.token and restart" in caplog.text
    assert TOKEN not in caplog.text


def test_a_token_revoked_while_running_stops_the_bot(
    double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    settings = write_config(tmp_path, f"sqlite:///{tmp_path / 'monitor.db'}", double, feeds)
    service = Service.build(settings)
    service.prepare(now=datetime.now(UTC), alone=True)
    leadership = Leadership(service, monotonic=Clock())

    async def scenario() -> None:
        start = await leadership.tend_bot()
        assert start is not None
        await asyncio.wait([start])
        await leadership.tend_bot()
        assert service.bot_status == "running"
        double.revoke_token()
        double.send_command("/help", chat_id=ALICE, user_id=ALICE)  # ends the long poll
        deadline = asyncio.get_running_loop().time() + 20
        while service.bot_status == "running":  # until the refused poll reaches the bot
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
            await leadership.tend_bot()
        await leadership.stop()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(service.close())
    assert service.bot_status == (
        "stopped: Telegram rejected the bot token (401; check telegram.token)"
    )
    assert service.bot_trouble


def test_a_401_stops_sending_on_that_token_and_the_alerts_wait(
    database_url: str,
    double: BotAPIDouble,
    feeds: LoopbackServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The token is revoked while alerts are due: one sendMessage meets the 401, nothing more is
    sent with that token, and the alerts stay in the outbox, unharmed, for a fixed token."""
    settings = write_config(tmp_path, database_url, double, feeds)
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            double.revoke_token()
            await service.poll_all()
            first = await service.deliver_tick()
            assert (first.sent, first.failed) == (0, 0)
            tried = len(double.calls_of("sendMessage"))
            assert tried <= 3  # the /subscribe reply, and the two sends under way at the 401
            second = await service.deliver_tick()
            assert (second.sent, second.retried, second.failed) == (0, 0, 0)
            assert len(double.calls_of("sendMessage")) == tried  # nothing more with that token

    asyncio.run(scenario())
    rows = outbox(settings)
    assert len(rows) == 2
    assert {(row.status, row.attempts) for row in rows} == {("pending", 0)}
    assert [r.getMessage() for r in caplog.records].count(
        "telegram.token_rejected reason='Unauthorized' action=no more messages are sent with "
        "this token; alerts wait in the outbox until telegram.token is fixed and the service "
        "restarted"
    ) == 1
    assert TOKEN not in caplog.text


def test_send_test_calls_a_rejected_token_permanent(
    double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    write_config(tmp_path, f"sqlite:///{tmp_path / 'monitor.db'}", double, feeds)
    double.revoke_token()
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", "config.yaml", "send-test", "desk"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        f"failed {DESK}: Telegram rejected the bot token (401 Unauthorized: wrong or revoked; "
        "check telegram.token): Unauthorized (permanent)"
    ), result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_a_leader_whose_lease_runs_out_while_its_bot_starts_leaves_no_poller_behind(
    double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path, postgresql_url: str
) -> None:
    """The bot has begun polling but its start has not finished (its last step, reading the
    subscriptions, waits on a lock another transaction holds) when the leader's lease runs out:
    stepping down ends that polling too. A start abandoned half-way used to leave a getUpdates
    loop running with nobody to stop it, beside the next leader's."""
    from sqlalchemy import text

    from monitor.daemon.leader import STOP_SECONDS
    from monitor.store.db import make_engine

    settings = write_config(tmp_path, postgresql_url, double, feeds)
    service = Service.build(settings)
    service.prepare(now=datetime.now(UTC), alone=True)
    clock = Clock()
    leadership = Leadership(service, monotonic=clock)
    engine = make_engine(postgresql_url)

    def no_open_poll(d: BotAPIDouble) -> bool:
        return all(p.end is not None for p in d.polls)

    async def scenario() -> float:
        with engine.begin() as holder:  # another transaction holds the subscriptions
            holder.execute(text("LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE"))
            await leadership.round()
            assert leadership.leading  # elected: its bot starts
            await asyncio.to_thread(double.wait_for, lambda d: bool(d.polls), 60)
            assert service.bot is None  # still starting
            clock.now += 60  # the lease was not renewed in time
            await leadership.round()
            assert not leadership.leading
            stepped_down = time.monotonic()
        await asyncio.to_thread(double.wait_for, no_open_poll, 5)
        await leadership.stop()
        return stepped_down

    try:
        stepped_down = asyncio.run(scenario())
    finally:
        asyncio.run(service.close())
        engine.dispose()
    assert no_open_poll(double)
    assert [p for p in double.polls if p.start > stepped_down + STOP_SECONDS] == []
