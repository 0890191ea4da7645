"""Telegram subscribers and their subscriptions, as plain functions of a `Session` (issue 4, 12).

Same rules as the other query modules (`feeds`, `stories`, `alerts`): the caller owns the
transaction (`db.transaction`), nothing here commits, results are frozen dataclasses. A subscriber
is a chat (`chat_id`, where alerts go); its alerts sit in the outbox under channel
`SUBSCRIBERS_CHANNEL` (at once) or `SUBSCRIBERS_DIGEST_CHANNEL` (held for a mute or a digest)
with the chat id as recipient.

Access that ends ends for held alerts too (SPEC §6): unsubscribing, `/stop`, removing or blocking a
chat drop its waiting alerts of what it left (`drop_pending_alerts`: the rows are deleted, nothing
is sent). When a chat's mute or digest changes, its held alerts are rescheduled to the new time
(`reschedule_held`): `/digest off` or `/unmute` releases them at once.

Who may subscribe is the bot's decision (`monitor.core.access`), not this module's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Row, Table, and_, delete, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from monitor.core.timing import subscriber_due_at
from monitor.store.tables import alerts, subscribers, subscriptions

__all__ = [
    "SUBSCRIBERS_CHANNEL",
    "SUBSCRIBERS_CHANNELS",
    "SUBSCRIBERS_DIGEST_CHANNEL",
    "DeliveryState",
    "Subscriber",
    "SubscriberListing",
    "Subscription",
    "Target",
    "deactivate",
    "delivery_states",
    "drop_pending_alerts",
    "get_or_create_subscriber",
    "get_subscriber",
    "held_alerts",
    "list_subscribers",
    "migrate_chat",
    "move_pending_alerts",
    "remove_subscriber",
    "reschedule_held",
    "sent_since",
    "set_blocked",
    "set_digest",
    "set_mute",
    "subscribe",
    "subscribed_watchlists",
    "subscribers_of",
    "subscribers_of_watchlists",
    "subscription_details",
    "subscriptions_of",
    "unsubscribe",
    "unsubscribe_all",
]

# The outbox channel of alerts to subscribers. "@" cannot start a configured channel name, so it
# never collides with one.
SUBSCRIBERS_CHANNEL = "@telegram"
# Held alerts (a muted or digest subscriber's), delivered as one digest per chat when due.
SUBSCRIBERS_DIGEST_CHANNEL = SUBSCRIBERS_CHANNEL + ":digest"
SUBSCRIBERS_CHANNELS = (SUBSCRIBERS_CHANNEL, SUBSCRIBERS_DIGEST_CHANNEL)


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
    blocked: bool = False
    chat_type: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class Subscription:
    """One watchlist a chat follows: the forum topic its alerts go to (None: the chat itself) and
    the end of a mute of this watchlist alone."""

    watchlist: str
    thread_id: int | None = None
    muted_until: datetime | None = None


@dataclass(frozen=True)
class Target:
    """An active subscriber of a watchlist, with what decides when its alerts go."""

    chat_id: int
    muted_until: datetime | None
    digest: str | None
    watchlist_muted_until: datetime | None = None

    @property
    def recipient(self) -> str:
        """The outbox's `recipient` for this chat."""
        return str(self.chat_id)


@dataclass(frozen=True)
class DeliveryState:
    """What the sender checks before an alert goes to a subscriber (access at send time)."""

    chat_id: int
    user_id: int | None
    active: bool
    blocked: bool
    subscriptions: dict[str, Subscription]


@dataclass(frozen=True)
class SubscriberListing:
    """A subscriber with its subscriptions and how many alerts wait for it (`monitor subscribers`)."""

    subscriber: Subscriber
    subscriptions: tuple[Subscription, ...]
    waiting: int


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
    chat_type: str | None = None,
    title: str | None = None,
) -> Subscriber:
    """The subscriber for `chat_id`, created if new. It is (re)activated: a chat that talks to the
    bot can receive from it again (a user who had blocked the bot and came back); a chat the
    administrator blocked stays blocked. The other fields are updated when given."""
    existing = get_subscriber(session, chat_id)
    given = {
        key: value
        for key, value in (
            ("user_id", user_id),
            ("username", username),
            ("chat_type", chat_type),
            ("title", title),
        )
        if value is not None
    }
    if existing is None:
        row = {"chat_id": chat_id, "active": True, "created_at": now, "updated_at": now} | given
        _insert_ignore(session, subscribers, row, ["chat_id"])
    else:
        changed = not existing.active or any(
            getattr(existing, key) != value for key, value in given.items()
        )
        if changed:
            values = {"active": True, "inactive_reason": None, "updated_at": now} | given
            session.execute(
                update(subscribers).where(subscribers.c.chat_id == chat_id).values(**values)
            )
    found = get_subscriber(session, chat_id)
    assert found is not None
    return found


def subscribe(
    session: Session,
    subscriber_id: int,
    watchlist: str,
    now: datetime,
    *,
    thread_id: int | None = None,
) -> bool:
    """Subscribe, with alerts going to forum topic `thread_id` (None: the chat); False if it
    already was (its alerts then move to `thread_id`)."""
    values = {
        "subscriber_id": subscriber_id,
        "watchlist": watchlist,
        "created_at": now,
        "thread_id": thread_id,
    }
    if _insert_ignore(session, subscriptions, values, ["subscriber_id", "watchlist"]):
        return True
    session.execute(
        update(subscriptions)
        .where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.watchlist == watchlist,
        )
        .values(thread_id=thread_id)
    )
    return False


def _chat_of(session: Session, subscriber_id: int) -> int | None:
    chat_id: int | None = session.execute(
        select(subscribers.c.chat_id).where(subscribers.c.id == subscriber_id)
    ).scalar()
    return chat_id


def unsubscribe(session: Session, subscriber_id: int, watchlist: str) -> bool:
    """Unsubscribe, dropping the alerts of that watchlist still waiting for the chat; False if it
    was not subscribed."""
    result = session.execute(
        delete(subscriptions).where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.watchlist == watchlist,
        )
    )
    chat_id = _chat_of(session, subscriber_id)
    if chat_id is not None:
        drop_pending_alerts(session, chat_id, watchlists=[watchlist])
    return _rowcount(result) > 0


def unsubscribe_all(session: Session, chat_id: int) -> list[str]:
    """Unsubscribe the chat from everything, dropping every alert waiting for it; the watchlists
    it had, by name."""
    subscriber = get_subscriber(session, chat_id)
    if subscriber is None:
        return []
    names = subscriptions_of(session, chat_id)
    session.execute(delete(subscriptions).where(subscriptions.c.subscriber_id == subscriber.id))
    drop_pending_alerts(session, chat_id)
    return names


def remove_subscriber(session: Session, chat_id: int) -> tuple[list[str], int] | None:
    """Forget the chat: its subscriptions, settings and waiting alerts. (watchlists it had, alerts
    dropped), or None if there is no such subscriber. A chat that talks to the bot again starts
    afresh."""
    subscriber = get_subscriber(session, chat_id)
    if subscriber is None:
        return None
    names = subscriptions_of(session, chat_id)
    session.execute(delete(subscriptions).where(subscriptions.c.subscriber_id == subscriber.id))
    dropped = drop_pending_alerts(session, chat_id)
    session.execute(delete(subscribers).where(subscribers.c.id == subscriber.id))
    return names, dropped


def set_blocked(session: Session, chat_id: int, blocked: bool, now: datetime) -> tuple[bool, int]:
    """Block the chat (nothing is sent to it and no command changes its subscriptions) or unblock
    it. A chat never seen is recorded, so it is blocked before it first talks to the bot.
    (whether anything changed, alerts dropped)."""
    existing = get_subscriber(session, chat_id)
    if existing is None:
        if not blocked:
            return False, 0
        row = {"chat_id": chat_id, "active": True, "blocked": True}
        _insert_ignore(
            session, subscribers, row | {"created_at": now, "updated_at": now}, ["chat_id"]
        )
    elif existing.blocked == blocked:
        return False, 0
    else:
        session.execute(
            update(subscribers)
            .where(subscribers.c.chat_id == chat_id)
            .values(blocked=blocked, updated_at=now)
        )
    return True, drop_pending_alerts(session, chat_id) if blocked else 0


def subscriptions_of(session: Session, chat_id: int) -> list[str]:
    """The watchlists `chat_id` subscribed to, by name."""
    return [s.watchlist for s in subscription_details(session, chat_id)]


def subscription_details(session: Session, chat_id: int) -> list[Subscription]:
    """The chat's subscriptions with their topics and mutes, by watchlist name."""
    rows = session.execute(
        select(subscriptions.c.watchlist, subscriptions.c.thread_id, subscriptions.c.muted_until)
        .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
        .where(subscribers.c.chat_id == chat_id)
        .order_by(subscriptions.c.watchlist)
    )
    return [Subscription(row.watchlist, row.thread_id, row.muted_until) for row in rows]


def subscribed_watchlists(session: Session) -> dict[str, int]:
    """Every watchlist some chat follows, with how many chats follow it."""
    rows = session.execute(
        select(subscriptions.c.watchlist, func.count()).group_by(subscriptions.c.watchlist)
    )
    return {row[0]: int(row[1]) for row in rows}


def subscribers_of(session: Session, watchlist: str) -> list[Target]:
    """The active subscribers of `watchlist`, by chat id. Call it in the transaction that stores a
    match, to enqueue one alert per chat (channel `SUBSCRIBERS_CHANNEL`). Blocked chats are left
    out; whether the others may still receive is checked again when the alert is sent."""
    return subscribers_of_watchlists(session, [watchlist]).get(watchlist, [])


def subscribers_of_watchlists(
    session: Session, watchlists: Collection[str]
) -> dict[str, list[Target]]:
    """`subscribers_of` for many watchlists in one query: watchlist → its active subscribers, by
    chat id (a watchlist without any is left out)."""
    found: dict[str, list[Target]] = {}
    wanted = sorted(set(watchlists))
    if not wanted:
        return found
    rows = session.execute(
        select(
            subscriptions.c.watchlist,
            subscribers.c.chat_id,
            subscribers.c.muted_until,
            subscribers.c.digest,
            subscriptions.c.muted_until.label("watchlist_muted_until"),
        )
        .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
        .where(
            subscriptions.c.watchlist.in_(wanted),
            subscribers.c.active.is_(True),
            subscribers.c.blocked.is_(False),
        )
        .order_by(subscriptions.c.watchlist, subscribers.c.chat_id)
    )
    for row in rows:
        found.setdefault(row.watchlist, []).append(
            Target(row.chat_id, row.muted_until, row.digest, row.watchlist_muted_until)
        )
    return found


def delivery_states(session: Session, chat_ids: Collection[int]) -> dict[int, DeliveryState]:
    """For each of `chat_ids` that is a subscriber: what decides whether it may get an alert now."""
    if not chat_ids:
        return {}
    rows = session.execute(
        select(
            subscribers.c.id,
            subscribers.c.chat_id,
            subscribers.c.user_id,
            subscribers.c.active,
            subscribers.c.blocked,
            subscriptions.c.watchlist,
            subscriptions.c.thread_id,
            subscriptions.c.muted_until,
        )
        .outerjoin(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
        .where(subscribers.c.chat_id.in_(list(chat_ids)))
    )
    states: dict[int, DeliveryState] = {}
    for row in rows:
        state = states.get(row.chat_id)
        if state is None:
            state = states[row.chat_id] = DeliveryState(
                row.chat_id, row.user_id, row.active, row.blocked, {}
            )
        if row.watchlist is not None:
            state.subscriptions[row.watchlist] = Subscription(
                row.watchlist, row.thread_id, row.muted_until
            )
    return states


def list_subscribers(session: Session) -> list[SubscriberListing]:
    """Every subscriber with its subscriptions and waiting alerts, by chat id."""
    people = [_subscriber(row) for row in session.execute(select(*_COLUMNS))]
    by_id: dict[int, list[Subscription]] = defaultdict(list)
    for row in session.execute(
        select(
            subscriptions.c.subscriber_id,
            subscriptions.c.watchlist,
            subscriptions.c.thread_id,
            subscriptions.c.muted_until,
        ).order_by(subscriptions.c.watchlist)
    ):
        by_id[row.subscriber_id].append(Subscription(row.watchlist, row.thread_id, row.muted_until))
    waiting: dict[str, int] = {
        row[0]: int(row[1])
        for row in session.execute(
            select(alerts.c.recipient, func.count())
            .where(alerts.c.channel.in_(SUBSCRIBERS_CHANNELS), alerts.c.status == "pending")
            .group_by(alerts.c.recipient)
        )
    }
    return [
        SubscriberListing(p, tuple(by_id[p.id]), waiting.get(str(p.chat_id), 0))
        for p in sorted(people, key=lambda p: p.chat_id)
    ]


def drop_pending_alerts(
    session: Session, chat_id: int, *, watchlists: Iterable[str] | None = None
) -> int:
    """Delete the alerts still waiting for subscriber `chat_id` (of `watchlists` only, if given):
    they will not be sent. Returns how many."""
    statement = delete(alerts).where(
        alerts.c.channel.in_(SUBSCRIBERS_CHANNELS),
        alerts.c.recipient == str(chat_id),
        alerts.c.status == "pending",
    )
    if watchlists is not None:
        statement = statement.where(alerts.c.watchlist.in_(list(watchlists)))
    return _rowcount(session.execute(statement))


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
    mine = set(subscriptions_of(session, new_chat_id))
    for subscription in subscription_details(session, old_chat_id):
        if subscription.watchlist not in mine:
            values = {
                "subscriber_id": new.id,
                "watchlist": subscription.watchlist,
                "created_at": now,
                "thread_id": subscription.thread_id,
                "muted_until": subscription.muted_until,
            }
            _insert_ignore(session, subscriptions, values, ["subscriber_id", "watchlist"])
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


def set_mute(
    session: Session,
    chat_id: int,
    until: datetime | None,
    now: datetime,
    *,
    watchlist: str | None = None,
) -> bool:
    """Hold alerts for `chat_id` until `until` (None: unmute) — all of them, or those of
    `watchlist` only. False if there is no such subscriber (or subscription). The chat's held
    alerts are rescheduled: unmuting a chat that takes alerts at once releases them now, as one
    digest, rather than when the mute would have ended."""
    if watchlist is None:
        result = session.execute(
            update(subscribers)
            .where(subscribers.c.chat_id == chat_id)
            .values(muted_until=until, updated_at=now)
        )
    else:
        subscriber = get_subscriber(session, chat_id)
        if subscriber is None:
            return False
        result = session.execute(
            update(subscriptions)
            .where(
                subscriptions.c.subscriber_id == subscriber.id,
                subscriptions.c.watchlist == watchlist,
            )
            .values(muted_until=until)
        )
    if _rowcount(result) == 0:
        return False
    reschedule_held(session, chat_id, now)
    return True


def set_digest(session: Session, chat_id: int, spec: str | None, now: datetime) -> bool:
    """Deliver `chat_id`'s alerts as a digest (`spec` "hourly" / "daily 08:00 Europe/London"), or
    each at once (None: what was held for the digest goes now). False if no such subscriber."""
    result = session.execute(
        update(subscribers)
        .where(subscribers.c.chat_id == chat_id)
        .values(digest=spec, updated_at=now)
    )
    if _rowcount(result) == 0:
        return False
    reschedule_held(session, chat_id, now)
    return True


def held_alerts(session: Session, chat_id: int) -> list[datetime]:
    """When each alert held for the chat (by a mute or for a digest) is due, soonest first."""
    return list(
        session.scalars(
            select(alerts.c.next_attempt_at)
            .where(
                alerts.c.channel == SUBSCRIBERS_DIGEST_CHANNEL,
                alerts.c.recipient == str(chat_id),
                alerts.c.status == "pending",
            )
            .order_by(alerts.c.next_attempt_at)
        )
    )


def reschedule_held(session: Session, chat_id: int, now: datetime) -> int:
    """Give each alert held for the chat the due time its settings now say (`subscriber_due_at`):
    the next digest, the end of a mute, or now. Returns how many changed."""
    subscriber = get_subscriber(session, chat_id)
    if subscriber is None:
        return 0
    mutes = {s.watchlist: s.muted_until for s in subscription_details(session, chat_id)}
    held = session.execute(
        select(alerts.c.watchlist, alerts.c.next_attempt_at).where(
            alerts.c.channel == SUBSCRIBERS_DIGEST_CHANNEL,
            alerts.c.recipient == str(chat_id),
            alerts.c.status == "pending",
        )
    ).all()
    changed = 0
    for watchlist in {row.watchlist for row in held}:
        due = subscriber_due_at(
            now,
            digest=subscriber.digest,
            chat_muted_until=subscriber.muted_until,
            watchlist_muted_until=mutes.get(watchlist),
        )
        result = session.execute(
            update(alerts)
            .where(
                alerts.c.channel == SUBSCRIBERS_DIGEST_CHANNEL,
                alerts.c.recipient == str(chat_id),
                alerts.c.status == "pending",
                alerts.c.watchlist == watchlist,
            )
            .values(next_attempt_at=due or now)
        )
        changed += _rowcount(result)
    return changed


def sent_since(session: Session, recipients: Collection[str], since: datetime) -> dict[str, int]:
    """How many alerts each of `recipients` (a chat id as text) was sent at or after `since`, on
    any channel: what a burst is judged on."""
    if not recipients:
        return {}
    rows = session.execute(
        select(alerts.c.recipient, func.count())
        .where(
            alerts.c.recipient.in_(list(recipients)),
            alerts.c.sent_at >= since,
            alerts.c.status == "sent",
        )
        .group_by(alerts.c.recipient)
    )
    return {recipient: int(count) for recipient, count in rows}
