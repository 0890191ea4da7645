"""monitor.core.ratelimit: Telegram's limits as pure functions of time."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

import pytest

from monitor.core.ratelimit import RateLimiter


def test_a_private_chat_gets_one_message_a_second() -> None:
    limiter = RateLimiter()
    assert [limiter.reserve(7, 100.0) for _ in range(4)] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert limiter.next_slot(7, 100.5) == pytest.approx(3.5)
    assert limiter.next_slot(8, 100.5) == 0.0  # another chat is not held up


def test_next_slot_reserves_nothing() -> None:
    limiter = RateLimiter()
    assert limiter.next_slot(7, 5.0) == limiter.next_slot(7, 5.0) == 0.0
    assert limiter.reserve(7, 5.0) == 0.0


def test_a_group_gets_20_messages_a_minute() -> None:
    limiter = RateLimiter()
    delays = [limiter.reserve(-100123, 0.0) for _ in range(22)]
    assert delays[:20] == pytest.approx([float(i) for i in range(20)])  # still 1/s
    assert delays[20] == pytest.approx(60.0)  # the 21st waits for the first to leave the minute
    assert delays[21] == pytest.approx(61.0)


def test_no_second_holds_more_than_30_messages_overall() -> None:
    limiter = RateLimiter()
    times = sorted(limiter.reserve(chat, 10.0) + 10.0 for chat in range(1, 301))
    assert times[0] == pytest.approx(10.0)
    assert times[-1] == pytest.approx(10.0 + 299 / 30)
    for i in range(len(times) - 30):
        assert times[i + 30] - times[i] >= 1.0 - 1e-9


def test_a_chat_waiting_for_its_slot_does_not_hold_up_the_others() -> None:
    limiter = RateLimiter()
    limiter.reserve(1, 0.0)
    assert limiter.reserve(1, 0.0) == pytest.approx(1.0)
    assert limiter.reserve(2, 0.0) == pytest.approx(1 / 30)


def test_retry_after_holds_that_chat_exactly_that_long() -> None:
    limiter = RateLimiter()
    limiter.hold(42, 30.0, 1000.0)
    assert limiter.next_slot(42, 1000.0) == pytest.approx(30.0)
    assert limiter.next_slot(42, 1029.5) == pytest.approx(0.5)
    assert limiter.next_slot(42, 1030.0) == 0.0
    assert limiter.next_slot(43, 1000.0) == 0.0
    assert limiter.held_until(42) == 1030.0
    limiter.hold(42, 5.0, 1000.0)  # a shorter hold does not shorten the longer one
    assert limiter.held_until(42) == 1030.0


def test_simulated_bulk_delivery_respects_every_limit_and_keeps_the_pace() -> None:
    """10,000 messages to 1,000 chats (some groups), reserved as fast as they are asked for."""
    rng = random.Random(1)
    limiter = RateLimiter()
    chats = [rng.choice([1, -1]) * (1000 + i) for i in range(1000)]
    sends: dict[int, list[float]] = defaultdict(list)
    everything: list[float] = []
    now = 0.0
    for _ in range(10_000):
        chat = rng.choice(chats)
        at = now + limiter.reserve(chat, now)
        sends[chat].append(at)
        everything.append(at)
        now += 0.001  # the sender asks for slots far faster than it may send
    for chat, times in sends.items():
        times.sort()
        assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times))
        if chat < 0:
            assert all(times[i + 20] - times[i] >= 60.0 - 1e-9 for i in range(len(times) - 20))
    everything.sort()
    assert all(
        everything[i + 30] - everything[i] >= 1.0 - 1e-9 for i in range(len(everything) - 30)
    )
    rate = len(everything) / (everything[-1] - everything[0])
    assert rate >= 0.9 * 30
