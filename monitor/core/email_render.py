"""Alerts as email messages: multipart/alternative, plain text + HTML, UTF-8 (pure; no I/O).

What this module guarantees (SPEC §6, issue 4, FAULTS 64/65):

- Header values built from feed text are one line: CR, LF and every other control character,
  bidi overrides/isolates (U+202A–U+202E, U+2066–U+2069) and invisible format characters are
  removed, whitespace is collapsed, and the subject is capped at `SUBJECT_CHARS`. A title holding
  `\\r\\nBcc: victim@example.com` therefore stays inside the Subject and adds no header. ZWNJ and
  ZWJ are kept: Persian spelling and emoji sequences need them, and they cannot reorder text.
- Non-ASCII headers are RFC 2047 encoded words of UTF-8, folded so that every space lives *inside*
  an encoded word. We encode them ourselves because the standard library's folder (3.11) can move
  a space between two encoded words, where decoders drop it ("الأميركي... وزير" came back as
  "الأميركي...وزير"), so the subject would not decode to the same text.
- Every piece of feed text in the HTML part is escaped; hits are `<b>`; a title is a link only
  for an http(s) URL; the title and snippet blocks carry the `dir` of the item's language
  (`monitor.core.direction`: Arabic, Persian, Hebrew, Urdu … `rtl`). The text part is `render.alert_text`.
- Bodies are 7-bit on the wire (quoted-printable or base64 chosen per part), so no server needs
  8BITMIME; the charset is UTF-8 throughout.

`Date` is an argument (this module reads no clock). `Message-ID` is derived from the alert, so a
resend after a crash carries the same id and mail clients can fold the two copies together.
"""

from __future__ import annotations

import base64
import hashlib
import html
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from monitor.core.direction import direction
from monitor.core.render import alert_text, snippet
from monitor.model import Alert, Hit

SUBJECT_CHARS = 200  # FAULTS 65: a 2,000-character title must not make a 2,000-character subject
TITLE_CHARS = 300  # the title as shown in the HTML part
SUBJECT_PREFIX = "[{watchlist}] "

# RFC 5322 line limits via the SMTP policy (CRLF, 78 characters); bodies kept 7-bit (see above).
POLICY = email_policy.SMTP.clone(cte_type="7bit")

# One encoded word is at most 75 characters (RFC 2047 §2) and, after "Subject: " on the first line,
# must keep the line within 78: `=?utf-8?b?` + 56 base64 characters + `?=` = 68. 56 base64
# characters carry 42 bytes.
_WORD_BYTES = 42
_KEEP_FORMAT = frozenset("\u200c\u200d")  # ZWNJ, ZWJ
_MUTED = 'style="color:#666;font-size:90%;margin:0"'


# ---- one-line text for headers ---------------------------------------------------------------------


def clean_text(text: str) -> str:
    """`text` with control and invisible format characters removed and every kind of whitespace
    (CR, LF, tab, U+2028 …) turned into a plain space; nothing else changes. Safe for HTML text
    after escaping and for headers after `one_line`."""
    out: list[str] = []
    for ch in text:
        if ch.isspace():
            out.append(" ")
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs") or (category == "Cf" and ch not in _KEEP_FORMAT):
            continue
        out.append(ch)
    return "".join(out)


def one_line(text: str, limit: int | None = None) -> str:
    """`clean_text` with runs of spaces collapsed, trimmed, and cut to at most `limit` characters
    (at a word boundary when one is near, ending with "…")."""
    flat = " ".join(clean_text(text).split())
    return flat if limit is None else _truncate(flat, limit)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    space = cut.rfind(" ")
    if space >= len(cut) - 20 and space > 0:
        cut = cut[:space]
    # A cut right after ZWJ/ZWNJ would leave a dangling joiner.
    return cut.rstrip(" \u200c\u200d") + "…"


def alert_subject(alert: Alert) -> str:
    """`[watchlist] title` on one line, at most `SUBJECT_CHARS` characters."""
    title = one_line(alert.title) or "(no title)"
    return one_line(SUBJECT_PREFIX.format(watchlist=alert.watchlist) + title, SUBJECT_CHARS)


# ---- messages ----------------------------------------------------------------------------------


def render_alert(
    alert: Alert,
    *,
    sender: str,
    to: str,
    date: datetime | None = None,
    unsubscribe: str | None = None,
) -> EmailMessage:
    """One alert as a multipart/alternative message from `sender` to `to`.

    `sender` is an address optionally with a name (`News monitor <monitor@example.org>`), `to` a
    bare address; neither may contain CR or LF (ValueError). `date` sets the Date header.
    `unsubscribe`: where a reader asks to stop (see `unsubscribe_url`); it makes the
    `List-Unsubscribe` header and the footer that says why the mail came and how to stop."""
    safe = _safe_link(alert)
    subject = alert_subject(alert)
    message = _message(subject, sender=sender, to=to, date=date)
    message["Message-ID"] = _message_id(sender, f"alert:{alert.id}:{alert.watchlist}:{to}")
    stop = Footer([alert.watchlist], alert.channel, to, sender, unsubscribe)
    message["List-Unsubscribe"] = _header("List-Unsubscribe", f"<{stop.url}>")
    message.set_content(alert_text(safe) + "\n" + stop.text())
    message.add_alternative(
        _html_page(subject, _html_alert(safe, heading="h2") + "\n" + stop.html()),
        subtype="html",
    )
    return message


def render_digest(
    alerts: Sequence[Alert],
    *,
    sender: str,
    to: str,
    title: str,
    date: datetime | None = None,
    unsubscribe: str | None = None,
) -> EmailMessage:
    """Several alerts in one message: grouped by watchlist, newest first (groups ordered by their
    newest alert). `title` is the subject and the heading (flattened and capped like a title);
    `unsubscribe` as for `render_alert`. ValueError when `alerts` is empty."""
    if not alerts:
        raise ValueError("a digest needs at least one alert")
    subject = one_line(title, SUBJECT_CHARS) or "News monitor digest"
    groups = digest_groups(alerts)
    message = _message(subject, sender=sender, to=to, date=date)
    ids = ",".join(str(a.id) for a in sorted(alerts, key=lambda a: a.id))
    message["Message-ID"] = _message_id(sender, f"digest:{ids}:{to}")

    lines = [subject, ""]
    blocks = [f'<h1 style="font-size:140%">{_escape(subject)}</h1>']
    for watchlist, members in groups:
        count = f"{len(members)} alert" + ("" if len(members) == 1 else "s")
        lines += [f"== {one_line(watchlist)} ({count}) ==", ""]
        blocks.append(
            f'<h2 style="font-size:120%;border-bottom:1px solid #ccc">'
            f"{_escape(one_line(watchlist))} <span {_MUTED}>({count})</span></h2>"
        )
        for alert in members:
            safe = _safe_link(alert)
            lines += [alert_text(safe), ""]
            blocks.append(_html_alert(safe, heading="h3", show_watchlist=False))
    stop = Footer([name for name, _ in groups], alerts[0].channel, to, sender, unsubscribe)
    message["List-Unsubscribe"] = _header("List-Unsubscribe", f"<{stop.url}>")
    message.set_content("\n".join(lines) + stop.text())
    message.add_alternative(_html_page(subject, "\n".join([*blocks, stop.html()])), subtype="html")
    return message


# ---- why it came, how to stop -----------------------------------------------------------------


def unsubscribe_url(unsubscribe: str | None, *, sender: str, channel: str, recipient: str) -> str:
    """Where `recipient` asks to stop getting `channel`'s mail: `unsubscribe` (a mailto: or
    https: URL, `email.unsubscribe`) with `{channel}` and `{recipient}` filled in, URL-quoted; by
    default a mail to the sender's address with the subject "unsubscribe CHANNEL" (it comes from
    the recipient's address; short, so the header stays on one 78-character line)."""
    if unsubscribe:
        return unsubscribe.replace("{channel}", quote(channel, safe="")).replace(
            "{recipient}", quote(recipient, safe="@")
        )
    address = parseaddr(sender)[1]
    return f"mailto:{address}?subject=" + quote(f"unsubscribe {channel}", safe="")


@dataclass(frozen=True)
class Footer:
    """The end of every mail: why it came (the watchlists, the channel, the address) and how to
    stop, matching its `List-Unsubscribe` header (RFC 2369)."""

    watchlists: Sequence[str]
    channel: str
    recipient: str
    sender: str
    unsubscribe: str | None = None

    @property
    def url(self) -> str:
        return unsubscribe_url(
            self.unsubscribe, sender=self.sender, channel=self.channel, recipient=self.recipient
        )

    def _why(self) -> str:
        names = ", ".join(one_line(w) for w in self.watchlists)
        what = "watchlist" if len(self.watchlists) == 1 else "watchlists"
        return (
            f"Why you got this: {self.recipient} receives the alerts of the {what} {names} "
            f"(channel {one_line(self.channel)})."
        )

    def _how(self) -> tuple[str, str, str]:
        """How to stop, in three pieces: words before the link, the link's text, words after."""
        url = self.url
        if url.lower().startswith("mailto:"):
            address, _, query = url[7:].partition("?")
            subject = unquote(query.partition("subject=")[2].partition("&")[0])
            after = f' with the subject "{subject}"' if subject else ""
            return "", f"write to {unquote(address)}", after
        return "open ", url, ""

    def text(self) -> str:
        return f"\n-- \n{self._why()}\nTo stop: {''.join(self._how())}.\n"

    def html(self) -> str:
        before, link_text, after = self._how()
        linked = f'<a href="{_escape(self.url)}">{_escape(link_text)}</a>'
        return (
            '<hr style="border:0;border-top:1px solid #ccc">'
            f"<p {_MUTED}>{_escape(self._why())}<br>"
            f"To stop: {_escape(before)}{linked}{_escape(after)}.</p>"
        )


def digest_groups(alerts: Iterable[Alert]) -> list[tuple[str, list[Alert]]]:
    """Alerts grouped by watchlist, each group newest first, groups by their newest alert.

    Newest means latest `published`; alerts without a date count as oldest; ties go to the later
    outbox id."""
    groups: dict[str, list[Alert]] = {}
    for alert in sorted(alerts, key=_newest_first):
        groups.setdefault(alert.watchlist, []).append(alert)
    return list(groups.items())


def _newest_first(alert: Alert) -> tuple[bool, float, int]:
    stamp = alert.published.timestamp() if alert.published is not None else 0.0
    return (alert.published is None, -stamp, -alert.id)


def _message(subject: str, *, sender: str, to: str, date: datetime | None) -> EmailMessage:
    for name, value in (("sender", sender), ("to", to)):
        if "\r" in value or "\n" in value:
            raise ValueError(f"the {name} address may not contain CR or LF")
    message = EmailMessage(policy=POLICY)
    message["Subject"] = _header("Subject", subject)
    message["From"] = _address_header("From", sender)
    message["To"] = to
    if date is not None:
        message["Date"] = format_datetime(date if date.tzinfo else date.replace(tzinfo=UTC))
    # RFC 3834: machine-generated; out-of-office responders should not answer.
    message["Auto-Submitted"] = "auto-generated"
    return message


def _message_id(sender: str, key: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2]
    if not domain or not domain.isascii() or not all(c.isalnum() or c in ".-" for c in domain):
        domain = "news-monitor.invalid"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"<monitor.{digest}@{domain}>"


def _safe_link(alert: Alert) -> Alert:
    """The alert with its link dropped unless it is a plain http(s) URL (FAULTS 11)."""
    if alert.link is None or safe_url(alert.link) is not None:
        return alert
    return replace(alert, link=None)


def safe_url(url: str) -> str | None:
    """`url` if it is an absolute http or https URL without spaces or control characters."""
    url = url.strip()
    if not url or any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


# ---- HTML --------------------------------------------------------------------------------------


def _html_page(title: str, content: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_escape(title)}</title></head>\n"
        '<body style="font-family:Arial,Helvetica,sans-serif;line-height:1.5;max-width:720px">\n'
        f"{content}\n"
        "</body></html>\n"
    )


def _html_alert(alert: Alert, *, heading: str, show_watchlist: bool = True) -> str:
    parts: list[str] = ['<div style="margin:0 0 1.5em">']
    if show_watchlist:
        parts.append(f"<p {_MUTED}>[{_escape(one_line(alert.watchlist))}]</p>")
    title_marks = _marks(alert.title, [h for h in alert.hits if h.field == "title"])
    title = _marked_html(alert.title, title_marks, TITLE_CHARS) or "(no title)"
    if alert.link is not None:
        title = f'<a href="{_escape(alert.link)}">{title}</a>'
    parts.append(
        f'<{heading} dir="{direction(alert.language, alert.title)}" style="margin:.2em 0">{title}</{heading}>'
    )
    meta = [_escape(one_line(alert.source))]
    if alert.published is not None:
        meta.append(alert.published.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    parts.append(f"<p {_MUTED}>{' · '.join(meta)}</p>")
    body_hits = [h for h in alert.hits if h.field == "body"]
    title_only = not body_hits and any(h.field == "title" for h in alert.hits)
    if body_hits or not title_only:  # as alert_text: the text part says the same
        cut = snippet(alert.body, body_hits)
        text = _marked_html(cut.text, cut.marks, None)
        if text.strip():
            text = ("…" if cut.cut_before else "") + text + ("…" if cut.cut_after else "")
            parts.append(
                f'<p dir="{direction(alert.language, cut.text)}" style="margin:.5em 0">{text}</p>'
            )
    if alert.other_sources:
        others = ", ".join(_escape(one_line(s)) for s in alert.other_sources)
        parts.append(f"<p {_MUTED}>also in: {others}</p>")
    parts.append("</div>")
    return "\n".join(parts)


def _marks(text: str, hits: Sequence[Hit]) -> list[tuple[int, int]]:
    """Hit spans inside `text`, sorted, clipped and merged."""
    merged: list[tuple[int, int]] = []
    for hit in sorted(hits, key=lambda h: h.start):
        start, end = max(hit.start, 0), min(hit.end, len(text))
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _marked_html(text: str, marks: Sequence[tuple[int, int]], limit: int | None) -> str:
    """`text` escaped, with the `marks` spans in `<b>`, cleaned of control and bidi characters,
    at most `limit` visible characters (then "…")."""
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for start, end in marks:
        pieces += [(text[pos:start], False), (text[start:end], True)]
        pos = end
    pieces.append((text[pos:], False))
    out: list[str] = []
    room = limit
    for raw, bold in pieces:
        piece = clean_text(raw)
        if not out:
            piece = piece.lstrip()
        if room is not None:
            if len(piece) > room:
                out.append(_wrap(_escape(_truncate(piece, room)), bold))
                return "".join(out)
            room -= len(piece)
        out.append(_wrap(_escape(piece), bold))
    return "".join(out).rstrip()


def _wrap(escaped: str, bold: bool) -> str:
    return f"<b>{escaped}</b>" if bold and escaped else escaped


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


# ---- RFC 2047 headers --------------------------------------------------------------------------


class _FoldedHeader(str):
    """A header value that folds itself: the policy calls `fold` for any value with a `name`
    (see `email.policy.EmailPolicy.header_store_parse` and `fold`). As a str it is the decoded
    text, so `message["Subject"]` reads back what was set. `pieces` are the folded lines after
    "Name: "; each one after the first starts with the space it folds at."""

    name: str
    _pieces: tuple[str, ...]

    def __new__(cls, name: str, text: str, pieces: Sequence[str]) -> _FoldedHeader:
        self = super().__new__(cls, text)
        self.name = name
        self._pieces = tuple(pieces)
        return self

    def fold(self, *, policy: Any) -> str:
        linesep = str(policy.linesep)
        return f"{self.name}: " + linesep.join(self._pieces) + linesep


def _header(name: str, text: str) -> _FoldedHeader:
    """Header `name` holding the one-line `text`, folded by us.

    ASCII is folded at spaces (each continuation line starts with the space, so unfolding gives
    the text back; the standard folder may break right after "Subject:", which leaves a leading
    space in what decoders show). Other text becomes encoded words, as does ASCII that looks like
    an encoded word (`=?utf-8?q?…?=`), so that a receiver shows it literally instead of decoding
    what a feed wrote."""
    if text.isascii() and "=?" not in text:
        return _FoldedHeader(name, text, _fold_ascii(len(name) + 2, text))
    words = encoded_words(text)
    return _FoldedHeader(name, text, [words[0], *(" " + w for w in words[1:])])


def _fold_ascii(indent: int, text: str, width: int = 78) -> list[str]:
    lines: list[str] = []
    current = ""
    used = indent
    for i, word in enumerate(text.split(" ")):
        piece = word if i == 0 else " " + word
        if i > 0 and used + len(piece) > width and current.strip():
            lines.append(current)
            current, used = "", 0
        current += piece
        used += len(piece)
    lines.append(current)
    return lines


def _address_header(name: str, address: str) -> str:
    display, addr = parseaddr(address)
    if not addr or "@" not in addr:
        raise ValueError(f"{address!r} is not an email address")
    if display.isascii():
        return formataddr((display, addr)) if display else addr
    words = encoded_words(one_line(display))
    pieces = [words[0], *(" " + w for w in words[1:]), f" <{addr}>"]
    return _FoldedHeader(name, f"{display} <{addr}>", pieces)


def encoded_words(text: str) -> list[str]:
    """`text` as RFC 2047 `B` encoded words of UTF-8, each holding whole characters and every
    space inside a word, so a decoder that drops whitespace between words gets `text` back."""
    words: list[str] = []
    chunk = bytearray()
    for ch in text:
        data = ch.encode("utf-8")
        if chunk and len(chunk) + len(data) > _WORD_BYTES:
            words.append(_word(bytes(chunk)))
            chunk.clear()
        chunk += data
    if chunk or not words:
        words.append(_word(bytes(chunk)))
    return words


def _word(data: bytes) -> str:
    return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="
