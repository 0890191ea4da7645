"""How Telegram alerts reach their chats (issue 12, point 5): public channels named by `@username`,
link previews per channel. python-telegram-bot against the Bot API double, through the service;
the evidence is the calls the double received."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from botapi import BotAPIDouble
from httpserver import LoopbackServer
from servicekit import ALICE, DESK, feed, running, say, sent_to, serve, stories_feed, write_config

from monitor.errors import ConfigError

CHANNEL = -1001555


@pytest.fixture
def feeds() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        serve(server, feed("first", "second"))
        yield server


def test_a_public_channel_named_by_username_gets_its_alerts_with_link_previews(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    """`chat_ids: ["@desk_news"]` is looked up once (getChat) and sent to by its id, so its rate
    limit is the chat's; `link_preview: true` shows the article's preview, other chats get none."""
    double.add_channel("@desk_news", CHANNEL)
    watchlists = (
        "watchlists:\n"
        "  taiwan-red-line: {query: 'taiwan AND \"red line\"', notify: [desk]}\n"
        "channels:\n"
        "  desk: {type: telegram, chat_ids: ['@desk_news'], link_preview: true}\n"
    )
    settings = write_config(tmp_path, database_url, double, feeds, watchlists=watchlists)

    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await service.poll_all()
            assert (await service.deliver_tick()).sent == 4

    asyncio.run(scenario())
    assert double.calls_of("getChat") == [{"chat_id": "@desk_news"}]
    to_channel = sent_to(double, CHANNEL)
    assert sorted(params["link_preview_options"]["url"] for params in to_channel) == [
        "https://example.org/first",
        "https://example.org/second",
    ]
    alerts_to_alice = sent_to(double, ALICE)[1:]
    assert len(alerts_to_alice) == 2
    for params in alerts_to_alice:
        assert params["link_preview_options"] == {"is_disabled": True}


def test_an_unknown_channel_username_is_given_up_with_a_clear_reason(
    database_url: str, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    watchlists = (
        "watchlists:\n"
        "  taiwan-red-line: {query: 'taiwan AND \"red line\"', notify: [desk]}\n"
        "channels:\n"
        "  desk: {type: telegram, chat_ids: ['@nobody_here']}\n"
    )
    settings = write_config(tmp_path, database_url, double, feeds, watchlists=watchlists)

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await service.poll_all()
            stats = await service.deliver_tick()
            assert (stats.sent, stats.failed) == (0, 2)

    asyncio.run(scenario())
    assert double.calls_of("sendMessage") == []


@pytest.mark.parametrize(
    ("written", "ok"),
    [
        ("-1001234567890", True),
        ("'@channelname'", True),
        ("'-100123'", True),
        ("'@x'", False),
        ("'channelname'", False),
        ("'@bad-name'", False),
    ],
)
def test_chat_ids_take_ids_and_public_usernames(
    written: str, ok: bool, double: BotAPIDouble, feeds: LoopbackServer, tmp_path: Path
) -> None:
    watchlists = (
        "watchlists:\n"
        "  w: {query: 'taiwan', notify: [desk]}\n"
        "channels:\n"
        f"  desk: {{type: telegram, chat_ids: [{written}]}}\n"
    )
    database = f"sqlite:///{tmp_path / 'monitor.db'}"
    if ok:
        write_config(tmp_path, database, double, feeds, watchlists=watchlists)
        return
    with pytest.raises(ConfigError) as error:
        write_config(tmp_path, database, double, feeds, watchlists=watchlists)
    assert "is not a Telegram chat: write its id (-1001234567890) or a public channel's" in str(
        error.value
    )


# ---- bursts ------------------------------------------------------------------------------------


def test_40_matches_in_a_burst_are_one_message_per_chat(
    database_url: str, double: BotAPIDouble, tmp_path: Path
) -> None:
    with LoopbackServer() as feeds:
        serve(feeds, stories_feed(40))
        settings = write_config(tmp_path, database_url, double, feeds)

        async def scenario() -> None:
            async with running(settings) as service:
                await say(double, ALICE, "/subscribe taiwan-red-line")
                await service.poll_all()
                assert (await service.deliver_tick()).sent == 80

        asyncio.run(scenario())
    (to_desk,) = double.messages_to(DESK)  # was 40 pushes
    _reply, to_alice = double.messages_to(ALICE)
    for burst in (to_desk, to_alice):
        lines = burst.plain.split("\n")
        assert lines[0] == "In the last minute: 40 alerts — taiwan-red-line"
        assert sorted(link for _, link in burst.links) == sorted(
            f"https://example.org/s{i}" for i in range(40)
        )


def test_a_burst_counts_what_the_chat_got_in_the_last_minute(
    database_url: str, double: BotAPIDouble, tmp_path: Path
) -> None:
    """`burst: 3`: two alerts come one by one; two more within the minute would make four, so
    they come as one message."""
    watchlists = (
        "watchlists:\n"
        "  taiwan-red-line: {query: 'taiwan AND \"red line\"', notify: [desk]}\n"
        "channels:\n"
        f"  desk: {{type: telegram, chat_ids: [{DESK}], burst: 3}}\n"
    )
    with LoopbackServer() as feeds:
        serve(feeds, stories_feed(2))
        settings = write_config(tmp_path, database_url, double, feeds, watchlists=watchlists)

        async def scenario() -> None:
            async with running(settings, bot=False) as service:
                await service.poll_all()
                assert (await service.deliver_tick()).sent == 2
                serve(feeds, stories_feed(2, first=2))
                await service.poll_all()
                assert (await service.deliver_tick()).sent == 2

        asyncio.run(scenario())
    first, second, burst = double.messages_to(DESK)
    assert first.plain.startswith("🔔 taiwan-red-line") and second.plain.startswith("🔔")
    assert burst.plain.startswith("In the last minute: 2 alerts — taiwan-red-line\n")
