"""The summary `monitor check` prints for a valid config: one screen, no secrets (a password in a
URL is shown as ***, tokens and logins only as "set"), and no value that came from a variable:
such a value is shown as the file wrote it (`${DESK_EMAIL}`, `https://${NEWS_HOST}/feed`).

This module only renders `Settings`; it does not load or validate anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta
from urllib.parse import urlsplit

from monitor.config.schema import ConsoleChannel, EmailChannel, KeyPath, Settings, TelegramChannel
from monitor.core.stories import SAME_OUTLET
from monitor.durations import format_duration, format_size


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class _Shown:
    """A value as the summary may show it: as the file wrote it when it came from a variable."""

    def __init__(self, settings: Settings) -> None:
        self.written = settings.from_variables

    def __call__(self, path: KeyPath, text: str) -> str:
        return self.written.get(path, text)

    def each(self, path: KeyPath, texts: Iterable[str]) -> list[str]:
        """The items of a list; the whole list as written when one variable gave it."""
        if path in self.written:
            return [self.written[path]]
        return [self.written.get((*path, index), text) for index, text in enumerate(texts)]

    def age(self, path: KeyPath, max_age: timedelta | None) -> str:
        if max_age is None and path not in self.written:
            return "alerts on items of any age"
        return f"alerts on items up to {self(path, format_duration(max_age or timedelta()))} old"


def summary(settings: Settings) -> str:
    """What `monitor check` prints for a valid config: one screen, no secrets."""
    s, shown = settings, _Shown(settings)
    db_url = _hide_password(shown(("database", "url"), s.database.url))
    lines = [
        f"database    {db_url}, "
        f"keep {shown(('database', 'retention'), format_duration(s.database.retention))}",
        f"defaults    poll every {shown(('defaults', 'interval'), format_duration(s.defaults.interval))}, "
        f"timeout {shown(('defaults', 'timeout'), format_duration(s.defaults.timeout))}, "
        f"{shown.age(('defaults', 'alert_max_age'), s.defaults.alert_max_age)}",
        f"fetch       max body {shown(('fetch', 'max_body'), format_size(s.fetch.max_body))}, "
        f"{shown(('fetch', 'per_host'), str(s.fetch.per_host))} per host, "
        f"proxy {'set' if s.fetch.proxy else 'none'}, "
        f"private addresses {_private_addresses(s, shown)}",
        f"service     listen {shown(('service', 'listen'), s.service.listen or 'off')}, "
        f"logs as {shown(('service', 'log_format'), s.service.log_format)}",
        f"stories     one story from {shown(('stories', 'threshold'), f'{s.stories.threshold:g}')} "
        f"of the text in common across outlets "
        f"({max(s.stories.threshold, SAME_OUTLET):g} within one), "
        f"joined for {shown(('stories', 'window'), format_duration(s.stories.window))}",
        "",
        f"feeds ({_counted(len(s.all_feeds), len(s.feeds))})",
    ]
    width = max((len(name) for name in _all_names(s)), default=0)
    for index, feed in enumerate(s.all_feeds):
        at: KeyPath = ("feeds", index)
        details = [] if feed.enabled else ["disabled"]
        details += [f"every {shown((*at, 'interval'), format_duration(feed.interval))}"]
        details += [shown((*at, "language"), feed.language)] if feed.language else []
        details += ["full text"] if feed.full_text else []
        details += ["private allowed"] if feed.allow_private else []
        if feed.alert_max_age != s.defaults.alert_max_age:
            details.append(shown.age((*at, "alert_max_age"), feed.alert_max_age))
        name = shown((*at, "name"), feed.name)
        url = _hide_password(shown((*at, "url"), feed.url))
        lines.append(f"  {name:<{width}}  {url}  ({', '.join(details)})")
    lines.append(f"entities ({len(s.entities)})")
    for entity in s.entities.values():
        every = shown.each(("entities", entity.name, "aliases"), entity.aliases)
        aliases = ", ".join(every[:4]) + (", …" if len(every) > 4 else "")
        count = f"{len(entity.aliases)} alias{'' if len(entity.aliases) == 1 else 'es'}"
        lines.append(f"  {entity.name:<{width}}  {count}: {aliases}")
    lines.append(f"watchlists ({_counted(len(s.all_watchlists), len(s.watchlists))})")
    for watchlist in s.all_watchlists.values():
        at = ("watchlists", watchlist.name)
        languages = shown.each((*at, "languages"), watchlist.languages)
        feeds = shown.each((*at, "feeds"), watchlist.feeds)
        filters = [f"languages {', '.join(languages)}"] if languages else []
        filters += [f"feeds {', '.join(feeds)}"] if feeds else []
        notify = ", ".join(shown.each((*at, "notify"), watchlist.notify))
        filters += [] if watchlist.enabled else ["disabled"]
        lines.append(f"  {watchlist.name:<{width}}  {shown((*at, 'query'), watchlist.query)}")
        lines.append(
            f"  {'':<{width}}  → {'; '.join([notify or 'Telegram subscribers only', *filters])}"
        )
    lines.append(f"channels ({len(s.channels)})")
    for channel in s.channels.values():
        kind = f"{channel.type:<8}"
        lines.append(f"  {channel.name:<{width}}  {kind}  {_channel_details(channel, shown)}")
    if s.telegram:
        t = s.telegram
        allow = f" ({_plural(len(t.allow), 'user')})" if t.subscriptions == "allowlist" else ""
        api_url = shown(("telegram", "api_url"), t.api_url)
        subscriptions = shown(("telegram", "subscriptions"), t.subscriptions)
        lines.append(f"telegram    {api_url}, subscriptions {subscriptions}{allow}, token set")
    if s.email:
        e = s.email
        security = "ssl" if e.ssl else "starttls" if e.starttls else "no tls"
        login = "login set" if e.username else "no login"
        server = f"{shown(('email', 'host'), e.host or '(no host)')}:{shown(('email', 'port'), str(e.port))}"
        sender = shown(("email", "from"), e.sender)
        lines.append(f"email       {server}, {security}, {login}, from {sender}")
    return "\n".join(lines)


def _counted(configured: int, enabled: int) -> str:
    return (
        str(configured)
        if configured == enabled
        else f"{configured}, {configured - enabled} disabled"
    )


def _private_addresses(s: Settings, shown: _Shown) -> str:
    if s.fetch.allow_private:
        return "allowed"
    if s.fetch.allow_networks:
        networks = shown.each(("fetch", "allow_networks"), s.fetch.allow_networks)
        return f"refused except {', '.join(networks)}"
    return "refused"


def _all_names(s: Settings) -> Iterator[str]:
    yield from (feed.name for feed in s.all_feeds)
    yield from s.entities
    yield from s.all_watchlists
    yield from s.channels


def _channel_details(
    channel: TelegramChannel | EmailChannel | ConsoleChannel, shown: _Shown
) -> str:
    at = ("channels", channel.name)
    if isinstance(channel, ConsoleChannel):
        return "printed to the terminal"
    timing = (
        f"digest {shown((*at, 'digest'), str(channel.digest))}" if channel.digest else "immediate"
    )
    if isinstance(channel, TelegramChannel):
        return f"{_plural(len(channel.chat_ids), 'chat')}, {timing}"
    return f"{', '.join(shown.each((*at, 'to'), channel.to))}, {timing}"
