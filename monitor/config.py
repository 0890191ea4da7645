"""The YAML config file (SPEC §2) → validated, frozen `Settings`, or one `ConfigError` listing every
problem with its file, line and dotted key (`watchlists.taiwan.query`, `feeds[2].url`).

Entry points are `load_config` and `parse_config`; `summary` renders a loaded config for
`monitor check`. Only `cli` reads the config; everything else receives plain values from it.

How YAML is read (FAULTS 38–44). PyYAML's YAML 1.1 resolver turns `no` into False, `010` into 8 and
`12:30` into 750, and lets a duplicate key silently win. So this module composes the YAML into nodes
and builds plain data itself:
  - every scalar stays the text the user typed, and the schema type decides what it means:
    `language: no` is Norwegian, a feed may be called `on`, `digest: daily 12:30` keeps its time,
    `010` is 10 where a number is expected and "010" where text is. `true`/`false` (and
    yes/no/on/off) are booleans only where the key is a boolean;
  - only `null`, `~` and an empty value are null; `<<` merge keys work (top-level `x-…` keys are
    ignored, a place for anchors); other tags are refused;
  - a duplicate key is an error naming both lines;
  - `${VAR}` / `${VAR:-default}` are replaced in every scalar value (not in keys) from the
    environment mapping given; `$${` is a literal `${`. A value that came from a variable is never
    repeated in a message, only the variable's name;
  - an empty file is an error ("config file is empty"): most likely the wrong file. `{}` asks for
    every default.
A single value where a list is expected (`notify: analysts`) is read as a one-element list.

Checks that span sections (a watchlist's `notify` names a channel, its `feeds` name feeds, its query
parses and names defined entities, a telegram/email channel has its section) run on the raw data, so
they are reported even when another part of the file is invalid.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from email.utils import parseaddr
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapSerializer,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from monitor.core.collector import collector_paused
from monitor.core.query import parse as parse_query
from monitor.core.query import validate as validate_query
from monitor.core.text import term_tokens
from monitor.durations import format_duration, format_size, parse_duration, parse_size
from monitor.errors import ConfigError, ConfigProblem, QueryError

__all__ = [
    "ConsoleChannel",
    "DatabaseSettings",
    "DefaultSettings",
    "Digest",
    "EmailChannel",
    "EmailSettings",
    "Entity",
    "FeedSettings",
    "FetchSettings",
    "ServiceSettings",
    "Settings",
    "TelegramChannel",
    "TelegramSettings",
    "Watchlist",
    "load_config",
    "parse_config",
    "summary",
]

CONSOLE = "console"  # the built-in channel a watchlist without `notify` goes to
DEFAULT_INTERVAL = timedelta(minutes=10)
DEFAULT_USER_AGENT = "news-monitor/1.0 (+https://example.org/about-this-bot)"
DEFAULT_FROM = "News monitor <monitor@example.org>"

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


def _check_database_url(url: str) -> str:
    dialect = urlsplit(url).scheme.split("+", 1)[0]
    if dialect not in ("sqlite", "postgresql") or "://" not in url:
        raise ValueError("expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
    return url


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


def _freeze(mapping: Mapping[str, T]) -> Mapping[str, T]:
    return MappingProxyType(dict(mapping))


def _serialize_mapping(mapping: Mapping[str, Any], handler: Callable[[Any], Any]) -> Any:
    return handler(dict(mapping))


Duration = Annotated[timedelta, BeforeValidator(_to_duration)]
ByteSize = Annotated[int, BeforeValidator(_to_size)]
Name = Annotated[str, AfterValidator(_check_name)]
FeedName = Annotated[str, AfterValidator(_check_feed_name)]
Language = Annotated[str, AfterValidator(_check_language)]
Text = Annotated[str, AfterValidator(_check_not_blank)]
OptionalText = Annotated[str | None, BeforeValidator(_blank_to_none)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_blank_to_none)]
EmailAddress = Annotated[str, AfterValidator(_check_address)]
Port = Annotated[int, Field(ge=1, le=65535)]
ListOf = Annotated[tuple[T, ...], BeforeValidator(_one_or_many)]
NonEmptyListOf = Annotated[tuple[T, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
FrozenMap = Annotated[Mapping[Name, T], AfterValidator(_freeze), WrapSerializer(_serialize_mapping)]


# ---- the schema ----------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class DatabaseSettings(_Model):
    """Where items, stories and alerts are stored. `url` may hold a password: not in repr."""

    url: Annotated[str, AfterValidator(_check_database_url)] = Field(
        default="sqlite:///monitor.db", repr=False
    )
    retention: Duration = timedelta(days=90)


class DefaultSettings(_Model):
    """Defaults for every feed."""

    interval: Duration = DEFAULT_INTERVAL
    timeout: Duration = timedelta(seconds=20)


class FetchSettings(_Model):
    user_agent: Text = DEFAULT_USER_AGENT
    max_body: ByteSize = 10 * 1024 * 1024
    per_host: int = Field(default=2, ge=1, le=100)
    proxy: Annotated[OptionalText, AfterValidator(_check_proxy)] = Field(default=None, repr=False)
    allow_private: bool = False


class ServiceSettings(_Model):
    listen: Annotated[OptionalText, AfterValidator(_check_listen)] = "127.0.0.1:8321"
    log_format: Literal["text", "json"] = "text"


class FeedSettings(_Model):
    """One feed. `interval` and `allow_private` are always set after loading: when the file leaves
    them out they are inherited from `defaults.interval` and `fetch.allow_private`. `url` is an
    http(s) URL or a local path, relative to `Settings.config_dir`."""

    name: FeedName
    url: Annotated[str, AfterValidator(_check_feed_location)]
    interval: Duration = DEFAULT_INTERVAL
    language: Language | None = None
    full_text: bool = False
    allow_private: bool = False


class Entity(_Model):
    """`@name` in a query: the OR of its aliases, each alias a phrase."""

    name: str
    aliases: NonEmptyListOf[Annotated[str, AfterValidator(_check_alias)]]


class Watchlist(_Model):
    """A named query and where its alerts go.

    `notify` lists channel names. Without `notify` in the file it is `("console",)`, the built-in
    console channel (SPEC §2: "a watchlist without notify goes to the console"); an explicit
    `notify: []` means only Telegram subscribers get it. Empty `languages` / `feeds` mean all.
    """

    name: str
    query: Text
    notify: ListOf[Name] = (CONSOLE,)
    languages: ListOf[Language] = ()
    feeds: ListOf[FeedName] = ()


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
    """Fixed chats that receive their watchlists' alerts; `digest` None means each at once."""

    name: str
    type: Literal["telegram"]
    chat_ids: NonEmptyListOf[int]
    digest: Annotated[Digest | None, BeforeValidator(_parse_digest)] = None


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

    `channels` always holds a `console` channel (the built-in one unless the file defines its own);
    `config_dir` is the absolute directory of the config file, for relative feed paths.
    """

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    defaults: DefaultSettings = Field(default_factory=DefaultSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    feeds: tuple[FeedSettings, ...] = ()
    entities: FrozenMap[Entity] = Field(default_factory=lambda: MappingProxyType({}))
    watchlists: FrozenMap[Watchlist] = Field(default_factory=lambda: MappingProxyType({}))
    channels: FrozenMap[Channel] = Field(default_factory=lambda: MappingProxyType({}))
    telegram: TelegramSettings | None = None
    email: EmailSettings | None = None
    config_dir: Path = Field(default_factory=Path.cwd)

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
            }
            data["feeds"] = [
                inherited | feed if isinstance(feed, dict) else feed for feed in data["feeds"]
            ]
        return data


_BOOL: TypeAdapter[bool] = TypeAdapter(bool)
_DURATION: TypeAdapter[timedelta] = TypeAdapter(Duration)


def _valid_or(adapter: TypeAdapter[T], value: object, fallback: T) -> T:
    """`value` validated, else `fallback` (a bad value is reported where it was written)."""
    if value is None:
        return fallback
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return fallback


# ---- reading YAML --------------------------------------------------------------------------------

KeyPath = tuple[str | int, ...]
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool")}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
MAX_VALUES = 100_000  # aliases can multiply a small file (billion laughs); no config is this big
MAX_DEPTH = 50


class _Composer(yaml.SafeLoader):
    """Composes nodes and resolves only null and `<<`: every other scalar stays a string, and the
    schema decides its type. This keeps `no`, `on`, `010` and `12:30` as the user typed them."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - PyYAML's own class attribute


_Composer.add_implicit_resolver(
    _NULL_TAG, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Composer.add_implicit_resolver(_MERGE_TAG, re.compile(r"^<<$"), ["<"])

if hasattr(yaml, "CSafeLoader"):

    class _FastComposer(yaml.CSafeLoader):
        """The same resolution on LibYAML's parser: 10× faster on 10,000 watchlists. Invalid YAML
        is read again with `_Composer`, whose messages say more."""

        yaml_implicit_resolvers = _Composer.yaml_implicit_resolvers

    _FAST_COMPOSER: Any = _FastComposer
else:  # pragma: no cover - PyYAML built without LibYAML
    _FAST_COMPOSER = _Composer


def _compose(text: str) -> yaml.Node | None:
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_FAST_COMPOSER)
    except yaml.YAMLError:
        node = yaml.compose(text, Loader=_Composer)  # raises with the better message
    return node


@dataclass(frozen=True)
class _Problem:
    path: KeyPath
    message: str
    line: int | None = None  # None: the line of `path` (or its nearest written parent)


@dataclass
class _Document:
    """Plain data built from the YAML, and where each key was written."""

    data: object = None
    lines: dict[KeyPath, int] = field(default_factory=dict)
    env_names: dict[KeyPath, tuple[str, ...]] = field(default_factory=dict)
    unresolved: set[KeyPath] = field(default_factory=set)  # values already reported as broken
    problems: list[_Problem] = field(default_factory=list)

    def line_of(self, path: KeyPath) -> int | None:
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
_ENV_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class _Builder:
    def __init__(self, env: Mapping[str, str], doc: _Document) -> None:
        self.env = env
        self.doc = doc
        self.values = 0

    def build(self, node: yaml.Node, path: KeyPath, active: frozenset[int]) -> object:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooLarge
        if len(path) > MAX_DEPTH or id(node) in active:
            what = "nested too deeply" if len(path) > MAX_DEPTH else "a recursive alias"
            self.fail(path, f"{what}; not supported here", node)
            return None
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            return self.mapping(node, path, active | {id(node)})
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            return [
                self.item(child, (*path, index), active | {id(node)})
                for index, child in enumerate(node.value)
            ]
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag in _PLAIN_TAGS:
            return self.interpolate(node.value, path, node)
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        self.fail(path, f"the YAML tag {tag} is not supported here", node)
        return None

    def item(self, node: yaml.Node, path: KeyPath, active: frozenset[int]) -> object:
        self.doc.lines[path] = node.start_mark.line + 1
        return self.build(node, path, active)

    def mapping(self, node: yaml.MappingNode, path: KeyPath, active: frozenset[int]) -> object:
        result: dict[str, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in self.merge_sources(value_node, path):
                    merged = self.build(source, path, active)
                    if isinstance(merged, dict):
                        result = merged | result  # the first source wins, as the YAML spec says
        first_line: dict[str, int] = {}
        explicit: dict[str, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(path, "a key must be a plain name, not a list or mapping", key_node)
                continue
            key = str(key_node.value)
            key_path = (*path, key)
            if key in first_line:
                self.doc.problems.append(
                    _Problem(
                        key_path,
                        f"duplicate key {key!r}: first at line {first_line[key]}, "
                        f"again at line {line}",
                        line,
                    )
                )
                continue
            first_line[key] = line
            self.doc.lines[key_path] = line
            explicit[key] = self.build(value_node, key_path, active)
        return result | explicit

    def merge_sources(self, node: yaml.Node, path: KeyPath) -> list[yaml.Node]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if all(isinstance(source, yaml.MappingNode) for source in sources):
            return list(sources)
        self.fail(path, "<< must be followed by a mapping or a list of mappings", node)
        return []

    def interpolate(self, text: str, path: KeyPath, node: yaml.Node) -> str:
        names: list[str] = []
        broken = False

        def replace(match: re.Match[str]) -> str:
            nonlocal broken
            if match.group(0) == "$${":
                return "${"
            body = _ENV_BODY.fullmatch(match.group(1) or "")
            if match.group(1) is None or body is None:
                broken = True
                self.fail(path, "malformed ${...}: write ${NAME} or ${NAME:-default}", node)
                return ""
            name, default = body.group(1), body.group(2)
            names.append(name)
            value = self.env.get(name)
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                broken = True
                self.fail(
                    path,
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-default}} to make it optional)",
                    node,
                )
                return ""
            return value

        if "$" not in text:
            return text
        result = _ENV_REFERENCE.sub(replace, text)
        if names:
            self.doc.env_names[path] = tuple(names)
        if broken:
            self.doc.unresolved.add(path)
        return result

    def fail(self, path: KeyPath, message: str, node: yaml.Node) -> None:
        self.doc.problems.append(_Problem(path, message, node.start_mark.line + 1))
        self.doc.unresolved.add(path)


class _TooLarge(Exception):
    pass


def _read_yaml(text: str, env: Mapping[str, str]) -> _Document:
    doc = _Document()
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "cannot be read"
        if exc.context and exc.problem and exc.context.startswith("while"):
            at = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            message += f" ({exc.context}{at})"
        elif exc.context and exc.problem:
            message = f"{exc.context}, {exc.problem}"
        if "'\\t'" in message:
            message += "; YAML does not allow tabs for indentation"
        doc.problems.append(
            _Problem((), f"invalid YAML: {message}", mark.line + 1 if mark else None)
        )
        return doc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        doc.problems.append(_Problem((), f"invalid YAML: {exc.reason} (#x{code:04x})", line))
        return doc
    except RecursionError:
        doc.problems.append(_Problem((), "invalid YAML: nested too deeply"))
        return doc
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL_TAG):
        doc.problems.append(_Problem((), "config file is empty (write {} to use every default)"))
        return doc
    if not isinstance(root, yaml.MappingNode):
        doc.problems.append(
            _Problem((), "the file must be a mapping of sections such as feeds: and watchlists:", 1)
        )
        return doc
    try:
        doc.data = _Builder(env, doc).build(root, (), frozenset())
    except _TooLarge:
        doc.problems.append(
            _Problem((), f"the file expands to more than {MAX_VALUES} values (aliases?)")
        )
    return doc


# ---- problems from validation --------------------------------------------------------------------


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for model in (
        Settings,
        DatabaseSettings,
        DefaultSettings,
        FetchSettings,
        ServiceSettings,
        FeedSettings,
        Entity,
        Watchlist,
        TelegramChannel,
        EmailChannel,
        TelegramSettings,
        EmailSettings,
    ):
        keys.update(info.alias or name for name, info in model.model_fields.items())
    return keys - {"config_dir"}


_SECRET_KEYS = {"token", "password", "url", "proxy", "username"}
_MESSAGES = {
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "string_type": "expected a single value (text)",
    "dict_type": "expected a mapping (key: value lines)",
    "model_type": "expected a mapping (key: value lines)",
    "model_attributes_type": "expected a mapping (key: value lines)",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def _data_path(loc: tuple[str | int, ...], data: object) -> KeyPath:
    """Map a pydantic error location onto the user's data. Parts that are not in the data (union
    tags such as `email`, or an index into a bare value read as a list) are skipped; a missing key,
    always the last part, is kept so the message names it."""
    path: list[str | int] = []
    node = data
    for position, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]  # type: ignore[index]
            path.append(part)
        elif position == len(loc) - 1 and isinstance(node, dict) and part != "[key]":
            path.append(part)
    return tuple(path)


def _describe(error: ErrorDetails, path: KeyPath, doc: _Document) -> str:
    kind, context, value = error["type"], error.get("ctx", {}), error["input"]
    if kind == "extra_forbidden":
        key = str(path[-1])
        close = difflib.get_close_matches(key, sorted(_KNOWN_KEYS), n=1, cutoff=0.75)
        return f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
    if kind == "missing":
        return "required, but missing"
    if kind == "union_tag_invalid":
        return f"unknown channel type {context['tag']!r}; use telegram, email or console"
    if kind == "union_tag_not_found":
        return "required, but missing: the channel type (telegram, email or console)"
    if "[key]" in error["loc"]:
        return str(context.get("error", error["msg"]))
    if kind in ("value_error", "assertion_error"):
        return str(context.get("error", error["msg"]))
    if kind == "literal_error":
        message = f"expected {context['expected']}"
    elif kind in ("greater_than_equal", "less_than_equal"):
        bound = "at least" if kind == "greater_than_equal" else "at most"
        limit = context["ge"] if kind == "greater_than_equal" else context["le"]
        message = f"must be {bound} {limit}"
    elif value is None:
        return "has no value; write one or remove the key"
    else:
        message = _MESSAGES.get(kind) or error["msg"][:1].lower() + error["msg"][1:]
    shown = (
        isinstance(value, str)
        and len(value) <= 60
        and not _SECRET_KEYS.intersection(p for p in path if isinstance(p, str))
        and path not in doc.env_names
    )
    if isinstance(value, list | dict) and kind not in ("list_type", "tuple_type"):
        return f"{message}, not a {'list' if isinstance(value, list) else 'mapping'}"
    return f"{message} (got {value!r})" if shown else message


def _validation_problems(exc: ValidationError, doc: _Document) -> list[_Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        path = _data_path(error["loc"], doc.data)
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = (*path, "type")
        problems.append(_Problem(path, _describe(error, path, doc)))
    return problems


# ---- checks across sections ----------------------------------------------------------------------


def _section(data: dict[str, object], name: str) -> dict[str, object]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _names(value: object) -> Iterator[tuple[int | None, str]]:
    """(index or None for a bare value, name) for each name in a list-or-single value."""
    if isinstance(value, str):
        yield None, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield index, item


def _listing(kind: str, names: set[str]) -> str:
    return f"{kind}: {', '.join(sorted(names))}" if names else f"no {kind} are defined"


def _cross_check(data: dict[str, object], broken: set[KeyPath]) -> list[_Problem]:
    """Problems that span sections. Values in `broken` were already reported (an unset variable)."""
    problems: list[_Problem] = []
    if "config_dir" in data:  # a field of Settings, but not a key of the file
        problems.append(_Problem(("config_dir",), "unknown key 'config_dir'"))

    feed_names: dict[str, int] = {}
    feeds = data.get("feeds")
    for index, feed in enumerate(feeds if isinstance(feeds, list) else []):
        name = feed.get("name") if isinstance(feed, dict) else None
        if not isinstance(name, str):
            continue
        if name in feed_names:
            first = feed_names[name]
            problems.append(
                _Problem(
                    ("feeds", index, "name"), f"duplicate feed name {name!r} (also feeds[{first}])"
                )
            )
        feed_names.setdefault(name, index)

    for section in ("entities", "watchlists", "channels"):
        for key, body in _section(data, section).items():
            if isinstance(body, dict) and "name" in body:
                problems.append(
                    _Problem((section, key, "name"), f"unknown key 'name' (the name is {key!r})")
                )

    entity_names = set(_section(data, "entities"))
    channel_names = set(_section(data, "channels")) | {CONSOLE}
    for watchlist, body in _section(data, "watchlists").items():
        if not isinstance(body, dict):
            continue
        path: KeyPath = ("watchlists", watchlist)
        query = body.get("query")
        if isinstance(query, str) and query.strip():
            problem = _query_problem(query, entity_names)
            if problem:
                problems.append(_Problem((*path, "query"), problem))
        for key, known, noun in (
            ("notify", channel_names, "channel"),
            ("feeds", set(feed_names), "feed"),
        ):
            for position, name in _names(body.get(key)):
                if name not in known:
                    where = (*path, key) if position is None else (*path, key, position)
                    listing = _listing(f"{noun}s", known)
                    problems.append(_Problem(where, f"unknown {noun} {name!r}; {listing}"))

    telegram, email = data.get("telegram"), data.get("email")
    for channel, body in _section(data, "channels").items():
        channel_type = body.get("type") if isinstance(body, dict) else None
        if channel_type == "telegram" and not isinstance(telegram, dict):
            problems.append(
                _Problem(
                    ("channels", channel, "type"),
                    "a telegram channel needs a telegram: section with the bot token",
                )
            )
        if channel_type == "email" and not isinstance(email, dict):
            problems.append(
                _Problem(
                    ("channels", channel, "type"),
                    "an email channel needs an email: section with at least host:",
                )
            )
        if channel_type == "email" and isinstance(email, dict) and not _filled(email.get("host")):
            problems.append(
                _Problem(("email", "host"), f"required by the email channel {channel!r}")
            )
    if isinstance(email, dict) and not {("email", "username"), ("email", "password")} & broken:
        if _filled(email.get("username")) and not _filled(email.get("password")):
            problems.append(_Problem(("email", "password"), "empty, but username is set"))
        if _filled(email.get("password")) and not _filled(email.get("username")):
            problems.append(_Problem(("email", "username"), "empty, but password is set"))
    return problems


def _filled(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _query_problem(query: str, entity_names: set[str]) -> str | None:
    try:
        validate_query(query, entity_names)
    except QueryError as exc:
        try:
            parse_query(query)
        except QueryError:
            verdict = "does not parse"
        else:
            verdict = "is invalid"
        return f"query {query!r} {verdict} at column {exc.column}: {exc.message}"
    return None


# ---- public API ----------------------------------------------------------------------------------


def parse_config(
    text: str, filename: str = "<string>", env: Mapping[str, str] | None = None
) -> Settings:
    """Validate config text. `filename` names the file in problems and fixes `config_dir` (the
    current directory for "<string>"). `env` defaults to `os.environ`. Raises ConfigError."""
    doc = _read_yaml(text.removeprefix("\ufeff"), os.environ if env is None else env)
    problems = list(doc.problems)
    settings: Settings | None = None
    if isinstance(doc.data, dict):
        # Top-level `x-…` keys are ignored, a place for YAML anchors (as in Docker Compose).
        data = {key: value for key, value in doc.data.items() if not key.startswith("x-")}
        config_dir = Path.cwd() if filename.startswith("<") else Path(filename).absolute().parent
        try:
            settings = Settings.model_validate(data | {"config_dir": config_dir})
        except ValidationError as exc:
            problems += _validation_problems(exc, doc)
        problems += _cross_check(data, doc.unresolved)
    problems = [p for p in problems if p in doc.problems or not _already_reported(p.path, doc)]
    if problems or settings is None:
        raise ConfigError(_finish(problems, filename, doc))
    return settings


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the config file at `path`. Raises ConfigError, also if unreadable."""
    filename = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem(filename, None, "", f"cannot read the file: {reason}")]
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [ConfigProblem(filename, line, "", "the file is not UTF-8 text")]
        ) from None
    with collector_paused():  # 10,000 watchlists make many objects, all kept
        return parse_config(text, filename, env)


def _already_reported(path: KeyPath, doc: _Document) -> bool:
    return any(path[: len(broken)] == broken for broken in doc.unresolved)


def _finish(problems: list[_Problem], filename: str, doc: _Document) -> list[ConfigProblem]:
    result: list[ConfigProblem] = []
    for problem in problems:
        message = problem.message
        names = doc.env_names.get(problem.path)
        if names and problem.path not in doc.unresolved:
            message += " (value from " + ", ".join(f"${{{name}}}" for name in names) + ")"
        line = problem.line if problem.line is not None else doc.line_of(problem.path)
        config_problem = ConfigProblem(filename, line, _dotted(problem.path), message)
        if config_problem not in result:
            result.append(config_problem)
    return sorted(result, key=lambda p: p.line or 0)


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


_KNOWN_KEYS = _known_keys()


# ---- summary -------------------------------------------------------------------------------------


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary(settings: Settings) -> str:
    """What `monitor check` prints for a valid config: one screen, no secrets."""
    s = settings
    lines = [
        f"database    {_hide_password(s.database.url)}, "
        f"keep {format_duration(s.database.retention)}",
        f"defaults    poll every {format_duration(s.defaults.interval)}, "
        f"timeout {format_duration(s.defaults.timeout)}",
        f"fetch       max body {format_size(s.fetch.max_body)}, {s.fetch.per_host} per host, "
        f"proxy {'set' if s.fetch.proxy else 'none'}, "
        f"private addresses {'allowed' if s.fetch.allow_private else 'refused'}",
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
