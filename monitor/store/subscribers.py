"""Telegram subscribers and their subscriptions, as plain functions of a `Session` (issue 4).

Same rules as the other query modules (`feeds`, `stories`, `alerts`): the caller owns the
transaction (`db.transaction`), nothing here commits, results are frozen dataclasses. A subscriber
is a chat (`chat_id`, where alerts go); its alerts sit in the outbox under channel
`SUBSCRIBERS_CHANNEL` with the chat id as recipient.

Who may subscribe is the bot's decision (`telegram.subscriptions`), not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Row, Table, and_, delete, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from monitor.store.tables import alerts, subscribers, subscriptions

__all__ = [
    "SUBSCRIBERS_CHANNEL",
    "SUBSCRIBERS_DIGEST_CHANNEL",
    "Subscriber",
    "Target",
    "deactivate",
    "get_or_create_subscriber",
    "get_subscriber",
    "migrate_chat",
    "move_pending_alerts",
    "set_digest",
    "set_mute",
    "subscribe",
    "subscribers_of",
    "subscriptions_of",
    "unsubscribe",
]

# The outbox channel of alerts to subscribers. "@" cannot start a configured channel name, so it
# never collides with one.
SUBSCRIBERS_CHANNEL = "@telegram"
# Held alerts (a muted or digest subscriber's), delivered as one digest per chat when due.
SUBSCRIBERS_DIGEST_CHANNEL = SUBSCRIBERS_CHANNEL + ":digest"


@dataclass(frozen=True)
class Subscriber:
    id: int
    chat_id: int
    user_id: int | None
    username: str | None
    active: bool
    inactive_reason: str | None
    muted_until: datetime | None
    digest: str | None


@dataclass(frozen=True)
class Target:
    """An active subscriber of a watchlist, with what decides when its alerts go."""

    chat_id: int
    muted_until: datetime | None
    digest: str | None

    @property
    def recipient(self) -> str:
        """The outbox's `recipient` for this chat."""
        return str(self.chat_id)


def _insert_ignore(session: Session, table: Table, values: dict[str, Any], keys: list[str]) -> bool:
    """INSERT … ON CONFLICT (keys) DO NOTHING; whether a row was inserted. Two bot commands of one
    chat racing on PostgreSQL then agree instead of one failing on the unique key."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
    return session.execute(statement.returning(table.c[keys[0]])).first() is not None


def _rowcount(result: Any) -> int:
    return max(cast(CursorResult[Any], result).rowcount, 0)


def _subscriber(row: Row[Any]) -> Subscriber:
    mapping = row._mapping
    return Subscriber(**{name: mapping[name] for name in Subscriber.__dataclass_fields__})


_COLUMNS = [getattr(subscribers.c, name) for name in Subscriber.__dataclass_fields__]


def get_subscriber(session: Session, chat_id: int) -> Subscriber | None:
    row = session.execute(select(*_COLUMNS).where(subscribers.c.chat_id == chat_id)).first()
    return _subscriber(row) if row is not None else None


def get_or_create_subscriber(
    session: Session,
    chat_id: int,
    now: datetime,
    *,
    user_id: int | None = None,
    username: str | None = None,
) -> Subscriber:
    """The subscriber for `chat_id`, created if new. It is (re)activated: a chat that talks to the
    bot can receive from it again (a user who had blocked the bot and came back). `user_id` and
    `username` are updated when given."""
    existing = get_subscriber(session, chat_id)
    if existing is None:
        row = {
            "chat_id": chat_id,
            "user_id": user_id,
            "username": username,
            "active": True,
            "created_at": now,
            "updated_at": now,
        }
        _insert_ignore(session, subscribers, row, ["chat_id"])
    else:
        values: dict[str, Any] = {"active": True, "inactive_reason": None, "updated_at": now}
        if user_id is not None:
            values["user_id"] = user_id
        if username is not None:
            values["username"] = username
        changed = (
            not existing.active
            or (user_id is not None and user_id != existing.user_id)
            or (username is not None and username != existing.username)
        )
        if changed:
            session.execute(
                update(subscribers).where(subscribers.c.chat_id == chat_id).values(**values)
            )
    found = get_subscriber(session, chat_id)
    assert found is not None
    return found


def subscribe(session: Session, subscriber_id: int, watchlist: str, now: datetime) -> bool:
    """Subscribe; False if it already was."""
    values = {"subscriber_id": subscriber_id, "watchlist": watchlist, "created_at": now}
    return _insert_ignore(session, subscriptions, values, ["subscriber_id", "watchlist"])


def unsubscribe(session: Session, subscriber_id: int, watchlist: str) -> bool:
    """Unsubscribe; False if it was not subscribed."""
    result = session.execute(
        delete(subscriptions).where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.watchlist == watchlist,
        )
    )
    return _rowcount(result) > 0


def subscriptions_of(session: Session, chat_id: int) -> list[str]:
    """The watchlists `chat_id` subscribed to, by name."""
    return list(
        session.scalars(
            select(subscriptions.c.watchlist)
            .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
            .where(subscribers.c.chat_id == chat_id)
            .order_by(subscriptions.c.watchlist)
        )
    )


def subscribers_of(session: Session, watchlist: str) -> list[Target]:
    """The active subscribers of `watchlist`, by chat id. Call it in the transaction that stores a
    match, to enqueue one alert per chat (channel `SUBSCRIBERS_CHANNEL`)."""
    rows = session.execute(
        select(subscribers.c.chat_id, subscribers.c.muted_until, subscribers.c.digest)
        .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
        .where(subscriptions.c.watchlist == watchlist, subscribers.c.active.is_(True))
        .order_by(subscribers.c.chat_id)
    )
    return [Target(row.chat_id, row.muted_until, row.digest) for row in rows]


def deactivate(session: Session, chat_id: int, reason: str, now: datetime) -> bool:
    """Stop sending to `chat_id` (Telegram said it blocked or removed the bot). Its subscriptions
    are kept, so a returning user finds them again. False if there is no such subscriber."""
    result = session.execute(
        update(subscribers)
        .where(subscribers.c.chat_id == chat_id)
        .values(active=False, inactive_reason=reason[:500], updated_at=now)
    )
    return _rowcount(result) > 0


def migrate_chat(session: Session, old_chat_id: int, new_chat_id: int, now: datetime) -> bool:
    """The chat `old_chat_id` is now `new_chat_id` (a group upgraded to a supergroup). If both
    exist already, the old one's subscriptions are merged into the new one and the old one is
    deactivated. False if `old_chat_id` is not a subscriber."""
    old = get_subscriber(session, old_chat_id)
    if old is None:
        return False
    new = get_subscriber(session, new_chat_id)
    if new is None:
        session.execute(
            update(subscribers)
            .where(subscribers.c.id == old.id)
            .values(chat_id=new_chat_id, updated_at=now)
        )
        return True
    for watchlist in subscriptions_of(session, old_chat_id):
        subscribe(session, new.id, watchlist, now)
    deactivate(session, old_chat_id, f"migrated to {new_chat_id}", now)
    return True


def move_pending_alerts(session: Session, channel: str, old: str, new: str) -> int:
    """Point the pending alerts of `channel` for recipient `old` at `new` (after a chat migrated),
    so that they are resent there. An alert the new recipient already has is left to the old one
    (it then fails as gone, instead of breaking the outbox's unique key). Returns how many moved."""
    twin = alerts.alias("twin")
    result = session.execute(
        update(alerts)
        .where(
            alerts.c.channel == channel,
            alerts.c.recipient == old,
            alerts.c.status == "pending",
            ~exists().where(
                and_(
                    twin.c.story_id == alerts.c.story_id,
                    twin.c.watchlist == alerts.c.watchlist,
                    twin.c.channel == alerts.c.channel,
                    twin.c.recipient == new,
                )
            ),
        )
        .values(recipient=new)
    )
    return _rowcount(result)


def set_mute(session: Session, chat_id: int, until: datetime | None, now: datetime) -> bool:
    """Hold alerts for `chat_id` until `until` (None: unmute). False if no such subscriber.

    Unmuting a subscriber who takes alerts at once makes the alerts held by the mute due now, so
    they come as one digest right away rather than when the mute would have ended."""
    result = session.execute(
        update(subscribers)
        .where(subscribers.c.chat_id == chat_id)
        .values(muted_until=until, updated_at=now)
        .returning(subscribers.c.digest)
    ).first()
    if result is None:
        return False
    if until is None and result.digest is None:
        session.execute(
            update(alerts)
            .where(
                alerts.c.channel == SUBSCRIBERS_DIGEST_CHANNEL,
                alerts.c.recipient == str(chat_id),
                alerts.c.status == "pending",
                alerts.c.next_attempt_at > now,
            )
            .values(next_attempt_at=now)
        )
    return True


def set_digest(session: Session, chat_id: int, spec: str | None, now: datetime) -> bool:
    """Deliver `chat_id`'s alerts as a digest (`spec` "hourly" / "daily 08:00 Europe/London"), or
    each at once (None). False if no such subscriber."""
    result = session.execute(
        update(subscribers)
        .where(subscribers.c.chat_id == chat_id)
        .values(digest=spec, updated_at=now)
    )
    return _rowcount(result) > 0
