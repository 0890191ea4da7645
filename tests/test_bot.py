"""monitor.bot and monitor.store.subscribers: python-telegram-bot's Application polling the Bot
API double on 127.0.0.1, with a real database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botapi import TOKEN, BotAPIDouble, SentMessage
from sqlalchemy import Engine, select

from monitor.bot import SubscriberBot, parse_digest
from monitor.errors import BotError
from monitor.model import Hit
from monitor.notify.telegram import TelegramNotifier
from monitor.outbox import Outbox
from monitor.store import db
from monitor.store import subscribers as subs
from monitor.store.alerts import enqueue_alert, insert_match
from monitor.store.feeds import sync_feeds
from monitor.store.stories import NewItem, insert_item, story_for_hash
from monitor.store.tables import alerts

WATCHLISTS = ["taiwan-red-line", "china-russia"]
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ALICE = 1001
BOB = 2002


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


def _bot(double: BotAPIDouble, engine: Engine, **kwargs: Any) -> SubscriberBot:
    return SubscriberBot(
        TOKEN, engine, WATCHLISTS, api_url=double.api_url, clock=lambda: NOW, **kwargs
    )


def _running(
    double: BotAPIDouble, engine: Engine, scenario: Callable[[Chat], Awaitable[None]], **kw: Any
) -> SubscriberBot:
    """Start a bot, run `scenario`, stop the bot (always)."""
    bot = _bot(double, engine, **kw)

    async def go() -> None:
        await bot.start()
        try:
            await scenario(Chat(double))
        finally:
            await bot.stop()

    asyncio.run(go())
    return bot


class Chat:
    """Users talking to the bot through the double; `say` returns the bot's reply."""

    def __init__(self, double: BotAPIDouble) -> None:
        self.double = double

    async def say(self, text: str, chat_id: int = ALICE, **kwargs: Any) -> SentMessage:
        before = len(self.double.messages_to(chat_id))
        self.double.send_command(text, chat_id=chat_id, **kwargs)
        replies = await self.double.messages_eventually(before + 1, chat_id=chat_id)
        return replies[before]


def _read(engine: Engine, work: Callable[..., Any], *args: Any) -> Any:
    with db.read_session(engine) as session:
        return work(session, *args)


# ---- commands ---------------------------------------------------------------------------------


def test_subscribe_stores_the_subscription_and_mine_lists_it(
    double: BotAPIDouble, engine: Engine
) -> None:
    async def scenario(chat: Chat) -> None:
        reply = await chat.say("/subscribe taiwan-red-line")
        assert reply.plain == "Subscribed to taiwan-red-line."
        assert reply.parse_mode == "HTML"
        assert (await chat.say("/subscribe taiwan-red-line")).plain.startswith("You were already")
        mine = await chat.say("/mine")
        assert mine.plain.splitlines() == [
            "Your subscriptions",
            "• taiwan-red-line",
            "Each alert at once.",
        ]

    _running(double, engine, scenario)
    [target] = _read(engine, subs.subscribers_of, "taiwan-red-line")
    assert target.chat_id == ALICE and target.muted_until is None and target.digest is None
    subscriber = _read(engine, subs.get_subscriber, ALICE)
    assert subscriber.user_id == ALICE and subscriber.username == "alice" and subscriber.active
    assert [c["command"] for c in double.commands][:3] == ["start", "help", "watchlists"]


def test_fault_66_an_unknown_watchlist_gets_the_list_and_what_was_typed_is_escaped(
    double: BotAPIDouble, engine: Engine
) -> None:
    async def scenario(chat: Chat) -> None:
        reply = await chat.say("/subscribe taiwan-redline")
        assert reply.plain.splitlines() == [
            "There is no watchlist taiwan-redline. Did you mean taiwan-red-line?",
            "Watchlists: china-russia, taiwan-red-line",
        ]
        hostile = await chat.say('/subscribe </code><a_href="tg://x">&amp;<script> <b>')
        assert hostile.plain.splitlines() == [
            'There is no watchlist </code><a_href="tg://x">&amp;<script>.',
            "There is no watchlist <b>.",
            "Watchlists: china-russia, taiwan-red-line",
        ]
        assert hostile.links == []
        assert (await chat.say("/subscribe")).plain.startswith("Which one?")
        unknown = await chat.say("/frobnicate <b>")
        assert unknown.plain.startswith("I do not know /frobnicate.")
        listing = await chat.say("/watchlists")
        assert "▫️ china-russia" in listing.plain

    _running(double, engine, scenario)
    assert _read(engine, subs.subscriptions_of, ALICE) == []


def test_subscribe_ignores_case_and_takes_several_names(
    double: BotAPIDouble, engine: Engine
) -> None:
    async def scenario(chat: Chat) -> None:
        reply = await chat.say("/subscribe Taiwan-Red-Line china-russia")
        assert reply.plain.splitlines() == [
            "Subscribed to taiwan-red-line.",
            "Subscribed to china-russia.",
        ]
        gone = await chat.say("/unsubscribe china-russia nothing")
        assert gone.plain.splitlines() == [
            "Unsubscribed from china-russia.",
            "You are not subscribed to nothing.",
        ]

    _running(double, engine, scenario)
    assert _read(engine, subs.subscriptions_of, ALICE) == ["taiwan-red-line"]


def test_an_allowlist_refuses_others(double: BotAPIDouble, engine: Engine) -> None:
    async def scenario(chat: Chat) -> None:
        refused = await chat.say("/subscribe taiwan-red-line", chat_id=BOB)
        assert refused.plain == (
            f"Sorry, this bot is private: ask its administrator to add you. Your user id is {BOB}."
        )
        assert (await chat.say("/watchlists", chat_id=BOB)).plain.startswith("Sorry")
        assert (await chat.say("/start", chat_id=BOB)).plain.startswith("Sorry")
        accepted = await chat.say("/subscribe taiwan-red-line", chat_id=ALICE)
        assert accepted.plain == "Subscribed to taiwan-red-line."

    _running(double, engine, scenario, subscriptions="allowlist", allow=[ALICE])
    assert [t.chat_id for t in _read(engine, subs.subscribers_of, "taiwan-red-line")] == [ALICE]
    assert _read(engine, subs.get_subscriber, BOB) is None


def test_subscriptions_off_refuses_everyone(double: BotAPIDouble, engine: Engine) -> None:
    async def scenario(chat: Chat) -> None:
        reply = await chat.say("/subscribe taiwan-red-line")
        assert reply.plain == "This bot does not take subscriptions."
        assert (await chat.say("/help")).plain.startswith("Commands")

    _running(double, engine, scenario, subscriptions="off")
    assert _read(engine, subs.subscribers_of, "taiwan-red-line") == []


def test_a_group_chat_subscribes_as_the_group(double: BotAPIDouble, engine: Engine) -> None:
    double.set_member(-100777, 1001, "administrator")

    async def scenario(chat: Chat) -> None:
        reply = await chat.say("/subscribe@monitor_test_bot china-russia", chat_id=-100777)
        assert reply.plain == "Subscribed to china-russia."

    _running(double, engine, scenario)
    [target] = _read(engine, subs.subscribers_of, "china-russia")
    assert target.chat_id == -100777
    assert _read(engine, subs.get_subscriber, -100777).user_id == 1001


def test_mute_unmute_and_digest(double: BotAPIDouble, engine: Engine) -> None:
    async def scenario(chat: Chat) -> None:
        assert (await chat.say("/mute 2h")).plain == "You have no subscriptions to mute."
        await chat.say("/subscribe china-russia")
        muted = await chat.say("/mute 2h")
        assert muted.plain.startswith("Muted for 2h, until 2025-06-01 14:00 UTC.")
        subscriber = _read(engine, subs.get_subscriber, ALICE)
        assert subscriber.muted_until == NOW + timedelta(hours=2)
        assert "Muted until 2025-06-01 14:00 UTC." in (await chat.say("/mine")).plain
        bad = await chat.say("/mute 2 <b>hours</b>")
        assert bad.plain.startswith("'2<b>hours</b>' is not a duration")
        assert (await chat.say("/unmute")).plain.startswith("Unmuted")
        assert _read(engine, subs.get_subscriber, ALICE).muted_until is None

        daily = await chat.say("/digest daily 8:00 Europe/London")
        assert daily.plain == "Alerts now come as a digest: daily 08:00 Europe/London."
        [target] = _read(engine, subs.subscribers_of, "china-russia")
        assert target.digest == "daily 08:00 Europe/London"
        zone = await chat.say("/digest daily 08:00 Mars/<Base>")
        assert zone.plain.startswith("unknown time zone 'Mars/<Base>'")
        assert (await chat.say("/digest hourly")).plain.endswith("hourly.")
        assert (await chat.say("/digest off")).plain.startswith("Digest off")
        assert _read(engine, subs.get_subscriber, ALICE).digest is None

    _running(double, engine, scenario)


def test_parse_digest() -> None:
    assert parse_digest(["daily", "08:00"]) == "daily 08:00 UTC"
    assert parse_digest(["daily", "7:05", "Asia/Dubai"]) == "daily 07:05 Asia/Dubai"
    assert parse_digest(["HOURLY"]) == "hourly"
    assert parse_digest(["off"]) is None
    for wrong in ([], ["daily"], ["daily", "24:00"], ["weekly"], ["hourly", "08:00"]):
        with pytest.raises(ValueError):
            parse_digest(wrong)


def test_a_returning_user_is_reactivated(double: BotAPIDouble, engine: Engine) -> None:
    with db.transaction(engine) as session:
        subscriber = subs.get_or_create_subscriber(session, ALICE, NOW, user_id=ALICE)
        subs.subscribe(session, subscriber.id, "china-russia", NOW)
        subs.deactivate(session, ALICE, "Forbidden: bot was blocked by the user", NOW)
    assert _read(engine, subs.subscribers_of, "china-russia") == []

    async def scenario(chat: Chat) -> None:
        assert (await chat.say("/start")).plain.startswith("This bot sends news alerts")

    _running(double, engine, scenario)
    assert [t.chat_id for t in _read(engine, subs.subscribers_of, "china-russia")] == [ALICE]


def test_fault_53_a_second_poller_conflict_stops_polling_once(
    double: BotAPIDouble, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    double.conflict_polls()
    bot = _bot(double, engine)

    async def go() -> None:
        await bot.start()
        try:
            await asyncio.wait_for(bot.conflict.wait(), 10)
        finally:
            await bot.stop()
        assert not bot.polling

    with caplog.at_level(logging.WARNING):
        asyncio.run(go())
    assert caplog.text.count("bot.conflict") == 1
    polls = [method for method, _ in double.calls if method == "getUpdates"]
    assert len(polls) <= 2


def test_a_bot_that_cannot_start_says_why_without_the_token(
    double: BotAPIDouble, engine: Engine
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    wrong = "987654321:AAwrong-token_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
    unreachable = SubscriberBot(
        TOKEN, engine, WATCHLISTS, api_url=f"http://127.0.0.1:{closed_port}"
    )
    rejected = SubscriberBot(wrong, engine, WATCHLISTS, api_url=double.api_url)

    async def go() -> None:
        for bot, secret in ((unreachable, TOKEN), (rejected, wrong)):
            with pytest.raises(BotError) as raised:
                await bot.start()
            assert secret not in str(raised.value)
            assert str(raised.value).startswith("cannot start the Telegram bot")
            await bot.stop()  # harmless after a failed start

    asyncio.run(go())


def test_the_token_never_appears_in_logs(
    double: BotAPIDouble, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(chat: Chat) -> None:
        await chat.say("/subscribe taiwan-red-line")

    with caplog.at_level(logging.DEBUG):
        _running(double, engine, scenario)
    assert "getUpdates" in caplog.text
    assert TOKEN not in caplog.text


# ---- end to end: subscribe, then the next matching alert arrives --------------------------------


def test_a_subscriber_receives_the_next_matching_alert(
    double: BotAPIDouble, engine: Engine
) -> None:
    async def scenario(chat: Chat) -> None:
        await chat.say("/subscribe taiwan-red-line")
        await chat.say("/subscribe china-russia", chat_id=BOB)

    _running(double, engine, scenario)
    body = "Wang Yi said Taiwan is the first red line."
    hits = [Hit("taiwan", "body", 13, 19)]
    # What the pipeline does in its transaction (the lead wires it): route to the subscribers.
    with db.transaction(engine) as session:
        feed_id = sync_feeds(session, [("aawsat", "https://aawsat.example/rss")], NOW)["aawsat"]
        story_id, _ = story_for_hash(session, "h1", NOW)
        item = NewItem(
            identity="a1",
            content_hash="h1",
            hash_version=1,
            title="Taiwan <first> red line",
            text=body,
            html=None,
            link="https://aawsat.example/a1",
            author=None,
            published_at=NOW,
            language="en",
            fetched_at=NOW,
            story_id=story_id,
        )
        item_id = insert_item(session, feed_id, item)
        assert item_id is not None
        hits_json = json.dumps([h._asdict() for h in hits])
        insert_match(session, story_id, item_id, "taiwan-red-line", hits_json, NOW)
        for target in subs.subscribers_of(session, "taiwan-red-line"):
            enqueue_alert(
                session,
                story_id,
                item_id,
                "taiwan-red-line",
                subs.SUBSCRIBERS_CHANNEL,
                target.recipient,
                NOW,
            )

    async def deliver() -> None:
        notifier = TelegramNotifier(TOKEN, double.api_url)
        outbox = Outbox(engine, {subs.SUBSCRIBERS_CHANNEL: notifier}, owner="test")
        try:
            stats = await outbox.deliver_due()
        finally:
            await outbox.close()
        assert stats.sent == 1

    asyncio.run(deliver())
    alert = double.messages_to(ALICE)[-1]
    assert alert.plain.splitlines()[1] == "Taiwan <first> red line"
    assert alert.bold == ["taiwan-red-line", "Taiwan"]
    assert len(double.messages_to(BOB)) == 1  # only the reply to /subscribe


# ---- the repository ----------------------------------------------------------------------------


def test_subscriber_repository(engine: Engine) -> None:
    later = NOW + timedelta(minutes=5)
    with db.transaction(engine) as session:
        alice = subs.get_or_create_subscriber(session, ALICE, NOW, user_id=1, username="alice")
        assert subs.get_or_create_subscriber(session, ALICE, later).id == alice.id
        bob = subs.get_or_create_subscriber(session, -42, NOW)
        assert subs.subscribe(session, alice.id, "a", NOW)
        assert not subs.subscribe(session, alice.id, "a", NOW)
        assert subs.subscribe(session, alice.id, "b", NOW)
        assert subs.subscribe(session, bob.id, "a", NOW)
        assert subs.subscriptions_of(session, ALICE) == ["a", "b"]
        assert [t.chat_id for t in subs.subscribers_of(session, "a")] == [-42, ALICE]
        assert subs.unsubscribe(session, alice.id, "b")
        assert not subs.unsubscribe(session, alice.id, "b")
        assert subs.set_mute(session, ALICE, later, NOW)
        assert subs.set_digest(session, ALICE, "hourly", NOW)
        assert not subs.set_mute(session, 999, later, NOW)
        assert subs.deactivate(session, -42, "Forbidden: bot was kicked", NOW)
        [target] = subs.subscribers_of(session, "a")
        assert (target.chat_id, target.muted_until, target.digest) == (ALICE, later, "hourly")
        gone = subs.get_subscriber(session, -42)
        assert gone is not None and not gone.active
        assert gone.inactive_reason == "Forbidden: bot was kicked"


def test_migrate_chat_moves_the_subscriber_and_its_pending_alerts(engine: Engine) -> None:
    with db.transaction(engine) as session:
        old = subs.get_or_create_subscriber(session, -4001, NOW)
        subs.subscribe(session, old.id, "a", NOW)
        feed_id = sync_feeds(session, [("f", "https://f.example/rss")], NOW)["f"]
        story_id, _ = story_for_hash(session, "h", NOW)
        item = NewItem("i", "h", 1, "t", "x", None, None, None, NOW, "en", NOW, story_id)
        item_id = insert_item(session, feed_id, item)
        assert item_id is not None
        for recipient in ("-4001", "-4002"):
            enqueue_alert(session, story_id, item_id, "a", "@telegram", recipient, NOW)
        enqueue_alert(session, story_id, item_id, "b", "@telegram", "-4001", NOW)
    with db.transaction(engine) as session:
        assert subs.migrate_chat(session, -4001, -100999, NOW)
        assert not subs.migrate_chat(session, -1, -2, NOW)
        assert subs.move_pending_alerts(session, "@telegram", "-4001", "-100999") == 2
        assert subs.subscriptions_of(session, -100999) == ["a"]
        rows = session.execute(select(alerts.c.watchlist, alerts.c.recipient)).all()
    assert sorted(rows) == [("a", "-100999"), ("a", "-4002"), ("b", "-100999")]


def test_migrate_chat_merges_into_an_existing_subscriber(engine: Engine) -> None:
    with db.transaction(engine) as session:
        old = subs.get_or_create_subscriber(session, -1, NOW)
        new = subs.get_or_create_subscriber(session, -2, NOW)
        subs.subscribe(session, old.id, "a", NOW)
        subs.subscribe(session, new.id, "b", NOW)
        assert subs.migrate_chat(session, -1, -2, NOW)
        assert subs.subscriptions_of(session, -2) == ["a", "b"]
        moved = subs.get_subscriber(session, -1)
        assert moved is not None and not moved.active
