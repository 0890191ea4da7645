"""A Telegram Bot API double on 127.0.0.1 for tests: python-telegram-bot talks to it over HTTP.

Speaks the Bot API's protocol (https://core.telegram.org/bots/api#making-requests) at
`/bot<token>/<method>`, GET or POST, parameters in the query, a form, multipart or JSON; answers
`{"ok": true, "result": …}` or `{"ok": false, "error_code": …, "description": …, "parameters": …}`.
Point PTB at it with `base_url=f"{double.api_url}/bot"` (or `api_url` for our own classes). Each
process of a test can have its own root, `api_url_for(name)` (`/<name>/bot<token>/<method>`), so
that the double knows who sent what (`SentMessage.client`, `Poll.client`).

Methods: getMe, getUpdates (long polling with `timeout`, `offset` confirming updates, serving what
a test queued with `send_command`, `press_button` or `queue_update`), sendMessage, editMessageText,
editMessageReplyMarkup, answerCallbackQuery, getChatMember (what `set_member` said; "member"
otherwise), deleteWebhook, getWebhookInfo, setMyCommands, getMyCommands, deleteMyCommands.
Anything else: 404 "Not Found".

Updates tests inject: a command in a private chat, a group, a supergroup or a forum topic
(`send_command(…, chat_id=-100…, thread_id=17)`), sent by a user or by the group itself (an
anonymous admin, `as_chat=True`); a press on an inline button under a message the bot sent
(`press_button`). Edits and callback answers are recorded (`edits`, `answers`); every getUpdates
request's span is recorded in `polls`, so a test can tell whether two pollers ever overlapped.

sendMessage is checked the way Telegram checks it:
* `parse_mode=HTML` text is parsed like tdlib's parse_html: only the tags b, strong, i, em, u, ins,
  s, strike, del, a (href), code, pre, tg-spoiler, span class="tg-spoiler", blockquote and
  tg-emoji; a stray `<`, an unknown tag or a misnested end tag → 400 "Bad Request: can't parse
  entities: …". Entities: `&lt; &gt; &amp; &quot;` and numeric ones. Stricter than Telegram on one
  point: a `&` that starts no such entity is refused too (Telegram shows it as is), so that an
  escaping slip shows up in tests.
* the text after entity parsing must be 1–4096 characters, counted as tdlib counts them (Unicode
  code points, `utf8_length`), else 400 "Bad Request: message is too long" / "… text is empty".
editMessageText and editMessageReplyMarkup are checked against the message as the chat shows it: one
the bot did not send → 400 "message to edit not found"; the same text, entities and buttons → 400
"message is not modified"; an edit without reply_markup takes the buttons away, as Telegram's does;
under `enforce_limits` an edit counts like a message.
Each accepted message is recorded (`SentMessage`: chat, text as sent, parse mode, the text as
Telegram shows it, the bold and linked pieces, arrival time on `time.monotonic()`).

Faults, per chat (`fail`): 429 with `parameters.retry_after`, 403 "Forbidden: bot was blocked by the
user", 400 with `parameters.migrate_to_chat_id`, 400 "can't parse entities" for HTML only, any 400,
a 502, hanging until `release()` (or the client gives up), or accepting the message and answering
only after `release()` (an ambiguous timeout for a client that gave up). `conflict_polls()` answers getUpdates
with 409 Conflict, as Telegram does when a second process polls. `enforce_limits()` makes the double
answer 429 itself when a chat gets more than ~1 message/s, a group more than 20/min, or the bot
more than 30/s.

The server runs in its own thread and event loop (like tests/httpserver.py), so tests that run
`asyncio.run` never share its loop; waiting helpers block on a condition, never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from httpserver import ThreadedServer

TOKEN = "123456789:AAE-test_token-Secret0987654321abcdefgh"
BOT_ID = 123456789
BOT_USER = {
    "id": BOT_ID,
    "is_bot": True,
    "first_name": "Monitor",
    "username": "monitor_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
MAX_TEXT = 4096
_MAX_WAIT = 30.0  # a hung request or long poll never outlives this
# Parameters whose form values are JSON (PTB JSON-encodes every non-string value).
_JSON_FIELDS = {
    "chat_id",
    "offset",
    "limit",
    "timeout",
    "allowed_updates",
    "link_preview_options",
    "reply_parameters",
    "reply_markup",
    "commands",
    "scope",
    "entities",
    "disable_notification",
    "protect_content",
    "drop_pending_updates",
    "disable_web_page_preview",
    "message_thread_id",
    "message_id",
    "user_id",
    "show_alert",
}


# ---- Telegram HTML, as tdlib parses it ----------------------------------------------------------

_ALLOWED_TAGS = {
    "a",
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "tg-emoji",
    "code",
    "pre",
    "blockquote",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY = re.compile(r"&(?:#(\d{1,8})|#[xX]([0-9a-fA-F]{1,8})|([a-zA-Z]+));")
_ATTRIBUTE = re.compile(r"""\s*([a-zA-Z][a-zA-Z0-9_-]*)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>"']+))?""")


class EntityParseError(ValueError):
    """Text Telegram would refuse: the message is tdlib's."""


@dataclass(frozen=True)
class Entity:
    type: str  # the tag name ("b", "a", …)
    start: int  # offsets into the parsed text (code points)
    end: int
    href: str | None = None


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def _decode_entities(text: str, where: int, source: str) -> str:
    out: list[str] = []
    pos = 0
    while True:
        amp = text.find("&", pos)
        if amp < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:amp])
        match = _ENTITY.match(text, amp)
        char = _entity_char(match)
        if char is None:
            raise EntityParseError(
                f"Unsupported HTML entity at byte offset {_byte_offset(source, where + amp)}"
            )
        out.append(char)
        pos = match.end() if match else amp + 1


def _entity_char(match: re.Match[str] | None) -> str | None:
    if match is None:
        return None
    decimal, hexadecimal, name = match.groups()
    if name is not None:
        return _NAMED_ENTITIES.get(name)
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code)


def parse_html(text: str) -> tuple[str, list[Entity]]:
    """Telegram HTML → (the text as shown, its entities), or EntityParseError."""
    plain: list[str] = []
    length = 0
    entities: list[Entity] = []
    stack: list[tuple[str, int, str | None]] = []  # tag, start in plain, href
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "&":
            match = _ENTITY.match(text, i)
            decoded = _entity_char(match)
            if decoded is None or match is None:
                raise EntityParseError(
                    f"Unsupported HTML entity at byte offset {_byte_offset(text, i)}"
                )
            plain.append(decoded)
            length += 1
            i = match.end()
            continue
        if char != "<":
            plain.append(char)
            length += 1
            i += 1
            continue
        begin = i
        i += 1
        if i < n and text[i] == "/":  # end tag
            close = text.find(">", i)
            if close < 0:
                raise EntityParseError(
                    f"Unclosed end tag at byte offset {_byte_offset(text, begin)}"
                )
            name = text[i + 1 : close].strip().lower()
            if not stack:
                raise EntityParseError(
                    f"Unexpected end tag at byte offset {_byte_offset(text, begin)}"
                )
            open_name, start, href = stack.pop()
            if name != open_name:
                raise EntityParseError(
                    f"Unmatched end tag at byte offset {_byte_offset(text, begin)}, expected "
                    f'"</{open_name}>", found "</{name}>"'
                )
            entities.append(Entity(open_name, start, length, href))
            i = close + 1
            continue
        name_match = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*").match(text, i)
        name = name_match.group().lower() if name_match else ""
        if name not in _ALLOWED_TAGS:
            shown = name or text[i : i + 1]
            raise EntityParseError(
                f'Unsupported start tag "{shown}" at byte offset {_byte_offset(text, begin)}'
            )
        assert name_match is not None
        i = name_match.end()
        attributes: dict[str, str] = {}
        while True:
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                raise EntityParseError(
                    f"Unclosed start tag at byte offset {_byte_offset(text, begin)}"
                )
            if text[i] == ">":
                i += 1
                break
            attribute = _ATTRIBUTE.match(text, i)
            if attribute is None or attribute.end() == i:
                raise EntityParseError(
                    f'Expected equal sign in declaration of an attribute of the tag "{name}" '
                    f"at byte offset {_byte_offset(text, begin)}"
                )
            value = attribute.group(2) or ""
            if value[:1] in ("'", '"'):
                value = value[1:-1]
            attributes[attribute.group(1).lower()] = _decode_entities(
                value, attribute.start(2) if attribute.group(2) else i, text
            )
            i = attribute.end()
        if name == "span" and attributes.get("class") != "tg-spoiler":
            raise EntityParseError('Tag "span" must have class "tg-spoiler"')
        stack.append((name, length, attributes.get("href") if name == "a" else None))
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(plain), sorted(entities, key=lambda e: (e.start, -e.end))


# ---- recorded traffic --------------------------------------------------------------------------


@dataclass(frozen=True)
class SentMessage:
    """A message the double accepted."""

    message_id: int
    chat_id: int
    text: str  # as sent
    parse_mode: str | None
    plain: str  # as Telegram shows it
    entities: tuple[Entity, ...]
    at: float  # time.monotonic() on arrival
    params: Mapping[str, Any] = field(repr=False)
    client: str = ""  # the path prefix the request came by (see `BotAPIDouble.api_url_for`)

    @property
    def thread_id(self) -> int | None:
        value = self.params.get("message_thread_id")
        return int(value) if value is not None else None

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """The inline keyboard's buttons, row after row: (label, callback data)."""
        markup = self.params.get("reply_markup") or {}
        return [
            (button["text"], button.get("callback_data", ""))
            for row in markup.get("inline_keyboard", [])
            for button in row
        ]

    @property
    def bold(self) -> list[str]:
        return [self.plain[e.start : e.end] for e in self.entities if e.type in ("b", "strong")]

    @property
    def links(self) -> list[tuple[str, str | None]]:
        return [(self.plain[e.start : e.end], e.href) for e in self.entities if e.type == "a"]


@dataclass(frozen=True)
class Edit:
    """An editMessageText or editMessageReplyMarkup the double accepted."""

    method: str
    chat_id: int
    message_id: int
    text: str | None  # as sent; None for a keyboard-only edit
    plain: str | None
    params: Mapping[str, Any] = field(repr=False)
    entities: tuple[Entity, ...] = ()

    @property
    def buttons(self) -> list[tuple[str, str]]:
        markup = self.params.get("reply_markup") or {}
        return [
            (button["text"], button.get("callback_data", ""))
            for row in markup.get("inline_keyboard", [])
            for button in row
        ]


@dataclass(frozen=True)
class _Shown:
    """A message as a chat shows it now: what an edit must change."""

    plain: str
    entities: tuple[Entity, ...]
    markup: Any


_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)


@dataclass(frozen=True)
class Attempt:
    """Every sendMessage request, with the status it was answered with (0: never answered)."""

    chat_id: int
    status: int
    description: str
    at: float


@dataclass(frozen=True)
class Poll:
    """One getUpdates request: which client sent it, when it arrived and when it ended (answered,
    or given up by the client; None while still open), on `time.monotonic()`."""

    client: str
    start: float
    end: float | None


@dataclass
class _Fault:
    kind: str
    times: int | None
    retry_after: int = 30
    migrate_to: int | None = None
    description: str | None = None


def _chat_object(chat_id: int, *, forum: bool = False) -> dict[str, Any]:
    if chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": f"user{chat_id}"}
    kind = "supergroup" if chat_id < -1_000_000_000_000 or forum else "group"
    chat: dict[str, Any] = {"id": chat_id, "type": kind, "title": f"chat {chat_id}"}
    if forum:
        chat["is_forum"] = True
    return chat


def _user_object(user_id: int, username: str | None = None) -> dict[str, Any]:
    user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
    if username:
        user["username"] = username
    return user


_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
}


def _entities_json(plain: str, entities: tuple[Entity, ...]) -> list[dict[str, Any]]:
    """Entities as the Bot API sends them in a Message: offsets and lengths in UTF-16 units."""
    out = []
    for entity in entities:
        offset = _utf16_len(plain[: entity.start])
        length = _utf16_len(plain[entity.start : entity.end])
        if entity.type == "a":
            out.append(
                {"type": "text_link", "offset": offset, "length": length, "url": entity.href}
            )
        elif entity.type in _ENTITY_TYPES:
            out.append({"type": _ENTITY_TYPES[entity.type], "offset": offset, "length": length})
    return out


def _member_object(user_id: int, status: str) -> dict[str, Any]:
    member: dict[str, Any] = {"status": status, "user": _user_object(user_id)}
    if status == "creator":
        member["is_anonymous"] = False
    elif status == "administrator":
        member.update(
            dict.fromkeys(
                (
                    "can_be_edited",
                    "is_anonymous",
                    "can_restrict_members",
                    "can_promote_members",
                    "can_post_stories",
                    "can_edit_stories",
                    "can_delete_stories",
                ),
                False,
            )
            | dict.fromkeys(
                (
                    "can_manage_chat",
                    "can_delete_messages",
                    "can_manage_video_chats",
                    "can_change_info",
                    "can_invite_users",
                ),
                True,
            )
        )
    elif status == "kicked":
        member["until_date"] = 0
    return member


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# ---- the server --------------------------------------------------------------------------------


class BotAPIDouble(ThreadedServer):
    """The Bot API on 127.0.0.1, random port, in its own thread. Start/stop or use `with`."""

    thread_name = "bot-api-double"

    def __init__(self, token: str = TOKEN) -> None:
        super().__init__()
        self.token = token
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._messages: list[SentMessage] = []
        self._attempts: list[Attempt] = []
        self._calls: list[tuple[str, dict[str, Any]]] = []
        self._polls: list[Poll] = []
        self._open_polls: dict[int, Poll] = {}
        self._poll_ids = itertools.count(1)
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._faults: dict[tuple[str, int], deque[_Fault]] = {}
        self._shown: dict[tuple[int, int], _Shown] = {}  # (chat, message id) → as shown now
        self._commands: list[dict[str, Any]] = []
        self._edits: list[Edit] = []
        self._answers: list[dict[str, Any]] = []
        self._members: dict[tuple[int, int], str] = {}
        self._callback_ids = itertools.count(1)
        self._conflict = False
        self._down = False
        self._usernames: dict[str, int] = {}
        self._limits: dict[str, float] | None = None
        self._accepted_at: deque[float] = deque()
        self._chat_accepted: dict[int, deque[float]] = {}
        self._new_update: asyncio.Event | None = None
        self._release: asyncio.Event | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def _start_site(self) -> None:
        self._new_update = asyncio.Event()
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def _before_stop(self) -> None:
        self.release()  # requests told to hang must not hold the shutdown

    # -- what tests use -------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The Bot API root (`telegram.api_url`); PTB's base_url is this + "/bot"."""
        return f"http://{self.host}:{self.port}"

    def api_url_for(self, client: str) -> str:
        """A Bot API root of its own for one client (a process of the test): the double records
        the requests that come by it as that client's."""
        return f"{self.api_url}/{client}"

    @property
    def polls(self) -> list[Poll]:
        """Every getUpdates request so far, the open ones (end None) last."""
        with self._lock:
            return [*self._polls, *self._open_polls.values()]

    def overlapping_polls(self) -> list[tuple[Poll, Poll]]:
        """Pairs of getUpdates requests from different clients that were open at the same time:
        two processes polling at once, which Telegram answers with 409 Conflict."""
        now = time.monotonic()
        polls = sorted(self.polls, key=lambda p: p.start)
        found = []
        for i, first in enumerate(polls):
            first_end = now if first.end is None else first.end
            for second in polls[i + 1 :]:
                if second.start >= first_end:
                    break
                if second.client != first.client:
                    found.append((first, second))
        return found

    @property
    def messages(self) -> list[SentMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """(method, parameters) of every request, in arrival order."""
        with self._lock:
            return list(self._calls)

    @property
    def commands(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._commands)

    @property
    def edits(self) -> list[Edit]:
        with self._lock:
            return list(self._edits)

    @property
    def answers(self) -> list[dict[str, Any]]:
        """The parameters of every answerCallbackQuery."""
        with self._lock:
            return list(self._answers)

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        """The parameters of every call of `method` (e.g. "getChatMember"), in arrival order."""
        return [params for name, params in self.calls if name == method]

    def set_member(self, chat_id: int, user_id: int, status: str) -> None:
        """What getChatMember answers for this user in this chat: "creator", "administrator",
        "member", "restricted", "left" or "kicked" (default "member")."""
        with self._lock:
            self._members[chat_id, user_id] = status

    def messages_to(self, chat_id: int) -> list[SentMessage]:
        return [m for m in self.messages if m.chat_id == chat_id]

    def fail(
        self,
        chat_id: int,
        kind: str,
        *,
        times: int | None = 1,
        retry_after: int = 30,
        migrate_to: int | None = None,
        description: str | None = None,
        method: str = "sendMessage",
    ) -> None:
        """Answer the next `times` `method` requests (sendMessage, or editMessageText) to
                `chat_id` (None: all) with a fault:
                "retry_after" (429), "blocked" (403), "kicked" (403), "migrated" (400 + migrate_to),
                "cant_parse" (400, only for requests with a parse mode), "bad_request" (400 with
                `description`), "server_error" (502), "hang" (until `release()`) or "late" (accepted and
                delivered, but answered only after `release()`: the client that gave up cannot know that
                its message arrived, an ambiguous timeout). editMessageText knows "retry_after", "blocked",
        "bad_request" (by default "message to edit not found") and "server_error". Faults queue up."""
        known = {
            "retry_after",
            "blocked",
            "kicked",
            "migrated",
            "cant_parse",
            "bad_request",
            "server_error",
            "hang",
            "late",
        }
        if kind not in known:
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._faults.setdefault((method, chat_id), deque()).append(
                _Fault(kind, times, retry_after, migrate_to, description)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def release(self) -> None:
        """Let hung requests go on (they are then answered as if nothing had been wrong)."""
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    def add_channel(self, username: str, chat_id: int) -> None:
        """A public channel: getChat and sendMessage take `@username` for `chat_id` (messages are
        recorded under the numeric id, as Telegram's answers give it)."""
        with self._lock:
            self._usernames[username.casefold()] = chat_id

    def go_down(self, on: bool = True) -> None:
        """Answer every request with 502 Bad Gateway (Telegram unreachable), or stop doing so."""
        with self._lock:
            self._down = on

    def revoke_token(self) -> None:
        """The bot's token stops working (revoked with @BotFather): every request gets 401."""
        with self._lock:
            self.token = f"{self.token}-revoked"

    def conflict_polls(self, on: bool = True) -> None:
        """Answer getUpdates with 409 Conflict (another process is polling)."""
        with self._lock:
            self._conflict = on

    def enforce_limits(
        self,
        *,
        chat_interval: float = 1.0,
        group_per_minute: int = 20,
        overall_per_second: int = 30,
        tolerance: float = 0.05,
    ) -> None:
        """Answer 429 like Telegram's flood control when a limit is exceeded. Windows are measured
        on arrival times, so they are `tolerance` seconds shorter to allow for network jitter."""
        with self._lock:
            self._limits = {
                "chat_interval": chat_interval,
                "group_per_minute": group_per_minute,
                "overall_per_second": overall_per_second,
                "tolerance": tolerance,
            }

    def queue_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update (its update_id is set here) for getUpdates; returns the id."""
        with self._lock:
            update_id = next(self._update_ids)
            self._updates.append({**update, "update_id": update_id})
            self._changed.notify_all()
        if self._loop is not None and self._new_update is not None:
            self._loop.call_soon_threadsafe(self._new_update.set)
        return update_id

    def send_command(
        self,
        text: str,
        *,
        chat_id: int = 1001,
        user_id: int | None = None,
        username: str | None = "alice",
        thread_id: int | None = None,
        as_chat: bool = False,
    ) -> int:
        """A user (in a private chat by default) sends `text`, e.g. "/subscribe taiwan-red-line".
        `thread_id`: in that forum topic of a supergroup. `as_chat`: sent on behalf of the group
        (an anonymous admin: `sender_chat` is the group, `from` Telegram's GroupAnonymousBot).
        Returns the update id."""
        user_id = user_id if user_id is not None else (chat_id if chat_id > 0 else 1001)
        chat = _chat_object(chat_id, forum=thread_id is not None)
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": _user_object(user_id, username),
            "text": text,
        }
        if as_chat:
            message["from"] = {
                "id": 1087968824,
                "is_bot": True,
                "first_name": "Group",
                "username": "GroupAnonymousBot",
            }
            message["sender_chat"] = chat
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": _utf16_len(command)}
            ]
        return self.queue_update({"message": message})

    def press_button(
        self,
        message: SentMessage | Edit,
        data: str,
        *,
        user_id: int | None = None,
        username: str | None = "alice",
    ) -> int:
        """A user presses the inline button with callback `data` under `message` (one the bot
        sent, or as it was last edited). Returns the update id; the bot's answerCallbackQuery
        carries its id as a string."""
        user_id = user_id if user_id is not None else message.chat_id
        thread = message.thread_id if isinstance(message, SentMessage) else None
        plain = message.plain or ""
        shown: dict[str, Any] = {
            "message_id": message.message_id,
            "date": int(time.time()),
            "chat": _chat_object(message.chat_id, forum=thread is not None),
            "from": BOT_USER,
            "text": plain,
            "entities": _entities_json(plain, message.entities),
        }
        if message.params.get("reply_markup"):
            shown["reply_markup"] = message.params["reply_markup"]
        if thread is not None:
            shown["message_thread_id"] = thread
            shown["is_topic_message"] = True
        query = {
            "id": str(next(self._callback_ids)),
            "from": _user_object(user_id, username),
            "message": shown,
            "chat_instance": f"instance-{message.chat_id}",
            "data": data,
        }
        return self.queue_update({"callback_query": query})

    def wait_for_answers(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least `count` callback queries were answered; return the answers."""
        self.wait_for(lambda double: len(double._answers) >= count, timeout)
        return self.answers

    async def answers_eventually(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.wait_for_answers, count, timeout)

    async def edits_eventually(self, count: int, timeout: float = 10.0) -> list[Edit]:
        """Wait (in a thread) until at least `count` edits arrived; return them."""
        await asyncio.to_thread(self.wait_for, lambda d: len(d._edits) >= count, timeout)
        return self.edits

    def wait_for(self, predicate: Callable[[BotAPIDouble], bool], timeout: float = 10.0) -> None:
        """Block until `predicate(self)` holds (checked whenever a request arrives)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"bot API double: condition not met in {timeout} s")
                self._changed.wait(remaining)

    def wait_for_messages(
        self, count: int, *, chat_id: int | None = None, timeout: float = 10.0
    ) -> list[SentMessage]:
        """Block until at least `count` messages (to `chat_id`, if given) arrived; return them."""

        def enough(double: BotAPIDouble) -> bool:
            return len(double._select(chat_id)) >= count

        self.wait_for(enough, timeout)
        return self._select(chat_id)

    async def messages_eventually(
        self, count: int, *, chat_id: int | None = None, timeout: float = 10.0
    ) -> list[SentMessage]:
        """`wait_for_messages` for async tests (runs in a thread, the test's loop stays free)."""
        return await asyncio.to_thread(
            self.wait_for_messages, count, chat_id=chat_id, timeout=timeout
        )

    def _select(self, chat_id: int | None) -> list[SentMessage]:
        messages = self.messages
        return messages if chat_id is None else [m for m in messages if m.chat_id == chat_id]

    # -- protocol -------------------------------------------------------------------------------

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(
        status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        for key in _JSON_FIELDS & params.keys():
            value = params[key]
            if isinstance(value, str):
                with contextlib.suppress(ValueError):  # e.g. chat_id "@channelname" stays text
                    params[key] = json.loads(value)
        return params

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        match = re.fullmatch(r"(?:/([^/]+))?/bot([^/]+)/([A-Za-z]+)", request.path)
        if match is None:
            return self._error(404, "Not Found")
        params = await self._params(request)
        client, token, method = match.group(1) or "", match.group(2), match.group(3).lower()
        with self._lock:
            self._calls.append((match.group(3), params))
            self._changed.notify_all()
            down, known = self._down, self.token
        if down:
            return self._error(502, "Bad Gateway")
        if token != known:
            return self._error(401, "Unauthorized")
        if method == "sendmessage":
            params["_client"] = client
            params["_request"] = request
        if method == "getupdates":
            return await self._recorded_poll(client, params)
        handler = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_reply_markup,
            "answercallbackquery": self._answer_callback_query,
            "getchatmember": self._get_chat_member,
            "getchat": self._get_chat,
            "deletewebhook": self._true,
            "setmycommands": self._set_commands,
            "getmycommands": self._get_commands,
            "deletemycommands": self._delete_commands,
            "getwebhookinfo": self._webhook_info,
        }.get(method)
        if handler is None:
            return self._error(404, "Not Found: method not found")
        return await handler(params)

    def _resolve(self, chat_id: Any) -> Any:
        """A public `@username` as its numeric id (unknown names stay as they are)."""
        if isinstance(chat_id, str) and chat_id.startswith("@"):
            with self._lock:
                return self._usernames.get(chat_id.casefold(), chat_id)
        return chat_id

    async def _get_chat(self, params: dict[str, Any]) -> web.Response:
        chat_id = self._resolve(params.get("chat_id"))
        if not isinstance(chat_id, int):
            return self._error(400, "Bad Request: chat not found")
        chat = {**_chat_object(chat_id), "accent_color_id": 0, "max_reaction_count": 11}
        with self._lock:
            names = [n for n, i in self._usernames.items() if i == chat_id]
        if names:
            chat.update(type="channel", username=names[0].lstrip("@"))
            chat.pop("first_name", None)
        return self._ok(chat)

    async def _get_chat_member(self, params: dict[str, Any]) -> web.Response:
        chat_id, user_id = params.get("chat_id"), params.get("user_id")
        if not isinstance(chat_id, int) or not isinstance(user_id, int):
            return self._error(400, "Bad Request: chat not found")
        with self._lock:
            status = self._members.get((chat_id, user_id), "member")
        return self._ok(_member_object(user_id, status))

    async def _answer_callback_query(self, params: dict[str, Any]) -> web.Response:
        if not params.get("callback_query_id"):
            return self._error(400, "Bad Request: query is too old or query ID is invalid")
        with self._lock:
            self._answers.append(params)
            self._changed.notify_all()
        return self._ok(True)

    async def _edit_message_text(self, params: dict[str, Any]) -> web.Response:
        chat_id, message_id, text = (
            self._resolve(params.get("chat_id")),
            params.get("message_id"),
            params.get("text"),
        )
        if not isinstance(chat_id, int) or not isinstance(message_id, int):
            return self._error(400, "Bad Request: message to edit not found")
        fault = self._next_fault(chat_id, None, method="editMessageText")
        if fault is not None:
            return self._edit_fault_response(fault)
        if not isinstance(text, str):
            return self._error(400, "Bad Request: message text is empty")
        parse_mode = params.get("parse_mode") or None
        plain, entities = text, []
        if parse_mode is not None:
            try:
                plain, entities = parse_html(text)
            except EntityParseError as exc:
                return self._error(400, f"Bad Request: can't parse entities: {exc}")
        if not plain.strip() or len(plain) > MAX_TEXT:
            return self._error(400, "Bad Request: message text is empty or too long")
        # Telegram edits the whole message: without reply_markup its buttons are gone.
        shown = _Shown(plain, tuple(entities), params.get("reply_markup") or None)
        arrived = time.monotonic()
        with self._lock:
            current = self._shown.get((chat_id, message_id))
            wait = None if current is None or current == shown else self._flood(chat_id, arrived)
            if current is not None and current != shown and wait is None:
                self._accept(chat_id, arrived)
        if current is None:
            return self._error(400, "Bad Request: message to edit not found")
        if current == shown:
            return self._error(400, _NOT_MODIFIED)
        if wait is not None:
            return self._error(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        edit = Edit("editMessageText", chat_id, message_id, text, plain, params, tuple(entities))
        with self._lock:
            self._shown[chat_id, message_id] = shown
            self._edits.append(edit)
            self._changed.notify_all()
        return self._ok(
            {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": _chat_object(chat_id),
                "from": BOT_USER,
                "text": plain,
            }
        )

    def _edit_fault_response(self, fault: _Fault) -> web.Response:
        if fault.kind == "retry_after":
            return self._error(
                429,
                f"Too Many Requests: retry after {fault.retry_after}",
                {"retry_after": fault.retry_after},
            )
        if fault.kind == "bad_request":
            return self._error(400, fault.description or "Bad Request: message to edit not found")
        if fault.kind == "blocked":
            return self._error(403, "Forbidden: bot was blocked by the user")
        return self._error(502, "Bad Gateway")

    async def _edit_reply_markup(self, params: dict[str, Any]) -> web.Response:
        chat_id, message_id = self._resolve(params.get("chat_id")), params.get("message_id")
        if not isinstance(chat_id, int) or not isinstance(message_id, int):
            return self._error(400, "Bad Request: message to edit not found")
        markup = params.get("reply_markup") or None
        with self._lock:
            current = self._shown.get((chat_id, message_id))
            if current is not None and current.markup != markup:
                self._shown[chat_id, message_id] = replace(current, markup=markup)
        if current is None:
            return self._error(400, "Bad Request: message to edit not found")
        if current.markup == markup:
            return self._error(400, _NOT_MODIFIED)
        edit = Edit("editMessageReplyMarkup", chat_id, message_id, None, None, params)
        with self._lock:
            self._edits.append(edit)
            self._changed.notify_all()
        return self._ok(True)

    async def _recorded_poll(self, client: str, params: dict[str, Any]) -> web.StreamResponse:
        poll_id = next(self._poll_ids)
        start = time.monotonic()
        with self._lock:
            self._open_polls[poll_id] = Poll(client, start, None)
        try:
            return await self._get_updates(params)
        finally:  # answered, or cancelled when the client went away
            with self._lock:
                del self._open_polls[poll_id]
                self._polls.append(Poll(client, start, time.monotonic()))
                self._changed.notify_all()

    async def _get_me(self, params: dict[str, Any]) -> web.Response:
        return self._ok(BOT_USER)

    async def _true(self, params: dict[str, Any]) -> web.Response:
        return self._ok(True)

    async def _webhook_info(self, params: dict[str, Any]) -> web.Response:
        return self._ok({"url": "", "has_custom_certificate": False, "pending_update_count": 0})

    async def _set_commands(self, params: dict[str, Any]) -> web.Response:
        commands = params.get("commands")
        if not isinstance(commands, list):
            return self._error(400, "Bad Request: commands must be a list")
        with self._lock:
            self._commands = commands
        return self._ok(True)

    async def _get_commands(self, params: dict[str, Any]) -> web.Response:
        return self._ok(self.commands)

    async def _delete_commands(self, params: dict[str, Any]) -> web.Response:
        with self._lock:
            self._commands = []
        return self._ok(True)

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        assert self._new_update is not None
        with self._lock:
            conflict = self._conflict
        if conflict:
            return self._error(
                409,
                "Conflict: terminated by other getUpdates request; make sure that only one bot "
                "instance is running",
            )
        offset = int(params.get("offset") or 0)
        limit = max(1, min(int(params.get("limit") or 100), 100))
        timeout = min(float(params.get("timeout") or 0), _MAX_WAIT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._new_update.clear()
            with self._lock:
                if offset:
                    self._updates = [u for u in self._updates if u["update_id"] >= offset]
                pending = self._updates[:limit]
            remaining = deadline - loop.time()
            if pending or remaining <= 0:
                return self._ok(pending)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), remaining)

    def _next_fault(
        self, chat_id: int, parse_mode: str | None, *, method: str = "sendMessage"
    ) -> _Fault | None:
        with self._lock:
            faults = self._faults.get((method, chat_id))
            while faults:
                fault = faults[0]
                if fault.kind == "cant_parse" and not parse_mode:
                    return None
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        faults.popleft()
                return fault
        return None

    def _attempt(self, chat_id: int, status: int, description: str) -> None:
        with self._lock:
            self._attempts.append(Attempt(chat_id, status, description, time.monotonic()))
            self._changed.notify_all()

    def _flood(self, chat_id: int, now: float) -> int | None:
        """Seconds to retry after if accepting a message (or an edit) now breaks a limit (call
        with the lock held)."""
        limits = self._limits
        if limits is None:
            return None
        slack = limits["tolerance"]
        while self._accepted_at and self._accepted_at[0] <= now - (1.0 - slack):
            self._accepted_at.popleft()
        if len(self._accepted_at) >= limits["overall_per_second"]:
            return 1
        history = self._chat_accepted.get(chat_id)
        if history:
            since = now - history[-1]
            if since < limits["chat_interval"] - slack:
                return max(1, math.ceil(limits["chat_interval"] - since))
            if chat_id < 0:
                recent = [t for t in history if t > now - 60.0]
                if len(recent) >= limits["group_per_minute"]:
                    return max(1, math.ceil(recent[0] + 60.0 - now))
        return None

    def _accept(self, chat_id: int, now: float) -> None:
        """Count a message (or an edit) against the limits (call with the lock held)."""
        self._accepted_at.append(now)
        self._chat_accepted.setdefault(chat_id, deque(maxlen=64)).append(now)

    async def _send_message(self, params: dict[str, Any]) -> web.Response:
        arrived = time.monotonic()
        client = params.pop("_client", "")
        request: web.Request | None = params.pop("_request", None)
        chat_id = self._resolve(params.get("chat_id"))
        text = params.get("text")
        parse_mode = params.get("parse_mode") or None
        if not isinstance(chat_id, int):
            return self._error(400, "Bad Request: chat not found")
        if not isinstance(text, str):
            return self._error(400, "Bad Request: message text is empty")
        fault = self._next_fault(chat_id, parse_mode)
        late = fault is not None and fault.kind == "late"
        if fault is not None and not late:
            response = await self._fault_response(fault, chat_id)
            if response is not None:
                return response
            if request is not None and (
                request.transport is None or request.transport.is_closing()
            ):
                # The sender hung up (or died) while its request was held: like a connection
                # dropped before Telegram read the request, nothing is delivered.
                return self._refuse(chat_id, 0, "client gone")
        if parse_mode is None:
            plain, entities = text, []
        elif parse_mode.upper() == "HTML":
            try:
                plain, entities = parse_html(text)
            except EntityParseError as exc:
                return self._refuse(chat_id, 400, f"Bad Request: can't parse entities: {exc}")
        else:
            return self._refuse(chat_id, 400, f"Bad Request: unsupported parse_mode {parse_mode}")
        if not plain.strip():
            return self._refuse(chat_id, 400, "Bad Request: message text is empty")
        if len(plain) > MAX_TEXT:
            return self._refuse(chat_id, 400, "Bad Request: message is too long")
        with self._lock:
            wait = self._flood(chat_id, arrived)
            if wait is None:
                self._accept(chat_id, arrived)
        if wait is not None:
            return self._refuse(
                chat_id,
                429,
                f"Too Many Requests: retry after {wait}",
                {"retry_after": wait},
            )
        message = SentMessage(
            message_id=next(self._message_ids),
            chat_id=chat_id,
            text=text,
            parse_mode=parse_mode,
            plain=plain,
            entities=tuple(entities),
            at=arrived,
            params=params,
            client=client,
        )
        with self._lock:
            self._messages.append(message)
            self._shown[chat_id, message.message_id] = _Shown(
                plain, tuple(entities), params.get("reply_markup") or None
            )
            self._attempts.append(Attempt(chat_id, 200, "", arrived))
            self._changed.notify_all()
        if late:
            assert self._release is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), _MAX_WAIT)
        return self._ok(
            {
                "message_id": message.message_id,
                "date": int(time.time()),
                "chat": _chat_object(chat_id),
                "from": BOT_USER,
                "text": plain,
            }
        )

    def _refuse(
        self,
        chat_id: int,
        status: int,
        description: str,
        parameters: dict[str, Any] | None = None,
    ) -> web.Response:
        self._attempt(chat_id, status, description)
        return self._error(status, description, parameters)

    async def _fault_response(self, fault: _Fault, chat_id: int) -> web.Response | None:
        if fault.kind == "hang":
            self._attempt(chat_id, 0, "hung")
            assert self._release is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), _MAX_WAIT)
            return None  # released: answered as usual
        if fault.kind == "retry_after":
            return self._refuse(
                chat_id,
                429,
                f"Too Many Requests: retry after {fault.retry_after}",
                {"retry_after": fault.retry_after},
            )
        if fault.kind == "blocked":
            return self._refuse(chat_id, 403, "Forbidden: bot was blocked by the user")
        if fault.kind == "kicked":
            return self._refuse(chat_id, 403, "Forbidden: bot was kicked from the group chat")
        if fault.kind == "migrated":
            return self._refuse(
                chat_id,
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": fault.migrate_to},
            )
        if fault.kind == "cant_parse":
            return self._refuse(
                chat_id,
                400,
                fault.description
                or 'Bad Request: can\'t parse entities: Unsupported start tag "x" at byte offset 0',
            )
        if fault.kind == "bad_request":
            return self._refuse(chat_id, 400, fault.description or "Bad Request: chat not found")
        return self._refuse(chat_id, 502, "Bad Gateway")
