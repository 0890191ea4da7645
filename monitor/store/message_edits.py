"""The queue of edits of sent Telegram alerts ("also in", SPEC §5): when a later source joins a
story, the messages its alerts became are due an edit listing the story's sources.

The queue is the alerts table itself, so that an edit is asked for in the transaction that stored
the joining item, and is never lost: `edit_due_at` set means an edit is due. An alert still pending
is asked too — it may be on its way with the sources of its claim — and is edited once sent if
the sources changed meanwhile. The lease columns, free once an alert is sent, hold it while its
message is edited: one process edits a message at a time, and an edit asked for during an edit
(`edit_requests` grew) leaves the alert due again, so that the last edit shows the last source.

Functions take a Session and never commit. Editing is `monitor.edits`' job, not this module's.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, null, or_, select, update
from sqlalchemy.orm import Session

from monitor.model import MessageRef
from monitor.store._shared import database_now, lease_free, rowcount
from monitor.store.alerts import AlertToSend, alerts_to_send
from monitor.store.tables import alerts

__all__ = [
    "EditToMake",
    "claim_due_edits",
    "drop_edit",
    "finish_edit",
    "postpone_edit",
    "request_edits",
]


@dataclass(frozen=True, slots=True)
class EditToMake:
    """A sent alert whose message may need the story's new sources: `shown` are the other sources
    it lists now; `requests` how many edits were asked for when it was claimed."""

    alert: AlertToSend
    message: MessageRef
    shown: tuple[str, ...]
    requests: int
    attempts: int

    @property
    def needed(self) -> bool:
        """Whether the story's other sources differ from those the message lists."""
        return self.alert.other_feeds != self.shown


def request_edits(
    session: Session, story_ids: Collection[int], channels: Collection[str], now: datetime
) -> int:
    """Later sources joined these stories: their alerts of `channels` (those that can be edited)
    that went out as a message of their own, or are still pending, are due an edit. One
    statement; how many alerts were asked."""
    if not story_ids or not channels:
        return 0
    result = session.execute(
        update(alerts)
        .where(
            alerts.c.story_id.in_(sorted(story_ids)),
            alerts.c.channel.in_(sorted(channels)),
            or_(
                alerts.c.status == "pending",
                (alerts.c.status == "sent") & alerts.c.message_id.is_not(None),
            ),
        )
        .values(edit_due_at=now, edit_requests=alerts.c.edit_requests + 1)
    )
    return rowcount(result)


def claim_due_edits(
    session: Session, owner: str, lease: timedelta, limit: int, *, channels: Collection[str]
) -> list[EditToMake]:
    """Lease up to `limit` sent alerts of `channels` whose message is due an edit to `owner`
    until DB now + `lease`, with what rendering them needs (the story's sources as they are
    now)."""
    now = database_now(session)
    due = (
        select(
            alerts.c.id,
            alerts.c.message_chat_id,
            alerts.c.message_id,
            alerts.c.message_sources,
            alerts.c.edit_requests,
            alerts.c.edit_attempts,
        )
        .where(
            alerts.c.edit_due_at <= now,
            alerts.c.status == "sent",
            alerts.c.message_id.is_not(None),
            alerts.c.channel.in_(list(channels)),
            lease_free(alerts, now),
        )
        .order_by(alerts.c.edit_due_at, alerts.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = {row.id: row for row in session.execute(due)}
    if not claimed:
        return []
    session.execute(
        update(alerts)
        .where(alerts.c.id.in_(list(claimed)))
        .values(lease_owner=owner, lease_until=now + lease)
    )
    return [
        EditToMake(
            alert=alert,
            message=MessageRef(row.message_chat_id, row.message_id),
            shown=tuple(json.loads(row.message_sources or "[]")),
            requests=row.edit_requests,
            attempts=row.edit_attempts,
        )
        for alert in alerts_to_send(session, list(claimed))
        for row in (claimed[alert.id],)
    ]


def _release(session: Session, edit: EditToMake, owner: str, **values: object) -> bool:
    result = session.execute(
        update(alerts)
        .where(alerts.c.id == edit.alert.id, alerts.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None, **values)
    )
    return rowcount(result) == 1


def finish_edit(
    session: Session, edit: EditToMake, owner: str, sources: Sequence[str] | None
) -> bool:
    """The message lists `sources` now (None: it was not touched). The alert is no longer due,
    unless another edit was asked for since it was claimed. False unless `owner` held it."""
    values: dict[str, object] = {
        "edit_attempts": 0,
        "edit_due_at": case(
            (alerts.c.edit_requests == edit.requests, null()), else_=alerts.c.edit_due_at
        ),
    }
    if sources is not None:
        values["message_sources"] = json.dumps(list(sources), ensure_ascii=False)
    return _release(session, edit, owner, **values)


def postpone_edit(
    session: Session, edit: EditToMake, owner: str, at: datetime, *, attempt: bool = True
) -> bool:
    """Not done this time (Telegram asked to wait, or could not be reached): due again at `at`,
    counting an attempt unless `attempt` is False. False unless `owner` held it."""
    values: dict[str, object] = {"edit_due_at": at}
    if attempt:
        values["edit_attempts"] = alerts.c.edit_attempts + 1
    return _release(session, edit, owner, **values)


def drop_edit(session: Session, edit: EditToMake, owner: str, *, forget_message: bool) -> bool:
    """Given up on, silently: no edit is due any more. `forget_message`: the message cannot be
    edited at all (deleted, too old, the chat gone), so no later source asks for one again."""
    values: dict[str, object] = {"edit_due_at": None, "edit_attempts": 0}
    if forget_message:
        values |= {"message_chat_id": None, "message_id": None}
    return _release(session, edit, owner, **values)
