"""Subscribers steering the bot (issue 12): groups and their admins, forum topics, the buttons under
alerts, per-watchlist mutes, /unsubscribe all, /stop, /start NAME, descriptions, watchlists that
are gone, and the per-user command quota (FAULTS 37). python-telegram-bot against the Bot API
double; the evidence is the calls the double received."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botapi import TOKEN, BotAPIDouble
from httpserver import LoopbackServer
from servicekit import ALICE, BOB, outbox, running, say, sent_to, write_config
from sqlalchemy import Engine

from monitor.bot import NOT_ADMIN, SubscriberBot
from monitor.core import buttons
from monitor.core.ratelimit import CommandQuota
from monitor.store import db
from monitor.store import subscribers as subs

FORUM, GROUP = -1001234567890, -100777
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
WATCHLISTS = {
    "taiwan-red-line": "Taiwan and the red line, in any language",
    "china-russia": None,
}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


def run_bot(
    double: BotAPIDouble,
    engine: Engine,
    scenario: Callable[[], Awaitable[None]],
    **kwargs: Any,
) -> None:
    """Start a bot on `engine`, run `scenario()`, stop the bot."""
    bot = SubscriberBot(
        TOKEN, engine, WATCHLISTS, api_url=double.api_url, clock=lambda: NOW, **kwargs
    )

    async def go() -> None:
        await bot.start()
        try:
            await scenario()
        finally:
            await bot.stop()

    asyncio.run(go())


def subscriptions(engine: Engine, chat: int) -> list[subs.Subscription]:
    with db.read_session(engine) as session:
        return subs.subscription_details(session, chat)


def replies_to(double: BotAPIDouble, chat: int) -> list[str]:
    return [m.plain for m in double.messages_to(chat)]


# ---- groups -----------------------------------------------------------------------------------


def test_commands_for_another_bot_are_not_answered(double: BotAPIDouble, engine: Engine) -> None:
    async def scenario() -> None:
        for text in ("/start@other_bot", "/help@other_bot", "/frobnicate", "/frobnicate@other_bot"):
            double.send_command(text, chat_id=GROUP, user_id=ALICE)
        double.send_command("/frobnicate@other_bot", chat_id=ALICE)
        # Updates are handled in order: once this one is answered, the others were handled.
        assert (await say(double, GROUP, "/frobnicate@monitor_test_bot")).startswith(
            "I do not know /frobnicate."
        )
        assert (await say(double, ALICE, "/frobnicate")).startswith("I do not know /frobnicate.")
        assert (await say(double, GROUP, "/help@monitor_test_bot")).startswith("Commands")

    run_bot(double, engine, scenario)
    assert len(sent_to(double, GROUP)) == 2  # the two commands that named this bot
    assert len(sent_to(double, ALICE)) == 1


def test_a_non_admin_group_member_cannot_change_the_groups_subscriptions(
    double: BotAPIDouble, engine: Engine
) -> None:
    double.set_member(GROUP, ALICE, "creator")
    double.set_member(GROUP, BOB, "member")

    async def scenario() -> None:
        assert await say(double, GROUP, "/subscribe taiwan-red-line", user_id=ALICE) == (
            "Subscribed to taiwan-red-line."
        )
        for command in ("/unsubscribe taiwan-red-line", "/mute 2h", "/stop", "/digest hourly"):
            assert await say(double, GROUP, command, user_id=BOB) == NOT_ADMIN
        assert (await say(double, GROUP, "/mine", user_id=BOB)).startswith("Your subscriptions")
        # An anonymous admin writes as the group itself: no need to ask.
        assert await say(double, GROUP, "/subscribe china-russia", as_chat=True) == (
            "Subscribed to china-russia."
        )
        assert await say(double, GROUP, "/unsubscribe china-russia", user_id=ALICE) == (
            "Unsubscribed from china-russia."
        )

    run_bot(double, engine, scenario)
    assert [s.watchlist for s in subscriptions(engine, GROUP)] == ["taiwan-red-line"]
    asked = [(p["chat_id"], p["user_id"]) for p in double.calls_of("getChatMember")]
    assert asked == [(GROUP, ALICE), (GROUP, BOB)]  # each answer is remembered for a while
    with db.read_session(engine) as session:
        group = subs.get_subscriber(session, GROUP)
    assert group is not None and group.user_id == ALICE and group.chat_type == "group"


def test_a_topic_subscription_gets_its_alerts_in_that_topic(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    settings = write_config(tmp_path, database_url, double, feeds)
    double.set_member(FORUM, ALICE, "administrator")

    async def scenario() -> None:
        async with running(settings) as service:
            reply = await say(double, FORUM, "/subscribe taiwan-red-line", thread_id=17)
            assert reply == "Subscribed to taiwan-red-line.\nIts alerts come to this topic."
            await service.poll_all()
            assert (await service.deliver_tick()).sent == 2

    asyncio.run(scenario())
    reply, alert = sent_to(double, FORUM)
    assert reply["message_thread_id"] == 17  # the answer, in the topic it was asked in
    assert alert["message_thread_id"] == 17  # the alert, in the topic it was subscribed in
    assert "first" in alert["text"]


# ---- buttons under alerts ----------------------------------------------------------------------


def test_alert_buttons_mute_for_a_day_and_unsubscribe_and_say_so(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    settings = write_config(tmp_path, database_url, double, feeds)
    engine = db.make_engine(settings.database.url)

    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await service.poll_all()
            await service.deliver_tick()
            alert = double.messages_to(ALICE)[-1]
            assert alert.buttons == [
                ("🔕 Mute for a day", "mute:taiwan-red-line"),
                ("✖️ Unsubscribe", "unsub:taiwan-red-line"),
            ]
            double.press_button(alert, "mute:taiwan-red-line")
            [answer] = await double.answers_eventually(1)
            assert answer["text"] == "Muted taiwan-red-line for a day"
            [muted] = await double.edits_eventually(1)
            assert (muted.chat_id, muted.message_id) == (ALICE, alert.message_id)
            assert muted.buttons == [("🔔 Unmute", "unmute:taiwan-red-line")]
            [until] = [s.muted_until for s in subscriptions(engine, ALICE)]
            assert until is not None and until > datetime.now(UTC) + timedelta(hours=23)

            double.press_button(muted, "unsub:taiwan-red-line")
            gone = (await double.edits_eventually(2))[-1]
            assert gone.buttons == [("↩️ Subscribe again", "sub:taiwan-red-line")]
            assert subscriptions(engine, ALICE) == []

            double.press_button(gone, "sub:taiwan-red-line")
            await double.edits_eventually(3)

    try:
        asyncio.run(scenario())
        assert [s.watchlist for s in subscriptions(engine, ALICE)] == ["taiwan-red-line"]
    finally:
        engine.dispose()
    alert_text = double.messages_to(ALICE)[-1].plain
    muted, gone, back = double.edits
    assert muted.plain is not None and muted.plain.startswith(alert_text)
    assert "🔕 taiwan-red-line muted until" in muted.plain
    # Each note replaces the one before: the alert stays, one line says what was done last.
    assert gone.plain == alert_text + "\n\n✖️ Unsubscribed from taiwan-red-line."
    assert back.plain == alert_text + "\n\n↩️ Subscribed to taiwan-red-line again."
    assert back.buttons == [b for b in double.messages_to(ALICE)[-1].buttons]
    assert [a["text"] for a in double.answers] == [
        "Muted taiwan-red-line for a day",
        "Unsubscribed from taiwan-red-line",
        "Subscribed to taiwan-red-line",
    ]


def test_a_non_admins_button_press_is_refused_in_a_group(
    double: BotAPIDouble, engine: Engine
) -> None:
    double.set_member(GROUP, ALICE, "administrator")
    long_name = "x" * 70

    async def scenario() -> None:
        await say(double, GROUP, "/subscribe taiwan-red-line", user_id=ALICE)
        message = double.messages_to(GROUP)[-1]
        double.press_button(message, "unsub:taiwan-red-line", user_id=BOB)
        [answer] = await double.answers_eventually(1)
        assert (answer["text"], answer.get("show_alert")) == (NOT_ADMIN, True)
        double.press_button(message, buttons.button_data("mute", long_name), user_id=ALICE)
        double.press_button(message, "launch:missiles", user_id=ALICE)
        _, gone, unknown = await double.answers_eventually(3)
        assert gone["text"] == "That watchlist no longer exists."
        assert unknown["text"] == "This button is no longer in use."

    run_bot(double, engine, scenario)
    assert double.edits == []
    assert [s.watchlist for s in subscriptions(engine, GROUP)] == ["taiwan-red-line"]


def test_button_data_fits_telegrams_64_bytes() -> None:
    assert buttons.button_data("unsub", "taiwan-red-line") == "unsub:taiwan-red-line"
    long_name = "تايوان-" * 20
    data = buttons.button_data("unmute", long_name)
    assert len(data.encode()) <= buttons.MAX_DATA_BYTES and data.startswith("unmute#")
    press = buttons.parse_press(data)
    assert press is not None and press.action == "unmute" and press.matches(long_name)
    assert not press.matches("taiwan-red-line")
    assert buttons.parse_press("unsub:taiwan-red-line") == buttons.Press(
        "unsub", watchlist="taiwan-red-line"
    )
    for junk in ("", "mute", "mute:", "launch:missiles", "unsubscribe"):
        assert buttons.parse_press(junk) is None


# ---- commands ---------------------------------------------------------------------------------


def test_mute_one_watchlist_holds_only_its_alerts(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    two = (
        "watchlists:\n"
        "  taiwan-red-line: {query: 'taiwan AND \"red line\"', notify: []}\n"
        "  minister: {query: 'minister', notify: []}\n"
    )
    settings = write_config(tmp_path, database_url, double, feeds, watchlists=two)

    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line minister")
            reply = await say(double, ALICE, "/mute taiwan-red-line 2h")
            assert reply.startswith("Muted taiwan-red-line for 2h, until ")
            assert reply.endswith(
                "Its alerts are held and come as one message when the mute ends; "
                "/unmute taiwan-red-line to end it now."
            )
            assert (await say(double, ALICE, "/mute nothing 2h")).startswith(
                "There is no watchlist nothing."
            )
            assert "taiwan-red-line — muted until" in await say(double, ALICE, "/mine")
            await service.poll_all()
            assert (await service.deliver_tick()).sent == 1  # minister, at once

    asyncio.run(scenario())
    rows = {(row.watchlist, row.channel): row.status for row in outbox(settings)}
    assert rows == {
        ("minister", subs.SUBSCRIBERS_CHANNEL): "sent",
        ("taiwan-red-line", subs.SUBSCRIBERS_DIGEST_CHANNEL): "pending",
    }
    assert "minister" in double.messages_to(ALICE)[-1].plain


def test_start_name_unsubscribe_all_and_stop(double: BotAPIDouble, engine: Engine) -> None:
    async def scenario() -> None:
        reply = await say(double, ALICE, "/start taiwan-red-line")
        assert reply.startswith("Subscribed to taiwan-red-line.\n\nThis bot sends news alerts")
        await say(double, ALICE, "/subscribe china-russia")
        assert await say(double, ALICE, "/unsubscribe all") == (
            "Unsubscribed from everything: china-russia, taiwan-red-line."
        )
        assert await say(double, ALICE, "/unsubscribe all") == "You have no subscriptions."
        await say(double, ALICE, "/subscribe china-russia")
        await say(double, ALICE, "/digest hourly")
        assert await say(double, ALICE, "/stop") == (
            "Stopped: unsubscribed from china-russia, and this chat's settings are forgotten. "
            "Nothing more will come. /start to come back."
        )
        assert (await say(double, ALICE, "/stop")).startswith("Nothing to stop")

    run_bot(double, engine, scenario)
    with db.read_session(engine) as session:
        assert subs.get_subscriber(session, ALICE) is None


def test_watchlists_shows_descriptions_and_mine_reports_a_watchlist_that_is_gone(
    double: BotAPIDouble, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with db.transaction(engine) as session:
        alice = subs.get_or_create_subscriber(session, ALICE, NOW, user_id=ALICE)
        subs.subscribe(session, alice.id, "taiwan-redline", NOW)  # renamed since
        subs.subscribe(session, alice.id, "china-russia", NOW)

    async def scenario() -> None:
        listing = await say(double, ALICE, "/watchlists")
        assert listing.splitlines()[1:3] == [
            "✅ china-russia",
            "▫️ taiwan-red-line — Taiwan and the red line, in any language",
        ]
        mine = await say(double, ALICE, "/mine")
        assert mine.splitlines() == [
            "Your subscriptions",
            "• china-russia",
            "• taiwan-redline — ⚠️ no longer exists (renamed or removed; now taiwan-red-line?)",
            "Each alert at once.",
            "Nothing comes for a watchlist that no longer exists: /unsubscribe taiwan-redline, "
            "and see /watchlists.",
        ]

    with caplog.at_level(logging.WARNING, logger="monitor.bot"):
        run_bot(double, engine, scenario)
    assert "bot.watchlist_gone watchlist=taiwan-redline chats=1 renamed_to=taiwan-red-line" in (
        caplog.text
    )


# ---- FAULTS 37: a subscriber spamming commands -------------------------------------------------


def test_fault_37_a_user_spamming_commands_is_rate_limited_per_user(
    double: BotAPIDouble, engine: Engine
) -> None:
    clock = [1000.0]
    quota = CommandQuota(per_minute=30, burst=5)

    async def scenario() -> None:
        for _ in range(40):
            double.send_command("/help", chat_id=BOB)
        # Handled in order: when Alice's answer comes, Bob's forty were handled.
        assert (await say(double, ALICE, "/help")).startswith("Commands")
        assert len(sent_to(double, BOB)) == 6  # five answers, then one "slow down"
        assert replies_to(double, BOB)[-1] == (
            "Too many commands: please wait 2 s. The next ones until then are ignored."
        )
        message = double.messages_to(BOB)[0]
        for _ in range(3):
            double.press_button(message, "mute:taiwan-red-line", user_id=BOB)
        answers = await double.answers_eventually(3)
        assert [a.get("text") for a in answers] == [None, None, None]  # answered, silently
        clock[0] += 2.0  # the quota refills: one more
        assert (await say(double, BOB, "/help")).startswith("Commands")

    run_bot(double, engine, scenario, quota=quota, monotonic=lambda: clock[0])
    assert len(sent_to(double, BOB)) == 7
    assert len(sent_to(double, ALICE)) == 1


def test_command_quota() -> None:
    quota = CommandQuota(per_minute=60, burst=2)
    assert quota.take(1, 0.0) == (True, False)
    assert quota.take(1, 0.0) == (True, False)
    assert quota.take(1, 0.0) == (False, True)  # the first refusal is answered
    assert quota.take(1, 0.5) == (False, False)  # the rest are not
    assert quota.wait(1) == pytest.approx(0.5)
    assert quota.take(2, 0.5) == (True, False)  # others are not affected
    assert quota.take(1, 1.0) == (True, False)
    small = CommandQuota(per_minute=60, burst=1, max_users=2)
    for user in range(5):
        small.take(user, 0.0)
    assert small.take(4, 0.0) == (False, True) and small.take(0, 0.0) == (True, False)
