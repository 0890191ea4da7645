"""Leadership: which replica plays a role that must run in one place only (polling Telegram for
commands, sending digests, pruning), under a lease timed by the database clock.

The holder of a role renews its lease well before `expires_at`; any replica may take the role once
the lease has expired (its holder died, hung, or lost the database). Each change of hands adds one
to `term`, and a renewal names the term it holds, so a replica that lost the role cannot extend
the lease of its successor. The row is the whole truth: no session lock or connection has to stay
open, and a holder whose connection is cut simply renews on a new one.

What a holder may do while it believes it holds the role, and for how long, is the daemon's rule
(`monitor.daemon.leader`): it counts the lease from before its request, on its own monotonic
clock, and stops early enough that no other replica can have started.

Functions take a Session and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm import Session

from monitor.store._shared import database_now, ensure_row
from monitor.store.tables import leadership

__all__ = ["Lease", "LeaseHolder", "holder_of", "lead", "resign"]

_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Lease:
    """A role held: by `holder`, in `term`, until `expires_at` (database time, as is `now`)."""

    role: str
    holder: str
    term: int
    now: datetime
    expires_at: datetime

    @property
    def remaining(self) -> timedelta:
        return self.expires_at - self.now


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who holds a role (for reports and tests): `expired` when nobody does any more."""

    holder: str | None
    term: int
    acquired_at: datetime | None
    expires_at: datetime
    expired: bool


def lead(
    session: Session, role: str, holder: str, lease: timedelta, *, term: int | None = None
) -> Lease | None:
    """Take `role` for `holder` until database now + `lease`, or renew it; None if another holds it.

    With `term` (the term `holder` believes it holds), only a renewal of that very term succeeds:
    None means the role was lost meanwhile. Without it, the role is taken when free, expired, or
    already this holder's (a new term then starts if it had expired)."""
    now = database_now(session)
    ensure_row(session, leadership, {"role": role, "term": 0, "expires_at": _NEVER}, ["role"])
    row = leadership.c
    changes: dict[str, Any]
    if term is not None:
        mine = and_(row.holder == holder, row.term == term, row.expires_at > now)
        changes = {"expires_at": now + lease}
    else:
        mine = or_(row.holder.is_(None), row.expires_at <= now, row.holder == holder)
        handed_over = or_(row.holder.is_(None), row.holder != holder, row.expires_at <= now)
        changes = {
            "holder": holder,
            "term": case((handed_over, row.term + 1), else_=row.term),
            "acquired_at": case((handed_over, now), else_=row.acquired_at),
            "expires_at": now + lease,
        }
    held = session.execute(
        update(leadership)
        .where(row.role == role, mine)
        .values(changes)
        .returning(row.term, row.expires_at)
    ).first()
    if held is None:
        return None
    return Lease(role, holder, held.term, now, held.expires_at)


def resign(session: Session, role: str, holder: str, term: int) -> bool:
    """Give `role` up at once (a clean stop), so another replica takes it without waiting for the
    lease to run out. False if `holder` no longer held that term."""
    now = database_now(session)
    result = session.execute(
        update(leadership)
        .where(leadership.c.role == role, leadership.c.holder == holder, leadership.c.term == term)
        .values(expires_at=now)
        .returning(leadership.c.role)
    )
    return result.first() is not None


def holder_of(session: Session, role: str) -> LeaseHolder | None:
    """Who holds `role`, or held it last; None if nobody ever did."""
    now = database_now(session)
    row = session.execute(
        select(
            leadership.c.holder,
            leadership.c.term,
            leadership.c.acquired_at,
            leadership.c.expires_at,
        ).where(leadership.c.role == role)
    ).first()
    if row is None or row.holder is None:
        return None
    return LeaseHolder(
        row.holder, row.term, row.acquired_at, row.expires_at, expired=row.expires_at <= now
    )
