"""Telegram's sending limits shared by the replicas of one bot, through the database: the
`SendSlots` a `TelegramNotifier` books its slots with when `monitor run` runs on PostgreSQL.

Each booking is a short transaction of its own (`store.budgets.book_send`) on a few threads kept
for it, so that sending never queues behind polls busy storing; the notifier then waits for its
slot and sends. Slots older than a minute are forgotten now and then. On SQLite one process sends,
and its notifier's own limiter is the whole budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import Engine

from monitor.errors import DeliveryError, StoreError
from monitor.store import db
from monitor.store._shared import database_now
from monitor.store.budgets import TELEGRAM, SendLimits, book_send, forget_send_slots, hold_chat

log = logging.getLogger("monitor.daemon")

FORGET_EVERY_SECONDS = 60.0
BOOKING_THREADS = 4


class SharedSendBudget:
    """`SendSlots` in the database, shared by every process that sends for the bot."""

    def __init__(self, engine: Engine, limits: SendLimits = TELEGRAM) -> None:
        self.engine = engine
        self.limits = limits
        self._threads = ThreadPoolExecutor(BOOKING_THREADS, thread_name_prefix="send-slots")
        self._forgotten_at = time.monotonic()

    async def book(self, chat_id: int, max_wait: float) -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._threads, self._book, chat_id, max_wait)
        except StoreError as exc:
            raise DeliveryError(f"cannot book a send slot: {exc}") from exc

    async def hold(self, chat_id: int, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._threads, self._hold, chat_id, seconds)
        except StoreError as exc:  # this process still waits; the others may try once more
            log.warning("telegram.hold_not_shared chat=%s error=%s", chat_id, exc)

    def close(self) -> None:
        self._threads.shutdown(wait=False)

    def _book(self, chat_id: int, max_wait: float) -> tuple[bool, float]:
        with db.transaction(self.engine) as session:
            slot = book_send(session, chat_id, max_wait=max_wait, limits=self.limits)
        if time.monotonic() - self._forgotten_at > FORGET_EVERY_SECONDS:
            self._forgotten_at = time.monotonic()
            with db.transaction(self.engine) as session:
                forget_send_slots(
                    session,
                    database_now(session) - timedelta(seconds=61),
                    self.limits.overall_per_second,
                )
        return slot.booked, slot.wait

    def _hold(self, chat_id: int, seconds: float) -> None:
        with db.transaction(self.engine) as session:
            hold_chat(session, chat_id, seconds)
