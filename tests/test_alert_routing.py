"""Who gets an alert and what it shows, through the service with its bot: python-telegram-bot
against the local Bot API double, a feed on loopback, SQLite and PostgreSQL.

- One message per chat: a chat that a story's alert reaches through a channel's `chat_ids`, another
  channel and a subscription gets one sendMessage.
- An alert shows what matched: held by a mute while its item is updated, it arrives with the text
  that matched and the bold on the words that matched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from botapi import BotAPIDouble
from httpserver import LoopbackServer
from servicekit import ALICE, BOB, DESK, feed, outbox, running, say, sent_to, serve, write_config

from monitor.store.subscribers import SUBSCRIBERS_CHANNEL, SUBSCRIBERS_DIGEST_CHANNEL


def test_a_chat_reached_by_two_channels_and_a_subscription_gets_one_message(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    watchlists = f"""\
watchlists:
  taiwan-red-line: {{query: 'taiwan AND "red line"', notify: [desk, night]}}
channels:
  desk: {{type: telegram, chat_ids: [{DESK}, {ALICE}]}}
  night: {{type: telegram, chat_ids: [{DESK}]}}
"""
    settings = write_config(tmp_path, database_url, double, feeds, watchlists=watchlists)

    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await say(double, BOB, "/subscribe taiwan-red-line")
            calls = len(double.calls)
            (result,) = await service.poll_all()
            assert result.alerts == 3
            stats = await service.deliver_tick()
            assert stats.sent == 3
            for chat in (ALICE, BOB, DESK):
                (alert,) = sent_to(double, chat, since=calls)
                assert "taiwan-red-line" in alert["text"] and "first" in alert["text"]

    asyncio.run(scenario())
    # The configured channel takes the chat; the subscription of the same chat adds nothing.
    assert {(row.channel, row.recipient) for row in outbox(settings)} == {
        ("desk", str(DESK)),
        ("desk", str(ALICE)),
        (SUBSCRIBERS_CHANNEL, str(BOB)),
    }


def test_an_alert_held_by_a_mute_shows_what_matched_after_its_item_changed(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    settings = write_config(tmp_path, database_url, double, feeds)
    matched = "Taiwan is the first red line, the minister said."

    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await say(double, ALICE, "/mute 2h")
            serve(feeds, feed("first", body=matched))
            calls = len(double.calls)
            await service.poll_all()
            await service.deliver_tick()
            assert sent_to(double, ALICE, since=calls) == []  # held

            # The item is updated while the alert waits: new words before the ones that matched.
            serve(feeds, feed("first", body="Updated at noon: officials spoke. " + matched))
            (update,) = await service.poll_all()
            assert (update.updated_items, update.alerts) == (1, 0)

            await say(double, ALICE, "/unmute")
            await service.deliver_tick()

    asyncio.run(scenario())
    (held,) = [row for row in outbox(settings) if row.recipient == str(ALICE)]
    assert (held.channel, held.status) == (SUBSCRIBERS_DIGEST_CHANNEL, "sent")
    (message,) = [m for m in double.messages_to(ALICE) if "minister" in m.plain]
    assert "Updated at noon" not in message.plain
    snippet_at = message.plain.index(matched)  # the text as it matched
    bold = [
        message.plain[e.start : e.end]
        for e in message.entities
        if e.type == "b" and e.start >= snippet_at
    ]
    assert bold == ["Taiwan", "red line"]
