"""The Telegram subscriber bot: people subscribe their chat to watchlists (SPEC §6, issues 4, 12).

Commands: /start [NAME], /help, /watchlists, /subscribe NAME…, /unsubscribe NAME…|all, /mine,
/mute [NAME…] 2h, /unmute [NAME…], /digest daily 08:00 [Zone/Name] | hourly | off, /stop; and the
buttons under each alert (mute that watchlist for a day, unsubscribe — `monitor.core.buttons`):
a press is answered (answerCallbackQuery) and the alert edited to say what was done, with the way
back. Built on python-telegram-bot's `Application` (no persistence: the database is the state),
receiving updates by `getUpdates` long polling.

Who may subscribe is `telegram.subscriptions` (`monitor.core.access`): `open`, `allowlist` or
`off`. Whatever the mode, a chat that has subscriptions may still list, unsubscribe, mute and
change its digest; a chat the administrator blocked may do nothing. Every reply escapes what the
user typed (FAULTS 66): it goes out as Telegram HTML.

Groups: commands addressed to another bot (`/start@other_bot`) are not ours and get no answer, nor
does an unknown command in a group unless it names this bot. Changing a group's subscriptions
(subscribe, unsubscribe, mute, digest, stop, the buttons) takes a group admin — asked with
getChatMember and remembered for `ADMIN_TTL` — or a message sent as the group itself (an
anonymous admin). A subscription made in a forum topic keeps the topic: its alerts go there.

Each user has a quota of commands and button presses (`CommandQuota`, FAULTS 37): beyond it, one
"slow down" answer, then silence until the quota refills.

Only one process may poll `getUpdates` for a token: Telegram answers a second one with 409
Conflict. `SubscriberBot.start()` is meant to be called by the leader (`monitor.daemon.leader`;
with SQLite one process runs anyway) and `stop()` when it stops being the leader. If a Conflict
arrives regardless, the bot stops polling and logs `bot.conflict` once, instead of fighting the other poller in a loop (FAULTS 53); `conflict`
is then set.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import html
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from telegram import (
    BotCommand,
    CallbackQuery,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import Conflict, InvalidToken, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    MessageHandler,
)
from telegram.ext import filters as tg_filters

from monitor.core import buttons
from monitor.core.access import Access, AccessPolicy
from monitor.core.ratelimit import CommandQuota
from monitor.core.telegram_html import truncate_html, visible_length
from monitor.durations import format_duration, parse_duration
from monitor.errors import BotError, MonitorError
from monitor.notify.telegram import (
    DEFAULT_API_URL,
    REDACTED,
    install_token_redaction,
    keyboard,
)
from monitor.store import db
from monitor.store import subscribers as subs

if TYPE_CHECKING:
    from monitor.config import TelegramSettings

__all__ = [
    "ADMIN_TTL",
    "COMMANDS",
    "Access",
    "SubscriberBot",
    "parse_digest",
]

log = logging.getLogger("monitor.bot")

T = TypeVar("T")

COMMANDS = (
    ("start", "Start: what this bot does"),
    ("help", "The commands"),
    ("watchlists", "The watchlists you can subscribe to"),
    ("subscribe", "Subscribe to a watchlist: /subscribe NAME"),
    ("unsubscribe", "Unsubscribe: /unsubscribe NAME, or all"),
    ("mine", "Your subscriptions and settings"),
    ("mute", "Hold alerts for a while: /mute 2h, /mute NAME 2h"),
    ("unmute", "Send alerts again"),
    ("digest", "/digest daily 08:00 Europe/London | hourly | off"),
    ("stop", "Unsubscribe from everything"),
)
HELP = """<b>Commands</b>
/watchlists — the watchlists you can subscribe to
/subscribe NAME — get the alerts of a watchlist here (in a forum topic: in that topic)
/unsubscribe NAME — stop them; /unsubscribe all — stop every one
/mine — your subscriptions, mutes and digest
/mute 2h — hold alerts for a while (90s, 10m, 2h, 1d); /mute NAME 2h — one watchlist only. Held alerts come as one message when the mute ends
/unmute — send alerts again now; /unmute NAME — that watchlist
/digest daily 08:00 Europe/London — one message a day (or <code>hourly</code>); /digest off for each alert at once
/stop — unsubscribe from everything and forget this chat
Under each alert: 🔕 mute that watchlist for a day, ✖️ unsubscribe.
In a group, only its admins can change what it gets."""
NOT_ADMIN = "Only the group's admins can change what this group gets."
ADMIN_TTL = 60.0  # seconds a getChatMember answer is trusted
_MAX_MUTE = timedelta(days=365)
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
_GROUPS = (ChatType.GROUP, ChatType.SUPERGROUP)
_ADMINS = (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)
_NOTES = ("🔕", "🔔", "✖️", "↩️")


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


@dataclass(frozen=True)
class _Command:
    callback: Callable[[Update, list[str]], Awaitable[str | None]]
    changes: bool  # changes the chat's subscriptions: a group admin only


class SubscriberBot:
    """The subscriber commands of one bot token, on `engine`. `await start()` begins polling
    `getUpdates`; `await stop()` ends it and releases every connection. Not restartable once
    started; a start that failed may be tried again.

    `watchlists`: the configured names, or a mapping of name → description (shown by
    /watchlists)."""

    def __init__(
        self,
        token: str,
        engine: Engine,
        watchlists: Mapping[str, str | None] | Iterable[str],
        *,
        api_url: str = DEFAULT_API_URL,
        subscriptions: Access = "open",
        allow: Iterable[int] = (),
        poll_timeout: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        quota: CommandQuota | None = None,
    ) -> None:
        install_token_redaction(token)
        self.token = token
        self.engine = engine
        descriptions = (
            dict(watchlists) if isinstance(watchlists, Mapping) else dict.fromkeys(watchlists, None)
        )
        self.descriptions: dict[str, str | None] = dict(sorted(descriptions.items()))
        self.watchlists = list(self.descriptions)
        self.policy = AccessPolicy.of(subscriptions, allow)
        self.poll_timeout = poll_timeout
        self.clock = clock
        self.monotonic = monotonic
        self.quota = quota or CommandQuota()
        self.conflict = asyncio.Event()
        self.token_rejected = False
        self._admins: dict[tuple[int, int], tuple[bool, float]] = {}
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
        commands = {
            "start": _Command(self._start, changes=False),  # /start NAME checks for itself
            "help": _Command(self._help, changes=False),
            "watchlists": _Command(self._watchlists, changes=False),
            "subscribe": _Command(self._subscribe, changes=True),
            "unsubscribe": _Command(self._unsubscribe, changes=True),
            "mine": _Command(self._mine, changes=False),
            "mute": _Command(self._mute, changes=True),
            "unmute": _Command(self._unmute, changes=True),
            "digest": _Command(self._digest, changes=True),
            "stop": _Command(self._stop, changes=True),
        }
        for name, command in commands.items():
            self.application.add_handler(CommandHandler(name, self._handler(command)))
        self.application.add_handler(
            MessageHandler(tg_filters.COMMAND, self._handler(_Command(self._unknown, False)))
        )
        self.application.add_handler(CallbackQueryHandler(self._on_button))
        self.application.add_error_handler(self._on_error)

    @classmethod
    def from_settings(
        cls,
        telegram: TelegramSettings,
        engine: Engine,
        watchlists: Mapping[str, str | None] | Iterable[str],
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

    def use_watchlists(self, watchlists: Mapping[str, str | None]) -> None:
        """The watchlists subscribers may choose from now on, with their descriptions (a reload)."""
        self.descriptions = dict(sorted(watchlists.items()))
        self.watchlists = list(self.descriptions)

    # ---- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """getMe, publish the command menu, then poll getUpdates in the background. `BotError` if
        Telegram cannot be reached or refuses the token (nothing is left open then; after a
        rejected token `token_rejected` is set, and trying again is pointless)."""
        app = self.application
        try:
            await app.initialize()
        except TelegramError as exc:
            await app.bot.shutdown()  # the HTTP clients opened before getMe failed
            self.token_rejected = isinstance(exc, InvalidToken)
            if self.token_rejected:
                raise BotError(
                    "cannot start the Telegram bot: Telegram rejected the bot token (401; check "
                    f"telegram.token): {self._redact(exc)}",
                    token_rejected=True,
                ) from exc
            raise BotError(f"cannot start the Telegram bot: {self._redact(exc)}") from exc
        try:
            await app.bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS])
        except TelegramError as exc:  # cosmetic: the commands work without the menu
            log.warning("bot.commands_not_set error=%s", exc)
        assert app.updater is not None
        try:
            await app.updater.start_polling(
                timeout=timedelta(seconds=self.poll_timeout),
                allowed_updates=["message", "callback_query"],
                error_callback=self._on_poll_error,
            )
        except TelegramError as exc:
            await app.shutdown()
            raise BotError(f"cannot poll Telegram for updates: {self._redact(exc)}") from exc
        except BaseException:
            await self.stop()
            raise
        try:
            await app.start()
            self._watch_polling()
            log.info("bot.started username=%s access=%s", app.bot.username, self.policy.mode)
            await self._report_gone_watchlists()
        except BaseException:
            # Cancelled (a leader whose lease ran out while its bot started) or failed once
            # polling had begun: a bot left polling would be a second getUpdates loop beside the
            # next leader's.
            await self.stop()
            raise

    async def stop(self) -> None:
        """Polling first: what stops after it may take its time, but another replica may be
        about to poll."""
        app = self.application
        if app.updater is not None and app.updater.running:
            # TelegramError: a rejected token ended polling already; RuntimeError: a 409
            # Conflict's own stop (in `_tasks`) got there first.
            with contextlib.suppress(TelegramError, RuntimeError):
                await app.updater.stop()
        for task in list(self._tasks):
            await task
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
            with contextlib.suppress(TelegramError):
                await updater.stop()

    def _watch_polling(self) -> None:
        # PTB ends its polling loop when Telegram answers 401 (the token was revoked while we ran)
        # without calling the error callback; only its task shows that polling is over.
        task = getattr(self.application.updater, "_Updater__polling_task", None)
        if isinstance(task, asyncio.Task):
            task.add_done_callback(self._polling_ended)

    def _polling_ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or not isinstance(task.exception(), InvalidToken):
            return
        self.token_rejected = True
        log.error(
            "bot.token_rejected error=%r action=the bot stops answering commands; fix "
            "telegram.token and restart",
            self._redact(task.exception() or InvalidToken()),
        )

    @property
    def trouble(self) -> str | None:
        """Why the bot, once started, no longer answers commands (None while it does)."""
        if self.token_rejected:
            return "Telegram rejected the bot token (401; check telegram.token)"
        if self.conflict.is_set():
            return "another process polls getUpdates for this bot token (409 Conflict)"
        return None

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("bot.handler_error error=%r", context.error, exc_info=context.error)

    async def _report_gone_watchlists(self) -> None:
        """Log each watchlist that chats follow but the config no longer has (renamed or removed:
        its alerts stopped for them); /mine tells the chats themselves."""
        known = set(self.watchlists)
        try:
            followed = await self._db(lambda s, _now: subs.subscribed_watchlists(s))
        except MonitorError as exc:
            log.warning("bot.subscriptions_unreadable error=%s", exc)
            return
        for name, chats in sorted(followed.items()):
            if name not in known:
                close = difflib.get_close_matches(name, self.watchlists, n=1, cutoff=0.6)
                log.warning(
                    "bot.watchlist_gone watchlist=%s chats=%s renamed_to=%s: these chats get "
                    "nothing for it; /mine tells them",
                    name,
                    chats,
                    close[0] if close else "-",
                )

    # ---- plumbing -----------------------------------------------------------------------------

    def _handler(self, command: _Command) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Any]:
        async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            chat, message = update.effective_chat, update.effective_message
            if chat is None or message is None:
                return
            allowed, warn = self._take_quota(update)
            if not allowed:
                if warn:
                    await message.reply_text(self._slow_down(update))
                return
            try:
                if command.changes and not await self._is_admin(update):
                    reply: str | None = NOT_ADMIN
                else:
                    reply = await command.callback(update, list(context.args or []))
            except _Blocked:
                reply = "This chat is blocked by the bot's administrator."
            except MonitorError as exc:
                log.error("bot.command_failed chat=%s error=%s", chat.id, exc)
                reply = "Sorry, something went wrong on our side. Please try again later."
            if reply:
                await message.reply_text(truncate_html(reply))

        return handle

    def _quota_key(self, update: Update) -> int:
        user, chat = update.effective_user, update.effective_chat
        return user.id if user is not None else chat.id if chat is not None else 0

    def _take_quota(self, update: Update) -> tuple[bool, bool]:
        key = self._quota_key(update)
        allowed, warn = self.quota.take(key, self.monotonic())
        if not allowed and warn:
            log.warning("bot.rate_limited user=%s", key)
        return allowed, warn

    def _slow_down(self, update: Update) -> str:
        wait = max(1, round(self.quota.wait(self._quota_key(update))))
        return f"Too many commands: please wait {wait} s. The next ones until then are ignored."

    async def _is_admin(self, update: Update) -> bool:
        """Whether the sender may change this chat's subscriptions: anyone in a private chat; in
        a group an admin (getChatMember, remembered for `ADMIN_TTL`) or the group itself."""
        chat, user, message = update.effective_chat, update.effective_user, update.message
        assert chat is not None
        if chat.type not in _GROUPS:
            return True
        if message is not None and message.sender_chat is not None:
            return message.sender_chat.id == chat.id  # an anonymous admin writes as the group
        if user is None:
            return False
        now = self.monotonic()
        cached = self._admins.get((chat.id, user.id))
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            member = await self.application.bot.get_chat_member(chat.id, user.id)
        except TelegramError as exc:
            log.warning("bot.admin_check_failed chat=%s user=%s error=%s", chat.id, user.id, exc)
            return False
        admin = member.status in _ADMINS
        if len(self._admins) > 10_000:
            self._admins = {k: v for k, v in self._admins.items() if v[1] > now}
        self._admins[chat.id, user.id] = (admin, now + ADMIN_TTL)
        return admin

    async def _db(self, work: Callable[[Session, datetime], T]) -> T:
        def run() -> T:
            with db.transaction(self.engine) as session:
                return work(session, self.clock())

        return await asyncio.to_thread(run)

    def _sender_id(self, update: Update) -> int | None:
        """The user behind the update; None for a message sent as the group itself."""
        message, user = update.message, update.effective_user
        if message is not None and message.sender_chat is not None:
            return None
        return user.id if user is not None else None

    def _may_subscribe(self, update: Update) -> bool:
        chat = update.effective_chat
        assert chat is not None
        return self.policy.admits(chat.id, self._sender_id(update))

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
        sender = self._sender_id(update)
        assert chat is not None

        def work(session: Session, now: datetime) -> subs.Subscriber | None:
            existing = subs.get_subscriber(session, chat.id)
            if existing is not None and existing.blocked:
                raise _Blocked
            if not create and existing is None:
                return None
            who: dict[str, Any] = {}
            if create and sender is not None and user is not None:
                who = {"user_id": sender, "username": user.username}
            title = chat.title or chat.username or (user.full_name if user else None)
            return subs.get_or_create_subscriber(
                session, chat.id, now, chat_type=chat.type, title=title, **who
            )

        return work

    def _resolve(self, name: str) -> str | None:
        if name in self.descriptions:
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

    @staticmethod
    def _thread(update: Update) -> int | None:
        message = update.effective_message
        if message is None or not message.is_topic_message:
            return None
        return message.message_thread_id

    # ---- commands -----------------------------------------------------------------------------

    async def _start(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        welcome = (
            "This bot sends news alerts: when a story matches a watchlist you subscribed to, "
            "you get its title, source and the words that matched.\n\n" + HELP
        )
        if not args:  # only a private chat is recorded by /start alone
            if not self._may_subscribe(update):
                await self._db(self._touch(update, create=False))
                return self._refusal(update)
            await self._db(self._touch(update, create=chat.type == ChatType.PRIVATE))
            return welcome
        # A deep link: t.me/<bot>?start=NAME (or ?startgroup=NAME) subscribes to NAME.
        if not await self._is_admin(update):
            return NOT_ADMIN
        subscribed = await self._subscribe(update, args[:1])
        return f"{subscribed}\n\n{welcome}" if self._may_subscribe(update) else subscribed

    async def _help(self, update: Update, args: list[str]) -> str:
        return HELP

    async def _unknown(self, update: Update, args: list[str]) -> str | None:
        """An unknown command: answered with the help in a private chat or when it names this bot;
        ignored when it names another bot, or in a group (it may be another bot's)."""
        chat, message = update.effective_chat, update.effective_message
        assert chat is not None
        text = message.text if message is not None and message.text else ""
        command = text.split(maxsplit=1)[0] if text else ""
        _, at, target = command.partition("@")
        ours = self.application.bot.username or ""
        if at and target.casefold() != ours.casefold():
            return None
        if chat.type != ChatType.PRIVATE and not at:
            return None
        return f"I do not know {_e(command.partition('@')[0])}.\n\n{HELP}"

    async def _watchlists(self, update: Update, args: list[str]) -> str:
        if not self._may_subscribe(update):
            return self._refusal(update)
        chat = update.effective_chat
        assert chat is not None
        mine = set(await self._db(lambda s, _now: subs.subscriptions_of(s, chat.id)))
        if not self.watchlists:
            return "There are no watchlists yet."
        lines = []
        for name, description in self.descriptions.items():
            line = f"{'✅' if name in mine else '▫️'} <code>{_e(name)}</code>"
            if description:
                line += f" — {_e(description)}"
            lines.append(line)
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
        thread = self._thread(update)

        def work(session: Session, now: datetime) -> list[bool]:
            subscriber = touch(session, now)
            return [
                subs.subscribe(session, subscriber.id, name, now, thread_id=thread)
                for name in names
            ]

        added = await self._db(work) if names else []
        lines = []
        for name, new in zip(names, added, strict=True):
            if new:
                lines.append(f"Subscribed to <code>{_e(name)}</code>.")
            else:
                lines.append(f"You were already subscribed to <code>{_e(name)}</code>.")
        if names and thread is not None:
            lines.append(
                "Its alerts come to this topic."
                if len(names) == 1
                else "Their alerts come to this topic."
            )
        lines += [self._unknown_watchlist(a) for a in unknown]
        if unknown:
            lines.append(self._list())
        return "\n".join(lines)

    async def _unsubscribe(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        if not args:
            return "Which one? Write /unsubscribe NAME (see /mine), or /unsubscribe all."
        touch = self._touch(update, create=False)
        if [a.casefold() for a in args] == ["all"] and "all" not in self.descriptions:

            def everything(session: Session, now: datetime) -> list[str]:
                if touch(session, now) is None:
                    return []
                return subs.unsubscribe_all(session, chat.id)

            gone = await self._db(everything)
            if not gone:
                return "You have no subscriptions."
            names = ", ".join(f"<code>{_e(n)}</code>" for n in gone)
            return f"Unsubscribed from everything: {names}."

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

    async def _stop(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        touch = self._touch(update, create=False)

        def work(session: Session, now: datetime) -> tuple[list[str], int] | None:
            if touch(session, now) is None:
                return None
            return subs.remove_subscriber(session, chat.id)

        removed = await self._db(work)
        if removed is None:
            return "Nothing to stop: you have no subscriptions. /start to begin."
        names, _dropped = removed
        what = ", ".join(f"<code>{_e(n)}</code>" for n in names) or "nothing"
        return (
            f"Stopped: unsubscribed from {what}, and this chat's settings are forgotten. "
            "Nothing more will come. /start to come back."
        )

    async def _mine(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        touch = self._touch(update, create=False)

        def work(session: Session, now: datetime) -> tuple[Any, list[subs.Subscription], datetime]:
            subscriber = touch(session, now)
            return subscriber, subs.subscription_details(session, chat.id), now

        subscriber, mine, now = await self._db(work)
        if not mine:
            return "You have no subscriptions. /watchlists lists what there is."
        lines = ["<b>Your subscriptions</b>"]
        gone = []
        for subscription in mine:
            name = subscription.watchlist
            notes = []
            if subscription.thread_id is not None:
                notes.append(f"in topic {subscription.thread_id}")
            if subscription.muted_until is not None and subscription.muted_until > now:
                notes.append(f"muted until {_e(_when(subscription.muted_until))}")
            if name not in self.descriptions:
                gone.append(name)
                close = difflib.get_close_matches(name, self.watchlists, n=1, cutoff=0.6)
                renamed = f"; now <code>{_e(close[0])}</code>?" if close else ""
                notes.append(f"⚠️ no longer exists (renamed or removed{renamed})")
            lines.append(f"• <code>{_e(name)}</code>" + (f" — {', '.join(notes)}" if notes else ""))
        if subscriber is not None:
            if subscriber.muted_until is not None and subscriber.muted_until > now:
                lines.append(f"Muted until {_e(_when(subscriber.muted_until))}.")
            lines.append(
                f"Digest: {_e(subscriber.digest)}." if subscriber.digest else "Each alert at once."
            )
        if gone:
            lines.append(
                "Nothing comes for a watchlist that no longer exists: "
                + ", ".join(f"/unsubscribe {_e(n)}" for n in gone)
                + ", and see /watchlists."
            )
        return "\n".join(lines)

    def _mute_args(self, args: list[str]) -> tuple[list[str], list[str], list[str]]:
        """`/mute` arguments → (durations, watchlist names, words that are neither)."""
        durations: list[str] = []
        names: list[str] = []
        unknown: list[str] = []
        for arg in args:
            try:
                parse_duration(arg)
            except ValueError:
                name = self._resolve(arg)
                (names if name is not None else unknown).append(name or arg)
            else:
                durations.append(arg)
        return durations, names, unknown

    async def _mute(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        if not args:
            return "For how long? Write /mute 2h (or 90s, 10m, 1d), or /mute NAME 2h."
        durations, names, unknown = self._mute_args(args)
        if not durations and not names:
            try:  # "/mute 1h 30m" is one duration in two words
                parse_duration("".join(args))
            except ValueError as exc:
                return _e(exc)
            durations = ["".join(args)]
        elif not durations:
            return "For how long? Write /mute NAME 2h (or 90s, 10m, 1d)."
        elif unknown:
            return "\n".join(self._unknown_watchlist(a) for a in unknown)
        duration = parse_duration("".join(durations))
        if duration > _MAX_MUTE:
            return "That is longer than a year; /unsubscribe instead?"
        touch = self._touch(update, create=False)

        def work(session: Session, now: datetime) -> tuple[datetime | None, list[str]]:
            if touch(session, now) is None:
                return None, []
            until = now + duration
            if not names:
                subs.set_mute(session, chat.id, until, now)
                return until, []
            return until, [
                n for n in names if not subs.set_mute(session, chat.id, until, now, watchlist=n)
            ]

        until, missing = await self._db(work)
        if until is None:
            return "You have no subscriptions to mute."
        if missing:
            return "\n".join(f"You are not subscribed to <code>{_e(n)}</code>." for n in missing)
        span = f"for {_e(format_duration(duration))}, until {_e(_when(until))}"
        if not names:
            return (
                f"Muted {span}. Alerts are held and come as one digest when the mute ends; "
                "/unmute to end it now."
            )
        listed = ", ".join(f"<code>{_e(n)}</code>" for n in names)
        whose = "Its" if len(names) == 1 else "Their"
        return (
            f"Muted {listed} {span}. {whose} alerts are held and come as one message when the "
            f"mute ends; /unmute {' '.join(_e(n) for n in names)} to end it now."
        )

    async def _unmute(self, update: Update, args: list[str]) -> str:
        chat = update.effective_chat
        assert chat is not None
        names = [self._resolve(a) or a for a in args]
        touch = self._touch(update, create=False)

        def work(session: Session, now: datetime) -> tuple[bool, list[str]]:
            if touch(session, now) is None:
                return False, []
            if not names:
                subs.set_mute(session, chat.id, None, now)
                for subscription in subs.subscription_details(session, chat.id):
                    if subscription.muted_until is not None:
                        subs.set_mute(session, chat.id, None, now, watchlist=subscription.watchlist)
                return True, []
            missing = [
                n for n in names if not subs.set_mute(session, chat.id, None, now, watchlist=n)
            ]
            return True, missing

        found, missing = await self._db(work)
        if not found:
            return "You have no subscriptions."
        if missing:
            return "\n".join(f"You are not subscribed to <code>{_e(n)}</code>." for n in missing)
        if names:
            listed = ", ".join(f"<code>{_e(n)}</code>" for n in names)
            return f"Unmuted {listed}: its alerts come as they happen again."
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

    # ---- buttons ------------------------------------------------------------------------------

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        chat = update.effective_chat
        if query is None or chat is None:
            return
        allowed, warn = self._take_quota(update)
        if not allowed:
            await query.answer(self._slow_down(update) if warn else None)
            return
        press = buttons.parse_press(query.data or "")
        if press is None:
            await query.answer("This button is no longer in use.")
            return
        if not await self._is_admin(update):
            await query.answer(NOT_ADMIN, show_alert=True)
            return
        try:
            done = await self._press(update, press)
        except _Blocked:
            await query.answer("This chat is blocked by the bot's administrator.", show_alert=True)
            return
        except MonitorError as exc:
            log.error("bot.button_failed chat=%s error=%s", chat.id, exc)
            await query.answer("Sorry, something went wrong on our side. Please try again later.")
            return
        if done is None:
            await query.answer("That watchlist no longer exists.", show_alert=True)
            return
        toast, note, watchlist = done
        await query.answer(toast)
        if note is not None:
            await self._note_on(query, note, buttons.after(press.action, watchlist))

    async def _press(
        self, update: Update, press: buttons.Press
    ) -> tuple[str, str | None, str] | None:
        """Do what the button says. (the answer's text, the note for the message or None when
        nothing changed, the watchlist's name); None if the watchlist cannot be found."""
        chat = update.effective_chat
        assert chat is not None
        touch = self._touch(update, create=press.action == "sub")
        thread = self._thread(update)
        user = update.effective_user
        by = f" (by {_e(user.first_name)})" if chat.type in _GROUPS and user is not None else ""
        if press.action == "sub" and not self._may_subscribe(update):
            return self._refusal(update).replace("<code>", "").replace("</code>", ""), None, ""

        def work(session: Session, now: datetime) -> tuple[str, str | None, str] | None:
            candidates = self.watchlists + subs.subscriptions_of(session, chat.id)
            name = next((n for n in candidates if press.matches(n)), None)
            if name is None:
                return None
            subscriber = touch(session, now)
            shown = f"<b>{_e(name)}</b>"
            if press.action == "mute":
                until = now + parse_duration(buttons.MUTE_FOR)
                if subscriber is None or not subs.set_mute(
                    session, chat.id, until, now, watchlist=name
                ):
                    return f"You are not subscribed to {name}.", None, name
                return f"Muted {name} for a day", buttons.muted_note(name, until, by), name
            if press.action == "unmute":
                if subscriber is None or not subs.set_mute(
                    session, chat.id, None, now, watchlist=name
                ):
                    return f"You are not subscribed to {name}.", None, name
                return f"Unmuted {name}", f"🔔 {shown} unmuted{by}.", name
            if press.action == "unsub":
                removed = subscriber is not None and subs.unsubscribe(session, subscriber.id, name)
                if not removed:
                    return f"You are not subscribed to {name}.", None, name
                return f"Unsubscribed from {name}", f"✖️ Unsubscribed from {shown}{by}.", name
            if name not in self.descriptions:
                return None
            assert subscriber is not None
            subs.subscribe(session, subscriber.id, name, now, thread_id=thread)
            return f"Subscribed to {name}", f"↩️ Subscribed to {shown} again{by}.", name

        return await self._db(work)

    async def _note_on(
        self, query: CallbackQuery, note: str, row: Sequence[buttons.Button]
    ) -> None:
        """Edit the alert under which a button was pressed: its text with `note` below (in place
        of an earlier note), and the buttons that undo what was done."""
        message = query.message
        if not isinstance(message, Message) or message.text is None:
            return  # too old to be edited (Telegram no longer shows its content)
        text = message.text_html
        cut = text.rfind("\n\n<i>")
        if cut >= 0 and text.endswith("</i>") and text[cut + 5 :].startswith(_NOTES):
            text = text[:cut]
        addition = f"\n\n<i>{note}</i>"
        text = truncate_html(text, 4096 - visible_length(addition)) + addition
        preview = message.link_preview_options or _NO_PREVIEW
        try:
            await query.edit_message_text(
                text, reply_markup=keyboard(row), link_preview_options=preview
            )
        except TelegramError as exc:  # the action is done; only the message could not show it
            log.warning("bot.edit_failed chat=%s error=%s", message.chat.id, exc)


class _Blocked(Exception):
    """The chat is blocked by the administrator (`monitor subscribers block`)."""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
