"""Feed bytes → Articles: RSS, Atom and RDF through feedparser, JSON Feed through a small reader.

What it guarantees (SPEC §9, FAULTS 1–16):

* feedparser only ever sees the bytes, wrapped in a stream: given a `str` or `bytes` that names a
  path or URL, `feedparser.parse` would open or fetch it (FAULTS 34).
* No XML entity is ever declared to a parser: a prolog that declares a general entity (billion
  laughs, quadratic blowup, XXE) is refused; a DOCTYPE's internal subset holding only parameter
  entities (real feeds reference the XHTML entity sets that way) is cut out before parsing.
* Every text is plain (HTML reduced, kept aside in `Article.html`), without NUL, C0 controls or lone
  surrogates, and capped in length; links are http/https or None; dates are aware UTC datetimes that
  are neither before 1990 nor more than a day ahead of the fetch, else the fetch time.
* A damaged feed keeps the items before the damage, with the parser's complaint in `bozo_warning`;
  bytes that give no item and are not a well-formed empty feed raise FeedParseError("not a feed").

It does not fetch, detect languages or deduplicate, and it parses where it is called: the poller calls
it in a worker process (`parse_pool`).
"""

from __future__ import annotations

import html
import io
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import feedparser

from monitor.errors import FeedParseError
from monitor.model import Article

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_ITEMS",
    "MAX_SHORT_FIELD_CHARS",
    "ParsedFeed",
    "clean_text",
    "html_title",
    "html_to_text",
    "normalise_language",
    "one_line",
    "parse_feed",
    "safe_link",
    "sniff_format",
]

MAX_ITEMS = 1000  # per feed; feeds list the newest first, so the cap keeps the newest (FAULTS 15)
MAX_FIELD_CHARS = 1_000_000  # body and html (FAULTS 16)
MAX_SHORT_FIELD_CHARS = 8192  # title, link, guid, author
EARLIEST_DATE = datetime(1990, 1, 1, tzinfo=UTC)
MAX_CLOCK_AHEAD = timedelta(days=1)

_JSON_FEED_VERSION = re.compile(r"https?://jsonfeed\.org/version/1(\.1)?/?")
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "html", "xhtml"})
# C0 controls other than \t and \n (\r is folded into \n first), DEL, and lone surrogates, which
# PostgreSQL text columns refuse (FAULTS 9).
_UNWANTED_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
# Titles are text by the RSS spec, but feeds put tags in them, also in CDATA marked as text.
_LOOKS_LIKE_MARKUP = re.compile(r"</?[A-Za-z][^<>]*>")
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
_BOMS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)
_FEED_ROOTS = frozenset({"rss", "feed", "rdf:rdf", "rdf", "channel"})


@dataclass(frozen=True)
class ParsedFeed:
    """One parsed feed: its items as Articles (at most MAX_ITEMS) and what the channel says.

    `ttl` is the RSS <ttl> in minutes. `bozo_warning` is the parser's complaint about a feed it
    could still read (bad encoding declaration, cut-off XML …). `dropped_items` counts items past
    the cap.
    """

    articles: list[Article]
    title: str | None
    language: str | None
    link: str | None
    ttl: int | None
    bozo_warning: str | None
    dropped_items: int = 0


# ---------------------------------------------------------------------------------------------
# Text helpers (also used by monitor.inputs)


def clean_text(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """`text` with line breaks as \\n, without NUL/C0 controls/lone surrogates, cut to `limit`."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _UNWANTED_CHARS.sub("", text)[:limit]


def one_line(text: str, limit: int = MAX_SHORT_FIELD_CHARS) -> str:
    """`text` cleaned, with every run of whitespace made one space (titles, names)."""
    return " ".join(clean_text(text, limit * 2).split())[:limit]


class _TextExtractor(HTMLParser):
    _BLOCKS = frozenset(
        {
            "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
            "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
            "li", "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
        }
    )  # fmt: skip
    _HIDDEN = frozenset({"script", "style", "template", "noscript", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden_depth += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden_depth = max(0, self._hidden_depth - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.parts.append(data)


def html_to_text(markup: str, limit: int = MAX_FIELD_CHARS) -> str:
    """Plain text of an HTML fragment or page: tags dropped, entities decoded, blocks on their own
    lines, whitespace collapsed; scripts, styles and the <head> left out."""
    extractor = _TextExtractor()
    extractor.feed(markup)
    extractor.close()
    lines = (" ".join(line.split()) for line in "".join(extractor.parts).splitlines())
    return clean_text("\n".join(line for line in lines if line), limit)


def html_title(markup: str) -> str | None:
    """The text of the first <title> element of an HTML page, or None."""
    found = re.search(r"<title\b[^>]*>(.*?)</title\s*>", markup, re.IGNORECASE | re.DOTALL)
    if found is None:
        return None
    return one_line(html.unescape(found.group(1))) or None


def normalise_language(tag: object) -> str | None:
    """A BCP 47-looking tag in its usual case ("en-us" → "en-US", "zh_Hans" → "zh-Hans"), or None
    for anything else ("english", "", "x")."""
    if not isinstance(tag, str):
        return None
    candidate = tag.strip().replace("_", "-")
    if not _LANGUAGE_TAG.fullmatch(candidate):
        return None
    primary, *rest = candidate.split("-")
    subtags = [primary.lower()]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            subtags.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            subtags.append(part.title())
        else:
            subtags.append(part.lower())
    return "-".join(subtags)


def safe_link(value: object, base: str = "") -> str | None:
    """An absolute http(s) link, resolved against `base` if relative; None for javascript:, data:,
    file: and anything else (FAULTS 11)."""
    if not isinstance(value, str):
        return None
    link = clean_text(value, MAX_SHORT_FIELD_CHARS + 1).strip()
    if not link or len(link) > MAX_SHORT_FIELD_CHARS:
        return None
    if base:
        try:
            link = urljoin(base, link)
        except ValueError:
            return None
    try:
        parts = urlsplit(link)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return link


# ---------------------------------------------------------------------------------------------
# Sniffing and the XML prolog


def _scanning_view(body: bytes) -> tuple[str, int | None]:
    """The body as text good enough to read markup, and the byte offset of its first character
    when every character is one byte (None for UTF-16/32, where offsets do not map to bytes).

    ASCII-compatible encodings are read as Latin-1 (one character per byte, never fails); UTF-16
    and UTF-32 are recognised by their BOM or, without one, by where the zero bytes are.
    """
    for bom, codec in _BOMS:
        if body.startswith(bom):
            if codec == "utf-8":
                return body[len(bom) :].decode("latin-1"), len(bom)
            return body[len(bom) :].decode(codec, "replace"), None
    if b"\x00" in body[:8]:
        head = body[:64]
        for codec in ("utf-32-be", "utf-32-le", "utf-16-be", "utf-16-le"):
            try:
                start = head[: len(head) - len(head) % 4].decode(codec)
            except UnicodeDecodeError:
                continue
            if start.lstrip(" \t\r\n").startswith("<"):
                return body.decode(codec, "replace"), None
    return body.decode("latin-1"), 0


@dataclass(frozen=True)
class _Prolog:
    root_start: int  # index of the first thing that is not prolog (the root element, or text)
    subset: tuple[int, int] | None  # the DOCTYPE internal subset, "[" to "]" inclusive
    general_entities: bool
    parameter_entities: bool


_ENTITY_DECLARATION = re.compile(r"<!ENTITY\s+(%\s)?", re.IGNORECASE)


def _scan_prolog(text: str) -> _Prolog:
    """Walk the XML prolog (declaration, comments, PIs, DOCTYPE) up to the root element."""
    i, n = 0, len(text)
    subset: tuple[int, int] | None = None
    declarations: list[str] = []
    while i < n:
        if text[i] in " \t\r\n\ufeff":
            i += 1
        elif text.startswith("<?", i):
            i = _skip_past(text, "?>", i + 2)
        elif text.startswith("<!--", i):
            i = _skip_past(text, "-->", i + 4)
        elif text[i : i + 9].upper() == "<!DOCTYPE":
            i, subset = _scan_doctype(text, i + 9)
            if subset is not None:
                declarations.append(text[subset[0] : subset[1]])
        elif text.startswith("<!", i):
            # A declaration outside any DOCTYPE is not XML, but lenient parsers act on it.
            end = _skip_past(text, ">", i + 2)
            declarations.append(text[i:end])
            i = end
        else:
            break
    general = parameter = False
    for declaration in declarations:
        for found in _ENTITY_DECLARATION.finditer(declaration):
            if found.group(1):
                parameter = True
            else:
                general = True
    return _Prolog(i, subset, general, parameter)


def _skip_past(text: str, end: str, start: int) -> int:
    found = text.find(end, start)
    return len(text) if found < 0 else found + len(end)


def _scan_doctype(text: str, i: int) -> tuple[int, tuple[int, int] | None]:
    """From just after "<!DOCTYPE": the index after its ">", and the span of its internal subset
    ("[" to "]"). A DOCTYPE cut off before its end runs to the end of the text."""
    n = len(text)
    subset: tuple[int, int] | None = None
    while i < n:
        char = text[i]
        if char in "\"'":
            i = _skip_past(text, char, i + 1)
        elif char == "[" and subset is None:
            start = i
            i += 1
            while i < n and text[i] != "]":
                if text.startswith("<!--", i):
                    i = _skip_past(text, "-->", i + 4)
                elif text.startswith("<?", i):
                    i = _skip_past(text, "?>", i + 2)
                elif text[i] in "\"'":
                    i = _skip_past(text, text[i], i + 1)
                else:
                    i += 1
            i = min(i + 1, n)
            subset = (start, i)
        elif char == ">":
            return i + 1, subset
        else:
            i += 1
    return n, subset


def _prepare_xml(body: bytes) -> bytes:
    """The body ready for an XML parser: refuse general entities, cut out a DOCTYPE subset, and
    drop whitespace before the XML declaration (which sends expat to feedparser's lenient mode).

    General entities are what billion laughs, quadratic blowup and XXE are made of (FAULTS 1–3), and
    feeds have no use for them. A subset of parameter entities only (weblabor.hu's reference to the
    XHTML Latin-1 set) is removed so that nothing in it is ever read or expanded (FAULTS 4).
    """
    body = _strip_before_declaration(body)
    text, byte_offset = _scanning_view(body)
    prolog = _scan_prolog(text)
    if prolog.general_entities:
        raise FeedParseError("entity declarations not allowed")
    if byte_offset is None:  # UTF-16/32: no byte offsets to cut at, and no feed needs this
        if prolog.parameter_entities:
            raise FeedParseError("entity declarations not allowed")
        return body
    if prolog.subset is not None:
        start, end = prolog.subset
        body = body[: byte_offset + start] + body[byte_offset + end :]
    return _drop_cut_utf8_tail(_drop_impossible_character_references(body))


_CHARACTER_REFERENCE = re.compile(rb"&#(?:[xX]([0-9A-Fa-f]+)|([0-9]+));")


def _drop_impossible_character_references(body: bytes) -> bytes:
    """Remove references to surrogates or past U+10FFFF: feedparser's lenient parser raises on
    them instead of flagging the feed (`&#xD800;` → UnicodeEncodeError)."""
    if b"&#" not in body:
        return body

    def keep_if_possible(found: re.Match[bytes]) -> bytes:
        digits = found.group(1) or found.group(2)
        if len(digits) > 8:
            return b""
        value = int(digits, 16) if found.group(1) else int(digits)
        return b"" if 0xD800 <= value <= 0xDFFF or value > 0x10FFFF else found.group(0)

    return _CHARACTER_REFERENCE.sub(keep_if_possible, body)


def _drop_cut_utf8_tail(body: bytes) -> bytes:
    """Drop a multi-byte UTF-8 character cut in half at the very end of a truncated download:
    otherwise the whole document fails to decode as UTF-8 and is read as Windows-1252 mojibake."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.start >= len(body) - 3:
            return body[: exc.start]
    return body


def _strip_before_declaration(body: bytes) -> bytes:
    stripped = body.lstrip(b" \t\r\n")
    return stripped if stripped.startswith(b"<?xml") else body


FormatName = Literal["xml-feed", "json-feed", "html", "json", "xml", "text"]


def sniff_format(body: bytes) -> FormatName:
    """What the bytes look like, from their first markup: an RSS/Atom/RDF root, a JSON Feed, an
    HTML page, other JSON or XML, or anything else ("text")."""
    text, _ = _scanning_view(body[:65536])
    stripped = text.lstrip(" \t\r\n\ufeff")
    if stripped.startswith(("{", "[")):
        return "json-feed" if _JSON_FEED_VERSION.search(stripped[:4096]) else "json"
    if not stripped.startswith("<"):
        return "text"
    lowered = stripped[:1024].lower()
    if lowered.startswith(("<!doctype html", "<html")):
        return "html"
    prolog = _scan_prolog(stripped)
    root = re.match(r"<([A-Za-z_][\w:.-]*)", stripped[prolog.root_start :])
    if root is None:
        return "xml" if prolog.root_start else "text"
    name = root.group(1).lower()
    if name in _FEED_ROOTS or name.endswith((":rss", ":feed", ":rdf")):
        return "xml-feed"
    if name in ("html", "head", "body"):
        return "html"
    return "xml"


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_feed(
    body: bytes,
    *,
    url: str = "",
    headers: Mapping[str, str] | None = None,
    fetched_at: datetime,
    source: str | None = None,
) -> ParsedFeed:
    """Parse feed bytes into Articles. `url` resolves relative links; `headers` are the HTTP
    response headers (Content-Type charset, Content-Language); `fetched_at` (aware) replaces
    missing or absurd dates. Raises FeedParseError for anything that is not a usable feed."""
    if fetched_at.tzinfo is None:
        raise ValueError("fetched_at must be timezone-aware")
    if not body.strip(b" \t\r\n\x00\xef\xbb\xbf\xfe\xff"):
        raise FeedParseError("not a feed: empty body")
    kind = sniff_format(body)
    if kind in ("json-feed", "json"):
        return _parse_json_feed(body, url=url, fetched_at=fetched_at, source=source)
    return _parse_xml_feed(
        _prepare_xml(body),
        url=url,
        headers=headers or {},
        fetched_at=fetched_at,
        source=source,
        looks_like_html=kind == "html",
    )


def _parse_xml_feed(
    body: bytes,
    *,
    url: str,
    headers: Mapping[str, str],
    fetched_at: datetime,
    source: str | None,
    looks_like_html: bool,
) -> ParsedFeed:
    response_headers = {key.lower(): value for key, value in headers.items()}
    if url:
        response_headers.setdefault("content-location", url)
    # Without a Content-Type, feedparser reads headers-but-no-type as Latin-1 and flags the feed;
    # application/xml means what no headers at all mean: BOM, then XML declaration, then UTF-8.
    response_headers.setdefault("content-type", "application/xml")
    try:
        result = feedparser.parse(
            io.BytesIO(body),
            response_headers=response_headers,
            resolve_relative_uris=True,
            sanitize_html=True,
        )
    except Exception as exc:  # feedparser flags bad input as bozo; anything raised is its own bug
        raise FeedParseError(f"not a feed: the parser failed ({_describe_problem(exc)})") from exc
    entries: list[Any] = result.get("entries", [])
    problem = result.get("bozo_exception") if result.get("bozo") else None
    if not entries and (problem is not None or not result.get("version")):
        if looks_like_html:
            raise FeedParseError("not a feed: an HTML page")
        reason = _describe_problem(problem) if problem is not None else "no RSS, Atom or RDF root"
        raise FeedParseError(f"not a feed: {reason}")
    channel: Mapping[str, Any] = result.get("feed", {})
    feed_language = normalise_language(channel.get("language"))
    articles = [
        _entry_to_article(entry, feed_language, fetched_at, source) for entry in entries[:MAX_ITEMS]
    ]
    return ParsedFeed(
        articles=articles,
        title=_detail_text(channel.get("title"), channel.get("title_detail")) or None,
        language=feed_language,
        link=safe_link(channel.get("link")),
        ttl=_ttl(channel.get("ttl")),
        bozo_warning=_describe_problem(problem) if problem is not None else None,
        dropped_items=max(0, len(entries) - MAX_ITEMS),
    )


def _describe_problem(problem: object) -> str:
    text = " ".join(str(problem).split())[:500]
    return f"{type(problem).__name__}: {text}" if text else type(problem).__name__


def _entry_to_article(
    entry: Mapping[str, Any], feed_language: str | None, fetched_at: datetime, source: str | None
) -> Article:
    title_detail = entry.get("title_detail") or {}
    body_detail = _best_body(entry)
    body_html = None
    body_text = ""
    if body_detail is not None:
        value = str(body_detail.get("value") or "")
        if _is_html(body_detail):
            body_html = clean_text(value)
            body_text = html_to_text(value)
        else:
            body_text = clean_text(html.unescape(value))
    language = (
        normalise_language(body_detail.get("language") if body_detail is not None else None)
        or normalise_language(title_detail.get("language"))
        or feed_language
    )
    published = _entry_date(entry, fetched_at)
    return Article(
        title=_detail_text(entry.get("title"), title_detail),
        body=body_text,
        language=language,
        source=source,
        link=safe_link(entry.get("link")),
        published=published or fetched_at,
        dated=published is not None,
        guid=_short_text(entry.get("id")),
        author=_short_text(entry.get("author")),
        html=body_html,
    )


def _best_body(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The full content (content:encoded, Atom content) if any, else the summary."""
    contents: Sequence[Mapping[str, Any]] = entry.get("content") or []
    filled = [c for c in contents if str(c.get("value") or "").strip()]
    if filled:
        return max(filled, key=lambda c: len(str(c.get("value") or "")))
    summary = entry.get("summary_detail")
    if summary is not None and str(summary.get("value") or "").strip():
        return summary  # type: ignore[no-any-return]
    return None


def _is_html(detail: Mapping[str, Any]) -> bool:
    return str(detail.get("type") or "text/html").lower() in _HTML_TYPES


def _detail_text(value: object, detail: Mapping[str, Any] | None) -> str:
    """A title as one line of plain text, whether the feed marked it up or escaped it."""
    if not isinstance(value, str) or not value:
        return ""
    if (detail is not None and _is_html(detail)) or _LOOKS_LIKE_MARKUP.search(value):
        return one_line(html_to_text(value, MAX_SHORT_FIELD_CHARS * 2))
    return one_line(html.unescape(value))


def _short_text(value: object) -> str | None:
    """A non-empty one-line text (guid, author, channel title), or None."""
    if not isinstance(value, str):
        return None
    return one_line(value) or None


def _entry_date(entry: Mapping[str, Any], fetched_at: datetime) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        # dict.get: FeedParserDict.get("updated_parsed") falls back with a DeprecationWarning.
        parsed = dict.get(entry, key) if isinstance(entry, dict) else entry.get(key)
        if parsed:
            return _sane_date(_struct_to_datetime(parsed), fetched_at)
    return None


def _struct_to_datetime(value: time.struct_time) -> datetime | None:
    try:
        return datetime(*value[:6], tzinfo=UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _sane_date(value: datetime | None, fetched_at: datetime) -> datetime | None:
    """`value` in UTC, or None when missing, before 1990 or more than a day ahead (FAULTS 14):
    the item is undated, and shown with its fetch time."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value < EARLIEST_DATE or value > fetched_at + MAX_CLOCK_AHEAD:
        return None
    return value


def _ttl(value: object) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


# ---------------------------------------------------------------------------------------------
# JSON Feed (https://jsonfeed.org/version/1.1), which feedparser 6 does not read


def _parse_json_feed(
    body: bytes, *, url: str, fetched_at: datetime, source: str | None
) -> ParsedFeed:
    warning = None
    try:
        document = json.loads(body, strict=False)  # strict=False: raw tabs/newlines in strings
    except RecursionError as exc:
        raise FeedParseError("not a feed: JSON nested too deeply") from exc
    except ValueError as exc:
        document = _salvage_json_feed(body)
        if document is None:
            raise FeedParseError(f"not a feed: invalid JSON ({str(exc)[:200]})") from exc
        warning = f"JSONDecodeError: {exc}; kept the items before it"
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise FeedParseError("not a feed: JSON that is not a JSON Feed")
    version = document.get("version")
    if version is None:
        warning = warning or "JSON Feed without a version"
    elif not isinstance(version, str) or not _JSON_FEED_VERSION.fullmatch(version):
        raise FeedParseError(f"not a feed: unknown JSON Feed version {str(version)[:100]!r}")
    base = safe_link(document.get("feed_url"), url) or safe_link(document.get("home_page_url"))
    base = base or url
    feed_language = normalise_language(document.get("language"))
    feed_author = _json_author(document)
    usable = [item for item in document["items"] if isinstance(item, dict)]
    articles = [
        _json_item_to_article(item, base, feed_language, feed_author, fetched_at, source)
        for item in usable[:MAX_ITEMS]
    ]
    return ParsedFeed(
        articles=articles,
        title=_short_text(document.get("title")),
        language=feed_language,
        link=safe_link(document.get("home_page_url"), base),
        ttl=None,
        bozo_warning=warning,
        dropped_items=max(0, len(usable) - MAX_ITEMS),
    )


def _salvage_json_feed(body: bytes) -> dict[str, Any] | None:
    """The complete items of a JSON Feed cut off mid-way, as truncated XML keeps its earlier
    items (FAULTS 5); None if the bytes do not look like a JSON Feed's items list."""
    text = body.decode("utf-8", "replace")
    opening = re.search(r'"items"\s*:\s*\[', text)
    if opening is None:
        return None
    decoder = json.JSONDecoder(strict=False)
    items: list[Any] = []
    position = opening.end()
    while len(items) < MAX_ITEMS:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        try:
            item, position = decoder.raw_decode(text, position)
        except (ValueError, RecursionError):
            break
        items.append(item)
    return {"items": items} if items else None


def _json_item_to_article(
    item: Mapping[str, Any],
    base: str,
    feed_language: str | None,
    feed_author: str | None,
    fetched_at: datetime,
    source: str | None,
) -> Article:
    content_html = item.get("content_html")
    content_text = item.get("content_text")
    summary = item.get("summary")
    body_html = None
    if isinstance(content_html, str) and content_html.strip():
        body_html = clean_text(content_html)
        body = html_to_text(content_html)
    elif isinstance(content_text, str):
        body = clean_text(content_text)
    elif isinstance(summary, str):
        body = clean_text(summary)
    else:
        body = ""
    title = item.get("title")
    guid = item.get("id")
    published = _sane_date(
        _iso_date(item.get("date_published")) or _iso_date(item.get("date_modified")), fetched_at
    )
    return Article(
        title=one_line(title) if isinstance(title, str) else "",
        body=body,
        language=normalise_language(item.get("language")) or feed_language,
        source=source,
        link=safe_link(item.get("url"), base) or safe_link(item.get("external_url"), base),
        published=published or fetched_at,
        dated=published is not None,
        guid=_short_text(str(guid) if isinstance(guid, int) else guid),
        author=_json_author(item) or feed_author,
        html=body_html,
    )


def _json_author(node: Mapping[str, Any]) -> str | None:
    authors = node.get("authors")
    candidates = [*(authors if isinstance(authors, list) else []), node.get("author")]
    for author in candidates:
        if isinstance(author, dict) and isinstance(author.get("name"), str):
            return _short_text(author["name"])
    return None


def _iso_date(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        return None
