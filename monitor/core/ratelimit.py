"""Telegram's sending limits, enforced by us before Telegram has to, and the per-user quota of bot
commands (pure: `now` is an argument).

From https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this:

* in one chat, no more than about one message per second;
* in a group or channel (chat ids below zero), no more than 20 messages per minute;
* in bulk, no more than about 30 messages per second overall.

PTB's AIORateLimiter has no per-private-chat limit, hence this module. `reserve` books the earliest
moment that satisfies all three for a chat and returns how long to wait for it, so that concurrent
senders get distinct slots instead of racing for the same one. The overall limit is kept as a grid
of 1/30 s ticks holding one message each, so no second ever holds more than 30, and a message
waiting for its own chat does not hold up the others.

After a 429, `hold(chat_id, retry_after, now)` keeps that chat closed for exactly `retry_after`
seconds: the next slot for it is no sooner (Bot API: "the number of seconds left to wait before the
request can be repeated").

`RateLimiter` keeps the slots of one process. Replicas share theirs through the database (the
store's `budgets`), deciding with the same two functions: `chat_earliest` (the first moment a chat
may get its next message, from what it was sent) and `first_free_tick` (the first tick of the
overall grid no message holds yet).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

__all__ = ["CommandQuota", "RateLimiter", "chat_earliest", "first_free_tick"]

_EPSILON = 1e-9


def chat_earliest(
    chat_id: int,
    sent: Sequence[float],
    held_until: float,
    now: float,
    *,
    chat_interval: float = 1.0,
    group_per_minute: int = 20,
) -> float:
    """The first moment from `now` on at which `chat_id` may get a message, given the send times
    already reserved for it (`sent`, oldest first; the last `group_per_minute` are enough) and the
    end of a hold after a 429 (`held_until`, 0.0 if none)."""
    earliest = max(now, held_until)
    if sent:
        earliest = max(earliest, sent[-1] + chat_interval)
    if chat_id < 0 and len(sent) >= group_per_minute > 0:
        earliest = max(earliest, sent[-group_per_minute] + 60.0)
    return earliest


def first_free_tick(earliest: float, taken: Collection[int], per_second: int = 30) -> int:
    """The first tick (1/`per_second` s, counted from the clock's zero) at or after `earliest`
    that is not in `taken`."""
    tick = math.ceil(earliest * per_second - _EPSILON)
    while tick in taken:
        tick += 1
    return tick


@dataclass
class _Chat:
    sent: deque[float] = field(default_factory=deque)  # reserved send times, oldest first
    held_until: float = 0.0


class RateLimiter:
    """Slots for messages per chat and overall. Times are seconds on any monotonic clock."""

    def __init__(
        self,
        *,
        chat_interval: float = 1.0,
        group_per_minute: int = 20,
        overall_per_second: int = 30,
    ) -> None:
        self.chat_interval = chat_interval
        self.group_per_minute = group_per_minute
        self.overall_per_second = overall_per_second
        self._chats: dict[int, _Chat] = {}
        self._ticks: set[int] = set()  # taken ticks of 1/overall_per_second s
        self._reservations = 0

    # ---- the two questions -------------------------------------------------------------------

    def next_slot(self, chat_id: int, now: float) -> float:
        """Seconds to wait before a message to `chat_id` may go (0.0: at once). Reserves nothing."""
        return max(self._tick_time(self._free_tick(self._chat_earliest(chat_id, now))) - now, 0.0)

    def reserve(self, chat_id: int, now: float) -> float:
        """Book the next slot for `chat_id`; return the seconds to wait for it (0.0: send now)."""
        self._forget_before(now)
        tick = self._free_tick(self._chat_earliest(chat_id, now))
        self._ticks.add(tick)
        at = max(self._tick_time(tick), now)
        chat = self._chats.setdefault(chat_id, _Chat())
        chat.sent.append(at)
        while len(chat.sent) > max(self.group_per_minute, 1):
            chat.sent.popleft()
        return at - now

    def hold(self, chat_id: int, retry_after: float, now: float) -> None:
        """Telegram said "retry after `retry_after` s" for this chat: nothing goes to it before."""
        chat = self._chats.setdefault(chat_id, _Chat())
        chat.held_until = max(chat.held_until, now + retry_after)

    def held_until(self, chat_id: int) -> float:
        """The end of a `hold` on this chat (0.0 if it was never held)."""
        chat = self._chats.get(chat_id)
        return chat.held_until if chat else 0.0

    # ---- internals ---------------------------------------------------------------------------

    def _chat_earliest(self, chat_id: int, now: float) -> float:
        chat = self._chats.get(chat_id)
        if chat is None:
            return now
        return chat_earliest(
            chat_id,
            chat.sent,
            chat.held_until,
            now,
            chat_interval=self.chat_interval,
            group_per_minute=self.group_per_minute,
        )

    def _tick_time(self, tick: int) -> float:
        return tick / self.overall_per_second

    def _free_tick(self, earliest: float) -> int:
        return first_free_tick(earliest, self._ticks, self.overall_per_second)

    def _forget_before(self, now: float) -> None:
        """Drop ticks in the past and chats idle for over a minute (not on every call)."""
        self._reservations += 1
        if self._reservations % 256:
            return
        current = math.floor(now * self.overall_per_second)
        self._ticks = {t for t in self._ticks if t >= current}
        stale = [
            chat_id
            for chat_id, chat in self._chats.items()
            if chat.held_until <= now and (not chat.sent or chat.sent[-1] < now - 60.0)
        ]
        for chat_id in stale:
            del self._chats[chat_id]


@dataclass
class _Bucket:
    tokens: float
    at: float
    warned: bool = False


class CommandQuota:
    """How many bot commands (and button presses) one user may send: a token bucket of `burst`
    commands refilled at `per_minute` a minute (FAULTS 37: a subscriber spamming commands must
    not keep the bot, or the database behind it, busy for everyone else).

    `take(user, now)` says whether the command may run; when it may not, `warn` tells whether this
    is the first refusal since the user was last allowed — the bot answers that one ("slow down")
    and ignores the rest, so a flood gets one reply, not one per message. Idle users are forgotten
    (at most `max_users` are tracked; the least recently seen go first)."""

    def __init__(self, *, per_minute: float = 30.0, burst: int = 20, max_users: int = 10_000):
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be positive and burst at least 1")
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_users = max_users
        self._buckets: dict[int, _Bucket] = {}

    def take(self, user: int, now: float) -> tuple[bool, bool]:
        """(allowed, warn). Allowed uses up one command."""
        bucket = self._buckets.pop(user, None) or _Bucket(float(self.burst), now)
        self._buckets[user] = bucket  # most recently seen last
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.warned = False
            self._forget()
            return True, False
        warn = not bucket.warned
        bucket.warned = True
        return False, warn

    def wait(self, user: int) -> float:
        """Seconds until `user` may send a command again (0.0: now)."""
        bucket = self._buckets.get(user)
        if bucket is None or bucket.tokens >= 1.0:
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _forget(self) -> None:
        while len(self._buckets) > self.max_users:
            del self._buckets[next(iter(self._buckets))]
