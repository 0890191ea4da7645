"""Also in: the Telegram alert of a story is the message that later sources of the story are
added to (python-telegram-bot against the Bot API double, a feed server on loopback, SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from botapi import BotAPIDouble
from httpserver import LoopbackServer
from servicekit import DESK, outbox, running, write_config


def test_a_delivered_alert_keeps_the_telegram_message_it_became(
    tmp_path: Path, database_url: str, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    settings = write_config(tmp_path, database_url, double, feeds)

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await service.poll_all()
            await service.deliver_tick()

    asyncio.run(scenario())
    [message] = double.messages_to(DESK)
    [alert] = outbox(settings)
    assert (alert.status, alert.message_chat_id, alert.message_id) == (
        "sent",
        DESK,
        message.message_id,
    )
    assert json.loads(alert.message_sources) == []
