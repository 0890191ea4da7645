"""What `monitor match FILE|URL|-` reads (SPEC §7): each input → Articles, or an InputError.

* ``.txt``: UTF-8 (a BOM is dropped); the first non-empty line is the title, the rest the body.
* ``.html`` / ``.htm``: the page's title and main text (trafilatura), else its <title> and all text.
* ``.xml`` ``.rss`` ``.atom`` ``.rdf`` ``.json``: a feed, one Article per item.
* any other file, and ``-`` (stdin): recognised by content: a feed, an HTML page, else text.
* ``http(s)://…``: fetched with `monitor.fetch` under the given policy, then a feed or a page by
  content. Other URL schemes are refused, as `fetch` refuses them.

One bad input never stops the others: each gives its own result, named as it was given.
Articles are not tagged with a source.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from monitor.errors import FeedParseError, FetchError, InputError
from monitor.feeds import (
    clean_text,
    html_title,
    html_to_text,
    normalise_language,
    one_line,
    parse_feed,
    sniff_format,
)
from monitor.fetch import FetchPolicy, fetch, fetch_local
from monitor.model import Article

__all__ = ["STDIN", "InputResult", "is_url", "read_input", "read_inputs"]

STDIN = "-"
TEXT_SUFFIXES = frozenset({".txt"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
FEED_SUFFIXES = frozenset({".xml", ".rss", ".atom", ".rdf", ".json"})

_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Schemes without "//" that are still meant as URLs, not as file names with a colon.
_OPAQUE_SCHEMES = frozenset({"data", "javascript", "mailto", "file", "feed", "about", "urn"})
_HTML_LANG = re.compile(r"<html\b[^>]*?\blang\s*=\s*[\"']?([A-Za-z0-9_-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class InputResult:
    """One input of `monitor match`: its Articles, or the error that stopped it."""

    name: str
    articles: list[Article] = field(default_factory=list)
    error: InputError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def is_url(spec: str) -> bool:
    """Whether a `monitor match` argument is meant as a URL rather than a file name."""
    found = _URL_SCHEME.match(spec)
    if found is None:
        return False
    return spec[found.end() :].startswith("//") or found.group(1).lower() in _OPAQUE_SCHEMES


def read_inputs(
    specs: Sequence[str],
    *,
    policy: FetchPolicy,
    stdin: BinaryIO,
    base_dir: Path | None = None,
    now: datetime | None = None,
) -> Iterator[InputResult]:
    """Read every input in order, lazily. Call from synchronous code (the CLI): URLs are fetched
    on an event loop of its own. Relative paths are relative to `base_dir` (default: the current
    directory); `now` stands in for missing feed dates (default: the current time)."""
    runner: asyncio.Runner | None = None
    try:
        for spec in specs:
            if is_url(spec):
                runner = runner or asyncio.Runner()
                yield runner.run(
                    read_input(spec, policy=policy, stdin=stdin, base_dir=base_dir, now=now)
                )
            else:
                yield _read_local_input(spec, policy, stdin, base_dir, now)
    finally:
        if runner is not None:
            runner.close()


async def read_input(
    spec: str,
    *,
    policy: FetchPolicy,
    stdin: BinaryIO,
    base_dir: Path | None = None,
    now: datetime | None = None,
) -> InputResult:
    """Read one input (file, URL or "-"); for callers already inside an event loop."""
    if not is_url(spec):
        return _read_local_input(spec, policy, stdin, base_dir, now)
    try:
        try:
            fetched = await fetch(spec, policy=policy)
        except FetchError as exc:
            raise InputError(spec, exc.reason) from exc
        body = fetched.body or b""
        articles = _articles_from_content(
            body, spec, url=fetched.url, headers=fetched.headers, now=now
        )
    except InputError as exc:
        return InputResult(spec, error=exc)
    return InputResult(spec, articles)


def _read_local_input(
    spec: str, policy: FetchPolicy, stdin: BinaryIO, base_dir: Path | None, now: datetime | None
) -> InputResult:
    try:
        if spec == STDIN:
            articles = _articles_from_content(_read_stdin(stdin, policy.max_body), spec, now=now)
        else:
            articles = _read_file(spec, base_dir or Path.cwd(), policy.max_body, now)
    except InputError as exc:
        return InputResult(spec, error=exc)
    return InputResult(spec, articles)


def _read_stdin(stdin: BinaryIO, max_body: int) -> bytes:
    data = stdin.read(max_body + 1)
    if len(data) > max_body:
        raise InputError(STDIN, f"more than {max_body} bytes")
    return data


def _read_file(spec: str, base_dir: Path, max_body: int, now: datetime | None) -> list[Article]:
    try:
        data = fetch_local(spec, base_dir, max_body).body or b""
    except FetchError as exc:
        raise InputError(spec, exc.reason) from exc
    suffix = Path(spec).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return [_text_article(data, spec)]
    if suffix in HTML_SUFFIXES:
        return [html_article(data, spec)]
    if suffix in FEED_SUFFIXES:
        return _feed_articles(data, spec, now=now)
    return _articles_from_content(data, spec, now=now)


def _articles_from_content(
    data: bytes,
    name: str,
    *,
    url: str | None = None,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> list[Article]:
    """A feed, a page or a text, told apart by the bytes (and, for URLs, the Content-Type)."""
    kind = sniff_format(data)
    if kind in ("xml-feed", "json-feed", "xml", "json"):
        return _feed_articles(data, name, url=url, headers=headers, now=now)
    content_type = (headers or {}).get("Content-Type", "").lower()
    if kind == "html" or "html" in content_type:
        return [html_article(data, name, url=url)]
    return [_text_article(data, name)]


def _feed_articles(
    data: bytes,
    name: str,
    *,
    url: str | None = None,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> list[Article]:
    try:
        parsed = parse_feed(
            data, url=url or "", headers=headers, fetched_at=now or datetime.now(UTC)
        )
    except FeedParseError as exc:
        raise InputError(name, str(exc)) from exc
    return parsed.articles


def _text_article(data: bytes, name: str) -> Article:
    """First non-empty line → title, the rest → body (SPEC §7)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            name,
            f"not valid UTF-8 (byte 0x{data[exc.start]:02X} at offset {exc.start}); "
            f"convert it first, e.g. iconv -f WINDOWS-1252 -t UTF-8 {name} > copy.txt",
        ) from exc
    lines = clean_text(text).split("\n")
    for index, line in enumerate(lines):
        if line.strip():
            body = "\n".join(lines[index + 1 :]).strip("\n")
            return Article(title=one_line(line), body=body)
    raise InputError(name, "empty: no text to match")


def html_article(data: bytes, name: str, *, url: str | None = None) -> Article:
    """The page's title and main text with trafilatura; its <title> and all text if trafilatura
    finds no main text."""
    # Imported here: trafilatura and lxml take about 12 MB, which a service whose feeds fetch no
    # pages (no `full_text`) need not hold.
    import trafilatura
    from trafilatura.utils import decode_file

    markup = decode_file(data)  # BOM, then <meta charset>, then detection
    title: str | None = None
    body = ""
    try:
        document = trafilatura.bare_extraction(
            markup, url=url, with_metadata=True, include_comments=False, include_tables=True
        )
    except Exception:  # a page trafilatura cannot read still has the fallback below
        document = None
    if document is not None and not isinstance(document, dict):
        title = document.title
        body = document.text or ""
    if not body.strip():
        body = html_to_text(markup)
    title = one_line(title or "") or html_title(markup) or ""
    if not title and not body.strip():
        raise InputError(name, "empty: the page has no text")
    language = _HTML_LANG.search(markup[:65536])
    return Article(
        title=title,
        body=clean_text(body),
        language=normalise_language(language.group(1)) if language else None,
        link=url,
    )
