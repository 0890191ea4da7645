"""The inline buttons under a subscriber's Telegram alert, and what pressing one means (pure).

A button carries `callback_data` (at most 64 bytes, https://core.telegram.org/bots/api#inlinekeyboardbutton):
`ACTION:WATCHLIST`, or `ACTION#KEY` when the name is too long to fit, KEY being the first hex
digits of the name's SHA-256 (`watchlist_key`), which the bot looks up among the watchlists it
knows. The notifier puts the buttons under each alert (`alert_buttons`); the bot answers a press
and edits the message so that it says what was done and offers the way back (`after`).
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

__all__ = [
    "MAX_DATA_BYTES",
    "MUTE_FOR",
    "Action",
    "Button",
    "Press",
    "after",
    "alert_buttons",
    "button_data",
    "muted_note",
    "parse_press",
    "watchlist_key",
]

MAX_DATA_BYTES = 64
MUTE_FOR = "1d"  # the mute button's duration
Action = Literal["mute", "unmute", "unsub", "sub"]
_ACTIONS: tuple[Action, ...] = ("mute", "unmute", "unsub", "sub")
_KEY_CHARS = 16


@dataclass(frozen=True)
class Button:
    label: str
    data: str


@dataclass(frozen=True)
class Press:
    """A pressed button: the action, and the watchlist's name or (for a long name) its key."""

    action: Action
    watchlist: str | None = None
    key: str | None = None

    def matches(self, name: str) -> bool:
        return name == self.watchlist or (self.key is not None and watchlist_key(name) == self.key)


def watchlist_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:_KEY_CHARS]


def button_data(action: Action, watchlist: str) -> str:
    data = f"{action}:{watchlist}"
    if len(data.encode("utf-8")) <= MAX_DATA_BYTES:
        return data
    return f"{action}#{watchlist_key(watchlist)}"


def parse_press(data: str) -> Press | None:
    """The press a button's data stands for; None for data this bot never made."""
    for action in _ACTIONS:
        rest = data.removeprefix(action)
        if rest == data or len(rest) < 2:
            continue
        if rest[0] == ":":
            return Press(action, watchlist=rest[1:])
        if rest[0] == "#":
            return Press(action, key=rest[1:])
    return None


def alert_buttons(watchlist: str) -> list[Button]:
    """Under a fresh alert: mute this watchlist for a day, or unsubscribe from it."""
    return [
        Button("🔕 Mute for a day", button_data("mute", watchlist)),
        Button("✖️ Unsubscribe", button_data("unsub", watchlist)),
    ]


def muted_note(watchlist: str, until: datetime, by: str = "") -> str:
    """The note (Telegram HTML) under an alert whose watchlist the chat muted until `until`;
    `by`: who did it, as HTML (` (by Alice)` in a group), or ""."""
    shown = html.escape(watchlist, quote=True)
    return (
        f"🔕 <b>{shown}</b> muted until {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC{by}; what "
        "comes meanwhile arrives as one message then."
    )


def after(action: Action, watchlist: str) -> list[Button]:
    """The buttons once `action` was done: the way back, or the fresh alert's buttons."""
    if action == "mute":
        return [Button("🔔 Unmute", button_data("unmute", watchlist))]
    if action == "unsub":
        return [Button("↩️ Subscribe again", button_data("sub", watchlist))]
    return alert_buttons(watchlist)
