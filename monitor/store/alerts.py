"""Matches and the alert outbox: which watchlists a story matched, enqueueing an alert per
(story, watchlist, channel, recipient), leasing due alerts to a deliverer, and marking each sent,
to retry, postponed or failed; plus the alert counts, the unsent alerts
(pending or given up) of `monitor alerts`, and retrying or purging those given up.

An alert is enqueued in the transaction that stored its item and match, and the unique key makes a
second enqueue a no-op. Delivery claims alerts with a row lease timed by the database clock
(`FOR UPDATE SKIP LOCKED` on PostgreSQL), and an outcome is recorded only while the deliverer still
holds that lease, so an alert whose lease expired and was claimed again is not marked twice.

Functions take a Session and never commit. Delivering is `monitor.outbox`'s job, not this module's.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from monitor.model import Alert, Hit, MessageRef
from monitor.store._shared import (
    array_literal,
    database_now,
    in_id_array,
    insert_ignore,
    insert_ignore_many,
    lease_free,
    rowcount,
    short_error,
    takes_arrays,
)
from monitor.store.tables import alerts, feeds, items, matches

__all__ = [
    "AlertToSend",
    "Backlog",
    "NewAlert",
    "NewMatch",
    "UnsentAlert",
    "alert_counts",
    "alert_recipient",
    "alerts_to_send",
    "claim_due_alerts",
    "enqueue_alert",
    "enqueue_alerts",
    "fail_pending_alerts",
    "insert_match",
    "insert_matches",
    "mark_alert_failed",
    "mark_alert_retry",
    "mark_alert_sent",
    "mark_alert_unconfirmed",
    "matched_watchlists",
    "outbox_backlog",
    "postpone_alert",
    "purge_failed_alerts",
    "renew_alert_leases",
    "retry_failed_alerts",
    "unsent_alerts",
    "watchlists_matched",
]


@dataclass(frozen=True, slots=True)
class AlertToSend:
    """A claimed alert with everything a notifier renders. `attempts` counts earlier deliveries;
    `hits` is the match's JSON, and `title` and `text` are the item's as it matched (what the
    hits point into); `other_feeds` are the other sources of the story, sorted."""

    id: int
    story_id: int
    item_id: int
    watchlist: str
    channel: str
    recipient: str
    attempts: int
    unconfirmed_sends: int
    title: str
    link: str | None
    text: str
    published_at: datetime | None
    language: str | None
    feed_name: str
    hits: str
    other_feeds: tuple[str, ...]

    def alert(self, *, thread_id: int | None = None) -> Alert:
        """The alert as a channel shows it; `thread_id`: the forum topic it goes to."""
        return Alert(
            id=self.id,
            watchlist=self.watchlist,
            channel=self.channel,
            recipient=self.recipient,
            title=self.title,
            body=self.text,
            link=self.link,
            source=self.feed_name,
            published=self.published_at,
            hits=tuple(Hit(**h) for h in json.loads(self.hits or "[]")),
            other_sources=self.other_feeds,
            attempts=self.attempts,
            unconfirmed_sends=self.unconfirmed_sends,
            language=self.language,
            thread_id=thread_id,
        )


@dataclass(frozen=True, slots=True)
class UnsentAlert:
    """An alert not sent, pending or given up (`status` failed), with why: its attempts so far,
    its last error, and when it is due (for one given up, when it would have been)."""

    id: int
    status: str
    watchlist: str
    channel: str
    recipient: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    created_at: datetime
    feed_name: str
    title: str


def watchlists_matched(session: Session, story_id: int) -> set[str]:
    """The watchlists this story has matched already."""
    return set(session.scalars(select(matches.c.watchlist).where(matches.c.story_id == story_id)))


# Built once (its compiled SQL is cached); an indexed lookup (the unique story_id, watchlist).
_MATCHED_WATCHLISTS = select(matches.c.story_id, matches.c.watchlist).where(
    matches.c.story_id.in_(bindparam("story_ids", expanding=True))
)
# On PostgreSQL the ids are one array parameter: the same text for any number of stories, so
# psycopg prepares it after a few executions and the server keeps its plan.
_MATCHED_WATCHLISTS_ANY = select(matches.c.story_id, matches.c.watchlist).where(
    in_id_array(matches.c.story_id, "story_ids")
)


def matched_watchlists(session: Session, story_ids: Collection[int]) -> dict[int, set[str]]:
    """For each of `story_ids`, the watchlists it has matched already, in one query."""
    found: dict[int, set[str]] = {story_id: set() for story_id in story_ids}
    ids = sorted(found)
    if not ids:
        return found
    pages: list[Any]
    if takes_arrays(session):  # the ids as one array literal: the same text always
        pages, statement = [array_literal(ids)], _MATCHED_WATCHLISTS_ANY
    else:
        pages = [ids[start : start + 500] for start in range(0, len(ids), 500)]
        statement = _MATCHED_WATCHLISTS
    for some in pages:
        for row in session.execute(statement, {"story_ids": some}):
            found[row.story_id].add(row.watchlist)
    return found


@dataclass(frozen=True, slots=True)
class NewMatch:
    """A match to record (`insert_matches`): `item_id` made story `story_id` match `watchlist`;
    `title` and `text` are the item's as they matched, which the hits (JSON) point into."""

    story_id: int
    item_id: int
    watchlist: str
    hits: str
    title: str | None = None
    text: str | None = None


def insert_matches(
    session: Session, new: Collection[NewMatch], now: datetime
) -> set[tuple[int, str]]:
    """`insert_match` for many matches in one round trip; the (story id, watchlist) pairs
    inserted (a story that had matched the watchlist is left out)."""
    rows = [
        {
            "story_id": m.story_id,
            "item_id": m.item_id,
            "watchlist": m.watchlist,
            "hits": m.hits,
            "created_at": now,
            "title": m.title,
            "text": m.text,
        }
        for m in new
    ]
    made = insert_ignore_many(
        session, matches, rows, ["story_id", "watchlist"], ["story_id", "watchlist"]
    )
    return {(row.story_id, row.watchlist) for row in made}


def insert_match(
    session: Session,
    story_id: int,
    item_id: int,
    watchlist: str,
    hits_json: str,
    now: datetime,
    *,
    title: str | None = None,
    text: str | None = None,
) -> bool:
    """Record that `item_id` made its story match `watchlist`; False if the story had matched it.

    `title` and `text` are the item's as they matched, which the hits point into: its alerts
    show them, even if the item changes before they are sent."""
    values = {
        "story_id": story_id,
        "item_id": item_id,
        "watchlist": watchlist,
        "hits": hits_json,
        "created_at": now,
        "title": title,
        "text": text,
    }
    return insert_ignore(session, matches, values, ["story_id", "watchlist"]) is not None


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
    return insert_ignore(session, alerts, values, conflict) is not None


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert to put in the outbox (`enqueue_alerts`); `due_at` None: due now."""

    story_id: int
    item_id: int
    watchlist: str
    channel: str
    recipient: str
    due_at: datetime | None = None


def enqueue_alerts(session: Session, new: Collection[NewAlert], now: datetime) -> int:
    """`enqueue_alert` for many alerts in one round trip; how many were put in the outbox (one
    that (story, watchlist, channel, recipient) had already is left out)."""
    rows = [
        {
            "story_id": a.story_id,
            "item_id": a.item_id,
            "watchlist": a.watchlist,
            "channel": a.channel,
            "recipient": a.recipient,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": a.due_at or now,
            "created_at": now,
        }
        for a in new
    ]
    conflict = ["story_id", "watchlist", "channel", "recipient"]
    return len(insert_ignore_many(session, alerts, rows, conflict, ["id"]))


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
            # Written "in the future": the clock was set back since, and the alert's time means
            # nothing; it goes now rather than when the clock catches up (FAULTS 62).
            or_(alerts.c.next_attempt_at <= now, alerts.c.created_at > now),
            lease_free(alerts, now),
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
    return alerts_to_send(session, ids)


def alerts_to_send(session: Session, ids: Collection[int]) -> list[AlertToSend]:
    """The alerts `ids` with what rendering them needs, due first: the item as it matched, its
    feed, and the story's other sources as they are now."""
    rows = session.execute(
        select(
            alerts.c.id,
            alerts.c.story_id,
            alerts.c.item_id,
            alerts.c.watchlist,
            alerts.c.channel,
            alerts.c.recipient,
            alerts.c.attempts,
            alerts.c.unconfirmed_sends,
            func.coalesce(matches.c.title, items.c.title).label("title"),
            items.c.link,
            func.coalesce(matches.c.text, items.c.text).label("text"),
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
        .where(alerts.c.id.in_(list(ids)))
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


def renew_alert_leases(
    session: Session, owner: str, lease: timedelta, alert_ids: Collection[int]
) -> int:
    """Extend `owner`'s leases on `alert_ids` (deliveries still under way) to DB now + `lease`;
    return how many it still held."""
    if not alert_ids:
        return 0
    now = database_now(session)
    result = session.execute(
        update(alerts)
        .where(
            alerts.c.id.in_(list(alert_ids)),
            alerts.c.lease_owner == owner,
            alerts.c.status == "pending",
        )
        .values(lease_until=now + lease)
    )
    return rowcount(result)


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


def mark_alert_sent(
    session: Session,
    alert_id: int,
    owner: str,
    now: datetime,
    *,
    message: MessageRef | None = None,
    sources: Sequence[str] = (),
) -> bool:
    """Delivered, as `message` (a Telegram message, which can be edited later) listing the other
    `sources` of its story. False (nothing changed) unless `owner` still holds the lease."""
    values: dict[str, Any] = {"status": "sent", "sent_at": now}
    if message is None:
        values["edit_due_at"] = None  # nothing to edit: later sources are not added to it
    else:
        values |= {
            "message_chat_id": message.chat_id,
            "message_id": message.message_id,
            "message_sources": json.dumps(list(sources), ensure_ascii=False),
        }
    return _finish_alert(session, alert_id, owner, **values)


def mark_alert_retry(
    session: Session,
    alert_id: int,
    owner: str,
    error: str,
    next_attempt_at: datetime,
    *,
    unconfirmed: bool = False,
) -> bool:
    """Failed this time; due again at `next_attempt_at`. `unconfirmed`: it may have arrived all
    the same (counted in `unconfirmed_sends`). False unless `owner` holds the lease."""
    values: dict[str, Any] = {"last_error": short_error(error), "next_attempt_at": next_attempt_at}
    if unconfirmed:
        values["unconfirmed_sends"] = alerts.c.unconfirmed_sends + 1
    return _finish_alert(session, alert_id, owner, **values)


def mark_alert_unconfirmed(
    session: Session, alert_id: int, owner: str, now: datetime, error: str
) -> bool:
    """Taken as delivered without an answer that said so: sent again after an unconfirmed send,
    and unconfirmed again. Not sent a third time. False unless `owner` holds the lease."""
    return _finish_alert(
        session,
        alert_id,
        owner,
        status="sent",
        sent_at=now,
        edit_due_at=None,  # no message known to edit
        last_error=short_error(error),
        unconfirmed_sends=alerts.c.unconfirmed_sends + 1,
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
        last_error=short_error(reason),
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
        .values(status="failed", last_error=short_error(error), lease_owner=None, lease_until=None)
    )
    return rowcount(result)


def mark_alert_failed(session: Session, alert_id: int, owner: str, error: str) -> bool:
    """Given up, with the reason. False unless `owner` holds the lease."""
    return _finish_alert(session, alert_id, owner, status="failed", last_error=short_error(error))


def unsent_alerts(
    session: Session, status: str, limit: int | None = None, ids: Collection[int] | None = None
) -> list[UnsentAlert]:
    """Alerts of `status` pending (soonest due first) or failed (newest first), at most `limit`,
    only `ids` if given."""
    if status not in ("pending", "failed"):
        raise ValueError(f"{status!r} is not an unsent alert's status")
    statement = (
        select(
            alerts.c.id,
            alerts.c.status,
            alerts.c.watchlist,
            alerts.c.channel,
            alerts.c.recipient,
            alerts.c.attempts,
            alerts.c.last_error,
            alerts.c.next_attempt_at,
            alerts.c.created_at,
            feeds.c.name.label("feed_name"),
            items.c.title,
        )
        .join(items, items.c.id == alerts.c.item_id)
        .join(feeds, feeds.c.id == items.c.feed_id)
        .where(alerts.c.status == status)
        .order_by(
            *(
                (alerts.c.next_attempt_at, alerts.c.id)
                if status == "pending"
                else (alerts.c.id.desc(),)
            )
        )
        .limit(limit)
    )
    if ids is not None:
        statement = statement.where(alerts.c.id.in_(list(ids)))
    return [UnsentAlert(**row._mapping) for row in session.execute(statement)]


def _given_up(ids: Collection[int] | None) -> ColumnElement[bool]:
    given_up = alerts.c.status == "failed"
    return given_up if ids is None else and_(given_up, alerts.c.id.in_(list(ids)))


def retry_failed_alerts(session: Session, now: datetime, ids: Collection[int] | None = None) -> int:
    """Queue alerts given up (all, or those of `ids`) again, due at `now` with every attempt
    ahead of them; return how many. Their last error stays until a delivery replaces it."""
    result = session.execute(
        update(alerts)
        .where(_given_up(ids))
        .values(
            status="pending", attempts=0, next_attempt_at=now, lease_owner=None, lease_until=None
        )
    )
    return rowcount(result)


def purge_failed_alerts(session: Session, ids: Collection[int] | None = None) -> int:
    """Delete alerts given up (all, or those of `ids`); return how many. Their matches stay, so
    the stories do not alert again."""
    return rowcount(session.execute(delete(alerts).where(_given_up(ids))))


@dataclass(frozen=True, slots=True)
class Backlog:
    """The pending alerts of one channel: how many, and when the oldest was queued."""

    pending: int
    oldest: datetime


def outbox_backlog(session: Session) -> dict[str, Backlog]:
    """Pending alerts per channel (channels with none are absent), for /metrics."""
    return {
        row.channel: Backlog(row.n, row.oldest)
        for row in session.execute(
            select(
                alerts.c.channel,
                func.count().label("n"),
                func.min(alerts.c.created_at).label("oldest"),
            )
            .where(alerts.c.status == "pending")
            .group_by(alerts.c.channel)
        )
    }


def alert_counts(session: Session) -> dict[str, int]:
    """Alerts per status; every status is present."""
    counts = dict.fromkeys(("pending", "sent", "failed"), 0)
    for status, n in session.execute(
        select(alerts.c.status, func.count()).group_by(alerts.c.status)
    ):
        counts[status] = n
    return counts
