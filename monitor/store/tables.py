"""The schema, as SQLAlchemy Core tables: the shape every migration must arrive at.

Two column types do work that would otherwise be repeated at every call site:

* `UTCDateTime` stores timezone-aware UTC and always gives aware UTC back (SQLite keeps no zone;
  PostgreSQL answers in the session's zone). A naive datetime is a bug and is refused.
* `CleanText` and `CleanString` strip NUL, the other C0 controls except tab/LF/CR, and lone
  surrogates from every value bound to them, in inserts, updates and comparisons alike (FAULTS 9:
  PostgreSQL refuses NUL, and a lone surrogate cannot be encoded as UTF-8).

An item's story is `items.story_id`, independent of its own `content_hash`: `stories.content_hash` is
the exact hash that created the story, and a near-copy (SPEC §5) joins that story by its fingerprint.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ALERT_STATUSES",
    "CleanString",
    "CleanText",
    "UTCDateTime",
    "alerts",
    "clean_text",
    "feeds",
    "items",
    "leadership",
    "matches",
    "metadata",
    "send_chats",
    "send_slots",
    "stories",
    "story_hashes",
]

ALERT_STATUSES = ("pending", "sent", "failed")

_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def clean_text(value: str) -> str:
    """`value` without C0 controls (tab, LF and CR kept) and lone surrogates."""
    return _UNSTORABLE.sub("", value)


class CleanText(TypeDecorator[str]):
    """TEXT, cleaned by `clean_text` on the way in."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else clean_text(value)

    # No `process_result_value`: what is read is the driver's string as it is, and without one
    # SQLAlchemy calls nothing for each value read (a claim reads four of them per feed).


class CleanString(TypeDecorator[str]):
    """VARCHAR(n) (`CleanString(n)`), cleaned by `clean_text` on the way in."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else clean_text(value)

    # No `process_result_value`: what is read is the driver's string as it is, and without one
    # SQLAlchemy calls nothing for each value read (a claim reads four of them per feed).


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store takes timezone-aware datetimes")
        value = value.astimezone(UTC)
        # SQLite stores text without a zone: keep it naive UTC so that text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        check = self.process_bind_param

        # SQLite's text, as SQLAlchemy's DATETIME writes it (microseconds always), in one call
        # of `isoformat` instead of its formatting of each field: half the CPU, for every time
        # written (a round of 304s writes three a poll).
        def process(value: datetime | None) -> str | None:
            naive = check(value, dialect)
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return process


# A 64-bit key on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

feeds = Table(
    "feeds",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", CleanString(200), nullable=False, unique=True),
    Column("url", CleanText(), nullable=False),
    # False once the feed leaves the config: kept with its items, never claimed.
    Column("active", Boolean, nullable=False, server_default=true()),
    Column("etag", CleanText()),
    Column("last_modified", CleanText()),
    Column("body_hash", String(64)),  # sha256 of the last body: an identical body is not parsed
    Column("last_polled_at", UTCDateTime()),
    Column("last_status", String(20)),  # ok | not_modified | unchanged | error | retry_later | gone
    Column("last_error", CleanText()),
    Column("last_new_items", Integer),
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    # When the 404/410 answers began, for as long as they go on; `fetch.gone_after` later: gone.
    Column("missing_since", UTCDateTime()),
    # The last poll that did not fail, and the first failure of the current run of failures
    # (NULL while the feed works): `monitor feeds` (migration 0009).
    Column("last_success_at", UTCDateTime()),
    Column("failing_since", UTCDateTime()),
    Column("next_poll_at", UTCDateTime(), nullable=False, index=True),
    Column("lease_owner", CleanString(200)),
    Column("lease_until", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
)

stories = Table(
    "stories",
    metadata,
    Column("id", Id, primary_key=True),
    Column("content_hash", String(128), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    # The first item's body fingerprint (core.stories), "v<version>:<hash> <hash> …"; NULL for a
    # body too short to have one.
    Column("fingerprint", Text),
)

# The few smallest hashes of each story's fingerprint, to find the stories a new item may be a
# near-copy of with one indexed lookup (core.stories).
story_hashes = Table(
    "story_hashes",
    metadata,
    Column("story_id", Id, ForeignKey("stories.id"), nullable=False),
    Column("hash", BigInteger, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_story_hashes_hash_created_at", "hash", "created_at"),
    Index("ix_story_hashes_story_id", "story_id"),
)

items = Table(
    "items",
    metadata,
    Column("id", Id, primary_key=True),
    Column("feed_id", Id, ForeignKey("feeds.id"), nullable=False),
    # guid, else the cleaned link; long ones are replaced by a digest (see stories._identity_key)
    Column("identity", CleanText(), nullable=False),
    Column("content_hash", String(128), nullable=False, index=True),
    Column("hash_version", SmallInteger, nullable=False),
    Column("title", CleanText(), nullable=False),
    Column("text", CleanText(), nullable=False),
    Column("html", CleanText()),
    Column("link", CleanText()),
    Column("author", CleanText()),
    Column("published_at", UTCDateTime()),
    Column("language", CleanString(35)),
    Column("fetched_at", UTCDateTime(), nullable=False, index=True),  # first seen
    Column("updated_at", UTCDateTime()),  # last content change
    Column("story_id", Id, ForeignKey("stories.id"), nullable=False, index=True),
    UniqueConstraint("feed_id", "identity"),
)

matches = Table(
    "matches",
    metadata,
    Column("id", Id, primary_key=True),
    Column("story_id", Id, ForeignKey("stories.id"), nullable=False),
    Column("item_id", Id, ForeignKey("items.id"), nullable=False, index=True),
    Column("watchlist", CleanString(200), nullable=False),
    Column("hits", CleanText(), nullable=False),  # JSON
    Column("created_at", UTCDateTime(), nullable=False),
    # The item's title and text as they matched (migration 0009): the hits' offsets point into
    # them, and an alert sent later shows them even if the item was updated. NULL before 0008.
    Column("title", CleanText()),
    Column("text", CleanText()),
    UniqueConstraint("story_id", "watchlist"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("story_id", Id, ForeignKey("stories.id"), nullable=False),
    Column("item_id", Id, ForeignKey("items.id"), nullable=False, index=True),
    Column("watchlist", CleanString(200), nullable=False),
    Column("channel", CleanString(200), nullable=False),
    Column("recipient", CleanString(320), nullable=False, server_default=""),
    Column("status", String(10), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", CleanText()),
    Column("lease_owner", CleanString(200)),
    Column("lease_until", UTCDateTime()),
    Column("sent_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    # The Telegram message a single alert became, and the other sources it lists (JSON list):
    # it is edited when more sources join the story (migration 0010). NULL for other channels,
    # digests and alerts sent before.
    Column("message_chat_id", BigInteger),
    Column("message_id", BigInteger),
    Column("message_sources", CleanText()),
    # An edit of that message is due (more sources joined the story): asked for `edit_requests`
    # times, tried `edit_attempts` times since the last success; the lease columns hold a sent
    # alert while its message is edited (`store.message_edits`, migration 0011).
    Column("edit_due_at", UTCDateTime(), index=True),
    Column("edit_requests", Integer, nullable=False, server_default=text("0")),
    Column("edit_attempts", Integer, nullable=False, server_default=text("0")),
    # Sends whose outcome was unknown (a timeout after the request went out): the second is taken
    # as delivered, so a chat gets at most two copies (outbox, migration 0012).
    Column("unconfirmed_sends", Integer, nullable=False, server_default=text("0")),
    # SPEC §6: a story alerts once per watchlist per recipient (of each channel).
    UniqueConstraint("story_id", "watchlist", "channel", "recipient"),
    CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status"),
    Index("ix_alerts_status_next_attempt_at", "status", "next_attempt_at"),
    # What a recipient got in the last minute: more than a burst's worth is collapsed (outbox).
    Index("ix_alerts_recipient_sent_at", "recipient", "sent_at"),
)

__all__ += ["subscribers", "subscriptions"]

# ---- Telegram subscribers (migrations 0002, 0004) ------------------------------------------------
# A subscriber is a chat that receives alerts of the watchlists it subscribed to with /subscribe;
# `chat_id` is where alerts go (a user's private chat, or a group), `user_id` who last changed its
# subscriptions (for a group: the member whose access the group's alerts depend on). `active`
# turns false when Telegram says the chat is gone (blocked, kicked), with the reason; any later
# command from the chat turns it back on. `blocked` is the administrator's (`monitor subscribers
# block`): nothing is sent and no command changes it. `digest` is NULL (each alert at once) or a
# spec as written in the config: "hourly", "daily 08:00 Europe/London". `chat_type` (private,
# group, supergroup, channel) and `title` are for listing.
#
# A subscription's `thread_id` is the forum topic it was made in (alerts go there), and its
# `muted_until` a mute of that watchlist alone (`/mute NAME 2h`, the alert's mute button).

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("chat_id", BigInteger, nullable=False, unique=True),
    Column("user_id", BigInteger),
    Column("username", CleanString(64)),
    Column("active", Boolean, nullable=False, server_default=true()),
    Column("inactive_reason", CleanText()),
    Column("muted_until", UTCDateTime()),
    Column("digest", CleanString(100)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("blocked", Boolean, nullable=False, server_default=false()),
    Column("chat_type", CleanString(20)),
    Column("title", CleanText()),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("subscriber_id", Id, ForeignKey("subscribers.id"), primary_key=True),
    Column("watchlist", CleanString(200), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("thread_id", BigInteger),
    Column("muted_until", UTCDateTime()),
    Index("ix_subscriptions_watchlist", "watchlist"),
)

__all__ += ["leadership"]

# ---- coordination of replicas (migration 0005) ---------------------------------------------------
# One row per role that exactly one replica plays at a time ("leader": polls Telegram for commands,
# sends digests, prunes). `holder` plays it until `expires_at` (database time), renewing it as it
# goes; `term` grows by one each time the role changes hands, so a holder that lost it cannot
# renew by mistake.

leadership = Table(
    "leadership",
    metadata,
    Column("role", String(50), primary_key=True),
    Column("holder", CleanString(200)),
    Column("term", BigInteger, nullable=False, server_default=text("0")),
    Column("acquired_at", UTCDateTime()),
    Column("expires_at", UTCDateTime(), nullable=False),
)

__all__ += ["send_chats", "send_slots"]

# ---- Telegram's sending limits, shared by replicas (migration 0006) ------------------------------
# Each message about to go to Telegram holds one tick of a grid of 1/30 s (database epoch seconds
# × 30): the unique key keeps the whole bot at 30 messages a second, whichever replica sends. A
# chat's recent ticks say when it may get its next message (1 a second; 20 a minute in a group);
# `send_chats` holds the chat's row lock while a replica books its slot, and the end of a hold
# after Telegram's 429. Ticks older than a minute are of no use and are forgotten.

send_slots = Table(
    "send_slots",
    metadata,
    Column("tick", BigInteger, primary_key=True, autoincrement=False),
    Column("chat_id", BigInteger, nullable=False),
    Index("ix_send_slots_chat_id_tick", "chat_id", "tick"),
)

send_chats = Table(
    "send_chats",
    metadata,
    Column("chat_id", BigInteger, primary_key=True, autoincrement=False),
    Column("held_until", UTCDateTime()),
)
