"""Which process polls Telegram for subscriber commands, and starting the bot there."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.daemon.service import Service

log = logging.getLogger("monitor.daemon")


async def start_bot(service: Service) -> Any:
    """The Telegram subscriber bot, when `telegram:` is configured and this process may poll.

    Only one process may call getUpdates for a token. On SQLite the lock file already makes this
    process the only one; on PostgreSQL the replica holding an advisory lock (on a connection kept
    open for the life of the process) is the one that polls.
    """
    telegram = service.settings.telegram
    if telegram is None:
        return None
    from monitor.bot import SubscriberBot, polling_lock_key
    from monitor.errors import BotError

    token = telegram.token.get_secret_value()
    if service.engine.dialect.name == "postgresql":
        connection = service.engine.connect()
        leader = connection.exec_driver_sql(
            f"SELECT pg_try_advisory_lock({polling_lock_key(token)})"
        ).scalar()
        if not leader:
            connection.close()
            log.info("bot.standby reason=another replica polls Telegram")
            return None
        service.leader_connection = connection
    descriptions = {name: w.description for name, w in service.settings.watchlists.items()}
    bot = SubscriberBot.from_settings(telegram, service.engine, descriptions)
    try:
        await bot.start()
    except BotError as exc:
        log.error("bot.failed error=%s", exc)
        return None
    log.info("bot.started")
    return bot
