"""`monitor send-test`: send a sample alert through one configured channel, to each of its
recipients, and report each outcome (exit 1 if any failed). Nothing is stored.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from monitor.cli.app import EXIT_FAILURE, EXIT_USAGE, fail, load_settings, stderr

if TYPE_CHECKING:
    from monitor.config import Settings


def send_test(
    ctx: typer.Context,
    channel: Annotated[str, typer.Argument(help="A channel of the config.")],
) -> None:
    """Send a sample alert through a channel and report the result.

    The alert goes to each recipient of the channel; a failure is reported with the exact error
    (exit 1).

    \b
    Examples:
      monitor send-test telegram
      monitor send-test email --config /etc/news-monitor/config.yaml
    """
    from monitor.daemon import notifiers_for
    from monitor.errors import DeliveryError
    from monitor.model import Alert, Hit

    settings = load_settings(ctx)
    if channel not in settings.channels:
        known = ", ".join(settings.channels) or "none"
        raise fail(f"no channel {channel!r} (channels: {known})", EXIT_USAGE)
    notifier = notifiers_for(settings).get(channel)
    if notifier is None:
        raise fail(f"channel {channel!r} cannot send: its section (email: or telegram:) is missing")
    recipients = _channel_recipients(settings, channel)
    body = "A sample alert from news-monitor: قضية تايوان هي «أول خط أحمر» (the first red line)."
    start = body.index("تايوان")
    red = body.index("خط أحمر")
    failures = 0

    async def send_all() -> None:
        nonlocal failures
        try:
            for recipient in recipients:
                alert = Alert(
                    id=0,
                    watchlist="send-test",
                    channel=channel,
                    recipient=recipient,
                    title="Test alert from news-monitor",
                    body=body,
                    link="https://example.org/news-monitor/send-test",
                    source="send-test",
                    published=datetime.now(UTC),
                    hits=(
                        Hit("تايوان", "body", start, start + 6),
                        Hit("خط أحمر", "body", red, red + 7),
                    ),
                )
                label = recipient or channel
                try:
                    await notifier.send(alert)
                except DeliveryError as exc:
                    failures += 1
                    kind = "permanent" if exc.permanent else "temporary"
                    stderr.print(
                        f"[red]failed[/red] {escape(label)}: {escape(exc.reason)} ({kind})"
                    )
                else:
                    stderr.print(f"sent to {escape(label)}")
        finally:
            await notifier.close()

    asyncio.run(send_all())
    if failures:
        raise typer.Exit(EXIT_FAILURE)


def _channel_recipients(settings: Settings, channel: str) -> list[str]:
    config = settings.channels[channel]
    if config.type == "telegram":
        return [str(chat) for chat in getattr(config, "chat_ids", ())]
    if config.type == "email":
        return list(getattr(config, "to", ()))
    return [""]
