"""The sender: claim due alerts from the outbox, deliver each through its channel, record the result.

Delivery is at-least-once with the (story, watchlist, channel, recipient) key making repeats
impossible in normal operation: an alert is claimed under a lease (timed by the database clock), sent,
then marked sent. A crash between the send and the mark leaves the lease to expire, and the alert
is sent again after restart — the only case of a duplicate. A "sent" write that fails (the database
locked for a while, a full disk) is retried within the lease; if it still fails, the process keeps
the alert in mind as sent, and when it claims the alert again it records it instead of sending it
again (FAULTS 74). A failure is retried with exponential
back-off and full jitter; a permanent failure, or the last of `MAX_ALERT_ATTEMPTS`, is recorded as
given up with its reason.

Access is checked again when an alert is about to go (SPEC §6): an alert for a Telegram subscriber
who has since unsubscribed, been blocked by the administrator, or lost access (taken off
`telegram.allow`, `subscriptions: off`) is dropped instead of sent — and when the whole chat lost
access, every alert still waiting for it goes too, held ones included.

Bursts are collapsed (`burst_limits`, per Telegram channel): when the alerts due for one chat
would make it receive more than N within `BURST_WINDOW`, counting what it was sent in the window
already, they go as one message listing them (the notifier's digest) instead of one push each.

A channel whose credentials were refused (Telegram's 401: `CredentialsRejectedError`) stops: its
notifier says so (`stopped`), its alerts are no longer claimed and the one that met the refusal is
put back without counting an attempt, so nothing is lost when the token is fixed and the service
restarted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from monitor.core.access import AccessPolicy
from monitor.core.timing import MAX_ALERT_ATTEMPTS, alert_retry_at
from monitor.edits import EditStats, MessageEditor
from monitor.errors import (
    CredentialsRejectedError,
    DeliveryError,
    RateLimitedError,
    RecipientGoneError,
    RecipientMovedError,
    StoreError,
)
from monitor.model import Alert, MessageRef
from monitor.notify import Notifier
from monitor.store import db, subscribers
from monitor.store.alerts import (
    alert_recipient,
    claim_due_alerts,
    fail_pending_alerts,
    mark_alert_failed,
    mark_alert_retry,
    mark_alert_sent,
    mark_alert_unconfirmed,
    postpone_alert,
)
from monitor.store.subscribers import (
    SUBSCRIBERS_CHANNEL,
    SUBSCRIBERS_CHANNELS,
    SUBSCRIBERS_DIGEST_CHANNEL,
    DeliveryState,
)
from monitor.store.thread import DatabaseThread

log = logging.getLogger("monitor.outbox")

ALERT_LEASE = timedelta(seconds=30)  # renewed while a delivery is under way (`in_flight`)
# A "sent" write that fails is tried again after 0.25 s, 0.5 s, 1 s … while the lease surely lasts:
# within this share of it from the claim (its renewals may fail with the write).
MARK_SENT_FIRST_RETRY = 0.25
LEASE_SAFE_SHARE = 0.8
CONCURRENT_SENDS = 50
BURST_WINDOW = timedelta(minutes=1)


@dataclass
class DeliveryStats:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    dropped: int = 0  # not sent on purpose: the recipient no longer has access
    # messages sent before, edited to list the sources that joined their story
    edits: EditStats = field(default_factory=EditStats)

    # taken as delivered without Telegram saying so: two sends that both timed out after the
    # request went out (one of them most likely arrived); not sent a third time
    unconfirmed: int = 0

    @property
    def edited(self) -> int:
        return self.edits.edited

    def __iadd__(self, other: DeliveryStats) -> DeliveryStats:
        self.sent += other.sent
        self.retried += other.retried
        self.failed += other.failed
        self.dropped += other.dropped
        self.edits += other.edits
        self.unconfirmed += other.unconfirmed
        return self


class Outbox:
    """Delivers the alerts of the channels it has a notifier for; others wait in the outbox."""

    def __init__(
        self,
        engine: Engine,
        notifiers: Mapping[str, Notifier],
        *,
        owner: str,
        lease: timedelta = ALERT_LEASE,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        digest_channels: Collection[str] = (),
        access: AccessPolicy | None = None,
        burst_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.engine = engine
        self.access = access or AccessPolicy()
        self.notifiers = dict(notifiers)
        self.digest_channels = frozenset(digest_channels)
        # channel → the most alerts one chat gets one by one within BURST_WINDOW
        self.burst_limits = dict(burst_limits or {})
        # Channels a reload removed, for alerts claimed before it; closed when nothing is in flight.
        self._retired: dict[str, Notifier] = {}
        self._unused: list[Notifier] = []
        # Digests go out from one process only (the leader), so that a recipient's digest is one
        # message and not a piece from each replica.
        self.send_digests = True
        self.in_flight: set[int] = set()  # alerts claimed and not recorded yet: their leases renew
        # Sent, but the "sent" write failed until the lease ran short: alert id → when it was sent
        # (and the message it became, for a channel that can edit it).
        self.unrecorded: dict[int, datetime] = {}
        self._unrecorded_messages: dict[int, MessageRef] = {}
        self.progress_at: float | None = None  # loop time an alert was last sent, tried or recorded
        self._lease_ends: dict[int, float] = {}  # alert id → loop time its lease surely lasts to
        self.owner = owner
        self.lease = lease
        self.rng = rng or random.Random()
        self.clock = clock
        # The outbox's database work, the edits' included, on a thread of its own
        # (`store.thread`): a "sent" mark never queues behind poll writes for a worker thread.
        self.db_thread = DatabaseThread("outbox-db")
        self.editor = MessageEditor(
            engine,
            owner=owner,
            refusal=self._refusal,
            rng=self.rng,
            clock=clock,
            db_thread=self.db_thread,
        )

    def reconfigure(
        self, notifiers: Mapping[str, Notifier], digest_channels: Collection[str]
    ) -> None:
        """Deliver through `notifiers` from the next claim on (a reload). An alert claimed already
        still goes out, through its channel's old notifier if the channel is gone."""
        for channel, notifier in self.notifiers.items():
            if channel not in notifiers:
                self._retired[channel] = notifier
        kept = {id(notifier) for notifier in notifiers.values()}
        for notifier in self.notifiers.values():
            if id(notifier) not in kept and all(n is not notifier for n in self._unused):
                self._unused.append(notifier)
        self.notifiers = dict(notifiers)
        self.digest_channels = frozenset(digest_channels)

    def _notifier(self, channel: str) -> Notifier:
        return self.notifiers.get(channel) or self._retired[channel]

    async def _close_retired(self) -> None:
        unused, self._unused, self._retired = self._unused, [], {}
        for notifier in unused:
            await notifier.close()

    async def deliver_due(self, limit: int = 100) -> DeliveryStats:
        """Deliver every alert that is due, in batches of `limit`, until none is left, and make
        the edits that are due (`monitor.edits`); then let the notifiers close what they kept
        open for the round (SMTP connections)."""
        try:
            stats = await self._deliver_due(limit)
            stats.edits += await self.editor.edit_due(self.notifiers, limit)
            return stats
        finally:
            await self._release()

    async def _release(self) -> None:
        for notifier in {id(n): n for n in self.notifiers.values()}.values():
            release = getattr(notifier, "release", None)
            if release is not None:
                try:
                    await release()
                except Exception:  # closing is best effort; the next round opens anew
                    log.exception("notifier.release_failed notifier=%r", notifier)

    async def _deliver_due(self, limit: int) -> DeliveryStats:
        if (self._retired or self._unused) and not self.in_flight:
            await self._close_retired()
        total = DeliveryStats()
        # Concurrently: a notifier that waits for one chat's rate limit lets the others go on.
        gate = asyncio.Semaphore(CONCURRENT_SENDS)

        async def gated(job: Awaitable[DeliveryStats]) -> DeliveryStats:
            async with gate:
                stats = await job
            self.progress_at = asyncio.get_running_loop().time()
            return stats

        loop = asyncio.get_running_loop()
        while True:
            claimed_at = loop.time()
            batch, dropped, recent = await self.db_thread.run(self._claim, limit)
            total.dropped += dropped
            if not batch and not dropped:
                return total
            lease_ends = claimed_at + self.lease.total_seconds() * LEASE_SAFE_SHARE
            self._lease_ends.update((alert.id, lease_ends) for alert in batch)
            # Sent before but not recorded: record, do not send again.
            sent_before = [alert for alert in batch if alert.id in self.unrecorded]
            batch = [alert for alert in batch if alert.id not in self.unrecorded]
            digests: dict[tuple[str, str, int | None], list[Alert]] = {}
            singles: list[Alert] = []
            for alert in batch:
                if alert.channel in self.digest_channels:
                    key = (alert.channel, alert.recipient, alert.thread_id)
                    digests.setdefault(key, []).append(alert)
                else:
                    singles.append(alert)
            singles, bursts = self._bursts(singles, recent)
            jobs = [gated(self._deliver(a)) for a in singles] + [
                gated(self._deliver_digest(channel, alerts))
                for (channel, _recipient, _thread), alerts in digests.items()
            ]
            jobs += [gated(self._deliver_burst(alerts)) for alerts in bursts]
            jobs += [gated(self._record_again(alert)) for alert in sent_before]
            claimed = [*batch, *sent_before]
            self.in_flight.update(alert.id for alert in claimed)
            try:
                for stats in await asyncio.gather(*jobs):
                    total += stats
            finally:
                self.in_flight.difference_update(alert.id for alert in claimed)
                for alert in claimed:
                    self._lease_ends.pop(alert.id, None)
            if len(claimed) + dropped < limit:
                return total

    def _bursts(
        self, singles: list[Alert], recent: Mapping[str, int]
    ) -> tuple[list[Alert], list[list[Alert]]]:
        """(the alerts to send one by one, the groups to send as one message each): a chat's
        alerts of burst-limited channels are grouped when, with what it was sent in the last
        `BURST_WINDOW` (`recent`), they would exceed the channel's limit."""
        groups: dict[tuple[int, str, int | None], list[Alert]] = {}
        alone: list[Alert] = []
        for alert in singles:
            if alert.channel in self.burst_limits:
                key = (id(self.notifiers[alert.channel]), alert.recipient, alert.thread_id)
                groups.setdefault(key, []).append(alert)
            else:
                alone.append(alert)
        bursts = []
        for (_notifier, recipient, _thread), group in groups.items():
            allowed = min(self.burst_limits[alert.channel] for alert in group)
            if len(group) > 1 and recent.get(recipient, 0) + len(group) > allowed:
                bursts.append(group)
            else:
                alone += group
        return alone, bursts

    def _claim(self, limit: int) -> tuple[list[Alert], int, dict[str, int]]:
        """Lease due alerts; those whose subscriber lost access are dropped in the same
        transaction. (alerts to send, alerts dropped, what the chats of burst-limited channels
        were sent in the last `BURST_WINDOW`)."""
        with db.transaction(self.engine) as session:
            channels = [
                channel
                for channel, notifier in self.notifiers.items()
                if (self.send_digests or channel not in self.digest_channels)
                and getattr(notifier, "stopped", None) is None
            ]
            claimed = claim_due_alerts(session, self.owner, self.lease, limit, channels=channels)
            chats = {
                int(a.recipient)
                for a in claimed
                if a.channel in SUBSCRIBERS_CHANNELS and _is_chat_id(a.recipient)
            }
            states = subscribers.delivery_states(session, chats)
            admitted: list[Alert] = []
            dropped = 0
            for row in claimed:
                if row.channel not in SUBSCRIBERS_CHANNELS:
                    admitted.append(row.alert())
                    continue
                state = states.get(int(row.recipient)) if _is_chat_id(row.recipient) else None
                refusal = self._refusal(state, row.watchlist)
                if refusal is None:
                    assert state is not None
                    thread = state.subscriptions[row.watchlist].thread_id
                    admitted.append(row.alert(thread_id=thread))
                    continue
                reason, whole_chat = refusal
                count = (
                    subscribers.drop_pending_alerts(
                        session,
                        int(row.recipient),
                        watchlists=None if whole_chat else [row.watchlist],
                    )
                    if _is_chat_id(row.recipient)
                    else 0
                )
                dropped += count
                log.info(
                    "alert.dropped chat=%s watchlist=%s reason=%r dropped=%s",
                    row.recipient,
                    row.watchlist,
                    reason,
                    count,
                )
            busy = {a.recipient for a in admitted if a.channel in self.burst_limits}
            recent = subscribers.sent_since(session, busy, self.clock() - BURST_WINDOW)
        return admitted, dropped, recent

    def _refusal(self, state: DeliveryState | None, watchlist: str) -> tuple[str, bool] | None:
        """Why a subscriber alert may not go now, and whether that holds for the whole chat."""
        if state is None:
            return "no longer a subscriber", True
        if not state.active:
            return "the chat is gone", True
        reason = self.access.refusal(state.chat_id, state.user_id, blocked=state.blocked)
        if reason is not None:
            return reason, True
        if watchlist not in state.subscriptions:
            return f"unsubscribed from {watchlist}", False
        return None

    async def _deliver(self, alert: Alert) -> DeliveryStats:
        notifier = self._notifier(alert.channel)
        try:
            message = await notifier.send(alert)
        except DeliveryError as exc:
            return await self.db_thread.run(self._record_failure, alert, exc)
        except Exception as exc:  # a notifier bug must not stop the others
            log.exception("alert.crash alert=%s channel=%s", alert.id, alert.channel)
            error = DeliveryError(f"unexpected {type(exc).__name__}: {exc}")
            return await self.db_thread.run(self._record_failure, alert, error)
        log.info(
            "alert.sent alert=%s channel=%s watchlist=%s", alert.id, alert.channel, alert.watchlist
        )
        await self._mark_sent(alert, self.clock(), message)
        return DeliveryStats(sent=1)

    async def _deliver_digest(self, channel: str, alerts: list[Alert]) -> DeliveryStats:
        """The alerts a digest channel collected for one recipient, as one message."""
        notifier = self._notifier(channel)
        send_digest = getattr(notifier, "send_digest", None)
        if send_digest is None:  # a channel without digests sends them one by one
            stats = DeliveryStats()
            for alert in alerts:
                stats += await self._deliver(alert)
            return stats
        title = digest_title([alert.watchlist for alert in alerts])
        return await self._deliver_together(
            lambda: send_digest(alerts=alerts, title=title, recipient=alerts[0].recipient),
            alerts,
            "digest.sent",
        )

    async def _deliver_burst(self, alerts: list[Alert]) -> DeliveryStats:
        """Alerts for one chat that would come faster than its channel allows, as one message."""
        send_digest = getattr(self.notifiers[alerts[0].channel], "send_digest", None)
        if send_digest is None:
            stats = DeliveryStats()
            for alert in alerts:
                stats += await self._deliver(alert)
            return stats
        title = digest_title([a.watchlist for a in alerts], heading="In the last minute")
        return await self._deliver_together(
            lambda: send_digest(
                alerts=alerts, title=title, recipient=alerts[0].recipient, brief=True
            ),
            alerts,
            "burst.collapsed",
        )

    async def _deliver_together(
        self, send: Callable[[], Awaitable[object]], alerts: list[Alert], what: str
    ) -> DeliveryStats:
        """`send()` delivers `alerts` as one message: record them all as sent, or all failed."""
        channel = alerts[0].channel
        count = len(alerts)
        try:
            await send()
        except DeliveryError as exc:
            stats = DeliveryStats()
            for alert in alerts:
                stats += await self.db_thread.run(self._record_failure, alert, exc)
            return stats
        log.info("%s channel=%s recipient=%s alerts=%s", what, channel, alerts[0].recipient, count)
        sent_at = self.clock()
        for alert in alerts:
            await self._mark_sent(alert, sent_at)
        return DeliveryStats(sent=count)

    async def _record_again(self, alert: Alert) -> DeliveryStats:
        """An alert this process sent and could not record: record it now, without sending."""
        message = self._unrecorded_messages.get(alert.id)
        await self._mark_sent(alert, self.unrecorded[alert.id], message)
        return DeliveryStats()

    async def _mark_sent(
        self, alert: Alert, sent_at: datetime, message: MessageRef | None = None
    ) -> None:
        """Record a delivered alert as sent, with the `message` it became (if the channel can
        edit it) and the other sources it listed. A failed write (the database locked, a full disk) is
        tried again, waiting longer each time, while the alert's lease surely lasts; then the
        alert is kept in `unrecorded`, to be recorded and not sent when it is claimed again."""
        loop = asyncio.get_running_loop()
        lease_ends = self._lease_ends.get(alert.id, loop.time())
        delay = MARK_SENT_FIRST_RETRY
        for attempt in itertools.count(1):
            try:
                await self.db_thread.run(self._record_sent, alert, sent_at, message)
            except StoreError as exc:
                if loop.time() + delay > lease_ends:
                    self.unrecorded[alert.id] = sent_at
                    if message is not None:
                        self._unrecorded_messages[alert.id] = message
                    log.error(
                        "alert.unrecorded alert=%s attempts=%s error=%s "
                        "action=recorded when claimed again, not sent again",
                        alert.id,
                        attempt,
                        exc,
                    )
                    return
                log.warning(
                    "alert.record_retry alert=%s attempt=%s retry_in=%gs error=%s",
                    alert.id,
                    attempt,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay *= 2
            else:
                self._unrecorded_messages.pop(alert.id, None)
                if self.unrecorded.pop(alert.id, None) is not None or attempt > 1:
                    log.info("alert.recorded alert=%s attempts=%s", alert.id, attempt)
                return

    def _record_sent(self, alert: Alert, sent_at: datetime, message: MessageRef | None) -> None:
        # Urgent: until it is written, a crash or a lost lease sends the alert again.
        with db.transaction(self.engine, urgent=True) as session:
            mark_alert_sent(
                session, alert.id, self.owner, sent_at, message=message, sources=alert.other_sources
            )

    def _record_failure(self, alert: Alert, error: DeliveryError) -> DeliveryStats:
        attempts = alert.attempts + 1
        with db.transaction(self.engine) as session:
            now = self.clock()
            if isinstance(error, CredentialsRejectedError):
                # The channel stopped (its notifier logged why): the alert waits, uncounted.
                postpone_alert(session, alert.id, self.owner, error.reason, now)
                return DeliveryStats(retried=1)
            if error.unconfirmed and alert.unconfirmed_sends >= 1:
                # The second copy, and again no answer: one of the two most likely arrived, and a
                # third would be one too many. Taken as delivered (lost if neither arrived).
                mark_alert_unconfirmed(session, alert.id, self.owner, now, error.reason)
                log.warning(
                    "alert.unconfirmed alert=%s channel=%s watchlist=%s recipient=%s sends=%s "
                    "action=taken as delivered, not sent again",
                    alert.id,
                    alert.channel,
                    alert.watchlist,
                    alert.recipient,
                    alert.unconfirmed_sends + 1,
                )
                return DeliveryStats(unconfirmed=1)
            if isinstance(error, RateLimitedError | RecipientMovedError):
                if isinstance(error, RecipientMovedError):
                    # A group became a supergroup: follow it, and take its waiting alerts along.
                    if alert.channel.startswith(SUBSCRIBERS_CHANNEL):
                        subscribers.migrate_chat(
                            session, int(error.recipient), int(error.new_recipient), now
                        )
                        channels: tuple[str, ...] = (
                            SUBSCRIBERS_CHANNEL,
                            SUBSCRIBERS_DIGEST_CHANNEL,
                        )
                    else:
                        log.warning(
                            "channel.chat_migrated channel=%s old=%s new=%s "
                            "action=update chat_ids in the config",
                            alert.channel,
                            error.recipient,
                            error.new_recipient,
                        )
                        channels = (alert.channel,)
                    for channel in channels:
                        subscribers.move_pending_alerts(
                            session, channel, error.recipient, error.new_recipient
                        )
                    if alert_recipient(session, alert.id) == error.recipient:
                        # the new chat has this alert already: this copy is done
                        reason = f"{error.reason}; chat {error.new_recipient} has it already"
                        mark_alert_failed(session, alert.id, self.owner, reason)
                        return DeliveryStats(failed=1)
                # Not a failure: wait exactly as long as asked, without counting an attempt.
                retry_at = now + timedelta(seconds=error.retry_after or 0.0)
                postpone_alert(session, alert.id, self.owner, error.reason, retry_at)
                log.info(
                    "alert.postponed alert=%s channel=%s until=%s reason=%r",
                    alert.id,
                    alert.channel,
                    retry_at.isoformat(),
                    error.reason,
                )
                return DeliveryStats(retried=1)
            if isinstance(error, RecipientGoneError) and alert.channel.startswith(
                SUBSCRIBERS_CHANNEL
            ):
                # Blocked or kicked: that subscriber is deactivated, nobody else is affected.
                subscribers.deactivate(session, int(error.recipient), error.reason, now)
                mark_alert_failed(session, alert.id, self.owner, error.reason)
                others = sum(
                    fail_pending_alerts(session, channel, alert.recipient, error.reason)
                    for channel in (SUBSCRIBERS_CHANNEL, SUBSCRIBERS_DIGEST_CHANNEL)
                )
                log.warning(
                    "subscriber.deactivated chat=%s reason=%r pending_failed=%s",
                    alert.recipient,
                    error.reason,
                    others,
                )
                return DeliveryStats(failed=1 + others)
            if error.permanent or attempts >= MAX_ALERT_ATTEMPTS:
                reason = (
                    error.reason
                    if error.permanent
                    else f"gave up after {attempts} attempts: {error.reason}"
                )
                mark_alert_failed(session, alert.id, self.owner, reason)
                log.warning(
                    "alert.failed alert=%s channel=%s watchlist=%s reason=%r",
                    alert.id,
                    alert.channel,
                    alert.watchlist,
                    reason,
                )
                return DeliveryStats(failed=1)
            retry_at = alert_retry_at(now, attempts, self.rng)
            if error.retry_after is not None:
                retry_at = max(retry_at, now + timedelta(seconds=error.retry_after))
            mark_alert_retry(
                session, alert.id, self.owner, error.reason, retry_at, unconfirmed=error.unconfirmed
            )
        log.info(
            "alert.retry alert=%s channel=%s attempt=%s at=%s reason=%r",
            alert.id,
            alert.channel,
            attempts,
            retry_at.isoformat(),
            error.reason,
        )
        return DeliveryStats(retried=1)

    async def close(self) -> None:
        await self._close_retired()
        for notifier in self.notifiers.values():
            await notifier.close()
        self.editor.close()
        self.db_thread.close()


DIGEST_TITLE_WATCHLISTS = 3  # named in a digest's title; the rest are counted


def digest_title(watchlists: Sequence[str], *, heading: str = "Digest") -> str:
    """The title of a digest holding one alert per entry of `watchlists`, in words: "Digest: 5
    alerts — taiwan-red-line (3), china-russia (2)", the busiest watchlists first."""
    counts = Counter(watchlists)
    total = sum(counts.values())
    named = [
        f"{name} ({count})" if len(counts) > 1 else name
        for name, count in counts.most_common(DIGEST_TITLE_WATCHLISTS)
    ]
    rest = len(counts) - len(named)
    if rest:
        named.append(f"{rest} more watchlist{'s' if rest != 1 else ''}")
    return f"{heading}: {total} alert{'s' if total != 1 else ''} — {', '.join(named)}"


def _is_chat_id(recipient: str) -> bool:
    return recipient.lstrip("-").isdigit()
