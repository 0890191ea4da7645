"""Plain, frozen values that every layer shares."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple


@dataclass(frozen=True)
class Article:
    """A piece of text to match: a feed item, a file, or a page.

    `title` and `body` are plain text (HTML already reduced). `source` is the feed name, `language`
    a BCP 47 tag such as "ar" or "en-GB" when known.
    """

    title: str
    body: str
    language: str | None = None
    source: str | None = None
    link: str | None = None
    published: datetime | None = None
    guid: str | None = None
    author: str | None = None
    html: str | None = None  # the original HTML of the body, kept for display
    # False when the feed gave no usable date: `published` is then the time it was fetched.
    dated: bool = True


class Hit(NamedTuple):
    """Where one query term matched: offsets are into the original title or body.

    A NamedTuple rather than a dataclass: the matcher makes many, and this is 5× cheaper to build.
    """

    term: str
    field: str  # "title" or "body"
    start: int
    end: int


class Match(NamedTuple):
    """A watchlist that matched an article, with every hit that made it match (a NamedTuple, like
    Hit: with 10,000 watchlists an article can match dozens)."""

    watchlist: str
    hits: tuple[Hit, ...] = ()


@dataclass(frozen=True)
class Alert:
    """One alert from the outbox, with what a channel needs to show it.

    `recipient` is "" for channels without recipients (console); `hits` are offsets into `body`
    (title hits carry field "title"); `other_sources` names the other feeds carrying the story.
    `language` is the item's (BCP 47, when known): it sets the text's direction. `thread_id` is
    the Telegram forum topic a subscriber's alert goes to (None: the chat itself). `muted_until`:
    the end of the subscriber's mute of the watchlist, while it lasts (its message then says so and
    offers to unmute).
    """

    id: int
    watchlist: str
    channel: str
    recipient: str
    title: str
    body: str
    link: str | None
    source: str
    published: datetime | None
    hits: tuple[Hit, ...] = ()
    other_sources: tuple[str, ...] = ()
    attempts: int = 0
    # sends that may have arrived without an answer saying so (a timeout after the request went out)
    unconfirmed_sends: int = 0
    language: str | None = None
    thread_id: int | None = None
    muted_until: datetime | None = None


@dataclass(frozen=True)
class MessageRef:
    """A message a channel delivered and can edit later: Telegram's chat id and message id."""

    chat_id: int
    message_id: int
