"""Telegram's sending limits booked in the database (store.budgets), as replicas share them: on
SQLite and PostgreSQL, and from two engines at once (two processes' worth of connections). The
three replicas sending to one chat are in test_replicas.py."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select

from monitor.store._shared import database_now
from monitor.store.budgets import book_send, forget_send_slots, hold_chat
from monitor.store.db import ensure_schema, make_engine, read_session, transaction
from monitor.store.tables import send_slots

PRIVATE, GROUP = 1001, -100123
JITTER = 0.5  # seconds of database time that pass between bookings on a loaded machine
# Time passes between two bookings, and on a busy machine a lot of it: a wait measured from the
# moment of its booking can only come out shorter than the ideal, never longer. So waits are checked
# from above, and the spacing the limits promise is checked on the booked ticks (1/30 s each).


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    ensure_schema(engine, upgrade=True)
    yield engine
    engine.dispose()


def book(engine: Engine, chat_id: int, max_wait: float = 1000.0) -> tuple[bool, float]:
    with transaction(engine) as session:
        slot = book_send(session, chat_id, max_wait=max_wait)
    return slot.booked, slot.wait


def ticks_of(engine: Engine, chat_id: int) -> list[int]:
    with read_session(engine) as session:
        return list(
            session.scalars(
                select(send_slots.c.tick)
                .where(send_slots.c.chat_id == chat_id)
                .order_by(send_slots.c.tick)
            )
        )


def test_one_chat_gets_one_slot_a_second(engine: Engine) -> None:
    waits = [book(engine, PRIVATE)[1] for _ in range(4)]
    for i, wait in enumerate(waits):
        assert wait <= i + 1 / 30
    ticks = ticks_of(engine, PRIVATE)
    assert len(ticks) == 4 and all(b - a >= 30 for a, b in itertools.pairwise(ticks))
    assert book(engine, PRIVATE + 1)[1] < JITTER  # another chat is not held up


def test_a_slot_too_far_away_is_not_booked(engine: Engine) -> None:
    book(engine, PRIVATE)
    book(engine, PRIVATE)
    booked, wait = book(engine, PRIVATE, max_wait=0.5)
    assert not booked and 0.5 < wait <= 2 + 1 / 30
    with read_session(engine) as session:
        count = session.scalar(select(func.count()).select_from(send_slots))
    assert count == 2  # nothing was booked for it


def test_a_group_gets_twenty_a_minute(engine: Engine) -> None:
    waits = [book(engine, GROUP)[1] for _ in range(21)]
    assert waits[19] <= 19 + 1 / 30 and waits[20] <= 60 + 1 / 30
    ticks = ticks_of(engine, GROUP)
    assert all(b - a >= 30 for a, b in itertools.pairwise(ticks))  # a second apart
    assert ticks[20] - ticks[0] >= 60 * 30  # the 21st a minute after the first


def test_the_bot_gets_thirty_a_second_from_two_processes(engine: Engine) -> None:
    other = make_engine(str(engine.url.render_as_string(hide_password=False)))
    try:
        for chat in range(1, 46):  # alternately from each "process"
            with transaction(engine if chat % 2 else other) as session:
                book_send(session, chat, max_wait=10.0)
        with read_session(engine) as session:
            ticks = list(session.scalars(select(send_slots.c.tick)))
    finally:
        other.dispose()
    assert len(set(ticks)) == 45
    per_second = Counter(tick // 30 for tick in ticks)
    assert max(per_second.values()) <= 30
    ordered = sorted(ticks)
    assert all(b - a >= 30 for a, b in zip(ordered, ordered[30:], strict=False))


def test_a_hold_after_429_keeps_the_chat_closed_for_every_process(engine: Engine) -> None:
    with transaction(engine) as session:
        hold_chat(session, PRIVATE, 30.0)
        hold_chat(session, PRIVATE, 5.0)  # a shorter hold does not shorten it
    booked, wait = book(engine, PRIVATE, max_wait=5.0)
    assert not booked and 5.0 < wait <= 30
    assert book(engine, PRIVATE + 1)[0]


def test_old_slots_are_forgotten(engine: Engine) -> None:
    book(engine, PRIVATE)
    with transaction(engine) as session:
        assert forget_send_slots(session, database_now(session) - timedelta(minutes=1)) == 0
        assert forget_send_slots(session, database_now(session) + timedelta(seconds=1)) == 1
