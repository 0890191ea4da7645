"""Presenting matches to people: the snippet around the hits (pure; no I/O).

Telegram HTML and email rendering build on `snippet` (see later issues); `monitor match` uses it for
its table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC

from monitor.model import Alert, Hit

SNIPPET_CHARS = 200


@dataclass(frozen=True)
class Snippet:
    """A window of a text: `text`, and the hits inside it as (start, end) offsets into `text`.
    `cut_before`/`cut_after` say whether text was left out on either side (to show "…")."""

    text: str
    marks: tuple[tuple[int, int], ...]
    cut_before: bool
    cut_after: bool


def snippet(text: str, hits: Sequence[Hit], width: int = SNIPPET_CHARS) -> Snippet:
    """About `width` characters of `text` around the first hit, cut at spaces, with every hit that
    falls inside marked. Hits of other fields must be filtered out by the caller."""
    if not hits:
        end = _cut_end(text, min(len(text), width))
        return Snippet(_flat(text[:end]), (), False, end < len(text))
    first = min(hits, key=lambda h: h.start)
    room = max(width - (first.end - first.start), 0)
    start = _cut_start(text, max(first.start - room // 3, 0))
    end = _cut_end(text, min(len(text), max(start + width, first.end)))
    marks = tuple(
        (h.start - start, h.end - start)
        for h in sorted(hits, key=lambda h: h.start)
        if h.start >= start and h.end <= end
    )
    return Snippet(_flat(text[start:end]), _merge(marks), start > 0, end < len(text))


def _cut_start(text: str, at: int) -> int:
    """Move `at` forward to the start of a word (at most 20 characters)."""
    if at == 0:
        return 0
    for i in range(at, min(at + 20, len(text))):
        if text[i - 1].isspace():
            return i
    return at


def _cut_end(text: str, at: int) -> int:
    """Move `at` back to the end of a word (at most 20 characters)."""
    if at >= len(text):
        return len(text)
    for i in range(at, max(at - 20, 0), -1):
        if text[i].isspace():
            return i
    return at


def _flat(text: str) -> str:
    # Newlines become spaces one for one, so that mark offsets stay valid.
    return text.replace("\r", " ").replace("\n", " ").replace("\t", " ")


def _merge(marks: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in marks:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def alert_text(alert: Alert, emphasis: tuple[str, str] = ("*", "*")) -> str:
    """The plain-text form of an alert (console, and the text part of emails):

        [taiwan-red-line] Title of the item
        sample · 2023-09-18 10:00 UTC · https://example.org/…
        …a snippet with *hits* marked…
        also in: bbc-arabic, aljazeera

    Control characters from the feed are removed, so a title cannot add lines or move the cursor.
    """
    lines = [f"[{alert.watchlist}] {_one_line(alert.title) or '(no title)'}"]
    meta = [alert.source]
    if alert.published is not None:
        meta.append(alert.published.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    if alert.link:
        meta.append(_one_line(alert.link))
    lines.append(" · ".join(meta))
    body_hits = [h for h in alert.hits if h.field == "body"]
    title_only = not body_hits and any(h.field == "title" for h in alert.hits)
    if body_hits or not title_only:
        cut = snippet(alert.body, body_hits)
        text = _marked(_printable(cut.text), cut.marks, emphasis)
        if text.strip():
            lines.append(("…" if cut.cut_before else "") + text + ("…" if cut.cut_after else ""))
    if alert.other_sources:
        lines.append("also in: " + ", ".join(alert.other_sources))
    return "\n".join(lines)


def _marked(text: str, marks: tuple[tuple[int, int], ...], emphasis: tuple[str, str]) -> str:
    out, pos = [], 0
    for start, end in marks:
        out += [text[pos:start], emphasis[0], text[start:end], emphasis[1]]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _printable(text: str) -> str:
    # Same length as the input, so that snippet marks stay valid. ZWNJ and ZWJ stay: Persian words
    # and emoji need them.
    return "".join(c if c.isprintable() or c in " \u200c\u200d" else " " for c in text)


def _one_line(text: str) -> str:
    return " ".join(_printable(text).split())
