"""Every query the monitor runs, as plain functions of a `Session` (SPEC §5, §6, §8).

The caller owns the session and the transaction (`monitor.store.db.transaction`): nothing here
commits, so one feed poll — items, stories, matches and their alerts — commits or rolls back as one.
Results are small frozen dataclasses, never ORM objects, so they outlive the session.

The database is the schedule and the idempotency guard (ARCHITECTURE "Let the database be the
schedule"):

* Work is claimed with a row lease (`lease_owner`, `lease_until`) timed by the database clock, never
  the host's (FAULTS 62). On PostgreSQL the claim locks its rows with `FOR UPDATE SKIP LOCKED`, so
  replicas claiming at the same moment get disjoint rows without waiting; on SQLite the write
  transaction (BEGIN IMMEDIATE) is already exclusive. A lease that expires (its holder crashed) is
  claimable again (FAULTS 58).
* Inserts that may race — story for a hash, item for (feed, identity), match, alert — are
  `INSERT … ON CONFLICT DO NOTHING` against the unique keys, and report whether they inserted.
* Text is cleaned of NUL and other control characters by the column types (`tables.CleanText`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Table,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from monitor.errors import StoreError
from monitor.store.tables import alerts, clean_text, feeds, items, matches, stories, story_hashes

__all__ = [
    "FEED_STATUSES",
    "AlertToSend",
    "FailedAlert",
    "FeedHealth",
    "FeedState",
    "NewItem",
    "StoredItem",
    "StoredItemRef",
    "add_fingerprint",
    "alert_counts",
    "claim_due_alerts",
    "claim_due_feeds",
    "database_now",
    "enqueue_alert",
    "failed_alerts",
    "feed_health",
    "find_item",
    "forget_story_hashes",
    "insert_item",
    "insert_match",
    "items_since",
    "lock_story_creation",
    "mark_alert_failed",
    "mark_alert_retry",
    "mark_alert_sent",
    "near_stories",
    "prune",
    "record_poll",
    "release_feed",
    "release_leases",
    "story_for_hash",
    "story_of_hash",
    "sync_feeds",
    "update_item",
    "watchlists_matched",
]

FEED_STATUSES = frozenset({"ok", "not_modified", "unchanged", "error", "retry_later"})

MAX_IDENTITY_BYTES = 1024  # a longer identity is stored as its digest: btree keys must stay small
MAX_ERROR_CHARS = 2000


# --- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedState:
    """A claimed feed: what the poller needs for a conditional GET and its next schedule."""

    id: int
    name: str
    url: str
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    consecutive_failures: int
    next_poll_at: datetime
    last_polled_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoredItemRef:
    """An item already stored for (feed, identity): enough to tell unchanged from updated."""

    id: int
    content_hash: str
    hash_version: int
    story_id: int


@dataclass(frozen=True, slots=True)
class NewItem:
    """An item to insert or to update. `fetched_at` is when this version was fetched."""

    identity: str
    content_hash: str
    hash_version: int
    title: str
    text: str
    html: str | None
    link: str | None
    author: str | None
    published_at: datetime | None
    language: str | None
    fetched_at: datetime
    story_id: int


@dataclass(frozen=True, slots=True)
class AlertToSend:
    """A claimed alert with everything a notifier renders. `attempts` counts earlier deliveries;
    `hits` is the match's JSON; `other_feeds` are the other sources of the story, sorted."""

    id: int
    story_id: int
    item_id: int
    watchlist: str
    channel: str
    recipient: str
    attempts: int
    title: str
    link: str | None
    text: str
    published_at: datetime | None
    language: str | None
    feed_name: str
    hits: str
    other_feeds: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """One row of `monitor feeds`."""

    name: str
    url: str
    active: bool
    last_polled_at: datetime | None
    last_status: str | None
    last_error: str | None
    last_new_items: int | None
    consecutive_failures: int
    next_poll_at: datetime
    item_count: int
    failed_alert_count: int


@dataclass(frozen=True, slots=True)
class FailedAlert:
    """An alert given up on, with the reason."""

    id: int
    watchlist: str
    channel: str
    recipient: str
    attempts: int
    last_error: str | None
    feed_name: str
    title: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredItem:
    """A stored item as a backtest reads it."""

    id: int
    story_id: int
    feed_name: str
    title: str
    text: str
    language: str | None
    published_at: datetime | None
    fetched_at: datetime
    link: str | None


# --- helpers --------------------------------------------------------------------------------------


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert_ignore(
    session: Session, table: Table, values: Mapping[str, Any], conflict: Sequence[str]
) -> int | None:
    """INSERT … ON CONFLICT (conflict) DO NOTHING RETURNING id: the new id, or None if it existed."""
    dialect = _dialect(session)
    if dialect == "postgresql":
        pg = postgresql.insert(table).values(values).on_conflict_do_nothing(index_elements=conflict)
        return session.execute(pg.returning(table.c.id)).scalar_one_or_none()
    if dialect == "sqlite":
        lite = sqlite.insert(table).values(values).on_conflict_do_nothing(index_elements=conflict)
        return session.execute(lite.returning(table.c.id)).scalar_one_or_none()
    raise StoreError(f"unsupported database {dialect!r}")


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _lease_free(table: Table, now: datetime) -> ColumnElement[bool]:
    return or_(table.c.lease_until.is_(None), table.c.lease_until <= now)


def _identity_key(identity: str) -> str:
    """The identity as stored: itself, or `sha256:<hex>` when too long for a unique index."""
    encoded = clean_text(identity).encode("utf-8")
    if len(encoded) <= MAX_IDENTITY_BYTES:
        return identity
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def _short(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    return error[: MAX_ERROR_CHARS - 1] + "…"


def database_now(session: Session) -> datetime:
    """The database's clock, aware UTC. Leases and due times are judged by it."""
    if _dialect(session) == "postgresql":
        value = session.execute(select(func.clock_timestamp())).scalar_one()
        return cast(datetime, value).astimezone(UTC)
    text_value = session.execute(select(func.strftime("%Y-%m-%d %H:%M:%f", "now"))).scalar_one()
    return datetime.fromisoformat(cast(str, text_value)).replace(tzinfo=UTC)


# --- feeds ----------------------------------------------------------------------------------------


def sync_feeds(
    session: Session, configured: Sequence[tuple[str, str]], now: datetime
) -> dict[str, int]:
    """Make the feeds table follow the config's (name, url) pairs; return name → feed id.

    A new feed is due at `now`. A changed URL drops the validators and body hash of the old one and
    makes the feed due at `now`. A feed no longer configured is kept (with its items) but marked
    inactive, so it is not claimed; configured again, it is active again.
    """
    wanted = dict(configured)
    existing = {
        row.name: row
        for row in session.execute(select(feeds.c.id, feeds.c.name, feeds.c.url, feeds.c.active))
    }
    ids: dict[str, int] = {}
    for name, url in wanted.items():
        row = existing.get(name)
        if row is None:
            values = {"name": name, "url": url, "next_poll_at": now, "created_at": now}
            new_id = _insert_ignore(session, feeds, values, ["name"])
            if new_id is None:  # another replica added it first
                new_id = session.execute(
                    select(feeds.c.id).where(feeds.c.name == name)
                ).scalar_one()
            ids[name] = new_id
            continue
        ids[name] = row.id
        changes: dict[str, Any] = {}
        if row.url != clean_text(url):
            changes.update(url=url, etag=None, last_modified=None, body_hash=None, next_poll_at=now)
        if not row.active:
            changes["active"] = True
        if changes:
            session.execute(update(feeds).where(feeds.c.id == row.id).values(changes))
    gone = [row.id for name, row in existing.items() if name not in wanted and row.active]
    if gone:
        session.execute(update(feeds).where(feeds.c.id.in_(gone)).values(active=False))
    return ids


_FEED_STATE_COLUMNS = (
    feeds.c.id,
    feeds.c.name,
    feeds.c.url,
    feeds.c.etag,
    feeds.c.last_modified,
    feeds.c.body_hash,
    feeds.c.consecutive_failures,
    feeds.c.next_poll_at,
    feeds.c.last_polled_at,
)


def claim_due_feeds(
    session: Session, owner: str, lease: timedelta, limit: int, *, include_not_due: bool = False
) -> list[FeedState]:
    """Lease up to `limit` active feeds that are due and not leased by anyone (or whose lease
    expired) to `owner` until DB now + `lease`; most overdue first.

    `include_not_due` claims active feeds that are not due yet too (`monitor once`).
    """
    now = database_now(session)
    due = (
        select(feeds.c.id)
        .where(feeds.c.active, _lease_free(feeds, now))
        .order_by(feeds.c.next_poll_at, feeds.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's write transaction is exclusive
    )
    if not include_not_due:
        # A last poll "in the future" means the clock was set back: the stored schedule means
        # nothing then, and the feed is due at once instead of after the jump (FAULTS 62).
        due = due.where(or_(feeds.c.next_poll_at <= now, feeds.c.last_polled_at > now))
    ids = list(session.scalars(due))
    if not ids:
        return []
    claimed = session.execute(
        update(feeds)
        .where(feeds.c.id.in_(ids))
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(*_FEED_STATE_COLUMNS)
    )
    states = [FeedState(**row._mapping) for row in claimed]
    states.sort(key=lambda state: (state.next_poll_at, state.id))
    return states


def record_poll(
    session: Session,
    feed_id: int,
    *,
    polled_at: datetime,
    status: str,
    error: str | None,
    etag: str | None,
    last_modified: str | None,
    body_hash: str | None,
    new_items: int,
    next_poll_at: datetime,
    failed: bool,
    owner: str | None = None,
) -> bool:
    """Record one poll's outcome and release the feed's lease.

    Validators and body hash are written as given (pass the previous ones to keep them). `failed`
    adds one to `consecutive_failures`; a success resets it. With `owner`, nothing happens (False)
    unless that owner still holds the lease.
    """
    if status not in FEED_STATUSES:
        raise ValueError(f"feed status {status!r} is not one of {sorted(FEED_STATUSES)}")
    statement = update(feeds).where(feeds.c.id == feed_id)
    if owner is not None:
        statement = statement.where(feeds.c.lease_owner == owner)
    result = session.execute(
        statement.values(
            last_polled_at=polled_at,
            last_status=status,
            last_error=_short(error),
            etag=etag,
            last_modified=last_modified,
            body_hash=body_hash,
            last_new_items=new_items,
            next_poll_at=next_poll_at,
            consecutive_failures=feeds.c.consecutive_failures + 1 if failed else 0,
            lease_owner=None,
            lease_until=None,
        ).returning(feeds.c.id)
    )
    return result.first() is not None


def release_feed(session: Session, feed_id: int, owner: str) -> bool:
    """Give a claimed feed back unpolled (shutdown): due again at its unchanged next_poll_at."""
    result = session.execute(
        update(feeds)
        .where(feeds.c.id == feed_id, feeds.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
        .returning(feeds.c.id)
    )
    return result.first() is not None


def release_leases(session: Session, owner: str | None) -> int:
    """Give back every feed and pending alert `owner` still holds (shutdown); return how many.

    `owner=None` releases every lease of every owner: only for a process that knows it is alone
    (on SQLite, the holder of the lock file), to recover at once from a crashed predecessor."""
    released = 0
    for table in (feeds, alerts):
        statement = update(table).where(table.c.lease_owner.is_not(None))
        if owner is not None:
            statement = statement.where(table.c.lease_owner == owner)
        result = session.execute(statement.values(lease_owner=None, lease_until=None))
        released += _rowcount(result)
    return released


# --- items and stories ----------------------------------------------------------------------------


def find_item(session: Session, feed_id: int, identity: str) -> StoredItemRef | None:
    """The stored item of `feed_id` with this identity, if any."""
    row = session.execute(
        select(items.c.id, items.c.content_hash, items.c.hash_version, items.c.story_id).where(
            items.c.feed_id == feed_id, items.c.identity == _identity_key(identity)
        )
    ).first()
    return None if row is None else StoredItemRef(**row._mapping)


def story_for_hash(session: Session, content_hash: str, now: datetime) -> tuple[int, bool]:
    """The story of this content hash, created if absent: (story id, created by this call).

    Race-safe: when another transaction creates the same story first, PostgreSQL makes the insert
    wait for it and do nothing, and the story is then read back.
    """
    values = {"content_hash": content_hash, "created_at": now}
    story_id = _insert_ignore(session, stories, values, ["content_hash"])
    if story_id is not None:
        return story_id, True
    existing = session.execute(
        select(stories.c.id).where(stories.c.content_hash == content_hash)
    ).scalar_one()
    return existing, False


def story_of_hash(session: Session, content_hash: str) -> int | None:
    """The story created by this exact content hash, if there is one."""
    found = select(stories.c.id).where(stories.c.content_hash == content_hash)
    return session.execute(found).scalar_one_or_none()


def near_stories(
    session: Session, smallest: Sequence[int], since: datetime, limit: int = 20
) -> list[tuple[int, str | None]]:
    """(story id, fingerprint) of the stories created since `since` that share one of the
    `smallest` hashes of a fingerprint: the candidates of which a new item may be a near-copy
    (core.stories decides)."""
    if not smallest:
        return []
    candidates = (
        select(story_hashes.c.story_id)
        .where(story_hashes.c.hash.in_(list(smallest)), story_hashes.c.created_at >= since)
        .distinct()
        .limit(limit)
    )
    found = select(stories.c.id, stories.c.fingerprint).where(stories.c.id.in_(candidates))
    return [(row.id, row.fingerprint) for row in session.execute(found)]


# pg_advisory_xact_lock key: one transaction at a time creates stories that carry a fingerprint.
_NEW_STORY_LOCK = 7_261_504_119


def lock_story_creation(session: Session) -> None:
    """Wait until no other transaction can be creating a story, for the rest of this one.

    A near-copy has no unique key to race on, as an exact copy has its hash: two replicas storing
    copies of one story at the same moment would each find no story and make one. On PostgreSQL
    an advisory lock makes the second wait for the first to commit, and then see its story; on
    SQLite the write transaction is already exclusive. Take it before the transaction's first
    write: waiting for it while holding row locks could deadlock with its holder.
    """
    if _dialect(session) == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _NEW_STORY_LOCK})


def add_fingerprint(
    session: Session, story_id: int, fingerprint: str, smallest: Sequence[int], now: datetime
) -> None:
    """Store a story's fingerprint and index its `smallest` hashes (core.stories)."""
    session.execute(update(stories).where(stories.c.id == story_id).values(fingerprint=fingerprint))
    if smallest:
        session.execute(
            story_hashes.insert(),
            [{"story_id": story_id, "hash": h, "created_at": now} for h in smallest],
        )


def _item_values(item: NewItem) -> dict[str, Any]:
    return {
        "content_hash": item.content_hash,
        "hash_version": item.hash_version,
        "title": item.title,
        "text": item.text,
        "html": item.html,
        "link": item.link,
        "author": item.author,
        "published_at": item.published_at,
        "language": item.language,
    }


def insert_item(session: Session, feed_id: int, item: NewItem) -> int | None:
    """Insert a new item; its id, or None if (feed, identity) was stored meanwhile by another
    process (then treat it as seen)."""
    values = _item_values(item) | {
        "feed_id": feed_id,
        "identity": _identity_key(item.identity),
        "fetched_at": item.fetched_at,
        "story_id": item.story_id,
    }
    return _insert_ignore(session, items, values, ["feed_id", "identity"])


def update_item(session: Session, item_id: int, item: NewItem, story_id: int) -> None:
    """Store a changed version of an item: its content, `story_id`, and `updated_at` =
    `item.fetched_at`. Identity and first `fetched_at` (retention, backtest) stay."""
    values = _item_values(item) | {"story_id": story_id, "updated_at": item.fetched_at}
    session.execute(update(items).where(items.c.id == item_id).values(values))


# --- matches and the alert outbox -----------------------------------------------------------------


def watchlists_matched(session: Session, story_id: int) -> set[str]:
    """The watchlists this story has matched already."""
    return set(session.scalars(select(matches.c.watchlist).where(matches.c.story_id == story_id)))


def insert_match(
    session: Session, story_id: int, item_id: int, watchlist: str, hits_json: str, now: datetime
) -> bool:
    """Record that `item_id` made its story match `watchlist`; False if the story had matched it."""
    values = {
        "story_id": story_id,
        "item_id": item_id,
        "watchlist": watchlist,
        "hits": hits_json,
        "created_at": now,
    }
    return _insert_ignore(session, matches, values, ["story_id", "watchlist"]) is not None


def enqueue_alert(
    session: Session,
    story_id: int,
    item_id: int,
    watchlist: str,
    channel: str,
    recipient: str,
    now: datetime,
    due_at: datetime | None = None,
) -> bool:
    """Put an alert in the outbox, due at `due_at` (default `now`; later for a digest); False if
    (story, watchlist, channel, recipient) has one already. Call it in the transaction that stored
    the item and its match."""
    values = {
        "story_id": story_id,
        "item_id": item_id,
        "watchlist": watchlist,
        "channel": channel,
        "recipient": recipient,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": due_at or now,
        "created_at": now,
    }
    conflict = ["story_id", "watchlist", "channel", "recipient"]
    return _insert_ignore(session, alerts, values, conflict) is not None


def claim_due_alerts(
    session: Session,
    owner: str,
    lease: timedelta,
    limit: int,
    *,
    channels: Collection[str] | None = None,
) -> list[AlertToSend]:
    """Lease up to `limit` pending alerts that are due and not leased (or whose lease expired) to
    `owner` until DB now + `lease`, oldest due first, with what rendering them needs.

    With `channels`, only alerts of those channels (the ones this process can deliver).
    """
    now = database_now(session)
    due = (
        select(alerts.c.id)
        .where(
            alerts.c.status == "pending",
            alerts.c.next_attempt_at <= now,
            _lease_free(alerts, now),
        )
        .order_by(alerts.c.next_attempt_at, alerts.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if channels is not None:
        due = due.where(alerts.c.channel.in_(list(channels)))
    ids = list(session.scalars(due))
    if not ids:
        return []
    session.execute(
        update(alerts)
        .where(alerts.c.id.in_(ids))
        .values(lease_owner=owner, lease_until=now + lease)
    )
    rows = session.execute(
        select(
            alerts.c.id,
            alerts.c.story_id,
            alerts.c.item_id,
            alerts.c.watchlist,
            alerts.c.channel,
            alerts.c.recipient,
            alerts.c.attempts,
            items.c.title,
            items.c.link,
            items.c.text,
            items.c.published_at,
            items.c.language,
            feeds.c.name.label("feed_name"),
            func.coalesce(matches.c.hits, "[]").label("hits"),
        )
        .join(items, items.c.id == alerts.c.item_id)
        .join(feeds, feeds.c.id == items.c.feed_id)
        .outerjoin(
            matches,
            and_(
                matches.c.story_id == alerts.c.story_id, matches.c.watchlist == alerts.c.watchlist
            ),
        )
        .where(alerts.c.id.in_(ids))
        .order_by(alerts.c.next_attempt_at, alerts.c.id)
    ).all()
    sources: dict[int, set[str]] = defaultdict(set)
    story_ids = {row.story_id for row in rows}
    for story_id, feed_name in session.execute(
        select(items.c.story_id, feeds.c.name)
        .join(feeds, feeds.c.id == items.c.feed_id)
        .where(items.c.story_id.in_(story_ids))
        .distinct()
    ):
        sources[story_id].add(feed_name)
    return [
        AlertToSend(
            **row._mapping, other_feeds=tuple(sorted(sources[row.story_id] - {row.feed_name}))
        )
        for row in rows
    ]


def _finish_alert(
    session: Session, alert_id: int, owner: str, *, attempt: bool = True, **values: Any
) -> bool:
    if attempt:
        values["attempts"] = alerts.c.attempts + 1
    result = session.execute(
        update(alerts)
        .where(alerts.c.id == alert_id, alerts.c.lease_owner == owner, alerts.c.status == "pending")
        .values(lease_owner=None, lease_until=None, **values)
        .returning(alerts.c.id)
    )
    return result.first() is not None


def mark_alert_sent(session: Session, alert_id: int, owner: str, now: datetime) -> bool:
    """Delivered. False (nothing changed) unless `owner` still holds the alert's lease."""
    return _finish_alert(session, alert_id, owner, status="sent", sent_at=now)


def mark_alert_retry(
    session: Session, alert_id: int, owner: str, error: str, next_attempt_at: datetime
) -> bool:
    """Failed this time; due again at `next_attempt_at`. False unless `owner` holds the lease."""
    return _finish_alert(
        session, alert_id, owner, last_error=_short(error), next_attempt_at=next_attempt_at
    )


def alert_recipient(session: Session, alert_id: int) -> str | None:
    """The recipient an alert is addressed to now (it changes when a chat migrates)."""
    recipient: str | None = session.execute(
        select(alerts.c.recipient).where(alerts.c.id == alert_id)
    ).scalar()
    return recipient


def postpone_alert(
    session: Session, alert_id: int, owner: str, reason: str, next_attempt_at: datetime
) -> bool:
    """Not sent, through no fault of its own (the channel asked us to wait, or the chat moved):
    due again at `next_attempt_at`, without counting an attempt."""
    return _finish_alert(
        session,
        alert_id,
        owner,
        attempt=False,
        last_error=_short(reason),
        next_attempt_at=next_attempt_at,
    )


def fail_pending_alerts(session: Session, channel: str, recipient: str, error: str) -> int:
    """Give up every pending alert of one recipient (a subscriber who blocked the bot)."""
    result = session.execute(
        update(alerts)
        .where(
            alerts.c.channel == channel,
            alerts.c.recipient == recipient,
            alerts.c.status == "pending",
        )
        .values(status="failed", last_error=_short(error), lease_owner=None, lease_until=None)
    )
    return _rowcount(result)


def mark_alert_failed(session: Session, alert_id: int, owner: str, error: str) -> bool:
    """Given up, with the reason. False unless `owner` holds the lease."""
    return _finish_alert(session, alert_id, owner, status="failed", last_error=_short(error))


# --- reports, backtest, retention -----------------------------------------------------------------


def feed_health(session: Session) -> list[FeedHealth]:
    """Every feed (active first, then by name) with its poll state, item and failed-alert counts."""
    item_counts = (
        select(items.c.feed_id, func.count().label("n")).group_by(items.c.feed_id).subquery()
    )
    failed_counts = (
        select(items.c.feed_id, func.count().label("n"))
        .select_from(alerts)
        .join(items, items.c.id == alerts.c.item_id)
        .where(alerts.c.status == "failed")
        .group_by(items.c.feed_id)
        .subquery()
    )
    rows = session.execute(
        select(
            feeds.c.name,
            feeds.c.url,
            feeds.c.active,
            feeds.c.last_polled_at,
            feeds.c.last_status,
            feeds.c.last_error,
            feeds.c.last_new_items,
            feeds.c.consecutive_failures,
            feeds.c.next_poll_at,
            func.coalesce(item_counts.c.n, 0).label("item_count"),
            func.coalesce(failed_counts.c.n, 0).label("failed_alert_count"),
        )
        .outerjoin(item_counts, item_counts.c.feed_id == feeds.c.id)
        .outerjoin(failed_counts, failed_counts.c.feed_id == feeds.c.id)
        .order_by(feeds.c.active.desc(), feeds.c.name)
    )
    return [FeedHealth(**row._mapping) for row in rows]


def failed_alerts(session: Session, limit: int = 20) -> list[FailedAlert]:
    """The most recent alerts given up on, newest first, with their reasons."""
    rows = session.execute(
        select(
            alerts.c.id,
            alerts.c.watchlist,
            alerts.c.channel,
            alerts.c.recipient,
            alerts.c.attempts,
            alerts.c.last_error,
            feeds.c.name.label("feed_name"),
            items.c.title,
            alerts.c.created_at,
        )
        .join(items, items.c.id == alerts.c.item_id)
        .join(feeds, feeds.c.id == items.c.feed_id)
        .where(alerts.c.status == "failed")
        .order_by(alerts.c.id.desc())
        .limit(limit)
    )
    return [FailedAlert(**row._mapping) for row in rows]


def alert_counts(session: Session) -> dict[str, int]:
    """Alerts per status; every status is present."""
    counts = dict.fromkeys(("pending", "sent", "failed"), 0)
    for status, n in session.execute(
        select(alerts.c.status, func.count()).group_by(alerts.c.status)
    ):
        counts[status] = n
    return counts


def items_since(session: Session, since: datetime) -> Iterator[StoredItem]:
    """Items first fetched at or after `since`, oldest first, streamed in batches.

    Iterate while the session is open (a server-side cursor on PostgreSQL).
    """
    statement = (
        select(
            items.c.id,
            items.c.story_id,
            feeds.c.name.label("feed_name"),
            items.c.title,
            items.c.text,
            items.c.language,
            items.c.published_at,
            items.c.fetched_at,
            items.c.link,
        )
        .join(feeds, feeds.c.id == items.c.feed_id)
        .where(items.c.fetched_at >= since)
        .order_by(items.c.fetched_at, items.c.id)
        .execution_options(yield_per=500)
    )
    result = session.execute(statement)
    try:
        for row in result:
            yield StoredItem(**row._mapping)
    finally:
        result.close()


def forget_story_hashes(session: Session, before: datetime) -> int:
    """Delete the indexed hashes of stories created before `before`, which no copy joins any more
    (core.stories.WINDOW); return how many. The stories keep their fingerprints."""
    return _rowcount(
        session.execute(delete(story_hashes).where(story_hashes.c.created_at < before))
    )


def prune(session: Session, older_than: datetime) -> int:
    """Delete items first fetched before `older_than` whose story never alerted; return how many.

    Stories with alerts keep every item, match and alert (the alert log). The matches of deleted
    items go with them, and so do stories left without items.
    """
    alerted_story = exists().where(alerts.c.story_id == items.c.story_id)
    alerted_item = exists().where(alerts.c.item_id == items.c.id)
    # An updated item may have moved to another story: its match with an alerted story stays.
    kept_match = exists().where(
        matches.c.item_id == items.c.id,
        exists().where(alerts.c.story_id == matches.c.story_id),
    )
    doomed = (
        select(items.c.id)
        .where(items.c.fetched_at < older_than, ~alerted_story, ~alerted_item, ~kept_match)
        .correlate(None)
    )
    session.execute(delete(matches).where(matches.c.item_id.in_(doomed)))
    deleted = _rowcount(session.execute(delete(items).where(items.c.id.in_(doomed))))
    unused_story = and_(
        stories.c.created_at < older_than,
        ~exists().where(items.c.story_id == stories.c.id),
        ~exists().where(matches.c.story_id == stories.c.id),
        ~exists().where(alerts.c.story_id == stories.c.id),
    )
    session.execute(
        delete(story_hashes).where(
            story_hashes.c.story_id.in_(select(stories.c.id).where(unused_story))
        )
    )
    session.execute(delete(stories).where(unused_story))
    return deleted
