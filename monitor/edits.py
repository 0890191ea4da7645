"""Also in: the Telegram alerts already sent for a story are edited to list the sources that joined
it later (SPEC §5). Email cannot be edited: nothing is sent again.

The poll that stores a later source asks for the edits in its own transaction
(`store.message_edits`), so none is lost in a crash. Here due edits are claimed under a lease —
one process edits a message at a time — each alert rendered again with the story's sources as
they are now, and its message edited through its channel's notifier (`edit`), which waits for a
send slot like a new message: edits spend Telegram's budget as sends do. An alert whose message
lists the sources already (sent after they joined, or edited since) costs no request. Then:

* edited, or Telegram answered "message is not modified" (an edit whose answer was lost): the
  message's sources are recorded; due again only if more joined meanwhile;
* Telegram asked to wait (429), could not be reached or failed (5xx): tried again later, at most
  `MAX_EDIT_ATTEMPTS` times, then given up without a word;
* refused for good ("message to edit not found", "message can't be edited", the chat gone): given
  up, and the message forgotten, so that no later source asks again. An edit is never sent as a
  new message;
* the bot's token was rejected: it waits, uncounted, like the alerts;
* a subscriber who lost access (SPEC §6) gets nothing more: the edit is dropped.

A crash between an edit and its record leaves the lease to expire; the edit is made again and
Telegram answers "message is not modified".
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Self

from sqlalchemy import Engine

from monitor.core.timing import alert_retry_at
from monitor.errors import CredentialsRejectedError, DeliveryError, RecipientMovedError
from monitor.model import Alert
from monitor.notify import EditingNotifier, Notifier
from monitor.store import db, subscribers
from monitor.store.message_edits import (
    EditToMake,
    claim_due_edits,
    drop_edit,
    finish_edit,
    postpone_edit,
)
from monitor.store.subscribers import SUBSCRIBERS_CHANNELS, DeliveryState
from monitor.store.thread import DatabaseThread

__all__ = ["EDIT_LEASE", "MAX_EDIT_ATTEMPTS", "EditStats", "MessageEditor"]

log = logging.getLogger("monitor.edits")

MAX_EDIT_ATTEMPTS = 4  # a few tries after a 429 or an outage; an edit is not worth more
EDIT_LEASE = timedelta(seconds=60)  # longer than a slot wait and an HTTP timeout together
CONCURRENT_EDITS = 20

# (the chat's delivery state, the watchlist) → why the alert may not reach it now, or None
Refusal = Callable[[DeliveryState | None, str], tuple[str, bool] | None]


@dataclass(slots=True)
class EditStats:
    """What became of the edits of a round (an edit needing no request is in none)."""

    edited: int = 0  # edited, or already as it should be ("message is not modified")
    retried: int = 0  # to be tried again: a 429, an outage, a rejected token
    given_up: int = 0  # refused for good, or failed MAX_EDIT_ATTEMPTS times
    dropped: int = 0  # not made on purpose: the subscriber no longer has access

    def __iadd__(self, other: EditStats) -> EditStats:
        self.edited += other.edited
        self.retried += other.retried
        self.given_up += other.given_up
        self.dropped += other.dropped
        return self


class MessageEditor:
    """Makes the due edits of the channels it is given a notifier with `edit` for. Close it when
    done (`close()`, or `with`): it ends the database thread it started, never one it was given."""

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str,
        refusal: Refusal,
        lease: timedelta = EDIT_LEASE,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        db_thread: DatabaseThread | None = None,
    ) -> None:
        """`db_thread`: where the database work runs, the outbox's (`store.thread`), which its
        owner closes; without one the editor starts its own."""
        self.engine = engine
        self._owns_thread = db_thread is None
        self.db_thread = db_thread or DatabaseThread("edits-db")
        self.owner = owner
        self.refusal = refusal
        self.lease = lease
        self.rng = rng or random.Random()
        self.clock = clock

    def close(self) -> None:
        if self._owns_thread:
            self.db_thread.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def edit_due(self, notifiers: Mapping[str, Notifier], limit: int = 100) -> EditStats:
        """Make every edit that is due, in batches of `limit`; what became of them."""
        editors = {
            channel: notifier
            for channel, notifier in notifiers.items()
            if isinstance(notifier, EditingNotifier) and getattr(notifier, "stopped", None) is None
        }
        stats = EditStats()
        if not editors:
            return stats
        gate = asyncio.Semaphore(CONCURRENT_EDITS)

        async def gated(edit: EditToMake, shown: Alert) -> EditStats:
            async with gate:
                return await self._edit(editors[edit.alert.channel], edit, shown)

        while True:
            batch, claimed, dropped = await self.db_thread.run(self._claim, list(editors), limit)
            stats.dropped += dropped
            for outcome in await asyncio.gather(*(gated(edit, shown) for edit, shown in batch)):
                stats += outcome
            if claimed < limit:
                return stats

    def _claim(
        self, channels: list[str], limit: int
    ) -> tuple[list[tuple[EditToMake, Alert]], int, int]:
        """Lease due edits; those of subscribers who lost access are dropped meanwhile. The edits
        to make, each with the alert as its message is to show it now (a subscriber's mute of the
        watchlist too), how many were claimed and how many of them dropped."""
        with db.transaction(self.engine) as session:
            now = self.clock()
            claimed = claim_due_edits(session, self.owner, self.lease, limit, channels=channels)
            chats = {e.message.chat_id for e in claimed if e.alert.channel in SUBSCRIBERS_CHANNELS}
            states = subscribers.delivery_states(session, chats) if chats else {}
            admitted = []
            dropped = 0
            for edit in claimed:
                muted_until = None
                if edit.alert.channel in SUBSCRIBERS_CHANNELS:
                    state = states.get(edit.message.chat_id)
                    if self.refusal(state, edit.alert.watchlist) is not None:
                        drop_edit(session, edit, self.owner, forget_message=False)
                        dropped += 1
                        continue
                    subscription = state.subscriptions.get(edit.alert.watchlist) if state else None
                    until = subscription.muted_until if subscription else None
                    muted_until = until if until is not None and until > now else None
                if not edit.needed:
                    finish_edit(session, edit, self.owner, None)
                    continue
                admitted.append((edit, replace(edit.alert.alert(), muted_until=muted_until)))
        return admitted, len(claimed), dropped

    async def _edit(self, notifier: EditingNotifier, edit: EditToMake, shown: Alert) -> EditStats:
        """Make one edit (`shown`: the alert as the message is to show it) and record it; what
        became of it."""
        alert = edit.alert
        try:
            await notifier.edit(shown, edit.message)
        except DeliveryError as exc:
            return await self.db_thread.run(self._record_failure, edit, exc)
        except Exception as exc:  # a notifier bug must not stop the other edits
            log.exception("edit.crash alert=%s channel=%s", alert.id, alert.channel)
            error = DeliveryError(f"unexpected {type(exc).__name__}: {exc}")
            return await self.db_thread.run(self._record_failure, edit, error)
        await self.db_thread.run(self._record, edit)
        log.info(
            "edit.sources alert=%s channel=%s chat=%s message=%s sources=%s",
            alert.id,
            alert.channel,
            edit.message.chat_id,
            edit.message.message_id,
            len(alert.other_feeds) + 1,
        )
        return EditStats(edited=1)

    def _record(self, edit: EditToMake) -> None:
        with db.transaction(self.engine) as session:
            finish_edit(session, edit, self.owner, edit.alert.other_feeds)

    def _record_failure(self, edit: EditToMake, error: DeliveryError) -> EditStats:
        alert = edit.alert
        attempts = edit.attempts + 1
        with db.transaction(self.engine) as session:
            now = self.clock()
            if isinstance(error, CredentialsRejectedError):
                postpone_edit(session, edit, self.owner, now, attempt=False)
                return EditStats(retried=1)
            # A chat that moved keeps its messages under its old id: they cannot be edited.
            final = error.permanent or isinstance(error, RecipientMovedError)
            if final or attempts >= MAX_EDIT_ATTEMPTS:
                drop_edit(session, edit, self.owner, forget_message=final)
                log.info(
                    "edit.given_up alert=%s channel=%s chat=%s message=%s reason=%r",
                    alert.id,
                    alert.channel,
                    edit.message.chat_id,
                    edit.message.message_id,
                    error.reason if final else f"{attempts} attempts: {error.reason}",
                )
                return EditStats(given_up=1)
            at = alert_retry_at(now, attempts, self.rng, retry_after_seconds=error.retry_after)
            postpone_edit(session, edit, self.owner, at)
        log.info(
            "edit.retry alert=%s channel=%s attempt=%s at=%s reason=%r",
            alert.id,
            alert.channel,
            attempts,
            at.isoformat(),
            error.reason,
        )
        return EditStats(retried=1)
