"""Channels that deliver alerts, each behind the one small `Notifier` protocol.

A notifier sends one alert or raises `DeliveryError` (temporary: retried with back-off; permanent:
given up with the reason). A channel whose messages can be edited later (Telegram) returns the
`MessageRef` of what it sent; the others return None. It never touches the database: the outbox decides what to send and
records what happened.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from monitor.model import Alert, MessageRef


class Notifier(Protocol):
    async def send(self, alert: Alert) -> MessageRef | None: ...

    async def close(self) -> None: ...


@runtime_checkable
class EditingNotifier(Notifier, Protocol):
    """A channel whose messages can be changed after they were sent (Telegram)."""

    async def edit(self, alert: Alert, message: MessageRef) -> None:
        """Make `message`, which `alert` became, show `alert` as it is now; `DeliveryError`
        (permanent when the message cannot be edited) otherwise."""
        ...
