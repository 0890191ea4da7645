"""When to poll and when to retry: pure functions of (now, state, rng), tested with seeded rngs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from monitor.core.timing import (
    ALERT_RETRY_BASE,
    ALERT_RETRY_CAP,
    MAX_ALERT_ATTEMPTS,
    MAX_POLL_DELAY,
    POLL_JITTER,
    alert_retry_at,
    cache_max_age,
    is_throttled,
    next_digest_at,
    next_poll,
    next_poll_after_failure,
)

NOW = datetime(2024, 11, 25, 8, 0, tzinfo=UTC)
TEN_MINUTES = timedelta(minutes=10)
DAY = timedelta(hours=24)
SEEDS = range(200)


def rngs() -> list[random.Random]:
    return [random.Random(seed) for seed in SEEDS]


def within(delay: timedelta, low: timedelta, high: timedelta) -> bool:
    return low <= delay <= high


# --- next_poll --------------------------------------------------------------------------------


def test_next_poll_is_the_interval_plus_up_to_ten_percent() -> None:
    delays = [next_poll(NOW, TEN_MINUTES, rng=rng) - NOW for rng in rngs()]
    assert all(within(d, TEN_MINUTES, TEN_MINUTES * (1 + POLL_JITTER)) for d in delays)
    assert len(set(delays)) == len(delays)  # jitter really spreads feeds
    assert max(delays) - min(delays) > TEN_MINUTES * POLL_JITTER * 0.8


def test_next_poll_is_deterministic_for_a_seed() -> None:
    first = next_poll(NOW, TEN_MINUTES, rng=random.Random(7))
    assert first == next_poll(NOW, TEN_MINUTES, rng=random.Random(7))


@pytest.mark.parametrize(
    ("ttl_minutes", "max_age_seconds", "expected"),
    [
        (30, None, timedelta(minutes=30)),  # <ttl>30</ttl> stretches a 10 min interval
        (None, 1800, timedelta(minutes=30)),  # max-age=1800
        (20, 1800, timedelta(minutes=30)),  # the longer hint wins
        (60, None, 4 * TEN_MINUTES),  # at most 4 × the interval
        (300, 1800, 4 * TEN_MINUTES),
        (1, None, TEN_MINUTES),  # a hint never makes polling more frequent
        (None, 30, TEN_MINUTES),
        (0, 0, TEN_MINUTES),  # zero or negative hints are no hints
        (-5, -1, TEN_MINUTES),
        (7 * 24 * 60, None, 4 * TEN_MINUTES),
        (None, 10**12, 4 * TEN_MINUTES),
    ],
)
def test_feed_hints_stretch_within_bounds(
    ttl_minutes: int | None, max_age_seconds: int | None, expected: timedelta
) -> None:
    for rng in rngs():
        delay = (
            next_poll(
                NOW, TEN_MINUTES, ttl_minutes=ttl_minutes, max_age_seconds=max_age_seconds, rng=rng
            )
            - NOW
        )
        assert within(delay, expected, min(expected * (1 + POLL_JITTER), DAY)), delay


def test_a_feed_ttl_stretches_a_short_interval_4_times_at_most_and_never_beyond_a_day() -> None:
    five_minutes, eight_hours = timedelta(minutes=5), timedelta(hours=8)
    for rng in rngs():
        # <ttl>300</ttl> (5 hours) on a feed polled every 5 minutes: 20 minutes, not 5 hours.
        delay = next_poll(NOW, five_minutes, ttl_minutes=300, rng=rng) - NOW
        assert within(delay, 4 * five_minutes, 4 * five_minutes * (1 + POLL_JITTER))
        # A week's <ttl> on a feed polled every 8 hours: a day, not 32 hours.
        delay = next_poll(NOW, eight_hours, ttl_minutes=7 * 24 * 60, rng=rng) - NOW
        assert within(delay, DAY, DAY)


def test_an_operator_interval_above_a_day_is_kept() -> None:
    two_days = timedelta(days=2)
    for rng in rngs():
        assert next_poll(NOW, two_days, ttl_minutes=60, rng=rng) - NOW == two_days


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        next_poll(NOW, timedelta(0), rng=random.Random(0))


# --- next_poll_after_failure ------------------------------------------------------------------


def test_backoff_doubles_per_failure_up_to_a_day() -> None:
    """FAULTS 24: 500/502/503 → exponential back-off. Same seed per step: the jitter factor is
    the same, so the sequence must be monotonic and exactly doubling until the cap."""
    delays = [
        next_poll_after_failure(
            NOW, TEN_MINUTES, failures, retry_after_seconds=None, rng=random.Random(3)
        )
        - NOW
        for failures in range(1, 40)
    ]
    assert delays == sorted(delays)
    tick = timedelta(microseconds=2)  # timedelta rounds to whole microseconds
    assert abs(delays[1] - delays[0] * 2) <= tick and abs(delays[2] - delays[0] * 4) <= tick
    assert delays[-1] == DAY
    assert all(d <= DAY for d in delays)


@pytest.mark.parametrize("failures", [1, 2, 3, 5, 8])
def test_backoff_jitter_bounds(failures: int) -> None:
    base = min(TEN_MINUTES * 2 ** (failures - 1), DAY)
    for rng in rngs():
        delay = (
            next_poll_after_failure(NOW, TEN_MINUTES, failures, retry_after_seconds=None, rng=rng)
            - NOW
        )
        assert within(delay, base, min(base * (1 + POLL_JITTER), DAY))


def test_the_first_failure_waits_one_interval_and_huge_counts_stay_finite() -> None:
    rng = random.Random(1)
    first = next_poll_after_failure(NOW, TEN_MINUTES, 1, retry_after_seconds=None, rng=rng) - NOW
    assert within(first, TEN_MINUTES, TEN_MINUTES * 1.1)
    many = next_poll_after_failure(NOW, DAY * 3, 10**9, retry_after_seconds=None, rng=rng) - NOW
    assert many == DAY * 3


@pytest.mark.parametrize(
    ("retry_after", "expected_at_least"),
    [
        (120.0, timedelta(seconds=120)),  # 429 Retry-After: 120 (FAULTS 23), below the interval
        (3600.0, timedelta(hours=1)),  # above the interval: honoured as a minimum
        (10.0**9, DAY),  # capped at 24 h
        (0.0, TEN_MINUTES),  # an HTTP-date in the past
    ],
)
def test_retry_after_is_a_minimum(retry_after: float, expected_at_least: timedelta) -> None:
    for rng in rngs():
        delay = (
            next_poll_after_failure(NOW, TEN_MINUTES, 0, retry_after_seconds=retry_after, rng=rng)
            - NOW
        )
        assert delay >= expected_at_least
        assert delay >= TEN_MINUTES
        assert delay <= max(expected_at_least, TEN_MINUTES * (1 + POLL_JITTER))


def test_retry_after_from_an_http_date_in_seconds() -> None:
    """fetch.parse_retry_after turns an HTTP-date into seconds; that value is honoured as is."""
    seconds = (datetime(2024, 11, 25, 10, 30, tzinfo=UTC) - NOW).total_seconds()
    at = next_poll_after_failure(
        NOW, TEN_MINUTES, 2, retry_after_seconds=seconds, rng=random.Random(0)
    )
    assert at >= datetime(2024, 11, 25, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "retry_after", "throttled"),
    [
        (429, 120.0, True),
        (429, None, True),
        (503, 60.0, True),
        (503, None, False),  # a bare 503 is a server error
        (500, 60.0, False),
        (404, None, False),
        (None, None, False),  # a network error
    ],
)
def test_throttling_is_not_a_broken_feed(
    status: int | None, retry_after: float | None, throttled: bool
) -> None:
    assert is_throttled(status, retry_after) is throttled


# --- alert_retry_at -----------------------------------------------------------------------------


@pytest.mark.parametrize("attempts", range(1, MAX_ALERT_ATTEMPTS + 3))
def test_alert_retry_has_full_jitter_under_a_growing_ceiling(attempts: int) -> None:
    ceiling = min(ALERT_RETRY_BASE * 2 ** (attempts - 1), ALERT_RETRY_CAP)
    delays = [alert_retry_at(NOW, attempts, rng) - NOW for rng in rngs()]
    assert all(timedelta(0) <= d <= ceiling for d in delays)
    assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9  # the full range is used


def test_alert_retry_ceiling_is_monotonic_and_capped() -> None:
    """Same seed: the uniform draw is the same fraction, so delays grow with attempts."""
    delays = [alert_retry_at(NOW, a, random.Random(5)) - NOW for a in range(1, 30)]
    assert delays == sorted(delays)
    assert delays[-1] <= ALERT_RETRY_CAP
    assert alert_retry_at(NOW, 10**9, random.Random(5)) - NOW <= ALERT_RETRY_CAP


def test_alert_retry_honours_the_channels_retry_after() -> None:
    """FAULTS 45: Telegram RetryAfter(30) → at least 30 s later."""
    for rng in rngs():
        assert alert_retry_at(NOW, 1, rng, retry_after_seconds=30) - NOW >= timedelta(seconds=30)
    assert (
        alert_retry_at(NOW, 1, random.Random(0), retry_after_seconds=10**7) - NOW == ALERT_RETRY_CAP
    )


def test_alerts_outlive_an_hour_long_outage() -> None:
    """FAULTS 51: a channel down for an hour must not make alerts give up before it is back."""
    windows = []
    for seed in range(200):
        rng, now = random.Random(seed), NOW
        for attempts in range(1, MAX_ALERT_ATTEMPTS):
            now = alert_retry_at(now, attempts, rng)
        windows.append(now - NOW)
    windows.sort()
    assert windows[len(windows) // 20] > timedelta(hours=1)  # 95 % of alerts keep trying past 1 h


# --- cache_max_age ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Cache-Control": "max-age=600"}, 600),
        ({"cache-control": "public, MAX-AGE=300, must-revalidate"}, 300),
        ({"CACHE-CONTROL": 'max-age="120"'}, 120),
        ({"Cache-Control": "max-age=600", "Age": "100"}, 500),
        ({"Cache-Control": "max-age=60", "age": "100"}, 0),
        ({"Cache-Control": "max-age=600, max-age=30"}, 600),  # the first wins
        ({"Cache-Control": "no-cache, max-age=600"}, None),
        ({"Cache-Control": "max-age=600, No-Store"}, None),
        ({"Cache-Control": "s-maxage=600"}, None),
        ({"Cache-Control": "max-age=-1"}, None),
        ({"Cache-Control": "max-age=ten"}, None),
        ({"Cache-Control": "max-age=١٢٠"}, None),  # Arabic-Indic digits are not HTTP digits
        ({"Cache-Control": "private"}, None),
        ({"Expires": "Thu, 01 Dec 2094 16:00:00 GMT"}, None),
        ({}, None),
    ],
)
def test_cache_max_age(headers: dict[str, str], expected: int | None) -> None:
    assert cache_max_age(headers) == expected


def test_cache_max_age_feeds_next_poll() -> None:
    hint = cache_max_age({"Cache-Control": "max-age=1800"})
    delay = next_poll(NOW, TEN_MINUTES, max_age_seconds=hint, rng=random.Random(0)) - NOW
    assert within(delay, timedelta(minutes=30), timedelta(minutes=33))


def test_max_poll_delay_is_a_day() -> None:
    assert MAX_POLL_DELAY == DAY


# --- next_digest_at ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "every", "at", "zone", "expected"),
    [
        # daily 08:00 London: before and after the time, in winter (UTC+0) and summer (UTC+1)
        (
            "2026-01-10T07:59:00+00:00",
            "daily",
            "08:00",
            "Europe/London",
            "2026-01-10T08:00:00+00:00",
        ),
        (
            "2026-01-10T08:00:00+00:00",
            "daily",
            "08:00",
            "Europe/London",
            "2026-01-11T08:00:00+00:00",
        ),
        (
            "2026-07-10T06:30:00+00:00",
            "daily",
            "08:00",
            "Europe/London",
            "2026-07-10T07:00:00+00:00",
        ),
        # the night DST starts in London (29 March 2026): still 08:00 local
        (
            "2026-03-28T09:00:00+00:00",
            "daily",
            "08:00",
            "Europe/London",
            "2026-03-29T07:00:00+00:00",
        ),
        # Riyadh is UTC+3 all year
        ("2026-05-01T22:00:00+00:00", "daily", "06:00", "Asia/Riyadh", "2026-05-02T03:00:00+00:00"),
        # hourly: the next full hour, also in a half-hour zone
        ("2026-05-01T10:15:00+00:00", "hourly", None, "UTC", "2026-05-01T11:00:00+00:00"),
        ("2026-05-01T10:15:00+00:00", "hourly", None, "Asia/Kolkata", "2026-05-01T10:30:00+00:00"),
    ],
)
def test_next_digest_at(now: str, every: str, at: str | None, zone: str, expected: str) -> None:
    from datetime import time as clock
    from zoneinfo import ZoneInfo

    when = next_digest_at(
        datetime.fromisoformat(now),
        every,
        clock.fromisoformat(at) if at else None,
        ZoneInfo(zone),
    )
    assert when == datetime.fromisoformat(expected)
    assert when.tzinfo is not None
