"""Alerts and digests as Telegram HTML messages (SPEC §6; FAULTS 10, 11, 48, 63, 65). Pure: no I/O.

What Telegram accepts (https://core.telegram.org/bots/api#html-style):

* Tags b/strong, i/em, u/ins, s/strike/del, a href, code, pre, tg-spoiler, span class="tg-spoiler"
  and blockquote; any other `<` — a stray one, or `<script>` from a feed title — makes Telegram
  refuse the whole message ("can't parse entities"). Entities: only `&lt; &gt; &amp; &quot;` and
  numeric ones. So every piece of feed text goes through `html.escape(quote=True)` (which writes
  `&#x27;`, numeric, for `'`), and only this module writes tags.
* A message is 1–4096 characters *after entity parsing*: tags do not count and `&amp;` is one
  character. The Bot API server (tdlib) counts Unicode code points (`utf8_length`); we count UTF-16
  code units (`MAX_UNITS`), never fewer, so a message we accept is accepted under either reading
  even when it is full of emoji.
* Links are shown only for http(s) URLs: `javascript:`, `data:`, `tg:` or `file:` links from a feed
  are dropped, the title is shown as bold text instead.

Feed text also loses what could disguise it (FAULTS 65): control characters, bidi embeddings,
overrides and isolates (U+202A–U+202E, U+2066–U+2069) and invisible spaces. ZWJ/ZWNJ stay (Persian
and emoji need them) and so do LRM/RLM. Telegram lays each line out from its first strong
character, so a line of an Arabic item that begins with a Latin name («CNN: بكين …») would run left
to right: when the item's language is known, a title or snippet line whose first strong character
disagrees with it starts with an RLM (or LRM) mark (`monitor.core.direction`). Hit offsets are
offsets into `alert.body`, so the bold words are the ones the matcher found whatever the script.

A message too long is cut at a character boundary outside tags and entities (and never between a
letter and its combining marks or inside an emoji sequence), preferably at a space, its open tags
closed, ending with "…".
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, tzinfo
from urllib.parse import urlsplit

from monitor.core.direction import line_mark
from monitor.core.render import alert_text, snippet
from monitor.model import Alert, Hit

__all__ = [
    "MAX_UNITS",
    "TITLE_CHARS",
    "alert_html",
    "alert_plain",
    "clean",
    "digest_html",
    "plain_text",
    "safe_link",
    "truncate_html",
    "truncate_plain",
    "visible_length",
]

MAX_UNITS = 4096  # Bot API sendMessage: "1-4096 characters after entities parsing"
TITLE_CHARS = 300  # a longer title is cut (FAULTS 65: a 2,000-character title)
OTHER_SOURCES = 10  # "also in: a, b, … and 7 more"
DIGEST_SNIPPET_CHARS = 120
BRIEF_TITLE_CHARS = 80  # a burst's list: one line per alert
ELLIPSIS = "…"

# Removed from feed text: C0/C1 controls (tab/LF/CR become spaces first), zero-width space, word
# joiner, BOM, bidi embeddings/overrides/isolates, lone surrogates and the two non-characters.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u2060\ufeff\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff\ufffe\uffff]"
)
_SPACES = re.compile(r"[\t\n\r\f\v ]+")
_TOKEN = re.compile(r"<[^>]*>|&[^;\s<>&]*;|[^<&]+|[<&]")
_TAG_NAME = re.compile(r"</?([a-zA-Z][a-zA-Z0-9-]*)")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


# ---- text and links ---------------------------------------------------------------------------


def clean(text: str) -> str:
    """Feed text fit to show on one line: whitespace runs become one space, invisible and control
    characters are removed (see the module docstring). Not escaped."""
    return _INVISIBLE.sub("", _SPACES.sub(" ", text))


def safe_link(url: str | None) -> str | None:
    """`url` if it is an absolute http(s) URL with a host and no spaces or controls, else None."""
    if not url:
        return None
    url = url.strip()
    if _INVISIBLE.search(url) or any(c.isspace() for c in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return url


def _esc(text: str) -> str:
    return html.escape(clean(text), quote=True)


def _marked(text: str, marks: Sequence[tuple[int, int]]) -> str:
    """`text` escaped, with each (start, end) range of the raw text in <b>. Marks are cut from the
    raw text first and each piece cleaned after, so offsets stay true however much is removed."""
    out: list[str] = []
    pos = 0
    for start, end in marks:
        if start < pos or end <= start or end > len(text):
            continue
        out.append(_esc(text[pos:start]))
        bold = _esc(text[start:end])
        if bold:
            out.append(f"<b>{bold}</b>")
        pos = end
    out.append(_esc(text[pos:]))
    return "".join(out)


def _valid(hits: Sequence[Hit], field: str, text: str) -> list[Hit]:
    return [h for h in hits if h.field == field and 0 <= h.start < h.end <= len(text)]


def _merged(hits: Sequence[Hit]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for hit in sorted(hits, key=lambda h: (h.start, h.end)):
        if merged and hit.start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hit.end, merged[-1][1]))
        else:
            merged.append((hit.start, hit.end))
    return merged


def _title_html(alert: Alert, limit: int = TITLE_CHARS) -> str:
    title = alert.title
    marks = _merged(_valid(alert.hits, "title", title))
    cut = len(title) > limit
    if cut:
        title = title[:limit]
        marks = [(s, min(e, limit)) for s, e in marks if s < limit]
    shown = _marked(title, marks).strip()
    if not shown:
        shown = "(no title)"
    elif cut:
        shown += ELLIPSIS
    link = safe_link(alert.link)
    if link is None:
        return f"<b>{shown}</b>"
    return f'<a href="{html.escape(link, quote=True)}">{shown}</a>'


def _snippet_html(alert: Alert, width: int) -> str:
    body_hits = _valid(alert.hits, "body", alert.body)
    if not body_hits and alert.hits:
        return ""  # matched on the title only: the title says why
    cut = snippet(alert.body, body_hits, width)
    text = _marked(cut.text, cut.marks).strip()
    if not text:
        return ""
    return (ELLIPSIS if cut.cut_before else "") + text + (ELLIPSIS if cut.cut_after else "")


def _directed(line: str, language: str | None) -> str:
    """`line` (markup) led by the mark that lays it out in `language`'s direction, if needed."""
    return line_mark(language, plain_text(line)) + line


def _when(moment: datetime | None, tz: tzinfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if moment is None:
        return ""
    local = moment.astimezone(tz)
    return f"{local.strftime(fmt)} {local.tzname() or ''}".strip()


def _sources(sources: Sequence[str]) -> str:
    """Source names, escaped, joined by commas; past `OTHER_SOURCES`, counted."""
    names = [_esc(s) for s in sources if clean(s)]
    if len(names) > OTHER_SOURCES:
        rest = len(names) - OTHER_SOURCES
        names = [*names[:OTHER_SOURCES], f"and {rest} more"]
    return ", ".join(names)


# ---- messages --------------------------------------------------------------------------------


def alert_html(alert: Alert, *, tz: tzinfo = UTC, limit: int = MAX_UNITS) -> str:
    """One alert as a Telegram HTML message (SPEC §6):

        🔔 <b>taiwan-red-line</b>
        <a href="https://…">Title with <b>hits</b></a>
        aawsat · 2023-09-18 13:00 +03
        …about 200 characters around the first hit, every hit in <b>…</b>…
        <i>also in: bbc-arabic, aljazeera</i>

    Times are shown in `tz`. Never longer than `limit` (see `visible_length`).
    """
    lines = [f"🔔 <b>{_esc(alert.watchlist)}</b>", _directed(_title_html(alert), alert.language)]
    meta = [_esc(alert.source)] if clean(alert.source) else []
    when = _when(alert.published, tz)
    if when:
        meta.append(html.escape(when))
    if meta:
        lines.append(" · ".join(meta))
    body = _snippet_html(alert, 200)
    if body:
        lines.append(_directed(body, alert.language))
    if alert.other_sources:
        others = _sources(alert.other_sources)
        if others:
            lines.append(f"<i>also in: {others}</i>")
    return truncate_html("\n".join(lines), limit)


def alert_plain(alert: Alert, *, limit: int = MAX_UNITS) -> str:
    """The plain-text form (no parse mode), for the retry after Telegram refused the HTML."""
    return truncate_plain(alert_text(alert), limit)


def _newest_first(alert: Alert) -> tuple[datetime, int]:
    return (alert.published or datetime.min.replace(tzinfo=UTC), alert.id)


def _digest_entry(alert: Alert, tz: tzinfo, limit: int, *, brief: bool = False) -> str:
    # One entry per story, naming every source that carries it.
    sources = _sources([alert.source, *alert.other_sources])
    meta = [sources] if sources else []
    when = _when(alert.published, tz, "%H:%M" if brief else "%d %b %H:%M")
    if when:
        meta.append(html.escape(when))
    title = _title_html(alert, BRIEF_TITLE_CHARS if brief else TITLE_CHARS)
    line = _directed("• " + title, alert.language)
    if meta:
        line += " — " + " · ".join(meta)
    body = "" if brief else _snippet_html(alert, DIGEST_SNIPPET_CHARS)
    if body:
        line += "\n" + _directed("  " + body, alert.language)
    return truncate_html(line, limit)


def digest_html(
    alerts: Sequence[Alert],
    title: str,
    *,
    tz: tzinfo = UTC,
    limit: int = MAX_UNITS,
    brief: bool = False,
) -> list[str]:
    """Several alerts as few messages as the limit allows: grouped by watchlist (the group with the
    newest alert first), newest first within a group, each under a bold heading. A message that
    does not fit is split between entries (headed "title (2/3)"), never inside one; the heading of
    a group carried over is repeated with "(continued)". Empty `alerts` give no message. `brief`:
    each entry one line — its title (cut at `BRIEF_TITLE_CHARS`), source and time — so that a
    burst of 40 fits in one message. An entry names every source of its story: "• Title — wire,
    bbc, reuters · 04 Dec 10:00"."""
    if not alerts:
        return []
    groups: dict[str, list[Alert]] = {}
    for alert in sorted(alerts, key=_newest_first, reverse=True):
        groups.setdefault(alert.watchlist, []).append(alert)
    heading = f"<b>{_esc(title)}</b>"
    # Room for " (99/99)" after the heading and the blank line below it.
    budget = limit - visible_length(heading) - 10
    pages: list[list[str]] = []
    page: list[str] = []
    used = 0

    def add(piece: str) -> None:
        nonlocal used
        page.append(piece)
        used += visible_length(piece)

    for watchlist, group in groups.items():
        name = _esc(watchlist)
        group_heading = f"\n\n<b>{name}</b> ({len(group)})"
        for index, alert in enumerate(group):
            entry = "\n" + _digest_entry(alert, tz, max(budget - 200, 200), brief=brief)
            lead = group_heading if index == 0 else ""
            if page and used + visible_length(lead + entry) > budget:
                pages.append(page)
                page, used = [], 0
                if not lead:
                    lead = f"\n\n<b>{name}</b> (continued)"
            add(lead + entry)
    pages.append(page)
    total = len(pages)
    messages = []
    for number, body in enumerate(pages, 1):
        head = heading if total == 1 else f"{heading} ({number}/{total})"
        messages.append(truncate_html(head + "".join(body), limit))
    return messages


# ---- length and cutting ----------------------------------------------------------------------


def _units(text: str) -> int:
    """UTF-16 code units: characters beyond the BMP (most emoji) count two."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def _decode_entity(entity: str) -> str:
    name = entity[1:-1]
    if name in _NAMED:
        return _NAMED[name]
    try:
        if name[:2] in ("#x", "#X"):
            return chr(int(name[2:], 16))
        if name[:1] == "#":
            return chr(int(name[1:]))
    except (ValueError, OverflowError):
        pass
    return entity  # not an entity Telegram knows: it would be refused, count it as written


def _tokens(markup: str) -> Iterator[tuple[str, str]]:
    """(kind, raw) with kind "tag", "entity" or "text"."""
    for match in _TOKEN.finditer(markup):
        raw = match.group()
        if raw.startswith("<") and len(raw) > 1:
            yield "tag", raw
        elif raw.startswith("&") and len(raw) > 1:
            yield "entity", raw
        else:
            yield "text", raw


def plain_text(markup: str) -> str:
    """What Telegram shows for `markup`, as plain text: tags left out, entities decoded."""
    return "".join(
        _decode_entity(raw) if kind == "entity" else raw
        for kind, raw in _tokens(markup)
        if kind != "tag"
    )


def visible_length(markup: str) -> int:
    """The length Telegram checks against the limit: tags left out, entities decoded, in UTF-16
    code units."""
    total = 0
    for kind, raw in _tokens(markup):
        if kind == "entity":
            total += _units(_decode_entity(raw))
        elif kind == "text":
            total += _units(raw)
    return total


def _joined(text: str, at: int) -> bool:
    """Whether cutting `text` before index `at` would split a character as people see it: a base
    and its combining marks, a ZWJ emoji sequence, a variation selector, a skin tone, a flag."""
    if at <= 0 or at >= len(text):
        return False
    before, after = text[at - 1], text[at]
    if unicodedata.combining(after) or after in "\u200d\u200c" or before == "\u200d":
        return True
    if "\ufe00" <= after <= "\ufe0f" or "\U0001f3fb" <= after <= "\U0001f3ff":
        return True
    if "\U000e0020" <= after <= "\U000e007f":  # emoji tag sequences (subdivision flags)
        return True
    if unicodedata.category(after) in ("Mn", "Me", "Mc"):
        return True
    flags = 0
    while at - flags - 1 >= 0 and "\U0001f1e6" <= text[at - flags - 1] <= "\U0001f1ff":
        flags += 1
    return flags % 2 == 1 and "\U0001f1e6" <= after <= "\U0001f1ff"


def _fit_text(text: str, room: int) -> int:
    """How many characters of `text` fit in `room` units, at a clean boundary (a space within the
    last 30 characters if there is one)."""
    count = used = 0
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > room:
            break
        used += width
        count += 1
    while count > 0 and _joined(text, count):
        count -= 1
    if count < len(text):
        space = text.rfind(" ", max(count - 30, 0), count + 1)
        if space >= 0:
            count = space
    return count


def truncate_html(markup: str, limit: int = MAX_UNITS, ellipsis: str = ELLIPSIS) -> str:
    """`markup` (well-formed Telegram HTML) cut to at most `limit` visible units: at a character
    boundary outside tags and entities, open tags closed, ending with `ellipsis`. Unchanged when it
    fits."""
    if visible_length(markup) <= limit:
        return markup
    room = limit - _units(ellipsis)
    out: list[str] = []
    stack: list[tuple[str, int]] = []  # open tag name, its index in `out`
    used = 0
    for kind, raw in _tokens(markup):
        if kind == "tag":
            name_match = _TAG_NAME.match(raw)
            name = name_match.group(1).lower() if name_match else ""
            if raw.startswith("</"):
                if stack and stack[-1][0] == name:
                    stack.pop()
            elif not raw.endswith("/>"):
                stack.append((name, len(out)))
            out.append(raw)
            continue
        text = _decode_entity(raw) if kind == "entity" else raw
        width = _units(text)
        if used + width <= room:
            out.append(raw)
            used += width
            continue
        if kind == "text":
            out.append(raw[: _fit_text(raw, room - used)])
        break
    # Close what is open, dropping tags that would be empty.
    for name, index in reversed(stack):
        if index == len(out) - 1:
            out.pop()
        else:
            out.append(f"</{name}>")
    return "".join(out).rstrip() + ellipsis


def truncate_plain(text: str, limit: int = MAX_UNITS, ellipsis: str = ELLIPSIS) -> str:
    """Plain text cut to at most `limit` UTF-16 units, cleanly, ending with `ellipsis`."""
    if _units(text) <= limit:
        return text
    count = _fit_text(text, limit - _units(ellipsis))
    return text[:count].rstrip() + ellipsis
