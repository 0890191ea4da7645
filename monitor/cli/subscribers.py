"""`monitor subscribers …`: the chats that subscribed to watchlists through the Telegram bot — list
them with their watchlists, mutes, digests and waiting alerts; remove one (it forgets the chat and
drops what waits for it); block or unblock one (a blocked chat gets nothing and cannot subscribe).

The queries are `monitor.store.subscribers`'; who has access is `monitor.core.access`'s rule, read
from the config's `telegram:` section.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from monitor.cli.app import (
    EXIT_FAILURE,
    MonitorCommand,
    MonitorGroup,
    config_after_command,
    count,
    fail,
    in_database,
    load_settings,
    stderr,
    when,
)

if TYPE_CHECKING:
    from monitor.config import Settings
    from monitor.store.subscribers import SubscriberListing

T = TypeVar("T")

subscribers_app = typer.Typer(cls=MonitorGroup, invoke_without_command=True)  # help: the callback's
# A chat id such as -1001234567890 is an argument, not an option.
_CHAT_ARGUMENT = {"ignore_unknown_options": True}
Chat = Annotated[
    int, typer.Argument(metavar="CHAT", help="The chat id, e.g. 1001 or -1001234567890.")
]


@subscribers_app.callback()
@config_after_command
def subscribers(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per chat, one per line.")
    ] = False,
) -> None:
    """List the chats that subscribed through the Telegram bot.

    Each chat with its watchlists, mutes, digest, waiting alerts and state; remove, block and
    unblock one with the commands below.

    \b
    Examples:
      monitor subscribers
      monitor subscribers --json
      monitor subscribers remove 1001
      monitor subscribers block -1001234567890
    """
    if ctx.invoked_subcommand is not None:
        return
    from monitor.store import subscribers as subs

    settings = load_settings(ctx)
    listing = in_database(settings, subs.list_subscribers, write=False)
    now = datetime.now(UTC)
    if as_json:
        for entry in listing:
            typer.echo(json.dumps(_record(entry, settings, now), ensure_ascii=False))
        return
    if not listing:
        if settings.telegram is None:
            stderr.print(
                "no subscribers: this config has no `telegram:` section, so no bot runs for people"
                " to subscribe through (give it the bot's token there to start one)"
            )
        else:
            stderr.print("no subscribers yet: people subscribe by talking to the bot")
        return
    for entry in listing:
        typer.echo("\n".join(_lines(_record(entry, settings, now))))


@subscribers_app.command("remove", context_settings=_CHAT_ARGUMENT, cls=MonitorCommand)
@config_after_command
def remove(ctx: typer.Context, chat: Chat) -> None:
    """Forget a chat and drop the alerts waiting for it.

    Its subscriptions and settings go. It can subscribe again (unless blocked or without access).

    \b
    Example:
      monitor subscribers remove 1001
    """
    from monitor.store import subscribers as subs

    settings = load_settings(ctx)
    result = in_database(settings, lambda s: subs.remove_subscriber(s, chat), write=True)
    if result is None:
        raise fail(f"no subscriber {chat}: `monitor subscribers` lists them", EXIT_FAILURE)
    names, dropped = result
    typer.echo(
        f"removed chat {chat}: {count(len(names), 'subscription')}, "
        f"{count(dropped, 'waiting alert')} dropped"
    )


@subscribers_app.command("block", context_settings=_CHAT_ARGUMENT, cls=MonitorCommand)
@config_after_command
def block(ctx: typer.Context, chat: Chat) -> None:
    """Send nothing more to a chat and refuse its commands.

    The alerts waiting for it are dropped. Works for a chat that has not talked to the bot yet.

    \b
    Example:
      monitor subscribers block -1001234567890
    """
    from monitor.store import subscribers as subs

    settings = load_settings(ctx)
    now = datetime.now(UTC)
    changed, dropped = in_database(
        settings, lambda s: subs.set_blocked(s, chat, True, now), write=True
    )
    if not changed:
        typer.echo(f"chat {chat} was already blocked")
        return
    typer.echo(f"blocked chat {chat}: {count(dropped, 'waiting alert')} dropped")


@subscribers_app.command("unblock", context_settings=_CHAT_ARGUMENT, cls=MonitorCommand)
@config_after_command
def unblock(ctx: typer.Context, chat: Chat) -> None:
    """Let a blocked chat receive alerts again.

    Its subscriptions deliver again; the alerts dropped while it was blocked are gone.

    \b
    Example:
      monitor subscribers unblock -1001234567890
    """
    from monitor.store import subscribers as subs

    settings = load_settings(ctx)
    now = datetime.now(UTC)
    changed, _ = in_database(settings, lambda s: subs.set_blocked(s, chat, False, now), write=True)
    typer.echo(f"unblocked chat {chat}" if changed else f"chat {chat} was not blocked")


def _record(entry: SubscriberListing, settings: Settings, now: datetime) -> dict[str, Any]:
    """One chat as `--json` prints it (and the table shows it)."""
    from monitor.core.access import AccessPolicy

    person = entry.subscriber
    telegram = settings.telegram
    policy = AccessPolicy.of(telegram.subscriptions, telegram.allow) if telegram else AccessPolicy()
    refusal = policy.refusal(person.chat_id, person.user_id, blocked=person.blocked)
    if person.blocked:
        state = "blocked"
    elif not person.active:
        state = f"gone: {person.inactive_reason or 'unknown'}"
    elif refusal is not None:
        state = f"no access: {refusal}"
    else:
        state = "active"
    muted = person.muted_until if person.muted_until and person.muted_until > now else None
    return {
        "chat": person.chat_id,
        "type": person.chat_type,
        "title": person.title,
        "username": person.username,
        "user": person.user_id,
        "state": state,
        "muted_until": _iso(muted),
        "digest": person.digest,
        "waiting": entry.waiting,
        "subscriptions": [
            {
                "watchlist": s.watchlist,
                "topic": s.thread_id,
                "muted_until": _iso(
                    s.muted_until if s.muted_until and s.muted_until > now else None
                ),
                "configured": s.watchlist in settings.watchlists,
            }
            for s in entry.subscriptions
        ],
    }


def _lines(record: dict[str, Any]) -> list[str]:
    """A chat as three lines: who and its state; its watchlists; mute, digest and waiting alerts.

    1001  Alice @alice — active
          taiwan-red-line, china-russia (topic 17, muted until 2026-12-05 09:00)
          digest daily 08:00 Europe/London · 2 waiting
    """
    names = []
    for subscription in record["subscriptions"]:
        notes = []
        if subscription["topic"] is not None:
            notes.append(f"topic {subscription['topic']}")
        if subscription["muted_until"]:
            notes.append(f"muted until {_short(subscription['muted_until'])}")
        if not subscription["configured"]:
            notes.append("no longer configured")
        names.append(subscription["watchlist"] + (f" ({', '.join(notes)})" if notes else ""))
    settings = []
    if record["muted_until"]:
        settings.append(f"muted until {_short(record['muted_until'])}")
    settings.append(f"digest {record['digest']}" if record["digest"] else "each alert at once")
    settings.append(f"{record['waiting']} waiting")
    chat = str(record["chat"])
    indent = " " * (len(chat) + 2)
    return [
        f"{chat}  {_who(record)} — {record['state']}",
        indent + (", ".join(names) or "no subscriptions"),
        indent + " · ".join(settings),
    ]


def _who(record: dict[str, Any]) -> str:
    """ "Alice Smith @alice" for a private chat, "Desk (supergroup, by @alice)" for a group."""
    user = f"@{record['username']}" if record["username"] else None
    if record["type"] in (None, "private"):
        return " ".join(part for part in (record["title"], user) if part) or "—"
    detail = ", ".join(part for part in (record["type"], user and f"by {user}") if part)
    return f"{record['title'] or ''} ({detail})".strip()


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def _short(iso: str) -> str:
    return when(datetime.fromisoformat(iso.replace("Z", "+00:00")))
