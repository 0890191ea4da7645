"""OPML subscription lists ↔ the config's feeds: which outlines become which feed entries, and the
OPML 2.0 document listing the configured feeds.

Reading is listparser's (folders, OPML 1.0 and 2.0, broken files read as far as they go); it is
given the file's bytes, so it fetches nothing. A feed is an outline with an `xmlUrl` that is an
http(s) URL; it is named after its title (`Allen Pike` → `allen-pike`), or its host when the title
has no Latin letters or digits (`الشرق الأوسط` at aawsat.com → `aawsat-com`), made unique with
`-2`, `-3` … A feed whose URL is already configured, or listed twice, is skipped.

Writing builds OPML 2.0 with the standard library's ElementTree (which escapes every attribute);
no date, so the same config always gives the same document. Local feed files are not exported:
another program cannot read a path relative to our config file.

No I/O here: the caller reads the file and prints or writes the result.
"""

from __future__ import annotations

import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import listparser

__all__ = [
    "ConfiguredFeed",
    "Import",
    "ImportedFeed",
    "OpmlError",
    "export_opml",
    "plan_import",
    "read_opml",
    "same_url",
]


class OpmlError(ValueError):
    """The bytes are not an OPML subscription list with any feed in it."""


@dataclass(frozen=True)
class ImportedFeed:
    """One feed to add to the config: its new name, URL, and the OPML's title and folders."""

    name: str
    url: str
    title: str = ""
    folders: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConfiguredFeed:
    """What the export needs of a configured feed."""

    name: str
    url: str
    language: str | None = None


@dataclass(frozen=True)
class Import:
    """What an import adds, and the OPML's feeds it skips with why."""

    feeds: tuple[ImportedFeed, ...]
    already_configured: tuple[str, ...]  # the names they have in the config
    repeated: int  # outlines whose URL came earlier in the OPML
    not_http: tuple[str, ...]  # the URLs of outlines that are not http(s) feeds


def read_opml(data: bytes) -> list[ImportedFeed]:
    """The feeds of an OPML document, in document order (names not decided yet: empty).
    Raises OpmlError when it is not OPML or lists no feed."""
    parsed = listparser.parse(data)
    if not str(parsed.get("version", "")).startswith("opml"):
        reason = parsed.get("bozo_exception") or "no <opml> element"
        raise OpmlError(f"not an OPML subscription list ({reason})")
    feeds = []
    for entry in parsed.feeds:
        url = str(entry.get("url", "")).strip()
        folders = tuple("/".join(path) for path in entry.get("categories", []) if path)
        feeds.append(ImportedFeed("", url, str(entry.get("title", "")).strip(), folders))
    if not feeds:
        raise OpmlError("the OPML lists no feed (no outline with an xmlUrl)")
    return feeds


def same_url(a: str, b: str) -> bool:
    """Whether two feed URLs are the same feed for an import: scheme and host in any case, and a
    trailing slash, do not count."""
    return _url_key(a) == _url_key(b)


def plan_import(outlines: Sequence[ImportedFeed], configured: Iterable[ConfiguredFeed]) -> Import:
    """Name each new http(s) feed of `outlines` and skip those already in `configured` (or
    earlier in `outlines`)."""
    configured = list(configured)
    by_url = {_url_key(feed.url): feed.name for feed in configured}
    taken = {feed.name for feed in configured}
    added: list[ImportedFeed] = []
    present: dict[str, None] = {}  # names, in order, once each
    seen: set[tuple[str, str, str, str]] = set()
    repeated = 0
    not_http: list[str] = []
    for outline in outlines:
        if urlsplit(outline.url).scheme.lower() not in ("http", "https"):
            not_http.append(outline.url)
            continue
        key = _url_key(outline.url)
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        if key in by_url:
            present[by_url[key]] = None
            continue
        name = _unique(_base_name(outline), taken)
        taken.add(name)
        added.append(ImportedFeed(name, outline.url, outline.title, outline.folders))
    return Import(tuple(added), tuple(present), repeated, tuple(not_http))


def export_opml(feeds: Iterable[ConfiguredFeed], title: str = "news-monitor feeds") -> str:
    """An OPML 2.0 document with one outline per http(s) feed, in the given order."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    body = ET.SubElement(root, "body")
    for feed in feeds:
        if urlsplit(feed.url).scheme.lower() not in ("http", "https"):
            continue
        outline = ET.SubElement(
            body, "outline", type="rss", text=feed.name, title=feed.name, xmlUrl=feed.url
        )
        if feed.language:
            outline.set("language", feed.language)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _url_key(url: str) -> tuple[str, str, str, str]:
    parts = urlsplit(url.strip())
    return (parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query)


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:40].strip("-")


def _base_name(feed: ImportedFeed) -> str:
    host = (urlsplit(feed.url).hostname or "").removeprefix("www.")
    return _slug(feed.title) or _slug(host) or "feed"


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    number = 2
    while f"{name}-{number}" in taken:
        number += 1
    return f"{name}-{number}"
