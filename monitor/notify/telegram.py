"""The Telegram channel: alerts sent with python-telegram-bot's `Bot` (issue 4; FAULTS 43–51).

A `TelegramNotifier` sends one alert to one chat (`alert.recipient` is the chat id, or a public
channel's `@username`, looked up once with getChat so that its rate limit is the chat's) as HTML,
link previews off unless the channel turned them on (`preview_channels`), after waiting for a slot of our own rate limiter (`monitor.core.ratelimit`:
~1/s per chat, 20/min per group, 30/s overall). `api_url` is the root of the Bot API server, for
a self-hosted one or a test double; PTB calls `{api_url}/bot<token>/<method>`. `send` returns the
message an alert became; `edit` changes it later ("also in": the story's sources grew), counted in
the same rate limits as a message.

Telegram's errors become our `DeliveryError`s — mind the order: `BadRequest` and `TimedOut` are
subclasses of `NetworkError`, so they are caught first:

    RetryAfter   → RateLimitedError(retry_after=exactly Telegram's seconds); the chat is held as long
    Forbidden    → RecipientGoneError (blocked, kicked, deactivated user): permanent for that chat
    ChatMigrated → RecipientMovedError(new_recipient=the new chat id): store it and resend
    BadRequest   → one immediate retry as plain text (no parse mode); if that is refused too, a
                   permanent DeliveryError with both reasons ("chat not found": RecipientGoneError)
    TimedOut     → temporary DeliveryError, `unconfirmed`: the request went out and no answer came,
                   so the message may have arrived (the outbox sends it once more at most); a
                   timeout connecting, or waiting for a connection, is a plain temporary one
    InvalidToken → CredentialsRejectedError: Telegram answered 401 (or 404, a malformed token):
                   permanent for the token, so the notifier stops — every later send raises it
                   without asking Telegram, and the outbox leaves the alerts waiting
    NetworkError, other TelegramError → temporary DeliveryError

The bot token is a password. PTB's httpx logger writes every request URL, token included, at INFO,
and PTB puts it in some messages (`InvalidToken`), so `install_token_redaction` puts a filter on
those loggers and on the root handlers that rewrites the token as `<redacted>`; the notifier
installs it for its token, and every reason it raises is redacted too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, timedelta, tzinfo
from typing import Protocol
from urllib.parse import quote

import httpx
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from monitor.core.buttons import Button, after, alert_buttons, muted_note
from monitor.core.ratelimit import RateLimiter
from monitor.core.telegram_html import (
    MAX_UNITS,
    alert_html,
    alert_plain,
    digest_html,
    plain_text,
    safe_link,
    visible_length,
)
from monitor.errors import (
    CredentialsRejectedError,
    DeliveryError,
    RateLimitedError,
    RecipientGoneError,
    RecipientMovedError,
)
from monitor.model import Alert, MessageRef

__all__ = [
    "DEFAULT_API_URL",
    "REDACTED",
    "TOKEN_LOGGERS",
    "SendSlots",
    "TelegramNotifier",
    "TokenFilter",
    "install_token_redaction",
    "keyboard",
    "remove_token_redaction",
]

log = logging.getLogger("monitor.notify.telegram")

# PTB 22.2+ warns whenever a time period is read as an int — even inside its own RetryAfter
# constructor — unless this opt-in to the coming `timedelta` form is set (it is read at each use).
# Our code reads both forms.
os.environ.setdefault("PTB_TIMEDELTA", "true")

DEFAULT_API_URL = "https://api.telegram.org"
REDACTED = "<redacted>"
# Loggers that may carry the token: httpx/httpcore (request URLs) and PTB's own (`get_logger`
# names). A filter on a logger sees only records logged to that very logger, hence the list.
TOKEN_LOGGERS = (
    "httpx",
    "httpcore",
    "telegram",
    "telegram.Bot",
    "telegram.ext",
    "telegram.ext.Application",
    "telegram.ext.ExtBot",
    "telegram.ext.Updater",
    "telegram.ext.JobQueue",
    "telegram.ext.AIORateLimiter",
    "telegram.ext.ConversationHandler",
    "telegram.request",
    "telegram.request.BaseRequest",
    "telegram.request.HTTPXRequest",
    "monitor",
)
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
# "Bad Request: chat not found": the chat does not exist (any more) for this bot.
_GONE_MARKERS = ("chat not found", "user not found", "peer_id_invalid")
# editMessageText with the text and buttons the message has already.
_NOT_MODIFIED = "message is not modified"


# ---- the token never reaches a log -------------------------------------------------------------


class TokenFilter(logging.Filter):
    """Rewrites a secret (and its URL-encoded form) as `<redacted>` in the message, arguments,
    traceback and stack of every record it sees. Never drops a record."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self._forms = tuple(dict.fromkeys(f for f in (secret, quote(secret, safe="")) if f))

    def redact(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if any(form in text for form in self._forms):
                # The traceback names the token: keep only its redacted text. Formatters print
                # `exc_text`; one that formats `exc_info` itself now has nothing to leak.
                record.exc_text, record.exc_info = text, None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_INSTALLED: dict[str, TokenFilter] = {}


def install_token_redaction(token: str, loggers: Iterable[str] = TOKEN_LOGGERS) -> TokenFilter:
    """Redact `token` from the named loggers and from the handlers the root logger has now (call
    it again after replacing them, e.g. after `configure_logging`). Idempotent per token."""
    token_filter = _INSTALLED.get(token) or TokenFilter(token)
    _INSTALLED[token] = token_filter
    for name in loggers:
        logger = logging.getLogger(name)
        if token_filter not in logger.filters:
            logger.addFilter(token_filter)
    for handler in logging.getLogger().handlers:
        if token_filter not in handler.filters:
            handler.addFilter(token_filter)
    return token_filter


def remove_token_redaction(token: str, loggers: Iterable[str] = TOKEN_LOGGERS) -> None:
    """Undo `install_token_redaction` (tests)."""
    token_filter = _INSTALLED.pop(token, None)
    if token_filter is None:
        return
    for name in loggers:
        logging.getLogger(name).removeFilter(token_filter)
    for handler in logging.getLogger().handlers:
        handler.removeFilter(token_filter)


# ---- the notifier ------------------------------------------------------------------------------


def keyboard(row: Sequence[Button]) -> InlineKeyboardMarkup:
    """Buttons as one row of an inline keyboard (`monitor.core.buttons`)."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row]]
    )


def _retry_seconds(exc: RetryAfter) -> float:
    # PTB 22.2+ warns on reading `retry_after` as int unless PTB_TIMEDELTA is set; both forms are
    # handled here, and the warning (an error under `pytest -W error`) is not ours to show.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class SendSlots(Protocol):
    """Send slots shared with other processes that send for the same bot (replicas): Telegram's
    limits are per bot, so they book their slots in one place (the database)."""

    async def book(self, chat_id: int, max_wait: float) -> tuple[bool, float]:
        """Book the chat's next slot unless it is more than `max_wait` s away: (booked, seconds
        to wait for it). A `DeliveryError` if the booking could not be made."""
        ...

    async def hold(self, chat_id: int, seconds: float) -> None:
        """Telegram asked to wait `seconds` before the next message to this chat."""
        ...


class TelegramNotifier:
    """The `Notifier` of one bot token. Safe to use from concurrent tasks of one event loop.

    `max_wait`: when the chat's next slot is further away than this (it is held after a 429, or a
    group used its 20 messages of the minute), `send` does not sleep but raises
    `RateLimitedError` with the exact wait, so the outbox can send to other chats meanwhile.

    `slots`: where slots are booked when other processes send for the same bot; without it, the
    notifier's own `limiter` is the whole budget (one process).
    """

    def __init__(
        self,
        token: str,
        api_url: str = DEFAULT_API_URL,
        *,
        limiter: RateLimiter | None = None,
        tz: tzinfo = UTC,
        max_wait: float = 5.0,
        timeout: float = 10.0,
        connections: int = 64,
        clock: Callable[[], float] = time.monotonic,
        subscriber_channels: Collection[str] = (),
        preview_channels: Collection[str] = (),
        slots: SendSlots | None = None,
    ) -> None:
        self._filter = install_token_redaction(token)
        self.slots = slots
        # Alerts of these channels go to people who subscribed with the bot: they get buttons.
        self.subscriber_channels = frozenset(subscriber_channels)
        # Alerts of these channels show the article's link preview.
        self.preview_channels = frozenset(preview_channels)
        self._usernames: dict[str, int] = {}  # "@channel" → its chat id
        self._lookup = asyncio.Lock()
        self.limiter = limiter or RateLimiter()
        self.tz = tz
        self.max_wait = max_wait
        self.clock = clock
        # Set once Telegram rejected the token: why. Nothing more is sent with it.
        self.stopped: str | None = None
        self._requests = (
            HTTPXRequest(connection_pool_size=2, read_timeout=timeout, connect_timeout=timeout),
            HTTPXRequest(
                connection_pool_size=connections,
                read_timeout=timeout,
                write_timeout=timeout,
                connect_timeout=timeout,
                pool_timeout=timeout,
            ),
        )
        self.bot = Bot(
            token,
            base_url=f"{api_url.rstrip('/')}/bot",
            base_file_url=f"{api_url.rstrip('/')}/file/bot",
            get_updates_request=self._requests[0],
            request=self._requests[1],
        )

    # ---- Notifier ----------------------------------------------------------------------------

    async def send(self, alert: Alert) -> MessageRef:
        """Send `alert` to the chat `alert.recipient`, or raise a `DeliveryError` (see module).
        Returns the message it became, which `edit` can change later."""
        self._check_token()
        chat_id = await self._chat(alert.recipient)
        message_id = await self.send_html(
            chat_id,
            self._html(alert),
            alert_plain(alert),
            thread_id=alert.thread_id,
            reply_markup=self._buttons(alert),
            preview=self._preview(alert),
        )
        return MessageRef(chat_id, message_id)

    async def edit(self, alert: Alert, message: MessageRef) -> None:
        """Make `message`, which `alert` became, show `alert` as it is now (its story's sources),
        with the buttons and note a message of it would have now (a subscriber who muted its
        watchlist keeps the mute's note and the unmute button); it waits for a slot of the chat
        like a new message. Telegram's
        "message is not modified" is success. Raises `DeliveryError` as `send` does (see module);
        permanent when the message cannot be edited ("message to edit not found", "message can't
        be edited") — an edit is never sent as a new message."""
        self._check_token()
        await self._wait_for_slot(message.chat_id)
        try:
            await self.bot.edit_message_text(
                self._html(alert),
                chat_id=message.chat_id,
                message_id=message.message_id,
                parse_mode=ParseMode.HTML,
                link_preview_options=self._preview(alert),
                reply_markup=self._buttons(alert),
            )
        except BadRequest as exc:
            reason = self._reason(exc)
            if _NOT_MODIFIED in reason.lower():
                return  # an edit made before, whose answer was lost: done
            raise DeliveryError(f"Telegram refused the edit: {reason}", permanent=True) from exc
        except TelegramError as exc:
            raise await self._failure(exc, message.chat_id) from exc

    async def close(self) -> None:
        await asyncio.gather(*(request.shutdown() for request in self._requests))

    # ---- more than the protocol --------------------------------------------------------------

    async def send_digest(
        self, recipient: str, alerts: Sequence[Alert], title: str, *, brief: bool = False
    ) -> int:
        """Send `alerts` as a digest (`digest_html`: as few messages as the limit allows, each
        waiting for its slot; `brief`: titles only, for a burst). Returns the number of messages
        sent. A failure part-way raises, and a retry sends the parts already delivered again."""
        self._check_token()
        chat_id = await self._chat(recipient)
        messages = digest_html(alerts, title, tz=self.tz, brief=brief)
        threads = {alert.thread_id for alert in alerts}
        thread_id = threads.pop() if len(threads) == 1 else None
        for markup in messages:
            await self.send_html(chat_id, markup, plain_text(markup), thread_id=thread_id)
        return len(messages)

    async def send_html(
        self,
        chat_id: int,
        markup: str,
        plain: str,
        *,
        thread_id: int | None = None,
        reply_markup: InlineKeyboardMarkup | None = None,
        preview: LinkPreviewOptions = _NO_PREVIEW,
    ) -> int:
        """One message: `markup` in HTML parse mode, or `plain` once if Telegram refuses it.
        `thread_id`: the forum topic it goes to; `reply_markup`: buttons under it; `preview`: the
        link preview (none by default). Returns the message's id."""
        await self._wait_for_slot(chat_id)
        try:
            return await self._post(
                chat_id, markup, ParseMode.HTML, thread_id, reply_markup, preview
            )
        except BadRequest as exc:
            first = self._reason(exc)
            if any(marker in first.lower() for marker in _GONE_MARKERS):
                raise RecipientGoneError(str(chat_id), first) from exc
        log.warning("telegram.html_refused chat=%s reason=%r retry=plain", chat_id, first)
        try:
            return await self._post(chat_id, plain, None, thread_id, reply_markup, preview)
        except BadRequest as exc:
            raise DeliveryError(
                f"Telegram refused the message: {first}; as plain text too: {self._reason(exc)}",
                permanent=True,
            ) from exc

    async def check(self) -> str:
        """Ask Telegram who the bot is (getMe); its @username, or a `DeliveryError`."""
        try:
            me = await self.bot.get_me()
        except TelegramError as exc:
            raise self._translate(exc, None) from exc
        return me.username or me.first_name

    # ---- internals ---------------------------------------------------------------------------

    def _check_token(self) -> None:
        if self.stopped is not None:
            raise CredentialsRejectedError(self.stopped)

    def _token_rejected(self, reason: str) -> CredentialsRejectedError:
        message = (
            "Telegram rejected the bot token (401 Unauthorized: wrong or revoked; "
            f"check telegram.token): {reason}"
        )
        if self.stopped is None:
            self.stopped = message
            log.error(
                "telegram.token_rejected reason=%r action=no more messages are sent with this "
                "token; alerts wait in the outbox until telegram.token is fixed and the service "
                "restarted",
                reason,
            )
        return CredentialsRejectedError(message)

    async def _chat(self, recipient: str) -> int:
        """The chat id of a recipient: its number, or the id of a public `@username` (getChat,
        remembered)."""
        with contextlib.suppress(ValueError):
            return int(recipient)
        if not recipient.startswith("@"):
            raise DeliveryError(f"{recipient!r} is not a Telegram chat id", permanent=True)
        async with self._lookup:  # one getChat for alerts that go to a new name together
            known = self._usernames.get(recipient.casefold())
            if known is None:
                known = self._usernames[recipient.casefold()] = await self._look_up(recipient)
        return known

    async def _look_up(self, recipient: str) -> int:
        try:
            chat = await self.bot.get_chat(recipient)
        except BadRequest as exc:
            reason = self._reason(exc)
            if any(marker in reason.lower() for marker in _GONE_MARKERS):
                raise RecipientGoneError(
                    recipient,
                    f"Telegram knows no public chat {recipient} ({reason}): check the name, and "
                    "that the bot is an admin of the channel",
                ) from exc
            raise DeliveryError(f"Telegram refused the request: {reason}", permanent=True) from exc
        except TelegramError as exc:
            raise self._translate(exc, None) from exc
        return chat.id

    def _html(self, alert: Alert) -> str:
        """The alert's message; a subscriber's of a muted watchlist with the mute's note below, as
        the bot writes it when the mute button is pressed."""
        if alert.channel not in self.subscriber_channels or alert.muted_until is None:
            return alert_html(alert, tz=self.tz)
        note = f"\n\n<i>{muted_note(alert.watchlist, alert.muted_until)}</i>"
        return alert_html(alert, tz=self.tz, limit=MAX_UNITS - visible_length(note)) + note

    def _buttons(self, alert: Alert) -> InlineKeyboardMarkup | None:
        """Alerts to people who subscribed with the bot carry its buttons: mute and unsubscribe,
        or unmute while the watchlist is muted."""
        if alert.channel not in self.subscriber_channels:
            return None
        if alert.muted_until is not None:
            return keyboard(after("mute", alert.watchlist))
        return keyboard(alert_buttons(alert.watchlist))

    def _preview(self, alert: Alert) -> LinkPreviewOptions:
        link = safe_link(alert.link)
        if alert.channel not in self.preview_channels or link is None:
            return _NO_PREVIEW
        return LinkPreviewOptions(url=link)

    def _reason(self, exc: BaseException) -> str:
        return self._filter.redact(str(exc) or type(exc).__name__)

    async def _wait_for_slot(self, chat_id: int) -> None:
        if self.slots is not None:
            booked, wait = await self.slots.book(chat_id, self.max_wait)
            if not booked:
                raise RateLimitedError(
                    f"chat {chat_id} is rate limited for {wait:.3f} s more",
                    retry_after=wait,
                    recipient=str(chat_id),
                )
            if wait > 0:
                await asyncio.sleep(wait)
            return
        now = self.clock()
        wait = self.limiter.next_slot(chat_id, now)
        if wait > self.max_wait:
            raise RateLimitedError(
                f"chat {chat_id} is rate limited for {wait:.3f} s more",
                retry_after=wait,
                recipient=str(chat_id),
            )
        delay = self.limiter.reserve(chat_id, now)
        if delay > 0:
            await asyncio.sleep(delay)

    async def _post(
        self,
        chat_id: int,
        text: str,
        parse_mode: str | None,
        thread_id: int | None,
        reply_markup: InlineKeyboardMarkup | None = None,
        preview: LinkPreviewOptions = _NO_PREVIEW,
    ) -> int:
        try:
            message = await self.bot.send_message(
                chat_id=chat_id,
                text=text,
                parse_mode=parse_mode,
                link_preview_options=preview,
                message_thread_id=thread_id,
                reply_markup=reply_markup,
            )
        except BadRequest:
            raise  # the caller retries it as plain text
        except TelegramError as exc:
            raise await self._failure(exc, chat_id) from exc
        return message.message_id

    async def _failure(self, exc: TelegramError, chat_id: int) -> DeliveryError:
        """`exc` as our error; Telegram's wait after a 429 is booked for the other replicas."""
        error = self._translate(exc, chat_id)
        if isinstance(error, RateLimitedError) and self.slots is not None:
            await self.slots.hold(chat_id, error.retry_after or 0.0)
        return error

    def _translate(self, exc: TelegramError, chat_id: int | None) -> DeliveryError:
        reason = self._reason(exc)
        recipient = "" if chat_id is None else str(chat_id)
        if isinstance(exc, RetryAfter):
            seconds = _retry_seconds(exc)
            if chat_id is not None:
                self.limiter.hold(chat_id, seconds, self.clock())
            log.info("telegram.retry_after chat=%s seconds=%s", chat_id, seconds)
            return RateLimitedError(
                f"Telegram flood control: retry after {seconds:g} s",
                retry_after=seconds,
                recipient=recipient,
            )
        if isinstance(exc, Forbidden):
            return RecipientGoneError(recipient, reason)
        if isinstance(exc, ChatMigrated):
            new = str(exc.new_chat_id)
            return RecipientMovedError(recipient, new, f"chat {recipient} moved to {new}")
        if isinstance(exc, BadRequest):  # before NetworkError: it is one
            return DeliveryError(f"Telegram refused the request: {reason}", permanent=True)
        if isinstance(exc, TimedOut):  # before NetworkError: it is one
            if isinstance(exc.__cause__, httpx.ConnectTimeout | httpx.PoolTimeout):
                # No connection, so no request: nothing can have arrived.
                log.warning("telegram.timeout chat=%s ambiguous=false reason=%r", chat_id, reason)
                return DeliveryError(f"Telegram timed out before the request was sent: {reason}")
            log.warning("telegram.timeout chat=%s ambiguous=true reason=%r", chat_id, reason)
            return DeliveryError(
                f"Telegram timed out; the message may have been delivered: {reason}",
                unconfirmed=True,
            )
        if isinstance(exc, InvalidToken):
            return self._token_rejected(reason)
        if isinstance(exc, NetworkError):
            return DeliveryError(f"cannot reach Telegram: {reason}")
        return DeliveryError(f"Telegram error: {reason}")
