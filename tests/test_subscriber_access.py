"""Access that ends (SPEC §6): checked again when an alert is sent, held alerts included; and
`monitor subscribers`. The service as `monitor run` builds it, python-telegram-bot against the Bot
API double, a real database; the evidence is what the double received."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from botapi import BotAPIDouble
from httpserver import LoopbackServer
from servicekit import (
    ALICE,
    BOB,
    DESK,
    feed,
    make_due,
    outbox,
    running,
    say,
    sent_to,
    serve,
    write_config,
)
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import Settings
from monitor.core.access import AccessPolicy
from monitor.store import subscribers as subs

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
    serve(feeds, feed("first", "second"))
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
