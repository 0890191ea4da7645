"""Durations (`90s`, `10m`, `2h`, `1d`, `1h30m`) and sizes (`512KB`, `10MB`) as users write them.

Shared by the config file, the bot's `/mute 2h` and `backtest --since 30d`. Parsing raises
ValueError with a message fit to show the user; formatting gives back the shortest spelling.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DURATION_HINT = "write a number and a unit: 90s, 10m, 2h, 1d (or combined, 1h30m)"

# Binary multiples, as in nginx and Docker: a size cap is about memory, where 10MB means 10 MiB.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
}
_SIZE = re.compile(r"(\d+)\s*([a-z]*)")


def parse_duration(text: str) -> timedelta:
    """`1h30m` → timedelta(hours=1, minutes=30). Units d, h, m, s in that order; must be > 0."""
    compact = "".join(text.split())
    if compact.isdigit():
        if int(compact) == 0:
            raise ValueError("must be longer than 0 (e.g. 30s)")
        raise ValueError(f"{text!r} has no unit; {_DURATION_HINT}")
    match = _DURATION.fullmatch(compact)
    if not compact or match is None:
        raise ValueError(f"{text!r} is not a duration; {_DURATION_HINT}")
    days, hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    try:
        duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None
    if duration <= timedelta(0):
        raise ValueError("must be longer than 0 (e.g. 30s)")
    return duration


def format_duration(duration: timedelta) -> str:
    """The shortest spelling `parse_duration` reads back: 5400 s → `1h30m`, 90 s → `1m30s`."""
    total = int(duration.total_seconds())
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(text: str) -> int:
    """`10MB` → 10 485 760 bytes. Units B, KB, MB, GB (1024-based; KiB, MiB, GiB mean the same)."""
    match = _SIZE.fullmatch(text.strip().lower())
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 512KB, 10MB or 1GB")
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


def format_size(size: int) -> str:
    """The largest exact unit: 10 485 760 → `10MB`, 1500 → `1500B`."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
