"""What `monitor check` says about a valid config beyond validity: mistakes the schema lets
through, each one line with the file, line and key and what to do.

- errors, where the config surely cannot work as written: a feed URL that will be refused when
  fetched (a loopback or private address without `allow_private` or a range of
  `fetch.allow_networks`, a port of another protocol …), an SQLite database still at the
  place earlier versions read it from (every command refuses to start a second one), and an
  SQLite database whose folder is missing or read-only, or whose file is read-only (`once` and
  `run` refuse to start);
- warnings, where it most likely does not do what was meant: a local feed file that is not
  there, a channel no watchlist notifies, `and`/`or`/`not` in lower case in a query (an ordinary
  word, required like any other).

The service still starts with any of these (a refused feed fails alone); `check` exits 2 for an
error. This module looks at the file system (feed files, the database's folder and old place)
and nothing else: no network, no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from monitor.config.database_location import database_moved_message, old_database_location
from monitor.config.schema import CONSOLE, KeyPath, Settings, dotted
from monitor.core.query import operator_lookalikes, parse
from monitor.errors import ConfigProblem, DatabaseLocationError, UnsafeURLError

LOCALHOST = "127.0.0.1"  # what `localhost` and `*.localhost` name (RFC 6761)


@dataclass(frozen=True)
class Finding:
    """One thing `check` reports about a valid config; `error`: it surely cannot work."""

    problem: ConfigProblem
    error: bool = False


def advise(settings: Settings, cwd: Path | None = None) -> list[Finding]:
    """Every finding about `settings`, in file order. `cwd`: the working directory, where
    earlier versions looked for a relative SQLite database (by default the current one)."""
    findings: list[tuple[KeyPath, str, bool]] = []
    old = old_database_location(settings, cwd)
    if old is not None:
        findings.append((("database", "url"), database_moved_message(settings, old), True))
    findings += _database_location(settings)
    findings += _feed_findings(settings)
    findings += _unused_channels(settings)
    findings += _lookalike_operators(settings)
    result = [
        Finding(ConfigProblem(settings.file, settings.line_of(path), dotted(path), text), error)
        for path, text, error in findings
    ]
    return sorted(result, key=lambda finding: finding.problem.line or 0)


def _database_location(s: Settings) -> list[tuple[KeyPath, str, bool]]:
    # the store's own rules, not a copy: what `once` and `run` would refuse at startup
    from monitor.store.db import check_sqlite_location, sqlite_file

    path = sqlite_file(s.database.url)
    if path is None:
        return []
    try:
        check_sqlite_location(path, create=True)
    except DatabaseLocationError as exc:
        return [(("database", "url"), str(exc), True)]
    return []


def _feed_findings(s: Settings) -> list[tuple[KeyPath, str, bool]]:
    from monitor.fetch import FetchPolicy, check_url  # the fetcher's own rules, not a copy

    findings: list[tuple[KeyPath, str, bool]] = []
    for index, feed in enumerate(s.all_feeds):
        if not feed.enabled:  # off on purpose, perhaps because it does not work yet
            continue
        path: KeyPath = ("feeds", index, "url")
        written = s.from_variables.get(path)
        parts = urlsplit(feed.url)
        if parts.scheme in ("http", "https"):
            policy = FetchPolicy(
                allow_private=feed.allow_private, allowed_networks=s.fetch.allow_networks
            )
            host = (parts.hostname or "").rstrip(".").lower()
            named = ""
            if host == "localhost" or host.endswith(".localhost"):
                user, at, host_port = parts.netloc.rpartition("@")
                _, colon, port = host_port.partition(":")
                parts = parts._replace(netloc=f"{user}{at}{LOCALHOST}{colon}{port}")
                named = f"{host} is {LOCALHOST}: "
            try:
                check_url(parts.geturl(), policy)
            except UnsafeURLError as exc:
                reason = (
                    named + exc.reason if written is None else f"the fetch rules refuse {written}"
                )
                findings.append((path, f"this feed will never be fetched: {reason}", True))
            continue
        file = s.config_dir / feed.url
        shown = written or str(file)
        if not file.exists():
            findings.append(
                (
                    path,
                    f"there is no file {shown}: create it, or correct the path "
                    "(a relative path is relative to the config file's folder)",
                    False,
                )
            )
        elif not file.is_file():
            findings.append((path, f"{shown} is not a file: give the path of a feed file", False))
    return findings


def _unused_channels(s: Settings) -> list[tuple[KeyPath, str, bool]]:
    used = {name for watchlist in s.all_watchlists.values() for name in watchlist.notify}
    findings: list[tuple[KeyPath, str, bool]] = []
    for name in s.channels:
        if name not in used and (name != CONSOLE or s.wrote(("channels", name))):
            findings.append(
                (
                    ("channels", name),
                    f"no watchlist notifies channel {name!r}, so it gets no alerts: "
                    "add it to a watchlist's notify, or remove it",
                    False,
                )
            )
    return findings


def _lookalike_operators(s: Settings) -> list[tuple[KeyPath, str, bool]]:
    findings: list[tuple[KeyPath, str, bool]] = []
    for name, watchlist in s.all_watchlists.items():
        for term in operator_lookalikes(parse(watchlist.query)):
            word, operator = term.text, term.text.upper()
            findings.append(
                (
                    ("watchlists", name, "query"),
                    f"{word!r} at column {term.column} is an ordinary word that every match must "
                    f'contain: write {operator} for the operator, or "{word}" if you mean the word',
                    False,
                )
            )
    return findings
