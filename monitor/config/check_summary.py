"""The summary `monitor check` prints for a valid config: one screen, no secrets (a password in a
URL is shown as ***, tokens and logins only as "set").

This module only renders `Settings`; it does not load or validate anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit

from monitor.config.schema import ConsoleChannel, EmailChannel, Settings, TelegramChannel
from monitor.durations import format_duration, format_size


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _alert_age(max_age: timedelta | None) -> str:
    if max_age is None:
        return "alerts on items of any age"
    return f"alerts on items up to {format_duration(max_age)} old"


def _private_addresses(s: Settings) -> str:
    if s.fetch.allow_private:
        return "allowed"
    if s.fetch.allow_networks:
        return f"refused except {', '.join(s.fetch.allow_networks)}"
    return "refused"


def summary(settings: Settings) -> str:
    """What `monitor check` prints for a valid config: one screen, no secrets."""
    s = settings
    lines = [
        f"database    {_hide_password(s.database.url)}, "
        f"keep {format_duration(s.database.retention)}",
        f"defaults    poll every {format_duration(s.defaults.interval)}, "
        f"timeout {format_duration(s.defaults.timeout)}, {_alert_age(s.defaults.alert_max_age)}",
        f"fetch       max body {format_size(s.fetch.max_body)}, {s.fetch.per_host} per host, "
        f"proxy {'set' if s.fetch.proxy else 'none'}, "
        f"private addresses {_private_addresses(s)}",
        f"service     listen {s.service.listen or 'off'}, logs as {s.service.log_format}",
        "",
        f"feeds ({len(s.feeds)})",
    ]
    width = max((len(name) for name in _all_names(s)), default=0)
    for feed in s.feeds:
        details = [f"every {format_duration(feed.interval)}"]
        details += [feed.language] if feed.language else []
        details += ["full text"] if feed.full_text else []
        details += ["private allowed"] if feed.allow_private else []
        if feed.alert_max_age != s.defaults.alert_max_age:
            details.append(_alert_age(feed.alert_max_age))
        lines.append(f"  {feed.name:<{width}}  {_hide_password(feed.url)}  ({', '.join(details)})")
    lines.append(f"entities ({len(s.entities)})")
    for entity in s.entities.values():
        aliases = ", ".join(entity.aliases[:4]) + (", …" if len(entity.aliases) > 4 else "")
        count = f"{len(entity.aliases)} alias{'' if len(entity.aliases) == 1 else 'es'}"
        lines.append(f"  {entity.name:<{width}}  {count}: {aliases}")
    lines.append(f"watchlists ({len(s.watchlists)})")
    for watchlist in s.watchlists.values():
        filters = [f"languages {', '.join(watchlist.languages)}"] if watchlist.languages else []
        filters += [f"feeds {', '.join(watchlist.feeds)}"] if watchlist.feeds else []
        notify = ", ".join(watchlist.notify) or "Telegram subscribers only"
        lines.append(f"  {watchlist.name:<{width}}  {watchlist.query}")
        lines.append(f"  {'':<{width}}  → {'; '.join([notify, *filters])}")
    lines.append(f"channels ({len(s.channels)})")
    for channel in s.channels.values():
        lines.append(f"  {channel.name:<{width}}  {channel.type:<8}  {_channel_details(channel)}")
    if s.telegram:
        t = s.telegram
        allow = f" ({_plural(len(t.allow), 'user')})" if t.subscriptions == "allowlist" else ""
        lines.append(f"telegram    {t.api_url}, subscriptions {t.subscriptions}{allow}, token set")
    if s.email:
        e = s.email
        security = "ssl" if e.ssl else "starttls" if e.starttls else "no tls"
        login = "login set" if e.username else "no login"
        server = f"{e.host or '(no host)'}:{e.port}"
        lines.append(f"email       {server}, {security}, {login}, from {e.sender}")
    return "\n".join(lines)


def _all_names(s: Settings) -> Iterator[str]:
    yield from (feed.name for feed in s.feeds)
    yield from s.entities
    yield from s.watchlists
    yield from s.channels


def _channel_details(channel: TelegramChannel | EmailChannel | ConsoleChannel) -> str:
    if isinstance(channel, TelegramChannel):
        timing = f"digest {channel.digest}" if channel.digest else "immediate"
        return f"{_plural(len(channel.chat_ids), 'chat')}, {timing}"
    if isinstance(channel, EmailChannel):
        timing = f"digest {channel.digest}" if channel.digest else "immediate"
        return f"{', '.join(channel.to)}, {timing}"
    return "printed to the terminal"
