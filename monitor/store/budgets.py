"""Telegram's sending limits shared by every replica: booking a send slot for a chat, holding a chat
after Telegram's 429, and forgetting old slots.

Telegram counts per bot, not per process, so N replicas that each kept its own limiter could send
N times its limits. Here a slot is a row: each message takes one tick of a grid of 1/30 s of the
database's clock (`send_slots.tick`, unique), which keeps the bot at 30 messages a second however
many replicas send; the chat's own ticks say when it may get the next one (about one a second, 20
a minute in a group), and its row in `send_chats` is locked while a slot is booked for it, so two
replicas booking for one chat take turns. The decisions are `core.ratelimit`'s, on times read here.

Functions take a Session and never commit: book in a transaction of its own, then wait for the
slot and send.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from monitor.core.ratelimit import chat_earliest, first_free_tick
from monitor.errors import StoreError
from monitor.store._shared import database_now, dialect, ensure_row, rowcount
from monitor.store.tables import send_chats, send_slots

__all__ = ["TELEGRAM", "SendLimits", "Slot", "book_send", "forget_send_slots", "hold_chat"]

_SEARCH_TICKS = 3000  # how far ahead a booking looks for a free tick at once (100 s at 30/s)
_ATTEMPTS = 20  # bookings that lost a tick to another replica's, tried again


@dataclass(frozen=True, slots=True)
class SendLimits:
    """Telegram's limits: one message per `chat_interval` s in a chat, `group_per_minute` in a
    group, `overall_per_second` in all."""

    chat_interval: float = 1.0
    group_per_minute: int = 20
    overall_per_second: int = 30


@dataclass(frozen=True, slots=True)
class Slot:
    """A booking: `booked` False when the chat's next slot is more than the caller would wait;
    `wait` is the seconds from the database's now to the slot either way."""

    booked: bool
    wait: float


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


TELEGRAM = SendLimits()


def book_send(
    session: Session, chat_id: int, *, max_wait: float, limits: SendLimits = TELEGRAM
) -> Slot:
    """Book the earliest slot for a message to `chat_id` that keeps every limit, unless it is more
    than `max_wait` seconds away (then nothing is booked)."""
    ensure_row(session, send_chats, {"chat_id": chat_id}, ["chat_id"])
    held_until = session.execute(
        select(send_chats.c.held_until).where(send_chats.c.chat_id == chat_id).with_for_update()
    ).scalar_one()
    now = _epoch(database_now(session))  # after the lock: the time this booking is made at
    per_second = limits.overall_per_second
    recent = list(
        session.scalars(
            select(send_slots.c.tick)
            .where(send_slots.c.chat_id == chat_id)
            .order_by(send_slots.c.tick.desc())
            .limit(max(limits.group_per_minute, 1))
        )
    )
    earliest = chat_earliest(
        chat_id,
        [tick / per_second for tick in reversed(recent)],
        _epoch(held_until) if held_until is not None else 0.0,
        now,
        chat_interval=limits.chat_interval,
        group_per_minute=limits.group_per_minute,
    )
    if earliest - now > max_wait:
        return Slot(False, earliest - now)
    start = math.ceil(earliest * per_second - 1e-9)
    taken: set[int] = set()
    for _ in range(_ATTEMPTS):
        taken.update(
            session.scalars(
                select(send_slots.c.tick).where(
                    send_slots.c.tick >= start, send_slots.c.tick < start + _SEARCH_TICKS
                )
            )
        )
        tick = first_free_tick(earliest, taken, per_second)
        if _insert_tick(session, tick, chat_id):
            return Slot(True, max(tick / per_second - now, 0.0))
        taken.add(tick)  # another chat's booking took it meanwhile
    raise StoreError(f"no free send slot for chat {chat_id} after {_ATTEMPTS} attempts")


def _insert_tick(session: Session, tick: int, chat_id: int) -> bool:
    values = {"tick": tick, "chat_id": chat_id}
    if dialect(session) == "postgresql":
        pg = postgresql.insert(send_slots).values(values).on_conflict_do_nothing()
        return session.execute(pg.returning(send_slots.c.tick)).first() is not None
    lite = sqlite.insert(send_slots).values(values).on_conflict_do_nothing()
    return session.execute(lite.returning(send_slots.c.tick)).first() is not None


def hold_chat(session: Session, chat_id: int, seconds: float) -> datetime:
    """Telegram said "retry after `seconds`" for this chat: no replica books a slot for it before
    then (a shorter hold never shortens a longer one). Returns the end of the hold."""
    until = database_now(session) + timedelta(seconds=seconds)
    ensure_row(session, send_chats, {"chat_id": chat_id}, ["chat_id"])
    current: datetime | None = session.execute(
        select(send_chats.c.held_until).where(send_chats.c.chat_id == chat_id).with_for_update()
    ).scalar_one()
    if current is not None and current >= until:
        return current
    session.execute(
        update(send_chats).where(send_chats.c.chat_id == chat_id).values(held_until=until)
    )
    return until


def forget_send_slots(session: Session, before: datetime, per_second: int = 30) -> int:
    """Drop the slots older than `before` (a minute back is all any limit looks at)."""
    tick = math.floor(before.astimezone(UTC).timestamp() * per_second)
    return rowcount(session.execute(delete(send_slots).where(send_slots.c.tick < tick)))
