"""Logging for the service: events as text or one JSON object per line, times in UTC, secrets
redacted.

Every log call of the service names an event and its fields in its format string:
`log.info("poll.done feed=%s new=%s", name, count)`. Text lines show it as written, after a UTC
ISO 8601 time (`2026-12-03T18:05:00.123Z INFO monitor.pipeline poll.done feed=x new=25`). JSON
lines read the format string back into keys, so a log stack can filter on them:
`{"time": "2026-12-03T18:05:00.123Z", "level": "info", "logger": "monitor.pipeline",
"event": "poll.done", "feed": "x", "new": 25}`; numbers and booleans stay JSON numbers and
booleans. Words after the fields, and lines of other libraries, go to `message`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO

# `area.what` at the start of a format string, then ` key=%s` (or ` key=literal`) fields.
_EVENT = re.compile(r"[a-z][\w-]*(?:\.[\w-]+)+(?=\s|:|$)")
_FIELD = re.compile(
    r"\s+([A-Za-z_][\w.]*)="
    r"(?:(%[-#0 +]*\d*(?:\.\d+)?[sdirfgeEGxXo])([^\s%:]*)|([^\s%=:]+(?:\s+[^\s%=:]+)*))"
    r"(?=\s|:|$)"
)
_CONVERSION = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdirfgeEGxXoac]")
_RESERVED = frozenset({"time", "level", "logger", "event", "message", "exception", "stack"})


def utc_time(created: float) -> str:
    """A record's time as UTC ISO 8601 with milliseconds and a Z: `2026-12-03T18:05:00.123Z`."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _plain(value: object) -> object:
    """A field's value as JSON has it: numbers, booleans and None as they are, the rest as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def event_fields(record: logging.LogRecord) -> tuple[str, dict[str, object], str] | None:
    """The event, its fields and any words after them, read from the record's format string and
    arguments; None when the record does not start with an event (another library's line)."""
    template = record.msg
    if not isinstance(template, str):
        return None
    args = record.args if isinstance(record.args, tuple) else () if not record.args else None
    if args is None:  # %(name)s style: not ours
        return None
    event = _EVENT.match(template)
    if event is None:
        return None
    fields: dict[str, object] = {}
    position, used = event.end(), 0
    while (field := _FIELD.match(template, position)) is not None:
        key, conversion, unit, literal = field.groups()
        if conversion is None:  # `action=fix the url` (words without fields after them)
            fields[key] = literal
        elif used < len(args):
            value = args[used]
            used += 1
            if unit:  # `retry_in=%gs`
                fields[key] = (conversion % (value,)) + unit
            elif conversion.endswith("r"):
                fields[key] = repr(value)
            elif conversion in ("%s", "%d", "%i"):
                fields[key] = _plain(value)
            else:  # a width, a precision or a base was asked for
                fields[key] = conversion % (value,)
        else:
            return None
        position = field.end()
    rest = template[position:]
    if len(_CONVERSION.findall(rest)) != len(args) - used:
        return None
    if args[used:]:
        try:
            rest = rest % args[used:]
        except (TypeError, ValueError):
            return None
    return event.group(), fields, rest.strip().removeprefix(":").strip()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event, each field, then message (free
    text, if any) and exception (a traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": utc_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        parsed = event_fields(record)
        if parsed is None:
            entry["message"] = record.getMessage()
        else:
            event, fields, rest = parsed
            entry["event"] = event
            for key, value in fields.items():
                entry[f"{key}_" if key in _RESERVED else key] = value
            if rest:
                entry["message"] = rest
        if record.exc_text:  # already formatted (and redacted) by a filter
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger message`, the time in UTC ISO 8601."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_time(record.created)


def configure_logging(
    log_format: str,
    *,
    level: int = logging.INFO,
    stream: IO[str] | None = None,
    secrets: tuple[str, ...] = (),
) -> None:
    """Events as text (`time level logger event key=value …`) or one JSON object per line."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that log URLs (tokens are part of Telegram's) stay quiet below WARNING.
    for noisy in ("httpx", "httpcore", "apscheduler", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if secrets:
        # And whatever is still logged has the secrets redacted (on the handler: every record).
        from monitor.notify.telegram import install_token_redaction

        for secret in secrets:
            install_token_redaction(secret)
