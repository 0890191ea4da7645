"""Feeds in the database: following the config, leasing due feeds to a poller, recording each poll's
outcome, giving leases back, and the per-feed health report of `monitor feeds`.

The database is the schedule. A poller claims due feeds with a row lease (`lease_owner`,
`lease_until`) timed by the database clock; on PostgreSQL the claim locks its rows with
`FOR UPDATE SKIP LOCKED`, so replicas claiming at the same moment get disjoint feeds without
waiting; on SQLite the write transaction (BEGIN IMMEDIATE) is already exclusive. A lease that
expires (its holder crashed) is claimable again. `release_leases` gives back an owner's alert
leases too, since both are released together at shutdown.

Functions take a Session and never commit. Items, stories and alerts are in `stories` and `alerts`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    String,
    Text,
    bindparam,
    cast,
    func,
    literal_column,
    not_,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable
from sqlalchemy.types import TypeEngine

from monitor.store._shared import (
    array_literal,
    database_now,
    insert_ignore,
    lease_free,
    rowcount,
    short_error,
    takes_arrays,
)
from monitor.store.tables import alerts, clean_text, feeds, items

__all__ = [
    "FEED_STATUSES",
    "FeedHealth",
    "FeedState",
    "FeedsForMetrics",
    "QuietPoll",
    "WaitingFeed",
    "claim_due_feeds",
    "count_gone",
    "feed_health",
    "feeds_for_metrics",
    "record_poll",
    "record_quiet_polls",
    "release_feed",
    "release_feeds",
    "release_leases",
    "renew_feed_leases",
    "sync_feeds",
    "waiting_feeds",
]


FEED_STATUSES = frozenset({"ok", "not_modified", "unchanged", "error", "retry_later", "gone"})
_SUCCESSES = frozenset({"ok", "not_modified", "unchanged"})  # the feed answered as a feed


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
    missing_since: datetime | None  # since when it has answered 404/410, if it does
    last_status: str | None
    # Seconds from the claim until the feed is due (0: due already); a feed claimed ahead
    # (`claim_due_feeds`'s `ahead`) is polled that much later.
    due_in: float = 0.0


@dataclass(frozen=True, slots=True)
class WaitingFeed:
    """A feed that waits out a Retry-After or a back-off, and why (its last error)."""

    name: str
    next_poll_at: datetime
    last_error: str | None


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
    last_success_at: datetime | None
    failing_since: datetime | None  # the first failure of those going on now
    next_poll_at: datetime
    item_count: int
    failed_alert_count: int


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
            new_id = insert_ignore(session, feeds, values, ["name"])
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


# FeedState's fields in its order, so that a claimed row builds one by position.
_FEED_STATE_COLUMNS = tuple(feeds.c[f.name] for f in fields(FeedState) if f.name != "due_in")


def _waiting() -> ColumnElement[bool]:
    """A feed whose next poll is a wait it was told to keep, not just its interval: a Retry-After
    (or a host too busy to ask), or the back-off after failures."""
    # coalesce: a feed never polled has no status, and NOT (NULL = …) would leave it out.
    return or_(
        feeds.c.consecutive_failures > 0,
        func.coalesce(feeds.c.last_status, "") == "retry_later",
    )


def claim_due_feeds(
    session: Session,
    owner: str,
    lease: timedelta,
    limit: int,
    *,
    include_not_due: bool = False,
    include_waiting: bool = False,
    ahead: timedelta = timedelta(0),
    now: datetime | None = None,
) -> list[FeedState]:
    """Lease up to `limit` active feeds that are due and not leased by anyone (or whose lease
    expired) to `owner` until DB now + `lease`; most overdue first. `now` is the database's
    clock if the caller has just read it (`database_now`), else it is read here.

    `ahead` claims the feeds due within that time too, each with its `due_in`: the poller holds
    them and starts each at its due time rather than at its next claim after it.

    `include_not_due` claims active feeds that are not due yet too (`monitor once`), except those
    waiting out a Retry-After or a back-off (FAULTS 73); `include_waiting` claims those as well
    (`monitor once --force`).

    One statement, built once per kind of claim: the claim runs at every poll tick and whenever
    polls end in numbers (a round of 304s), and building and reading the choice of feeds and
    then updating them cost three times the database's own work.
    """
    if now is None:
        now = database_now(session)
    statement = _claim_statement(include_not_due, include_waiting)
    claimed = session.execute(
        statement,
        {
            "now": now,
            "due_by": now + ahead,
            "limit": limit,
            "owner": owner,
            "lease_until": now + lease,
        },
    )
    # Each row holds FeedState's fields but the last, `due_in`, in its order. Claimed without
    # looking ahead, every feed is due now (`_due_in` would say 0 for each).
    if ahead > _NO_TIME:
        states = [FeedState(*(*row, _due_in(row, now, ahead))) for row in claimed]
    else:
        states = [FeedState(*row) for row in claimed]
    states.sort(key=lambda state: (state.next_poll_at, state.id))
    return states


@functools.cache
def _claim_statement(include_not_due: bool, include_waiting: bool) -> Executable:
    """`claim_due_feeds`' UPDATE of the feeds it chooses (a subquery, which on PostgreSQL locks
    them with SKIP LOCKED; SQLite's write transaction is exclusive), returning their state."""
    now = bindparam("now", type_=feeds.c.lease_until.type)
    due = (
        select(feeds.c.id)
        .where(feeds.c.active, lease_free(feeds, now))
        .order_by(feeds.c.next_poll_at, feeds.c.id)
        .limit(bindparam("limit", type_=Integer()))
        .with_for_update(skip_locked=True)
    )
    # A last poll "in the future" means the clock was set back: the stored schedule means
    # nothing then, and the feed is due at once instead of after the jump (FAULTS 62).
    clock_set_back = feeds.c.last_polled_at > now
    is_due = or_(
        feeds.c.next_poll_at <= bindparam("due_by", type_=feeds.c.next_poll_at.type),
        clock_set_back,
    )
    if not include_not_due:
        due = due.where(is_due)
    elif not include_waiting:
        due = due.where(or_(is_due, not_(_waiting())))
    return (
        update(feeds)
        .where(feeds.c.id.in_(due.scalar_subquery()))
        .values(
            lease_owner=bindparam("owner", type_=feeds.c.lease_owner.type),
            lease_until=bindparam("lease_until", type_=feeds.c.lease_until.type),
        )
        .returning(*_FEED_STATE_COLUMNS)
    )


_NO_TIME = timedelta(0)


def _due_in(row: Any, now: datetime, ahead: timedelta) -> float:
    """Seconds until a claimed feed is due: 0 if due already, or if the clock was set back
    (its schedule means nothing then) or it was claimed without being due (`monitor once`)."""
    wait: timedelta = row.next_poll_at - now
    if wait <= _NO_TIME or wait > ahead:
        return 0.0
    if row.last_polled_at is not None and row.last_polled_at > now:
        return 0.0
    return wait.total_seconds()


def waiting_feeds(session: Session) -> list[WaitingFeed]:
    """Active feeds not due yet because they wait out a Retry-After or a back-off, soonest first:
    the ones `monitor once` leaves alone without `--force`."""
    now = database_now(session)
    rows = session.execute(
        select(feeds.c.name, feeds.c.next_poll_at, feeds.c.last_error)
        .where(feeds.c.active, feeds.c.next_poll_at > now, _waiting())
        .where(or_(feeds.c.last_polled_at.is_(None), feeds.c.last_polled_at <= now))
        .order_by(feeds.c.next_poll_at, feeds.c.name)
    )
    return [WaitingFeed(**row._mapping) for row in rows]


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
    missing_since: datetime | None = None,
) -> bool:
    """Record one poll's outcome and release the feed's lease.

    Validators and body hash are written as given (pass the previous ones to keep them). `failed`
    adds one to `consecutive_failures` and starts `failing_since` if unset; a success (ok,
    not_modified, unchanged) resets both and sets `last_success_at`; retry_later leaves them. `missing_since` is when the feed's
    404/410 answers began (None: it is not missing). With `owner`, nothing happens (False) unless
    that owner still holds the lease.
    """
    if status not in FEED_STATUSES:
        raise ValueError(f"feed status {status!r} is not one of {sorted(FEED_STATUSES)}")
    succeeded = status in _SUCCESSES
    statement = update(feeds).where(feeds.c.id == feed_id)
    if owner is not None:
        statement = statement.where(feeds.c.lease_owner == owner)
    result = session.execute(
        statement.values(
            last_polled_at=polled_at,
            last_status=status,
            last_error=short_error(error),
            etag=etag,
            last_modified=last_modified,
            body_hash=body_hash,
            last_new_items=new_items,
            next_poll_at=next_poll_at,
            consecutive_failures=feeds.c.consecutive_failures + 1 if failed else 0,
            last_success_at=polled_at if succeeded else feeds.c.last_success_at,
            failing_since=(
                None
                if succeeded
                else func.coalesce(feeds.c.failing_since, polled_at)
                if failed
                else feeds.c.failing_since  # asked to wait: neither a success nor a failure
            ),
            missing_since=missing_since,
            lease_owner=None,
            lease_until=None,
        ).returning(feeds.c.id)
    )
    return result.first() is not None


@dataclass(frozen=True, slots=True)
class QuietPoll:
    """A poll that found nothing new (a 304, or a body identical to the last): only its times
    and validators change (`record_quiet_polls`)."""

    feed_id: int
    polled_at: datetime
    status: str  # not_modified | unchanged
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    next_poll_at: datetime


def record_quiet_polls(session: Session, polls: Sequence[QuietPoll], owner: str) -> None:
    """`record_poll` for many quiet polls in one round trip: each a success that stored
    nothing, releasing the feed's lease; a feed whose lease `owner` no longer holds is left
    alone.

    On SQLite, an executemany of a statement compiled once, its rows handed to the driver with
    the columns' own bind conversions (`bind_processor`): the same values as `session.execute`
    would send, without its per-row parameter bookkeeping, which cost three times what the
    driver's executemany itself does (about 40 µs a row against 13). Each row is a tuple of
    the poll's converted fields put in the statement's order by one `itemgetter`. On
    PostgreSQL, one UPDATE of the whole batch (`_record_quiet_polls_in_arrays`)."""
    if not polls:
        return
    for poll in polls:
        if poll.status not in ("not_modified", "unchanged"):
            raise ValueError(f"{poll.status!r} is not a quiet poll's status")
    # A feed twice in a batch keeps its last poll (row after row, the first would release the
    # lease and the second find it gone).
    polls = list({poll.feed_id: poll for poll in polls}.values())
    if takes_arrays(session):
        _record_quiet_polls_in_arrays(session, polls, owner)
        return
    connection = session.connection()
    statement = _quiet_polls_statement(connection.dialect)
    to_id, to_polled, to_status, to_etag, to_modified, to_hash, to_next, to_owner = (
        statement.convert
    )
    owner_value = to_owner(owner)  # the same in every row: converted once a batch
    in_order = statement.in_order
    rows: list[Any] = [
        in_order(
            (
                to_id(poll.feed_id),
                to_polled(poll.polled_at),
                to_status(poll.status),
                to_etag(poll.etag),
                to_modified(poll.last_modified),
                to_hash(poll.body_hash),
                to_next(poll.next_poll_at),
                owner_value,
            )
        )
        for poll in polls
    ]
    connection.exec_driver_sql(statement.sql, rows)


# The parameters of `_QUIET_POLLS` in the order `record_quiet_polls` converts a poll's values
# (`polled_at` appears twice in the statement, converted once).
_QUIET_POLL_VALUES = (
    "feed_id",
    "polled_at",
    "status",
    "new_etag",
    "new_last_modified",
    "new_body_hash",
    "new_next_poll_at",
    "owner",
)


def _conversion(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """What `execute` does to a value of `type_` on its way to `dialect`'s driver: the processor
    of the type as this dialect has it (`dialect_impl`; the generic one would leave SQLite's
    times to the driver, stored in another form), or nothing."""
    processor = type_.dialect_impl(dialect).bind_processor(dialect)
    return _unchanged if processor is None else processor


def _unchanged(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class _CompiledQuietPolls:
    sql: str
    convert: tuple[Callable[[Any], Any], ...]  # each of `_QUIET_POLL_VALUES`' conversion
    # Those values in the order of the statement's parameters, which the driver takes by position.
    in_order: Callable[[tuple[Any, ...]], tuple[Any, ...]]


@functools.lru_cache(maxsize=8)
def _quiet_polls_statement(dialect: Dialect) -> _CompiledQuietPolls:
    """`_QUIET_POLLS` compiled for `dialect` (a few milliseconds, so once per engine's dialect;
    a driver that takes parameters by position, SQLite's): its SQL and each value's
    `_conversion`."""
    compiled = _QUIET_POLLS.compile(dialect=dialect)
    if not compiled.positional or compiled.positiontup is None:
        raise ValueError(f"{dialect.name}'s driver does not take parameters by position")
    return _CompiledQuietPolls(
        sql=compiled.string,
        convert=tuple(
            _conversion(compiled.binds[name].type, dialect) for name in _QUIET_POLL_VALUES
        ),
        in_order=operator.itemgetter(
            *(_QUIET_POLL_VALUES.index(name) for name in compiled.positiontup)
        ),
    )


# What `record_quiet_polls` writes for each quiet poll: every value a parameter of the row or a
# constant written into the statement, so that rows go to the driver as they are.
def _quiet_poll_values(
    polled_at: Any, status: Any, etag: Any, last_modified: Any, body_hash: Any, next_poll_at: Any
) -> dict[str, Any]:
    """What a quiet poll writes to its feed's row, given the expressions of its own values: a
    success that stored nothing, its lease given back."""
    return {
        "last_polled_at": polled_at,
        "last_status": status,
        "last_error": null(),
        "etag": etag,
        "last_modified": last_modified,
        "body_hash": body_hash,
        "last_new_items": literal_column("0"),
        "next_poll_at": next_poll_at,
        "consecutive_failures": literal_column("0"),
        "last_success_at": polled_at,
        "failing_since": null(),
        "missing_since": null(),
        "lease_owner": null(),
        "lease_until": null(),
    }


_QUIET_POLLS = (
    update(feeds)
    .where(feeds.c.id == bindparam("feed_id"), feeds.c.lease_owner == bindparam("owner"))
    .values(
        _quiet_poll_values(
            bindparam("polled_at"),
            bindparam("status"),
            bindparam("new_etag"),
            bindparam("new_last_modified"),
            bindparam("new_body_hash"),
            bindparam("new_next_poll_at"),
        )
    )
)


def _record_quiet_polls_in_arrays(session: Session, polls: Sequence[QuietPoll], owner: str) -> None:
    """`record_quiet_polls` on PostgreSQL: one UPDATE of every feed of the batch, its values in
    arrays (`array_literal`s the statement unnests). psycopg's executemany spent about 25 µs of
    Python a row in its pipeline's bookkeeping, on a thread that shares the interpreter with
    the event loop. `polls` has each feed once. Each value gets its column's `_conversion`
    (times to UTC, text cleaned), as `execute` would give it, then goes into its array as text."""
    dialect = session.get_bind().dialect
    to_time = _conversion(feeds.c.next_poll_at.type, dialect)
    to_status, to_etag, to_modified, to_hash = (
        _conversion(column.type, dialect)
        for column in (feeds.c.last_status, feeds.c.etag, feeds.c.last_modified, feeds.c.body_hash)
    )
    session.execute(
        _QUIET_POLLS_IN_ARRAYS,
        {
            "feed_ids": array_literal([poll.feed_id for poll in polls]),
            "polled": array_literal([to_time(poll.polled_at).isoformat() for poll in polls]),
            "statuses": array_literal([to_status(poll.status) for poll in polls]),
            "etags": array_literal([to_etag(poll.etag) for poll in polls]),
            "modified": array_literal([to_modified(poll.last_modified) for poll in polls]),
            "hashes": array_literal([to_hash(poll.body_hash) for poll in polls]),
            "next": array_literal([to_time(poll.next_poll_at).isoformat() for poll in polls]),
            "owner": owner,
        },
    )


def _array(name: str, of: TypeEngine[Any]) -> ColumnElement[Any]:
    return cast(bindparam(name, type_=String()), ARRAY(of))


# A batch of quiet polls as rows: its arrays unnested side by side.
_QUIET_POLL_ROWS = (
    func.unnest(
        _array("feed_ids", BigInteger()),
        _array("polled", DateTime(timezone=True)),
        _array("statuses", Text()),
        _array("etags", Text()),
        _array("modified", Text()),
        _array("hashes", Text()),
        _array("next", DateTime(timezone=True)),
    )
    .table_valued(
        "feed_id", "polled_at", "status", "etag", "last_modified", "body_hash", "next_poll_at"
    )
    .render_derived(name="quiet")
)

# `_QUIET_POLLS` for a batch in arrays, on PostgreSQL.
_QUIET_POLLS_IN_ARRAYS = (
    update(feeds)
    .where(feeds.c.id == _QUIET_POLL_ROWS.c.feed_id, feeds.c.lease_owner == bindparam("owner"))
    .values(
        _quiet_poll_values(
            _QUIET_POLL_ROWS.c.polled_at,
            _QUIET_POLL_ROWS.c.status,
            _QUIET_POLL_ROWS.c.etag,
            _QUIET_POLL_ROWS.c.last_modified,
            _QUIET_POLL_ROWS.c.body_hash,
            _QUIET_POLL_ROWS.c.next_poll_at,
        )
    )
)


def count_gone(session: Session) -> int:
    """Active feeds that have answered 404/410 for `fetch.gone_after` or longer."""
    found = session.execute(
        select(func.count()).where(feeds.c.active, feeds.c.last_status == "gone")
    ).scalar_one()
    return int(found)


@dataclass(frozen=True, slots=True)
class FeedsForMetrics:
    """What /metrics says of the feeds: how many fail or are gone, when each last succeeded."""

    failing: int
    gone: int
    last_success: dict[str, datetime]


def feeds_for_metrics(session: Session) -> FeedsForMetrics:
    """Counts over the active feeds (failing: one failure or more now, gone included) and the
    last success of each active feed that has had one."""
    failing = gone = 0
    last_success: dict[str, datetime] = {}
    for row in session.execute(
        select(
            feeds.c.name, feeds.c.consecutive_failures, feeds.c.last_status, feeds.c.last_success_at
        ).where(feeds.c.active)
    ):
        failing += row.consecutive_failures > 0
        gone += row.last_status == "gone"
        if row.last_success_at is not None:
            last_success[row.name] = row.last_success_at
    return FeedsForMetrics(failing, gone, last_success)


def release_feed(session: Session, feed_id: int, owner: str) -> bool:
    """Give a claimed feed back unpolled (shutdown): due again at its unchanged next_poll_at."""
    result = session.execute(
        update(feeds)
        .where(feeds.c.id == feed_id, feeds.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
        .returning(feeds.c.id)
    )
    return result.first() is not None


def release_feeds(session: Session, feed_ids: Collection[int], owner: str) -> int:
    """`release_feed` for many feeds in one statement (a stop gives back what it claimed);
    returns how many `owner` still held."""
    if not feed_ids:
        return 0
    result = session.execute(
        update(feeds)
        .where(feeds.c.id.in_(list(feed_ids)), feeds.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )
    return rowcount(result)


def renew_feed_leases(
    session: Session, owner: str, lease: timedelta, feed_ids: Collection[int]
) -> int:
    """Extend `owner`'s leases on `feed_ids` (polls still running) to DB now + `lease`; return how
    many it still held. A process renews what it works on, so a lease can be short and a process
    that died leaves its feeds to the others soon."""
    if not feed_ids:
        return 0
    now = database_now(session)
    result = session.execute(
        update(feeds)
        .where(feeds.c.id.in_(list(feed_ids)), feeds.c.lease_owner == owner)
        .values(lease_until=now + lease)
    )
    return rowcount(result)


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
        released += rowcount(result)
    return released


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
            feeds.c.last_success_at,
            feeds.c.failing_since,
            feeds.c.next_poll_at,
            func.coalesce(item_counts.c.n, 0).label("item_count"),
            func.coalesce(failed_counts.c.n, 0).label("failed_alert_count"),
        )
        .outerjoin(item_counts, item_counts.c.feed_id == feeds.c.id)
        .outerjoin(failed_counts, failed_counts.c.feed_id == feeds.c.id)
        .order_by(feeds.c.active.desc(), feeds.c.name)
    )
    return [FeedHealth(**row._mapping) for row in rows]
