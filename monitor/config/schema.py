"""The config schema: frozen pydantic models for every section of the config file, the value types
they use (durations, sizes, names, language codes, URLs, addresses) and their validators.

A scalar arrives here as the text the user typed (the YAML loader resolves nothing but null), so
the field's type decides what it means: `no` is a language code where one is expected and False
where a boolean is; `010` is 10 where a number is expected. A single value where a list is expected
(`notify: analysts`) is read as a one-element list.

This module does not read YAML, substitute `${VAR}`, word problems for the user or check
references between sections (a watchlist's `notify` naming a channel): see `yaml_loader`, `env`
and `report`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import zlib
from collections.abc import Callable, Mapping
from datetime import time, timedelta
from email.utils import parseaddr
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapSerializer,
    field_validator,
    model_validator,
)

from monitor.core.text import term_tokens
from monitor.durations import parse_duration, parse_size

CONSOLE = "console"  # the built-in channel a watchlist without `notify` goes to
DEFAULT_INTERVAL = timedelta(minutes=10)
DEFAULT_ALERT_MAX_AGE = timedelta(hours=24)
NO_LIMIT = "off"  # `alert_max_age: off`: items of any age alert
DEFAULT_USER_AGENT = "news-monitor/1.0 (+https://example.org/about-this-bot)"
DEFAULT_FROM = "News monitor <monitor@example.org>"
KeyPath = tuple[str | int, ...]  # where a value is in the file: ("feeds", 0, "url")


def nearest_line(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of `path` in `lines`, else of its nearest parent there."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def dotted(path: KeyPath) -> str:
    """The key as messages name it: `feeds[2].url`, `watchlists.taiwan.query`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


# ---- value types ---------------------------------------------------------------------------------

T = TypeVar("T")


def _one_or_many(value: object) -> object:
    """`notify: analysts` means `notify: [analysts]`."""
    return [value] if isinstance(value, str | int) else value


def _blank_to_none(value: object) -> object:
    """`${SMTP_USER:-}` with the variable unset means "no username", not an empty one."""
    return None if isinstance(value, str) and not value.strip() else value


def _to_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValueError("must be longer than 0 (e.g. 30s)")
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("expected a duration such as 90s, 10m, 2h or 1d")


def _to_max_age(value: object) -> object:
    """`alert_max_age`: a duration, or `off` (None, as is null) for no limit."""
    if value is None or (isinstance(value, str) and value.strip().lower() == NO_LIMIT):
        return None
    try:
        return _to_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; or {NO_LIMIT} for no limit") from None


def _to_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("must be more than 0 bytes")
        return value
    if isinstance(value, str):
        return parse_size(value)
    raise ValueError("expected a size such as 512KB or 10MB")


def _check_name(name: str) -> str:
    if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
        raise ValueError(f"{name!r} is not a valid name: use letters, digits, - and _")
    return name


def _check_feed_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"{name!r} is not a valid feed name: use a-z, 0-9, - and _")
    return name


def _check_language(tag: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*", tag):
        raise ValueError(f"{tag!r} is not a language code; use e.g. ar, en, no or pt-BR")
    return tag


def _check_not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _check_alias(alias: str) -> str:
    if not term_tokens(alias):
        raise ValueError(f"alias {alias!r} has no letters or digits, so it can never match")
    return alias


def _check_http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return url.rstrip("/")


def _check_feed_location(location: str) -> str:
    location = _check_not_blank(location)
    scheme = urlsplit(location).scheme
    if scheme in ("http", "https"):
        if not urlsplit(location).hostname:
            raise ValueError("the URL has no host")
    elif len(scheme) > 1:  # one letter would be a Windows drive, i.e. a path
        raise ValueError(f"{scheme}: URLs are not allowed; use http(s):// or a local file path")
    return location


def _check_proxy(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
        raise ValueError("expected a proxy URL such as http://proxy:3128 or socks5://proxy:1080")
    return url


def _check_network(text: str) -> str:
    """`fetch.allow_networks`: a CIDR range, written as its network (`10.20.0.0/16`)."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a network: write a CIDR range such as 10.20.0.0/16, "
            "192.168.5.7/32 or fd00::/8"
        ) from None
    raise ValueError(f"{text!r} has host bits set: write {loose} for the whole range") from None


def _check_database_url(url: str) -> str:
    dialect = urlsplit(url).scheme.split("+", 1)[0]
    if dialect not in ("sqlite", "postgresql") or "://" not in url:
        raise ValueError("expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
    return url


def relative_sqlite_path(url: str) -> str | None:
    """The path of a `sqlite:///PATH` URL when it is relative (not `/…`, `:memory:` or `file:`)."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.split("+", 1)[0] != "sqlite" or not rest.startswith("/"):
        return None
    path = rest[1:].partition("?")[0]
    if not path or path == ":memory:" or path.startswith(("/", "file:")):
        return None
    return path


def _check_listen(address: str | None) -> str | None:
    if address is None:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:8321, or null to disable")
    return address


def _check_address(address: str) -> str:
    if not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+\.[^@\s<>,]+", address):
        raise ValueError(f"{address!r} is not an email address")
    return address


def _check_sender(sender: str) -> str:
    _, address = parseaddr(sender)
    if "\r" in sender or "\n" in sender or "@" not in address:
        raise ValueError('expected an address, optionally with a name: "News <news@example.org>"')
    return sender


def _to_chat_id(value: object) -> object:
    """A Telegram chat: its numeric id, or a public channel's or group's `@username` (Telegram
    accepts either; the notifier looks the id up once)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        if re.fullmatch(r"@[A-Za-z][A-Za-z0-9_]{3,31}", text):
            return text
    raise ValueError(
        f"{value!r} is not a Telegram chat: write its id (-1001234567890) or a public "
        "channel's @username (@channelname)"
    )


def _check_unsubscribe(url: str | None) -> str | None:
    if url is None:
        return None
    url = url.strip()
    if not re.fullmatch(r"(?i)(mailto:[^\s<>@]+@[^\s<>]+|https://[^\s<>]+)", url):
        raise ValueError(
            "expected a mailto: or https: URL, e.g. mailto:news-admin@example.org or "
            "https://example.org/unsubscribe?list={channel}&who={recipient}"
        )
    return url


def _freeze(mapping: Mapping[str, T]) -> Mapping[str, T]:
    return MappingProxyType(dict(mapping))


def _serialize_mapping(mapping: Mapping[str, Any], handler: Callable[[Any], Any]) -> Any:
    return handler(dict(mapping))


Duration = Annotated[timedelta, BeforeValidator(_to_duration)]
MaxAge = Annotated[timedelta | None, BeforeValidator(_to_max_age)]  # None: no limit
ByteSize = Annotated[int, BeforeValidator(_to_size)]
Name = Annotated[str, AfterValidator(_check_name)]
FeedName = Annotated[str, AfterValidator(_check_feed_name)]
Language = Annotated[str, AfterValidator(_check_language)]
Text = Annotated[str, AfterValidator(_check_not_blank)]
OptionalText = Annotated[str | None, BeforeValidator(_blank_to_none)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_blank_to_none)]
EmailAddress = Annotated[str, AfterValidator(_check_address)]
ChatId = Annotated[int | str, BeforeValidator(_to_chat_id)]
# More alerts than this for one chat within a minute come as one message listing them.
BurstLimit = Annotated[int, Field(ge=1, le=1000)]
DEFAULT_BURST = 20  # Telegram's own limit for a group: beyond it sends would be throttled anyway
Port = Annotated[int, Field(ge=1, le=65535)]
ListOf = Annotated[tuple[T, ...], BeforeValidator(_one_or_many)]
NonEmptyListOf = Annotated[tuple[T, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
FrozenMap = Annotated[Mapping[Name, T], AfterValidator(_freeze), WrapSerializer(_serialize_mapping)]


# ---- the schema ----------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class DatabaseSettings(_Model):
    """Where items, stories and alerts are stored. `url` may hold a password: not in repr.

    A relative SQLite path (`sqlite:///monitor.db`) is relative to the config file's folder, like
    a feed's path: `Settings` makes it absolute, so every command finds the same database from
    any working directory (cron starts in `$HOME`)."""

    url: Annotated[str, AfterValidator(_check_database_url)] = Field(
        default="sqlite:///monitor.db", repr=False
    )
    retention: Duration = timedelta(days=90)


class DefaultSettings(_Model):
    """Defaults for every feed."""

    interval: Duration = DEFAULT_INTERVAL
    timeout: Duration = timedelta(seconds=20)
    # Items published longer ago are stored and matched, never alerted; None (`off`): no limit.
    alert_max_age: MaxAge = DEFAULT_ALERT_MAX_AGE


class FetchSettings(_Model):
    user_agent: Text = DEFAULT_USER_AGENT
    max_body: ByteSize = 10 * 1024 * 1024
    per_host: int = Field(default=2, ge=1, le=100)
    proxy: Annotated[OptionalText, AfterValidator(_check_proxy)] = Field(default=None, repr=False)
    allow_private: bool = False
    # CIDR ranges reachable even with `allow_private` off: one intranet range, not every private one.
    allow_networks: ListOf[Annotated[str, AfterValidator(_check_network)]] = ()
    gone_after: Duration = timedelta(days=3)  # of 404/410 answers: the feed is gone


def _check_lease(lease: timedelta) -> timedelta:
    if lease < timedelta(seconds=5):
        raise ValueError("must be at least 5s (leases are renewed every third of it)")
    return lease


class ServiceSettings(_Model):
    listen: Annotated[OptionalText, AfterValidator(_check_listen)] = "127.0.0.1:8321"
    log_format: Literal["text", "json"] = "text"
    # How long a feed poll or an alert delivery stays claimed by a process that stops renewing
    # its claim (it died): the time another replica waits before taking the work over.
    lease: Annotated[Duration, AfterValidator(_check_lease)] = timedelta(seconds=30)


class StorySettings(_Model):
    """How items are grouped into stories (core.stories): the estimated share of text two items of
    different outlets have in common from which they are one story (the same outlet needs
    `core.stories.SAME_OUTLET` or this, whichever is higher), and how long a story takes copies."""

    threshold: float = Field(default=0.4, gt=0, le=1)
    window: Duration = timedelta(days=3)


class FeedSettings(_Model):
    """One feed. `interval`, `alert_max_age` and `allow_private` are always set after loading: when
    the file leaves them out they are inherited from `defaults` and `fetch.allow_private`. `url` is
    an http(s) URL or a local path, relative to `Settings.config_dir`."""

    name: FeedName
    url: Annotated[str, AfterValidator(_check_feed_location)]
    interval: Duration = DEFAULT_INTERVAL
    language: Language | None = None
    full_text: bool = False
    allow_private: bool = False
    alert_max_age: MaxAge = DEFAULT_ALERT_MAX_AGE
    enabled: bool = True  # false: kept in the file, never polled


class Entity(_Model):
    """`@name` in a query: the OR of its aliases, each alias a phrase."""

    name: str
    aliases: NonEmptyListOf[Annotated[str, AfterValidator(_check_alias)]]


class Watchlist(_Model):
    """A named query and where its alerts go.

    `notify` lists channel names. Without `notify` in the file it is `("console",)`, the built-in
    console channel (SPEC §2: "a watchlist without notify goes to the console"); an explicit
    `notify: []` means only Telegram subscribers get it. Empty `languages` / `feeds` mean all.
    `description` is what the bot's /watchlists shows beside the name. `enabled: false` keeps it
    in the file (checked all the same) but matches nothing.
    """

    name: str
    query: Text
    description: OptionalText = None
    notify: ListOf[Name] = (CONSOLE,)
    languages: ListOf[Language] = ()
    feeds: ListOf[FeedName] = ()
    enabled: bool = True


class Digest(_Model):
    """Batch a channel's alerts: hourly, or daily at a local time.

    Written `daily 08:00 Europe/London`, `daily 08:00` (UTC) or `hourly`."""

    every: Literal["daily", "hourly"]
    at: time | None = None
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            close = difflib.get_close_matches(name, sorted(available_timezones()), n=1)
            hint = f"; did you mean {close[0]}?" if close else " (e.g. Europe/London, UTC)"
            raise ValueError(f"unknown time zone {name!r}{hint}") from None
        return name

    @model_validator(mode="after")
    def _time_for_daily(self) -> Digest:
        if self.every == "daily" and self.at is None:
            raise ValueError("a daily digest needs a time, e.g. daily 08:00 Europe/London")
        if self.every == "hourly" and self.at is not None:
            raise ValueError("an hourly digest takes no time; write hourly")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def __str__(self) -> str:
        if self.at is None:
            return self.every
        return f"{self.every} {self.at:%H:%M} {self.timezone}"


def _parse_digest(value: object) -> object:
    """`daily 08:00 Europe/London` → fields of `Digest`; `off` / `immediate` → None (no digest)."""
    if not isinstance(value, str):
        return value
    words = value.split()
    if not words or words[0] in ("off", "immediate"):
        return None
    if words[0] not in ("daily", "hourly") or len(words) > 3:
        raise ValueError(
            f"{value!r} is not a digest; write daily 08:00 Europe/London, hourly, or leave it out"
        )
    fields: dict[str, object] = {"every": words[0]}
    if len(words) > 1:
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", words[1])
        if match is None or int(match[1]) > 23 or int(match[2]) > 59:
            raise ValueError(f"{words[1]!r} is not a time of day; write HH:MM, e.g. 08:00")
        fields["at"] = time(int(match[1]), int(match[2]))
    if len(words) > 2:
        fields["timezone"] = words[2]
    return fields


class TelegramChannel(_Model):
    """Fixed chats that receive their watchlists' alerts; `digest` None means each at once.
    `chat_ids`: numeric ids or public `@usernames`. `link_preview`: show the article's preview
    under each alert (off by default: a preview takes more room than the alert). `burst`: more
    alerts than this for one chat within a minute come as one message listing them."""

    name: str
    type: Literal["telegram"]
    chat_ids: NonEmptyListOf[ChatId]
    digest: Annotated[Digest | None, BeforeValidator(_parse_digest)] = None
    link_preview: bool = False
    burst: BurstLimit = DEFAULT_BURST


class EmailChannel(_Model):
    """`digest` None means every alert is sent at once."""

    name: str
    type: Literal["email"]
    to: NonEmptyListOf[EmailAddress]
    digest: Annotated[Digest | None, BeforeValidator(_parse_digest)] = None


class ConsoleChannel(_Model):
    name: str
    type: Literal["console"]


Channel = Annotated[TelegramChannel | EmailChannel | ConsoleChannel, Field(discriminator="type")]


class TelegramSettings(_Model):
    """The bot: its token (required once this section exists), API root and who may subscribe."""

    token: SecretStr
    api_url: Annotated[str, AfterValidator(_check_http_url)] = "https://api.telegram.org"
    subscriptions: Literal["open", "allowlist", "off"] = "open"
    allow: ListOf[int] = ()
    link_preview: bool = False  # under the alerts to subscribers
    burst: BurstLimit = DEFAULT_BURST  # for each subscriber's chat

    @field_validator("token")
    @classmethod
    def _token_shape(cls, token: SecretStr) -> SecretStr:
        if not re.fullmatch(r"\d+:[A-Za-z0-9_-]+", token.get_secret_value()):
            raise ValueError("does not look like a bot token (digits, a colon, then letters)")
        return token


class EmailSettings(_Model):
    """The SMTP server. `port` defaults to 465 with `ssl: true`, else 587; `starttls` defaults to
    the opposite of `ssl`. The file's `from` key is the `sender` attribute."""

    host: OptionalText = None
    port: Port = 587
    starttls: bool = True
    ssl: bool = False
    username: OptionalText = None
    password: OptionalSecret = None
    sender: Annotated[str, AfterValidator(_check_sender)] = Field(
        default=DEFAULT_FROM, alias="from"
    )
    connections: Annotated[int, Field(ge=1, le=20)] = 1  # open at once; each carries many mails
    # Where readers ask to stop (List-Unsubscribe and the footer): a mailto: or https: URL, with
    # {channel} and {recipient} filled in; by default a mail to the `from` address.
    unsubscribe: Annotated[str | None, AfterValidator(_check_unsubscribe)] = None

    @model_validator(mode="before")
    @classmethod
    def _defaults_follow_ssl(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        ssl = _valid_or(_BOOL, data.get("ssl"), False)
        return {"port": 465 if ssl else 587, "starttls": not ssl} | data

    @field_validator("ssl")
    @classmethod
    def _not_both(cls, ssl: bool, info: ValidationInfo) -> bool:
        if ssl and info.data.get("starttls"):
            raise ValueError("ssl and starttls cannot both be true (ssl is port 465, starttls 587)")
        return ssl


class Settings(_Model):
    """The whole config file. Build it with `load_config` / `parse_config`.

    `feeds` and `watchlists` hold the enabled ones, which are polled and matched: every consumer
    gets only those. `all_feeds` and `all_watchlists` hold the disabled ones too (`enabled:
    false`), in file order, for what lists the configuration.
    `channels` always holds a `console` channel (the built-in one unless the file defines its own);
    `config_dir` is the absolute directory of the config file, for relative feed paths and a
    relative SQLite path (`database.url` holds the absolute one; `relative_database_path` the path
    as written, from which older versions resolved it against the working directory).
    """

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    defaults: DefaultSettings = Field(default_factory=DefaultSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    stories: StorySettings = Field(default_factory=StorySettings)
    feeds: tuple[FeedSettings, ...] = ()
    entities: FrozenMap[Entity] = Field(default_factory=lambda: MappingProxyType({}))
    watchlists: FrozenMap[Watchlist] = Field(default_factory=lambda: MappingProxyType({}))
    channels: FrozenMap[Channel] = Field(default_factory=lambda: MappingProxyType({}))
    telegram: TelegramSettings | None = None
    email: EmailSettings | None = None
    config_dir: Path = Field(default_factory=Path.cwd)
    _relative_database: str | None = PrivateAttr(default=None)
    _all_feeds: tuple[FeedSettings, ...] = PrivateAttr(default=())
    _all_watchlists: Mapping[str, Watchlist] = PrivateAttr(
        default_factory=lambda: MappingProxyType({})
    )
    _from_variables: Mapping[KeyPath, str] = PrivateAttr(
        default_factory=lambda: MappingProxyType({})
    )
    # The file's text, compressed, from which `_lines` is worked out when first asked for: only
    # `monitor check` asks, and kept from the start the line of every key took 3.3 MB of the
    # daemon's memory with 10,000 watchlists (0.2 MB this way).
    _source: bytes = PrivateAttr(default=b"")
    _lines: Mapping[KeyPath, int] | None = PrivateAttr(default=None)
    _file: str = PrivateAttr(default="<string>")

    @property
    def relative_database_path(self) -> str | None:
        """The SQLite path as the file wrote it, when it was relative (else None)."""
        return self._relative_database

    @property
    def all_feeds(self) -> tuple[FeedSettings, ...]:
        """Every feed of the file in its order, the disabled ones too."""
        return self._all_feeds

    @property
    def all_watchlists(self) -> Mapping[str, Watchlist]:
        """Every watchlist of the file, the disabled ones too."""
        return self._all_watchlists

    @property
    def from_variables(self) -> Mapping[KeyPath, str]:
        """The values that came from `${VAR}`, as the file wrote them (`https://${HOST}/feed`),
        by key path (`("feeds", 0, "url")`); a feed's inherited value is under the feed's key
        too. What may be shown of such a value is the reference, never the value."""
        return self._from_variables

    @property
    def file(self) -> str:
        """The config file the settings were read from, as it was named."""
        return self._file

    def line_of(self, path: KeyPath) -> int | None:
        """The line where `path` (or its nearest parent the file wrote) is, if known."""
        return nearest_line(self._line_map(), path)

    def wrote(self, path: KeyPath) -> bool:
        """Whether the file itself has the key `path` (not only a default)."""
        return path in self._line_map()

    def remember_source(self, file: str, text: str, written: Mapping[KeyPath, str]) -> None:
        """Where the settings came from: the loader sets it once, as it builds them, with the
        text it read the YAML from."""
        self._file = file
        self._source = zlib.compress(text.encode("utf-8", "surrogatepass"))
        self._lines = None
        self._from_variables = MappingProxyType(dict(written))

    def _line_map(self) -> Mapping[KeyPath, int]:
        """The line of each key the file wrote, read again from its text (the YAML's structure,
        and so where its keys are, does not depend on the variables its values name)."""
        if self._lines is None:
            from monitor.config.yaml_loader import read_yaml

            if not self._source:  # made in code, not read from a file
                self._lines = MappingProxyType({})
            else:
                text = zlib.decompress(self._source).decode("utf-8", "surrogatepass")
                self._lines = MappingProxyType(read_yaml(text, {}).lines)
        return self._lines

    @model_validator(mode="after")
    def _disabled_aside(self) -> Settings:
        self._all_feeds = self.feeds
        self._all_watchlists = self.watchlists
        # The model is frozen; this validator is one of the last steps of building it.
        if not all(feed.enabled for feed in self.feeds):
            object.__setattr__(self, "feeds", tuple(f for f in self.feeds if f.enabled))
        if not all(watchlist.enabled for watchlist in self.watchlists.values()):
            enabled = {name: w for name, w in self.watchlists.items() if w.enabled}
            object.__setattr__(self, "watchlists", MappingProxyType(enabled))
        return self

    @model_validator(mode="after")
    def _database_beside_the_config(self) -> Settings:
        relative = relative_sqlite_path(self.database.url)
        if relative is not None:
            scheme, _, rest = self.database.url.partition(":///")
            _, question, query = rest.partition("?")
            url = f"{scheme}:///{self.config_dir / relative}{question}{query}"
            # The model is frozen; this validator is the last step of building it.
            object.__setattr__(self, "database", self.database.model_copy(update={"url": url}))
            self._relative_database = relative
        return self

    @model_validator(mode="before")
    @classmethod
    def _complete(cls, data: Any) -> Any:
        """Name each entity, watchlist and channel after its key, add the built-in console channel
        and give each feed the inherited defaults it does not set itself."""
        if not isinstance(data, dict):
            return data
        data = {key: value for key, value in data.items() if value is not None}  # `feeds:` = absent
        for section in ("entities", "watchlists", "channels"):
            if isinstance(data.get(section), dict):
                data[section] = {
                    key: {"name": key} | body if isinstance(body, dict) else body
                    for key, body in data[section].items()
                }
        channels = data.get("channels")
        if channels is None or (isinstance(channels, dict) and CONSOLE not in channels):
            data["channels"] = {CONSOLE: {"name": CONSOLE, "type": CONSOLE}} | (channels or {})
        if isinstance(data.get("feeds"), list):
            defaults, fetch = data.get("defaults"), data.get("fetch")
            inherited = {
                "interval": _valid_or(
                    _DURATION,
                    defaults.get("interval") if isinstance(defaults, dict) else None,
                    DEFAULT_INTERVAL,
                ),
                "allow_private": _valid_or(
                    _BOOL, fetch.get("allow_private") if isinstance(fetch, dict) else None, False
                ),
                "alert_max_age": _valid_or(
                    _MAX_AGE,
                    defaults.get("alert_max_age", DEFAULT_ALERT_MAX_AGE)
                    if isinstance(defaults, dict)
                    else None,
                    DEFAULT_ALERT_MAX_AGE,
                ),
            }
            data["feeds"] = [
                inherited | feed if isinstance(feed, dict) else feed for feed in data["feeds"]
            ]
        return data


# A feed's keys that default to a value of another section, and where that value is written.
INHERITED: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "interval": ("defaults", "interval"),
        "allow_private": ("fetch", "allow_private"),
        "alert_max_age": ("defaults", "alert_max_age"),
    }
)

_BOOL: TypeAdapter[bool] = TypeAdapter(bool)
_DURATION: TypeAdapter[timedelta] = TypeAdapter(Duration)
_MAX_AGE: TypeAdapter[timedelta | None] = TypeAdapter(MaxAge)


def _valid_or(adapter: TypeAdapter[T], value: object, fallback: T) -> T:
    """`value` validated, else `fallback` (a bad value is reported where it was written)."""
    if value is None:
        return fallback
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return fallback
