"""Access that ends (SPEC §6): checked again when an alert is sent, held alerts included; and
`monitor subscribers`. The service as `monitor run` builds it, python-telegram-bot against the Bot
API double, a real database; the evidence is what the double received."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from botapi import TOKEN, BotAPIDouble
from httpserver import LoopbackServer
from sqlalchemy import select
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import Settings, parse_config
from monitor.core.access import AccessPolicy
from monitor.daemon import Service, start_bot
from monitor.store import db
from monitor.store import subscribers as subs
from monitor.store.tables import alerts

ALICE, BOB, DESK = 1001, 1002, -100777


def feed(*titles: str) -> bytes:
    """An RSS feed with one item per title, each published now and matching taiwan-red-line."""
    published = format_datetime(datetime.now(UTC))
    items = "".join(
        f"<item><guid>{title}</guid><title>{title}</title>"
        f"<link>https://example.org/{title}</link><pubDate>{published}</pubDate>"
        "<description>Taiwan is the first red line, the minister said.</description></item>"
        for title in titles
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{items}</channel></rss>"
    ).encode()


@pytest.fixture
def double() -> Iterator[BotAPIDouble]:
    with BotAPIDouble() as server:
        yield server


@pytest.fixture
def feeds() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        server.respond("/a.xml", body=feed("first"), headers={"Content-Type": "text/xml"})
        yield server


def write_config(
    tmp_path: Path,
    database_url: str,
    double: BotAPIDouble,
    feeds: LoopbackServer,
    telegram: str = "subscriptions: open",
) -> Settings:
    text = textwrap.dedent(
        f"""
        database: {{url: "{database_url}"}}
        fetch: {{allow_private: true}}
        service: {{listen: null}}
        feeds:
          - {{name: a, url: '{feeds.url("/a.xml")}'}}
        watchlists:
          taiwan-red-line: {{query: "taiwan AND \\"red line\\"", notify: [desk]}}
        channels:
          desk: {{type: telegram, chat_ids: [{DESK}]}}
        telegram:
          token: "{TOKEN}"
          api_url: "{double.api_url}"
        """
    ) + textwrap.indent(telegram, "  ")
    config = tmp_path / "config.yaml"
    config.write_text(text, "utf-8")
    return parse_config(text, str(config))


@contextlib.asynccontextmanager
async def running(settings: Settings, *, bot: bool = True) -> AsyncIterator[Service]:
    service = Service.build(settings)
    service.prepare(now=datetime.now(UTC), alone=True)
    subscriber_bot = await start_bot(service) if bot else None
    try:
        yield service
    finally:
        if subscriber_bot is not None:
            await subscriber_bot.stop()
        await service.close()


async def say(double: BotAPIDouble, chat: int, command: str) -> str:
    """A user sends a command; the bot's reply, as Telegram shows it."""
    before = len(double.messages_to(chat))
    double.send_command(command, chat_id=chat, user_id=chat)
    replies = await double.messages_eventually(before + 1, chat_id=chat)
    return replies[before].plain


def sent_to(double: BotAPIDouble, chat: int, since: int = 0) -> list[dict[str, Any]]:
    """The sendMessage calls for `chat` from call number `since` on."""
    return [
        params
        for method, params in double.calls[since:]
        if method == "sendMessage" and params.get("chat_id") == chat
    ]


def outbox(settings: Settings) -> list[Any]:
    engine = db.make_engine(settings.database.url)
    try:
        with db.read_session(engine) as session:
            return list(session.execute(select(alerts).order_by(alerts.c.id)).all())
    finally:
        engine.dispose()


def make_due(settings: Settings) -> None:
    engine = db.make_engine(settings.database.url)
    try:
        with db.transaction(engine) as session:
            session.execute(alerts.update().values(next_attempt_at=datetime.now(UTC)))
    finally:
        engine.dispose()


# ---- the rule ----------------------------------------------------------------------------------


def test_access_policy() -> None:
    open_ = AccessPolicy.of("open")
    assert open_.admits(5, None) and open_.refusal(5, 5) is None
    assert open_.refusal(5, 5, blocked=True) == "blocked by the administrator"
    allow = AccessPolicy.of("allowlist", [ALICE, DESK])
    assert allow.admits(ALICE, ALICE)
    assert allow.admits(DESK, BOB)  # the group itself is listed
    assert allow.admits(-5, ALICE)  # a group subscribed by a listed member
    assert not allow.admits(BOB, BOB)
    assert allow.refusal(BOB, BOB) == "not on telegram.allow"
    off = AccessPolicy.of("off", [ALICE])
    assert not off.admits(ALICE, ALICE) and off.refusal(ALICE, ALICE) == "subscriptions are off"


# ---- access ends at send time ------------------------------------------------------------------


def test_a_user_removed_from_the_allowlist_gets_nothing_after_the_restart_held_included(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    both = f"subscriptions: allowlist\nallow: [{ALICE}, {BOB}]\n"
    settings = write_config(tmp_path, database_url, double, feeds, both)

    async def before_restart() -> None:
        async with running(settings) as service:
            for chat in (ALICE, BOB):
                assert await say(double, chat, "/subscribe taiwan-red-line") == (
                    "Subscribed to taiwan-red-line."
                )
            await say(double, BOB, "/digest daily 08:00")
            await service.poll_all()
            stats = await service.deliver_tick()
            assert stats.sent == 2  # Alice and the desk; Bob's waits for his digest

    asyncio.run(before_restart())
    [held] = [row for row in outbox(settings) if row.recipient == str(BOB)]
    assert held.channel == subs.SUBSCRIBERS_DIGEST_CHANNEL and held.status == "pending"

    # Bob is taken off the allowlist; the service restarts; his digest time comes; news arrives.
    restart = write_config(
        tmp_path, database_url, double, feeds, f"subscriptions: allowlist\nallow: [{ALICE}]\n"
    )
    feeds.respond("/a.xml", body=feed("first", "second"), headers={"Content-Type": "text/xml"})
    make_due(restart)
    mark = len(double.calls)

    async def after_restart() -> None:
        async with running(restart) as service:
            await service.poll_all()
            stats = await service.deliver_tick()
            assert (stats.sent, stats.dropped) == (2, 2)  # Alice and the desk; Bob's two dropped

    asyncio.run(after_restart())
    assert sent_to(double, BOB, mark) == []
    assert [p["text"].count("second") > 0 for p in sent_to(double, ALICE, mark)] == [True]
    assert all(row.recipient != str(BOB) for row in outbox(restart))


def test_subscriptions_off_stops_every_subscriber_but_not_the_configured_chats(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    settings = write_config(tmp_path, database_url, double, feeds)

    async def subscribe() -> None:
        async with running(settings):
            await say(double, ALICE, "/subscribe taiwan-red-line")

    asyncio.run(subscribe())
    off = write_config(tmp_path, database_url, double, feeds, "subscriptions: off\n")
    mark = len(double.calls)

    async def poll() -> None:
        async with running(off) as service:
            await service.poll_all()
            stats = await service.deliver_tick()
            assert (stats.sent, stats.dropped) == (1, 1)

    asyncio.run(poll())
    assert sent_to(double, ALICE, mark) == []
    assert len(sent_to(double, DESK, mark)) == 1


def test_unsubscribing_during_a_mute_drops_the_held_alert(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    settings = write_config(tmp_path, database_url, double, feeds)

    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await say(double, ALICE, "/mute 2h")
            await service.poll_all()
            await service.deliver_tick()
            assert await say(double, ALICE, "/unsubscribe taiwan-red-line") == (
                "Unsubscribed from taiwan-red-line."
            )
            await say(double, ALICE, "/unmute")
            make_due(settings)
            await service.deliver_tick()

    asyncio.run(scenario())
    replies = [m.plain.split(":")[0].split(".")[0] for m in double.messages_to(ALICE)]
    assert replies == [
        "Subscribed to taiwan-red-line",
        "Muted for 2h, until " + replies[1].removeprefix("Muted for 2h, until "),
        "Unsubscribed from taiwan-red-line",
        "Unmuted",
    ]
    assert len(sent_to(double, ALICE)) == 4  # the four replies, no alert
    assert [row.recipient for row in outbox(settings)] == [str(DESK)]


def test_digest_off_releases_what_was_held_at_once(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    settings = write_config(tmp_path, database_url, double, feeds)

    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await say(double, ALICE, "/digest daily 08:00 Asia/Riyadh")
            await service.poll_all()
            await service.deliver_tick()
            assert len(double.messages_to(ALICE)) == 2  # the replies: the alert waits
            reply = await say(double, ALICE, "/digest off")
            assert reply == "Digest off: each alert comes as it happens. 1 held alert comes now."
            stats = await service.deliver_tick()
            assert stats.sent == 1

    asyncio.run(scenario())
    released = double.messages_to(ALICE)[-1]
    assert "first" in released.plain and "taiwan-red-line" in released.plain


# ---- monitor subscribers -----------------------------------------------------------------------


def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    config = str(settings.config_dir / "config.yaml")
    result = CliRunner().invoke(app, ["--config", config, "subscribers", *args])
    return result.exit_code, result.stdout, result.stderr


def test_monitor_subscribers_lists_removes_and_blocks(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    settings = write_config(tmp_path, database_url, double, feeds)

    async def subscribe() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await say(double, ALICE, "/mute 2h")
            await say(double, BOB, "/subscribe taiwan-red-line")
            await say(double, BOB, "/digest daily 08:00 Europe/London")
            await service.poll_all()

    asyncio.run(subscribe())
    code, out, _ = cli(settings, "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["chat"], r["state"], r["waiting"], r["digest"]) for r in records] == [
        (ALICE, "active", 1, None),
        (BOB, "active", 1, "daily 08:00 Europe/London"),
    ]
    assert records[0]["muted_until"] is not None and records[0]["type"] == "private"
    assert records[0]["subscriptions"] == [
        {"watchlist": "taiwan-red-line", "topic": None, "muted_until": None, "configured": True}
    ]
    code, table, _ = cli(settings)
    assert code == 0 and "taiwan-red-line" in table and "daily 08:00" in table

    assert cli(settings, "block", str(BOB))[1] == f"blocked chat {BOB}: 1 waiting alert dropped\n"
    assert cli(settings, "block", str(BOB))[1] == f"chat {BOB} was already blocked\n"
    code, out, _ = cli(settings, "remove", str(ALICE))
    assert (code, out) == (0, f"removed chat {ALICE}: 1 subscription, 1 waiting alert dropped\n")
    code, _, err = cli(settings, "remove", str(ALICE))
    assert code == 1 and f"no subscriber {ALICE}" in err
    assert (
        cli(settings, "block", str(DESK))[1] == f"blocked chat {DESK}: 0 waiting alerts dropped\n"
    )
    records = [json.loads(line) for line in cli(settings, "--json")[1].splitlines()]
    assert [(r["chat"], r["state"]) for r in records] == [(DESK, "blocked"), (BOB, "blocked")]
    assert [row.recipient for row in outbox(settings)] == [str(DESK)]  # the desk channel's

    async def refused() -> None:
        async with running(settings):
            assert await say(double, BOB, "/subscribe taiwan-red-line") == (
                "This chat is blocked by the bot's administrator."
            )
            assert (await say(double, ALICE, "/mine")).startswith("You have no subscriptions")

    asyncio.run(refused())
    assert cli(settings, "unblock", "--", str(DESK))[1] == f"unblocked chat {DESK}\n"
    assert cli(settings, "unblock", str(DESK))[1] == f"chat {DESK} was not blocked\n"
