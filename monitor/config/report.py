"""The error report: schema errors and problems that span sections, worded for the user, each with
its file, line and dotted key (`watchlists.taiwan.query`, `feeds[2].url`).

- pydantic's errors become one-line messages on the user's own keys, with "did you mean" for a
  misspelt key; a value is repeated only when short, not secret and not from a variable.
- Cross-checks run on the raw data, so they are reported even when another part of the file is
  invalid: a watchlist's `notify` names a channel and its `feeds` name feeds, its query parses and
  names defined entities, feed names are unique, a telegram/email channel has its section.
- A problem in a value already reported as broken (an unset `${VAR}`) is not reported again, and a
  value from a variable is named by the variable.

This module does not read YAML or decide what is valid: the YAML loader and the schema do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from pydantic import (
    ValidationError,
)
from pydantic_core import ErrorDetails

from monitor.config.schema import (
    CONSOLE,
    DatabaseSettings,
    DefaultSettings,
    EmailChannel,
    EmailSettings,
    Entity,
    FeedSettings,
    FetchSettings,
    KeyPath,
    ServiceSettings,
    Settings,
    StorySettings,
    TelegramChannel,
    TelegramSettings,
    Watchlist,
    dotted,
)
from monitor.config.yaml_loader import Document, Problem
from monitor.core.query import parse as parse_query
from monitor.core.query import validate as validate_query
from monitor.errors import ConfigProblem, QueryError

# ---- problems from validation --------------------------------------------------------------------


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for model in (
        Settings,
        DatabaseSettings,
        DefaultSettings,
        FetchSettings,
        ServiceSettings,
        StorySettings,
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


_KNOWN_KEYS = _known_keys()


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


def _describe(error: ErrorDetails, path: KeyPath, doc: Document) -> str:
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


def validation_problems(exc: ValidationError, doc: Document) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        path = _data_path(error["loc"], doc.data)
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = (*path, "type")
        problems.append(Problem(path, _describe(error, path, doc)))
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


def cross_check(data: dict[str, object], broken: set[KeyPath]) -> list[Problem]:
    """Problems that span sections. Values in `broken` were already reported (an unset variable)."""
    problems: list[Problem] = []
    if "config_dir" in data:  # a field of Settings, but not a key of the file
        problems.append(Problem(("config_dir",), "unknown key 'config_dir'"))

    feed_names: dict[str, int] = {}
    feeds = data.get("feeds")
    for index, feed in enumerate(feeds if isinstance(feeds, list) else []):
        name = feed.get("name") if isinstance(feed, dict) else None
        if not isinstance(name, str):
            continue
        if name in feed_names:
            first = feed_names[name]
            problems.append(
                Problem(
                    ("feeds", index, "name"), f"duplicate feed name {name!r} (also feeds[{first}])"
                )
            )
        feed_names.setdefault(name, index)

    for section in ("entities", "watchlists", "channels"):
        for key, body in _section(data, section).items():
            if isinstance(body, dict) and "name" in body:
                problems.append(
                    Problem((section, key, "name"), f"unknown key 'name' (the name is {key!r})")
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
                problems.append(Problem((*path, "query"), problem))
        for key, known, noun in (
            ("notify", channel_names, "channel"),
            ("feeds", set(feed_names), "feed"),
        ):
            for position, name in _names(body.get(key)):
                if name not in known:
                    where = (*path, key) if position is None else (*path, key, position)
                    listing = _listing(f"{noun}s", known)
                    problems.append(Problem(where, f"unknown {noun} {name!r}; {listing}"))

    telegram, email = data.get("telegram"), data.get("email")
    for channel, body in _section(data, "channels").items():
        channel_type = body.get("type") if isinstance(body, dict) else None
        if channel_type == "telegram" and not isinstance(telegram, dict):
            problems.append(
                Problem(
                    ("channels", channel, "type"),
                    "a telegram channel needs a telegram: section with the bot token",
                )
            )
        if channel_type == "email" and not isinstance(email, dict):
            problems.append(
                Problem(
                    ("channels", channel, "type"),
                    "an email channel needs an email: section with at least host:",
                )
            )
        if channel_type == "email" and isinstance(email, dict) and not _filled(email.get("host")):
            problems.append(
                Problem(("email", "host"), f"required by the email channel {channel!r}")
            )
    if isinstance(email, dict) and not {("email", "username"), ("email", "password")} & broken:
        if _filled(email.get("username")) and not _filled(email.get("password")):
            problems.append(Problem(("email", "password"), "empty, but username is set"))
        if _filled(email.get("password")) and not _filled(email.get("username")):
            problems.append(Problem(("email", "username"), "empty, but password is set"))
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


def already_reported(path: KeyPath, doc: Document) -> bool:
    return any(path[: len(broken)] == broken for broken in doc.unresolved)


def finish(problems: list[Problem], filename: str, doc: Document) -> list[ConfigProblem]:
    result: list[ConfigProblem] = []
    for problem in problems:
        message = problem.message
        names = doc.env_names.get(problem.path)
        if names and problem.path not in doc.unresolved:
            value = _value_at(doc.data, problem.path)
            message = _hide_value(message, value, doc.written[problem.path])
            message += " (value from " + ", ".join(f"${{{name}}}" for name in names) + ")"
        line = problem.line if problem.line is not None else doc.line_of(problem.path)
        config_problem = ConfigProblem(filename, line, dotted(problem.path), message)
        if config_problem not in result:
            result.append(config_problem)
    return sorted(result, key=lambda p: p.line or 0)


def _value_at(data: object, path: KeyPath) -> object:
    for part in path:
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_list or (isinstance(data, dict) and part in data)):
            return None
        data = data[part]  # type: ignore[index]
    return data


def _hide_value(message: str, value: object, written: str) -> str:
    """`message` with a value that came from a variable replaced by the reference as written:
    `'${DESK}' is not an email address`, never the address itself."""
    if not isinstance(value, str) or not value.strip():
        return message
    message = message.replace(repr(value), repr(written))
    if len(value.strip()) >= 3:  # a shorter one could be part of a word or number of the text
        message = message.replace(value, written)
    return message
