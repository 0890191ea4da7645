"""Telegram end to end through the service: python-telegram-bot itself against the local Bot API
double, the subscriber bot, the poll pipeline and the outbox, on a real database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from botapi import TOKEN, BotAPIDouble
from httpserver import LoopbackServer
from sqlalchemy import select

from monitor.config import Settings, parse_config
from monitor.daemon import Service, start_bot
from monitor.store import db
from monitor.store import subscribers as subs
from monitor.store.tables import alerts

ROOT = Path(__file__).resolve().parents[1]
ALICE, BOB, DESK = 1001, 1002, -100777
FEED = (
    '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
    "<item><guid>ref-1</guid>"
    f"<pubDate>{format_datetime(datetime.now(UTC))}</pubDate>"
    "<title>الصين &amp;lt;/b&amp;gt;&amp;lt;a href=x&amp;gt;وروسيا &amp;amp; تايوان</title>"
    "<link>https://example.org/ref-1</link>"
    "<description>قضية تايوان هي «أول خط أحمر»</description></item></channel></rss>"
).encode()


@pytest.fixture
def feed_url() -> Iterator[str]:
    """The URL of FEED, served on loopback."""
    with LoopbackServer() as server:
        server.respond("/a.xml", body=FEED, headers={"Content-Type": "application/rss+xml"})
        yield server.url("/a.xml")


@contextlib.asynccontextmanager
async def running(settings: Settings, *, bot: bool = True) -> AsyncIterator[Service]:
    """The service as `monitor run` builds it (with the subscriber bot), closed afterwards."""
    service = Service.build(settings)
    service.prepare(now=datetime.now(UTC), alone=True)
    subscriber_bot = await start_bot(service) if bot else None
    assert subscriber_bot is not None or not bot
    try:
        yield service
    finally:
        if subscriber_bot is not None:
            await subscriber_bot.stop()
        await service.close()


async def say(double: BotAPIDouble, chat: int, command: str) -> None:
    """A user sends a command; returns once the bot has answered."""
    before = len(double.messages_to(chat))
    double.send_command(command, chat_id=chat, user_id=chat)
    await double.messages_eventually(before + 1, chat_id=chat)


def settings_for(
    database_url: str, feed_url: str, double: BotAPIDouble, tmp_path: Path
) -> Settings:
    text = textwrap.dedent(
        f"""
        database: {{url: "{database_url}"}}
        fetch: {{allow_private: true}}
        service: {{listen: null}}
        feeds:
          - {{name: a, url: '{feed_url}'}}
        entities:
          taiwan: {{aliases: ["Taiwan", "تايوان"]}}
          red-line: {{aliases: ["red line", "خط أحمر"]}}
        watchlists:
          taiwan-red-line: {{query: "@taiwan AND @red-line", notify: [desk]}}
        channels:
          desk: {{type: telegram, chat_ids: [{DESK}]}}
        telegram:
          token: "{TOKEN}"
          api_url: "{double.api_url}"
          subscriptions: open
        """
    )
    config = tmp_path / "config.yaml"
    config.write_text(text, "utf-8")
    return parse_config(text, str(config))


def make_due(settings: Settings, *where: Any) -> None:
    """The waiting alerts' time has come (a digest's hour, a mute's end)."""
    engine = db.make_engine(settings.database.url)
    try:
        with db.transaction(engine) as session:
            session.execute(alerts.update().where(*where).values(next_attempt_at=datetime.now(UTC)))
    finally:
        engine.dispose()


def outbox_rows(settings: Settings) -> dict[tuple[str, str], Any]:
    engine = db.make_engine(settings.database.url)
    try:
        with db.read_session(engine) as session:
            return {(r.channel, r.recipient): r for r in session.execute(select(alerts)).all()}
    finally:
        engine.dispose()


def test_fault_46_subscribers_and_channels_get_the_alert_and_a_blocked_user_is_deactivated(
    database_url: str, double: BotAPIDouble, feed_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, feed_url, double, tmp_path)

    async def scenario() -> None:
        async with running(settings) as service:
            for chat in (ALICE, BOB):
                await say(double, chat, "/subscribe taiwan-red-line")
            double.fail(BOB, "blocked")
            await service.poll_all()
            stats = await service.deliver_tick()
            assert (stats.sent, stats.failed) == (2, 1)

    asyncio.run(scenario())
    (alert_to_alice,) = double.messages_to(ALICE)[1:]
    assert alert_to_alice.parse_mode == "HTML"
    # feed text arrives literally, hits in bold
    assert "الصين </b><a href=x>وروسيا & تايوان" in alert_to_alice.plain
    bold = [alert_to_alice.plain[e.start : e.end] for e in alert_to_alice.entities if e.type == "b"]
    assert "تايوان" in bold and "خط أحمر" in bold
    (to_desk,) = double.messages_to(DESK)
    assert "taiwan-red-line" in to_desk.plain

    engine = db.make_engine(settings.database.url)
    try:
        with db.read_session(engine) as session:
            assert subs.get_subscriber(session, BOB).active is False  # type: ignore[union-attr]
            assert subs.get_subscriber(session, ALICE).active is True  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert {key: row.status for key, row in outbox_rows(settings).items()} == {
        ("desk", str(DESK)): "sent",
        (subs.SUBSCRIBERS_CHANNEL, str(ALICE)): "sent",
        (subs.SUBSCRIBERS_CHANNEL, str(BOB)): "failed",
    }


def test_retry_after_postpones_without_counting_and_mute_holds_for_a_digest(
    database_url: str, double: BotAPIDouble, feed_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, feed_url, double, tmp_path)

    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await say(double, BOB, "/subscribe taiwan-red-line")
            await say(double, BOB, "/mute 2h")
            double.fail(DESK, "retry_after", retry_after=45)
            await service.poll_all()
            await service.deliver_tick()

    before = datetime.now(UTC)
    asyncio.run(scenario())
    rows = outbox_rows(settings)
    desk = rows["desk", str(DESK)]
    assert desk.status == "pending" and desk.attempts == 0
    assert desk.next_attempt_at >= before + timedelta(seconds=45)
    held = rows[subs.SUBSCRIBERS_DIGEST_CHANNEL, str(BOB)]
    assert held.status == "pending"
    assert held.next_attempt_at >= before + timedelta(hours=2) - timedelta(seconds=5)
    assert rows[subs.SUBSCRIBERS_CHANNEL, str(ALICE)].status == "sent"  # Alice, at once
    assert len(double.messages_to(BOB)) == 2  # only the two replies: nothing while muted


def test_send_test_reports_success_and_the_exact_error(
    double: BotAPIDouble, tmp_path: Path
) -> None:
    settings_for(f"sqlite:///{tmp_path / 'monitor.db'}", "examples/x.xml", double, tmp_path)
    config = str(tmp_path / "config.yaml")

    def send_test(channel: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitor.cli", "--config", config, "send-test", channel],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    ok = send_test("desk")
    assert ok.returncode == 0, ok.stderr
    assert f"sent to {DESK}" in ok.stderr
    (sample,) = double.messages_to(DESK)
    assert "Test alert from news-monitor" in sample.plain
    assert TOKEN not in ok.stderr + ok.stdout

    double.fail(DESK, "blocked")
    refused = send_test("desk")
    assert refused.returncode == 1
    assert "blocked" in refused.stderr and "permanent" in refused.stderr
    unknown = send_test("nowhere")
    assert unknown.returncode == 2 and "no channel 'nowhere'" in unknown.stderr


def test_a_digest_subscriber_gets_one_digest_at_its_time_and_unmute_releases_held_alerts(
    database_url: str, double: BotAPIDouble, feed_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, feed_url, double, tmp_path)

    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await say(double, ALICE, "/digest daily 08:00 Asia/Riyadh")
            await say(double, BOB, "/subscribe taiwan-red-line")
            await say(double, BOB, "/mute 2h")
            await service.poll_all()
            await service.deliver_tick()
            assert len(double.messages_to(ALICE)) == 2  # replies only: the alert waits
            assert len(double.messages_to(BOB)) == 2

            await say(double, BOB, "/unmute")
            await service.deliver_tick()  # Bob's held alert is due now
            assert len(double.messages_to(BOB)) == 4

            make_due(settings, alerts.c.recipient == str(ALICE))  # Alice's digest time
            await service.deliver_tick()

    asyncio.run(scenario())
    digest_to_alice = double.messages_to(ALICE)[-1]
    assert digest_to_alice.plain.startswith("Digest: 1 alert — taiwan-red-line\n")
    assert "تايوان" in digest_to_alice.plain
    released_to_bob = double.messages_to(BOB)[-1]
    assert "taiwan-red-line" in released_to_bob.plain


def test_a_telegram_channel_can_take_a_daily_digest(
    database_url: str, double: BotAPIDouble, feed_url: str, tmp_path: Path
) -> None:
    settings_for(database_url, feed_url, double, tmp_path)
    config = tmp_path / "config.yaml"
    text = config.read_text("utf-8").replace(
        f"chat_ids: [{DESK}]}}", f"chat_ids: [{DESK}], digest: daily 07:30 Europe/Paris}}"
    )
    settings = parse_config(text, str(config))

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await service.poll_all()
            await service.deliver_tick()
            assert double.messages_to(DESK) == []  # held for the digest
            make_due(settings)
            await service.deliver_tick()

    asyncio.run(scenario())
    (digest,) = double.messages_to(DESK)
    assert digest.plain.startswith("Digest: 1 alert — taiwan-red-line\n")


def test_fault_49_a_fixed_chat_that_migrated_gets_the_alert_at_its_new_id(
    database_url: str,
    double: BotAPIDouble,
    feed_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    new_id = -100888
    settings = settings_for(database_url, feed_url, double, tmp_path)
    double.fail(DESK, "migrated", migrate_to=new_id)

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await service.poll_all()
            await service.deliver_tick()
            await service.deliver_tick()  # the next tick resends it at the new id

    asyncio.run(scenario())
    assert double.messages_to(DESK) == []
    (moved,) = double.messages_to(new_id)
    assert "taiwan-red-line" in moved.plain
    assert "update chat_ids in the config" in caplog.text
