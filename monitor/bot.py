"""The Telegram subscriber bot: people subscribe their chat to watchlists (SPEC §6, issue 4).

Commands: /start, /help, /watchlists, /subscribe NAME…, /unsubscribe NAME…, /mine, /mute 2h,
/unmute, /digest daily 08:00 [Zone/Name] | hourly | off. Built on python-telegram-bot's
`Application` (no persistence: the database is the state), receiving updates by `getUpdates` long
polling.

Who may subscribe is `telegram.subscriptions`: `open` (anyone), `allowlist` (the user ids in
`telegram.allow`) or `off` (nobody; channels with fixed `chat_ids` still get alerts). Whatever the
mode, a chat that has subscriptions may still list, unsubscribe, mute and change its digest. Every
reply escapes what the user typed (FAULTS 66): it goes out as Telegram HTML.

Only one process may poll `getUpdates` for a token: Telegram answers a second one with 409
Conflict. `SubscriberBot.start()` is meant to be called by the process that holds the bot's
leader lease (`polling_lock_key` gives a key for `pg_advisory_lock`; with SQLite one process runs
anyway) and `stop()` when it loses it. If a Conflict arrives regardless, the bot stops polling and
logs `bot.conflict` once, instead of fighting the other poller in a loop (FAULTS 53); `conflict`
is then set.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import html
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from telegram import BotCommand, LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.error import Conflict, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    Defaults,
    MessageHandler,
)
from telegram.ext import filters as tg_filters

from monitor.core.access import Access, AccessPolicy
from monitor.core.telegram_html import truncate_html
from monitor.durations import format_duration, parse_duration
from monitor.errors import BotError, MonitorError
from monitor.notify.telegram import DEFAULT_API_URL, REDACTED, install_token_redaction
from monitor.store import db
from monitor.store import subscribers as subs

if TYPE_CHECKING:
    from monitor.config import TelegramSettings

__all__ = ["COMMANDS", "Access", "SubscriberBot", "parse_digest", "polling_lock_key"]

log = logging.getLogger("monitor.bot")

T = TypeVar("T")

COMMANDS = (
    ("start", "Start: what this bot does"),
    ("help", "The commands"),
    ("watchlists", "The watchlists you can subscribe to"),
    ("subscribe", "Subscribe to a watchlist: /subscribe NAME"),
    ("unsubscribe", "Unsubscribe: /unsubscribe NAME"),
    ("mine", "Your subscriptions and settings"),
    ("mute", "Hold alerts for a while: /mute 2h"),
    ("unmute", "Send alerts again"),
    ("digest", "/digest daily 08:00 Europe/London | hourly | off"),
)
HELP = """<b>Commands</b>
/watchlists — the watchlists you can subscribe to
/subscribe NAME — get the alerts of a watchlist in this chat
/unsubscribe NAME — stop them
/mine — your subscriptions, mute and digest
/mute 2h — hold alerts for a while (90s, 10m, 2h, 1d); they come as one digest after
/unmute — send alerts again now
/digest daily 08:00 Europe/London — one message a day (or <code>hourly</code>); /digest off for each alert at once"""
_MAX_MUTE = timedelta(days=365)
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def parse_digest(args: Sequence[str]) -> str | None:
    """`/digest` arguments → the stored digest spec: "hourly", "daily 08:00 Europe/London" (UTC
    when no zone is given), or None for `off` / `immediate`. ValueError with a message fit to show
    the user (not escaped)."""
    words = [w for w in args if w]
    hint = "write /digest daily 08:00 Europe/London, /digest hourly or /digest off"
    if not words:
        raise ValueError(f"which digest? {hint}")
    kind = words[0].lower()
    if kind in ("off", "immediate", "none") and len(words) == 1:
        return None
    if kind == "hourly" and len(words) == 1:
        return "hourly"
    if kind != "daily" or len(words) > 3:
        raise ValueError(f"{' '.join(words)!r} is not a digest; {hint}")
    if len(words) < 2:
        raise ValueError("a daily digest needs a time: /digest daily 08:00 Europe/London")
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", words[1])
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"{words[1]!r} is not a time of day; write HH:MM, e.g. 08:00")
    zone = words[2] if len(words) > 2 else "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {zone!r}; write a name such as Europe/London, Asia/Dubai or UTC"
        ) from None
    return f"daily {int(match[1]):02d}:{match[2]} {zone}"


def polling_lock_key(token: str) -> int:
    """A stable 63-bit key for the leader lock of one bot (`pg_advisory_lock(key)`), derived from
    the bot's id (the public part of the token before the colon), never from the secret."""
    bot_id = token.split(":", 1)[0]
    digest = hashlib.sha256(f"monitor-bot-poller:{bot_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class SubscriberBot:
    """The subscriber commands of one bot token, on `engine`. `await start()` begins polling
    `getUpdates`; `await stop()` ends it and releases every connection. Not restartable."""

    def __init__(
        self,
        token: str,
        engine: Engine,
        watchlists: Iterable[str],
        *,
        api_url: str = DEFAULT_API_URL,
        subscriptions: Access = "open",
        allow: Iterable[int] = (),
        poll_timeout: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        install_token_redaction(token)
        self.token = token
        self.engine = engine
        self.watchlists = sorted(set(watchlists))
        self.policy = AccessPolicy.of(subscriptions, allow)
        self.poll_timeout = poll_timeout
        self.clock = clock
        self.conflict = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        root = api_url.rstrip("/")
        self.application: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(token)
            .base_url(f"{root}/bot")
            .base_file_url(f"{root}/file/bot")
            .defaults(Defaults(parse_mode=ParseMode.HTML, link_preview_options=_NO_PREVIEW))
            .job_queue(None)
            .build()
        )
        handlers = {
            "start": self._start,
            "help": self._help,
            "watchlists": self._watchlists,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "mine": self._mine,
            "mute": self._mute,
            "unmute": self._unmute,
            "digest": self._digest,
        }
        for name, callback in handlers.items():
            self.application.add_handler(CommandHandler(name, self._guarded(callback)))
        self.application.add_handler(
            MessageHandler(tg_filters.COMMAND, self._guarded(self._unknown))
        )
        self.application.add_error_handler(self._on_error)

    @classmethod
    def from_settings(
        cls,
        telegram: TelegramSettings,
        engine: Engine,
        watchlists: Iterable[str],
        **kwargs: Any,
    ) -> SubscriberBot:
        """From the config's `TelegramSettings` (token, api_url, subscriptions, allow)."""
        return cls(
            telegram.token.get_secret_value(),
            engine,
            watchlists,
            api_url=telegram.api_url,
            subscriptions=telegram.subscriptions,
            allow=telegram.allow,
            **kwargs,
        )

    # ---- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """getMe, publish the command menu, then poll getUpdates in the background. `BotError` if
        Telegram cannot be reached or refuses the token (nothing is left open then)."""
        app = self.application
        try:
            await app.initialize()
        except TelegramError as exc:
            await app.bot.shutdown()  # the HTTP clients opened before getMe failed
            raise BotError(f"cannot start the Telegram bot: {self._redact(exc)}") from exc
        try:
            await app.bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS])
        except TelegramError as exc:  # cosmetic: the commands work without the menu
            log.warning("bot.commands_not_set error=%s", exc)
        assert app.updater is not None
        try:
            await app.updater.start_polling(
                timeout=timedelta(seconds=self.poll_timeout),
                allowed_updates=["message"],
                error_callback=self._on_poll_error,
            )
        except TelegramError as exc:
            await app.shutdown()
            raise BotError(f"cannot poll Telegram for updates: {self._redact(exc)}") from exc
        await app.start()
        log.info("bot.started username=%s access=%s", app.bot.username, self.policy.mode)

    async def stop(self) -> None:
        app = self.application
        for task in list(self._tasks):
            await task
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        await app.shutdown()
        log.info("bot.stopped")

    def _redact(self, exc: BaseException) -> str:
        return (str(exc) or type(exc).__name__).replace(self.token, REDACTED)

    @property
    def polling(self) -> bool:
        updater = self.application.updater
        return updater is not None and updater.running

    def _on_poll_error(self, exc: TelegramError) -> None:
        if isinstance(exc, Conflict):
            if not self.conflict.is_set():
                log.error(
                    "bot.conflict error=%r: another process polls getUpdates for this bot; "
                    "this one stops polling",
                    str(exc),
                )
                self.conflict.set()
                task = asyncio.get_running_loop().create_task(self._stop_polling())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        log.warning("bot.poll_error error=%s", exc)

    async def _stop_polling(self) -> None:
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("bot.handler_error error=%r", context.error, exc_info=context.error)

    # ---- plumbing -----------------------------------------------------------------------------

    def _guarded(
        self, callback: Callable[[Update, list[str]], Any]
    ) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Any]:
        async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            if update.effective_chat is None or update.effective_message is None:
                return
            try:
                reply = await callback(update, list(context.args or []))
            except _Blocked:
                reply = "This chat is blocked by the bot's administrator."
            except MonitorError as exc:
                log.error("bot.command_failed chat=%s error=%s", update.effective_chat.id, exc)
                reply = "Sorry, something went wrong on our side. Please try again later."
            if reply:
                await update.effective_message.reply_text(truncate_html(reply))

        return handle

    async def _db(self, work: Callable[[Session, datetime], T]) -> T:
        def run() -> T:
            with db.transaction(self.engine) as session:
                return work(session, self.clock())

        return await asyncio.to_thread(run)

    def _may_subscribe(self, update: Update) -> bool:
        chat, user = update.effective_chat, update.effective_user
        assert chat is not None
        return self.policy.admits(chat.id, user.id if user is not None else None)

    def _refusal(self, update: Update) -> str:
        if self.policy.mode == "off":
            return "This bot does not take subscriptions."
        user = update.effective_user
        who = f" Your user id is <code>{user.id}</code>." if user is not None else ""
        return f"Sorry, this bot is private: ask its administrator to add you.{who}"

    def _touch(self, update: Update, *, create: bool) -> Callable[[Session, datetime], Any]:
        """A unit of work that returns the chat's subscriber — (re)activated, since the chat just
        talked to the bot — creating it if `create`; None if there is none. Only a command that
        may create it (one that changes subscriptions) records who the user is: a group's access
        then depends on the member who subscribed it, not on whoever spoke last."""
        chat = update.effective_chat
        user = update.effective_user
        assert chat is not None

        def work(session: Session, now: datetime) -> subs.Subscriber | None:
            existing = subs.get_subscriber(session, chat.id)
            if existing is not None and existing.blocked:
                raise _Blocked
            if not create and existing is None:
                return None
            who: dict[str, Any] = {}
            if create and user is not None:
                who = {"user_id": user.id, "username": user.username}
            title = chat.title or chat.username or (user.full_name if user else None)
            return subs.get_or_create_subscriber(
                session, chat.id, now, chat_type=chat.type, title=title, **who
            )

        return work

    def _resolve(self, name: str) -> str | None:
        if name in self.watchlists:
            return name
        folded = [w for w in self.watchlists if w.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None

    def _unknown_watchlist(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.watchlists, n=1, cutoff=0.6)
        hint = f" Did you mean <code>{_e(close[0])}</code>?" if close else ""
        return f"There is no watchlist <code>{_e(name)}</code>.{hint}"

    def _list(self) -> str:
        if not self.watchlists:
            return "There are no watchlists yet."
        names = ", ".join(f"<code>{_e(w)}</code>" for w in self.watchlists)
        return f"Watchlists: {names}"

    # ---- commands -----------------------------------------------------------------------------

    async def _start(self, update: Update, args: list[str]) -> str:
        if not self._may_subscribe(update):
            await self._db(self._touch(update, create=False))
            return self._refusal(update)
        await self._db(self._touch(update, create=True))
        return (
            "This bot sends news alerts: when a story matches a watchlist you subscribed to, "
            "you get its title, source and the words that matched.\n\n" + HELP
        )

    async def _help(self, update: Update, args: list[str]) -> str:
        return HELP

    async def _unknown(self, update: Update, args: list[str]) -> str:
        message = update.effective_message
        text = message.text if message is not None and message.text else ""
        command = text.split(maxsplit=1)[0] if text else ""
        return f"I do not know {_e(command)}.\n\n{HELP}"

    async def _watchlists(self, update: Update, args: list[str]) -> str:
        if not self._may_subscribe(update):
            return self._refusal(update)
        chat = update.effective_chat
        assert chat is not None
        mine = set(await self._db(lambda s, _now: subs.subscriptions_of(s, chat.id)))
        if not self.watchlists:
            return "There are no watchlists yet."
        lines = [f"{'✅' if w in mine else '▫️'} <code>{_e(w)}</code>" for w in self.watchlists]
        return (
            "<b>Watchlists</b> (✅ subscribed)\n"
            + "\n".join(lines)
            + "\n\n/subscribe NAME to get one."
        )

    async def _subscribe(self, update: Update, args: list[str]) -> str:
        if not self._may_subscribe(update):
            return self._refusal(update)
        if not args:
            return f"Which one? Write /subscribe NAME.\n{self._list()}"
        known = [(a, self._resolve(a)) for a in args]
        unknown = [a for a, name in known if name is None]
        names = list(dict.fromkeys(name for _, name in known if name is not None))
        touch = self._touch(update, create=True)

        def work(session: Session, now: datetime) -> list[bool]:
            subscriber = touch(session, now)
            return [subs.subscribe(session, subscriber.id, name, now) for name in names]

        added = await self._db(work) if names else []
        lines = []
        for name, new in zip(names, added, strict=True):
            if new:
                lines.append(f"Subscribed to <code>{_e(name)}</code>.")
            else:
                lines.append(f"You were already subscribed to <code>{_e(name)}</code>.")
        lines += [self._unknown_watchlist(a) for a in unknown]
        if unknown:
            lines.append(self._list())
        return "\n".join(lines)

    async def _unsubscribe(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        if not args:
            return "Which one? Write /unsubscribe NAME (see /mine)."
        touch = self._touch(update, create=False)

        def work(session: Session, now: datetime) -> list[tuple[str, bool]]:
            subscriber = touch(session, now)
            mine = subs.subscriptions_of(session, chat.id) if subscriber else []
            results = []
            for arg in args:
                name = arg if arg in mine else self._resolve(arg) or arg
                removed = subscriber is not None and subs.unsubscribe(session, subscriber.id, name)
                results.append((arg, removed))
            return results

        lines = []
        for arg, removed in await self._db(work):
            if removed:
                lines.append(f"Unsubscribed from <code>{_e(self._resolve(arg) or arg)}</code>.")
            else:
                lines.append(f"You are not subscribed to <code>{_e(arg)}</code>.")
        return "\n".join(lines)

    async def _mine(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        touch = self._touch(update, create=False)

        def work(session: Session, now: datetime) -> tuple[Any, list[str], datetime]:
            subscriber = touch(session, now)
            return subscriber, subs.subscriptions_of(session, chat.id), now

        subscriber, names, now = await self._db(work)
        if not names:
            return "You have no subscriptions. /watchlists lists what there is."
        lines = ["<b>Your subscriptions</b>", *(f"• <code>{_e(n)}</code>" for n in names)]
        if subscriber is not None:
            if subscriber.muted_until is not None and subscriber.muted_until > now:
                lines.append(f"Muted until {_e(_when(subscriber.muted_until))}.")
            lines.append(
                f"Digest: {_e(subscriber.digest)}." if subscriber.digest else "Each alert at once."
            )
        return "\n".join(lines)

    async def _mute(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        if not args:
            return "For how long? Write /mute 2h (or 90s, 10m, 1d)."
        try:
            duration = parse_duration("".join(args))
        except ValueError as exc:
            return _e(exc)
        if duration > _MAX_MUTE:
            return "That is longer than a year; /unsubscribe instead?"
        touch = self._touch(update, create=False)

        def work(session: Session, now: datetime) -> datetime | None:
            if touch(session, now) is None:
                return None
            until = now + duration
            subs.set_mute(session, chat.id, until, now)
            return until

        until = await self._db(work)
        if until is None:
            return "You have no subscriptions to mute."
        return (
            f"Muted for {_e(format_duration(duration))}, until {_e(_when(until))}. "
            "Alerts are held and come as one digest when the mute ends; /unmute to end it now."
        )

    async def _unmute(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        touch = self._touch(update, create=False)

        def work(session: Session, now: datetime) -> bool:
            return touch(session, now) is not None and subs.set_mute(session, chat.id, None, now)

        if not await self._db(work):
            return "You have no subscriptions."
        return "Unmuted: alerts come as they happen again."

    async def _digest(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        try:
            spec = parse_digest(args)
        except ValueError as exc:
            return _e(exc)
        touch = self._touch(update, create=False)

        def work(session: Session, now: datetime) -> tuple[bool, int]:
            if touch(session, now) is None or not subs.set_digest(session, chat.id, spec, now):
                return False, 0
            return True, sum(1 for due in subs.held_alerts(session, chat.id) if due <= now)

        done, released = await self._db(work)
        if not done:
            return "You have no subscriptions yet: /subscribe NAME first."
        if spec is not None:
            return f"Alerts now come as a digest: {_e(spec)}."
        reply = "Digest off: each alert comes as it happens."
        if released:
            reply += f" {_count(released, 'held alert')} come{'s' if released == 1 else ''} now."
        return reply


class _Blocked(Exception):
    """The chat is blocked by the administrator (`monitor subscribers block`)."""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
