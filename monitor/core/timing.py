"""When to poll a feed next and when to retry an alert: pure functions of (now, state, rng).

No clock and no randomness of its own: the caller passes `now` (an aware UTC datetime) and a
`random.Random`, so tests are exact and replicas can share the rules. The results are stored
(`feeds.next_poll_at`, `alerts.next_attempt_at`); the database is the schedule.

Feed polling (SPEC §9, FAULTS 22–24, 62):

* After a successful poll (200 or 304): `next_poll`. The configured interval is a floor: a feed's
  own hints, RSS ``<ttl>`` (minutes) and ``Cache-Control: max-age`` (`cache_max_age`), can only
  *stretch* the wait, up to `MAX_HINT_FACTOR` (4) times the interval and never beyond
  `MAX_POLL_DELAY` (24 h): they tell us the content will not change sooner, never that we may
  poll more often than the operator allowed — nor so much less often that the interval means
  nothing (a `<ttl>300</ttl>` would stretch a 5-minute interval to 5 hours). An interval the
  operator set above 24 h is kept as it is.
* Jitter: every poll delay is multiplied by a factor in [1, 1 + `POLL_JITTER`] (0–10 % later), so
  feeds added together drift apart and a host's feeds do not fire in step. One-sided on purpose:
  some publishers set a minimum interval, and a jittered poll must never come *earlier* than the
  configured interval.
* After a failure: `next_poll_after_failure` — the interval doubled per consecutive failure
  (the first failure waits one interval, the second two, then four …), capped at 24 h, same
  jitter. A ``Retry-After`` is a minimum (capped at 24 h too).
* Throttling is not breakage: 429, or 503 with a Retry-After, means "ask later" (`is_throttled`).
  The caller then keeps the feed's consecutive-failure count as it was (not +1), and calls
  `next_poll_after_failure` with that count and the Retry-After; the feed is not reported broken.
* A clock that jumped back leaves `next_poll_at` far in the future; the feed claim
  (`store.feeds.claim_due_feeds`) treats a last poll "in the future" as due, so polling resumes at
  once instead of after the jump (FAULTS 62). A jump forward makes every feed due at once; dedup
  keeps that from becoming an alert storm, and the per-host limit from becoming a flood.

Alert delivery (SPEC §6): `alert_retry_at` — exponential back-off with *full* jitter (a uniform
delay between 0 and min(1 h, 30 s × 2^(attempts − 1))), the AWS "Exponential Backoff and Jitter"
scheme: failed deliveries to one channel spread out instead of retrying in lock-step. A channel's
own retry_after (Telegram's 429) is a minimum. After `MAX_ALERT_ATTEMPTS` failed attempts the
outbox gives up and records why.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Final
from zoneinfo import ZoneInfo

__all__ = [
    "ALERT_RETRY_BASE",
    "ALERT_RETRY_CAP",
    "BOT_START_RETRY_BASE",
    "BOT_START_RETRY_CAP",
    "MAX_ALERT_ATTEMPTS",
    "MAX_HINT_FACTOR",
    "MAX_POLL_DELAY",
    "POLL_JITTER",
    "alert_retry_at",
    "bot_start_delay",
    "cache_max_age",
    "is_throttled",
    "next_digest_at",
    "next_poll",
    "next_poll_after_failure",
    "subscriber_digest_at",
    "subscriber_due_at",
]

MAX_POLL_DELAY: Final = timedelta(hours=24)
MAX_HINT_FACTOR: Final = 4  # a feed's <ttl> or max-age stretches its interval at most this much
POLL_JITTER: Final = 0.10

ALERT_RETRY_BASE: Final = timedelta(seconds=30)
ALERT_RETRY_CAP: Final = timedelta(hours=1)
# 8 attempts = the first try and 7 retries, waiting at most 30 s + 1 + 2 + 4 + 8 + 16 + 32 min
# (~64 min, ~32 min on average) before the outbox gives up. A channel that is down for longer than
# that (FAULTS 51) should be paused by the outbox rather than burn each alert's attempts.
MAX_ALERT_ATTEMPTS: Final = 12  # ~2.5 h of retries on average: outlives an hour-long outage

# The subscriber bot's start (getMe, getUpdates) after a failure: 5 s, 10 s, 20 s … at most 5 min,
# so commands are answered again soon after Telegram is back, without hammering it meanwhile.
BOT_START_RETRY_BASE: Final = 5.0
BOT_START_RETRY_CAP: Final = 300.0

_MAX_POLL_SECONDS: Final = MAX_POLL_DELAY.total_seconds()
_ZERO: Final = timedelta(0)
_MAX_DOUBLINGS: Final = 64  # 2**64 intervals is beyond any cap; keeps the float finite


def next_poll(
    now: datetime,
    interval: timedelta,
    *,
    ttl_minutes: int | None = None,
    max_age_seconds: int | None = None,
    rng: random.Random,
) -> datetime:
    """When to poll again after a successful poll (200 or 304).

    `ttl_minutes` is the feed's ``<ttl>``, `max_age_seconds` the response's remaining freshness
    (`cache_max_age`). The wait is the longest of the interval and the hints, the hints capped at
    4 × the interval and at 24 h, then jittered 0–10 % later and capped again at
    max(24 h, interval).
    """
    if interval <= _ZERO:
        _check_interval(interval)
    seconds = interval.total_seconds()
    wait = seconds
    # Most polls (every 304 without a max-age) have no hint: the interval is the wait.
    if (ttl_minutes is not None and ttl_minutes > 0) or (
        max_age_seconds is not None and max_age_seconds > 0
    ):
        cap = min(_MAX_POLL_SECONDS, seconds * MAX_HINT_FACTOR)
        hint = 0.0
        if ttl_minutes is not None and ttl_minutes > 0:
            hint = max(hint, min(ttl_minutes * 60.0, cap))
        if max_age_seconds is not None and max_age_seconds > 0:
            hint = max(hint, min(float(max_age_seconds), cap))
        wait = max(seconds, hint)
    return now + _jittered_seconds(wait, seconds, rng)


def next_poll_after_failure(
    now: datetime,
    interval: timedelta,
    consecutive_failures: int,
    *,
    retry_after_seconds: float | None,
    rng: random.Random,
) -> datetime:
    """When to poll again after a failed poll.

    `consecutive_failures` counts failures in a row *including* this one (for a throttled poll:
    the unchanged count, possibly 0, see `is_throttled`). The wait is interval × 2^(failures − 1)
    (never less than one interval), capped at max(24 h, interval), jittered 0–10 % later; and at
    least `retry_after_seconds` when the server sent one (capped at 24 h).
    """
    _check_interval(interval)
    doublings = min(max(consecutive_failures - 1, 0), _MAX_DOUBLINGS)
    delay = _jittered(_seconds(interval) * 2.0**doublings, interval, rng)
    if retry_after_seconds is not None and retry_after_seconds > 0:
        delay = max(delay, timedelta(seconds=min(retry_after_seconds, _seconds(MAX_POLL_DELAY))))
    return now + delay


def is_throttled(status: int | None, retry_after_seconds: float | None) -> bool:
    """True when a failed poll means "ask later", not "this feed is broken" (FAULTS 23).

    429 Too Many Requests always; 503 Service Unavailable only with a Retry-After (planned
    maintenance — a bare 503 is a server error like 500/502). For these the caller does not add to
    the feed's consecutive failures and does not report the feed as failing; the next poll still
    waits for the Retry-After (`next_poll_after_failure`).
    """
    return status == 429 or (status == 503 and retry_after_seconds is not None)


def alert_retry_at(
    now: datetime,
    attempts: int,
    rng: random.Random,
    *,
    retry_after_seconds: float | None = None,
) -> datetime:
    """When to try delivering an alert again after `attempts` failed attempts (1 after the first).

    Full jitter: uniform in [0, min(1 h, 30 s × 2^(attempts − 1))]; at least the channel's
    `retry_after_seconds` when it gave one (Telegram's ``retry_after``), capped at 1 h. The caller
    gives up once `attempts` reaches `MAX_ALERT_ATTEMPTS`.
    """
    doublings = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
    ceiling = min(_seconds(ALERT_RETRY_BASE) * 2.0**doublings, _seconds(ALERT_RETRY_CAP))
    delay = timedelta(seconds=rng.uniform(0.0, ceiling))
    if retry_after_seconds is not None and retry_after_seconds > 0:
        delay = max(delay, timedelta(seconds=min(retry_after_seconds, _seconds(ALERT_RETRY_CAP))))
    return now + delay


def bot_start_delay(failures: int) -> float:
    """Seconds to wait before starting the bot again after `failures` failed starts in a row (1
    after the first): `BOT_START_RETRY_BASE` doubled each time, capped at `BOT_START_RETRY_CAP`."""
    doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
    return min(BOT_START_RETRY_BASE * 2.0**doublings, BOT_START_RETRY_CAP)


def next_digest_at(now: datetime, every: str, at: time | None, zone: tzinfo) -> datetime:
    """When the next digest goes out: the next full hour (`hourly`) or the next `at` o'clock in
    `zone` (`daily`), strictly after `now`. Wall-clock times are kept across DST changes: a digest
    at 08:00 Europe/London is at 08:00 in winter and in summer."""
    local = now.astimezone(zone)
    if every == "hourly":
        top = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return top.astimezone(now.tzinfo)
    if at is None:
        raise ValueError("a daily digest needs a time")
    candidate = datetime.combine(local.date(), at, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=zone)
    return candidate.astimezone(now.tzinfo)


def subscriber_digest_at(now: datetime, spec: str) -> datetime:
    """The next digest time of a subscriber's `/digest` setting: `hourly` or `daily HH:MM Zone`."""
    every, _, rest = spec.partition(" ")
    if every == "hourly":
        return next_digest_at(now, "hourly", None, UTC)
    at, _, zone = rest.partition(" ")
    return next_digest_at(now, "daily", time.fromisoformat(at), ZoneInfo(zone or "UTC"))


def subscriber_due_at(
    now: datetime,
    *,
    digest: str | None,
    chat_muted_until: datetime | None = None,
    watchlist_muted_until: datetime | None = None,
) -> datetime | None:
    """When a subscriber's alert goes: None for at once; else the latest of its next digest time
    and the ends of the chat's and the watchlist's mutes (held alerts come as one digest then)."""
    due = subscriber_digest_at(now, digest) if digest else None
    for until in (chat_muted_until, watchlist_muted_until):
        if until is not None and until > now:
            due = max(due or now, until)
    return due


def cache_max_age(headers: Mapping[str, str]) -> int | None:
    """Seconds the response stays fresh by its ``Cache-Control: max-age``, minus its ``Age``.

    Header names and directives are matched case-insensitively; ``max-age="600"`` is accepted; the
    first max-age wins (RFC 9111 §4.2.1). None when there is no usable max-age, or when the
    response says ``no-cache`` or ``no-store`` (it asks to be revalidated every time, which the
    conditional GET does anyway: no reason to wait longer than the interval). ``s-maxage`` is for
    shared caches and ignored (we are a private client), so is ``Expires``. A response already
    older than its max-age gives 0.
    """
    cache_control: list[str] = []
    age: int | None = None
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "cache-control":
            cache_control.append(value)
        elif lowered == "age":
            age = _non_negative_int(value)
    max_age: int | None = None
    for header in cache_control:
        for directive in header.split(","):
            key, _, argument = directive.strip().partition("=")
            key = key.strip().lower()
            if key in ("no-cache", "no-store"):
                return None
            if key == "max-age" and max_age is None:
                max_age = _non_negative_int(argument.strip().strip('"'))
    if max_age is None:
        return None
    return max(max_age - (age or 0), 0)


def _non_negative_int(text: str) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _jittered(seconds: float, interval: timedelta, rng: random.Random) -> timedelta:
    """`seconds` made 0–10 % longer, at most max(24 h, interval)."""
    return _jittered_seconds(seconds, interval.total_seconds(), rng)


def _jittered_seconds(seconds: float, interval: float, rng: random.Random) -> timedelta:
    """`_jittered` with the interval in seconds."""
    cap = max(_MAX_POLL_SECONDS, interval)
    return timedelta(seconds=min(min(seconds, cap) * rng.uniform(1.0, 1.0 + POLL_JITTER), cap))


def _check_interval(interval: timedelta) -> None:
    if interval <= timedelta(0):
        raise ValueError(f"poll interval must be positive, not {interval}")


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()
