"""The service as `monitor run` builds it, for tests of what subscribers and readers get: a config
written to a file (a feed on loopback, a watchlist, a Telegram channel, the bot at the Bot API
double), the service with its bot, users talking to the bot, and the outbox as stored."""

from __future__ import annotations

import contextlib
import random
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from botapi import TOKEN, BotAPIDouble
from httpserver import LoopbackServer
from sqlalchemy import select

from monitor.config import Settings, parse_config
from monitor.daemon import Service, start_bot
from monitor.store import db
from monitor.store.tables import alerts

ALICE, BOB, DESK = 1001, 1002, -100777
BODY = "Taiwan is the first red line, the minister said."


def feed(*titles: str, body: str = BODY) -> bytes:
    """An RSS feed with one item per title, each published now (so that it may alert)."""
    published = format_datetime(datetime.now(UTC))
    items = "".join(
        f"<item><guid>{title}</guid><title>{title}</title>"
        f"<link>https://example.org/{title}</link><pubDate>{published}</pubDate>"
        f"<description>{body}</description></item>"
        for title in titles
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{items}</channel></rss>"
    ).encode()


_WORDS = [
    "minister",
    "parliament",
    "harbour",
    "election",
    "budget",
    "drought",
    "satellite",
    "railway",
    "vaccine",
    "treaty",
    "summit",
    "protest",
    "festival",
    "currency",
    "pipeline",
    "refinery",
    "airport",
    "cabinet",
    "senate",
    "tariff",
    "border",
    "reservoir",
    "earthquake",
    "monsoon",
    "wildfire",
    "orchestra",
    "museum",
    "stadium",
    "hospital",
    "university",
]


def stories_feed(count: int, *, first: int = 0) -> bytes:
    """An RSS feed of `count` different stories (numbered from `first`) that each mention
    Taiwan and the red line, all published now: a burst of matches."""
    rng = random.Random(12 + first)
    published = format_datetime(datetime.now(UTC))
    items = []
    for i in range(first, first + count):
        title = f"Taiwan {i}: " + " ".join(rng.sample(_WORDS, 4))
        body = " ".join(rng.sample(_WORDS, 20)) + f" — the red line, report {i}."
        items.append(
            f"<item><guid>s{i}</guid><title>{title}</title><link>https://example.org/s{i}</link>"
            f"<pubDate>{published}</pubDate><description>{body}</description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        + "".join(items)
        + "</channel></rss>"
    ).encode()


def serve(server: LoopbackServer, body: bytes) -> None:
    server.respond("/a.xml", body=body, headers={"Content-Type": "text/xml"})


WATCHLISTS = """\
watchlists:
  taiwan-red-line: {query: 'taiwan AND "red line"', notify: [desk]}
channels:
  desk: {type: telegram, chat_ids: [-100777]}
"""


def write_config(
    tmp_path: Path,
    database_url: str,
    double: BotAPIDouble,
    feeds: LoopbackServer,
    telegram: str = "subscriptions: open\n",
    *,
    watchlists: str = WATCHLISTS,
    extra: str = "",
) -> Settings:
    """config.yaml in `tmp_path`: one feed (`/a.xml` on `feeds`), `watchlists` (with channels),
    the bot at `double` with the `telegram` keys given; returns it parsed."""
    text = (
        textwrap.dedent(
            f"""
            database: {{url: "{database_url}"}}
            fetch: {{allow_private: true}}
            service: {{listen: null}}
            feeds:
              - {{name: a, url: '{feeds.url("/a.xml")}'}}
            telegram:
              token: "{TOKEN}"
              api_url: "{double.api_url}"
            """
        )
        + textwrap.indent(telegram, "  ")
        + watchlists
        + extra
    )
    config = tmp_path / "config.yaml"
    config.write_text(text, "utf-8")
    return parse_config(text, str(config))


@contextlib.asynccontextmanager
async def running(settings: Settings, *, bot: bool = True) -> AsyncIterator[Service]:
    """The service (with its subscriber bot unless `bot` is false), closed afterwards."""
    service = Service.build(settings)
    service.prepare(now=datetime.now(UTC), alone=True)
    subscriber_bot = await start_bot(service) if bot else None
    try:
        yield service
    finally:
        if subscriber_bot is not None:
            await subscriber_bot.stop()
        await service.close()


async def say(double: BotAPIDouble, chat: int, command: str, **kwargs: Any) -> str:
    """A user sends a command (`kwargs` as for `send_command`); the bot's reply, as shown."""
    before = len(double.messages_to(chat))
    kwargs.setdefault("user_id", chat if chat > 0 else ALICE)
    double.send_command(command, chat_id=chat, **kwargs)
    replies = await double.messages_eventually(before + 1, chat_id=chat)
    return replies[before].plain


def sent_to(double: BotAPIDouble, chat: int, since: int = 0) -> list[dict[str, Any]]:
    """The parameters of the sendMessage calls for `chat`, from call number `since` on."""
    return [
        params
        for method, params in double.calls[since:]
        if method == "sendMessage" and params.get("chat_id") == chat
    ]


def outbox(settings: Settings) -> list[Any]:
    """Every outbox row, oldest first."""
    engine = db.make_engine(settings.database.url)
    try:
        with db.read_session(engine) as session:
            return list(session.execute(select(alerts).order_by(alerts.c.id)).all())
    finally:
        engine.dispose()


def make_due(settings: Settings) -> None:
    """Every waiting alert's time has come (a digest's hour, a mute's end)."""
    engine = db.make_engine(settings.database.url)
    try:
        with db.transaction(engine) as session:
            session.execute(alerts.update().values(next_attempt_at=datetime.now(UTC)))
    finally:
        engine.dispose()
