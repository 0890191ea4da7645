"""monitor.core.telegram_html: every message is checked by the Bot API double's parser, which
refuses what Telegram refuses (tests/botapi.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from botapi import EntityParseError, parse_html
from httpserver import require_corpus

from monitor.core.match import Matcher, WatchlistRule
from monitor.core.telegram_html import (
    MAX_UNITS,
    alert_html,
    alert_plain,
    clean,
    digest_html,
    plain_text,
    safe_link,
    truncate_html,
    truncate_plain,
    visible_length,
)
from monitor.model import Alert, Article, Hit

HOSTILE = (
    '<script>alert(1)</script> </b><a href="tg://resolve?domain=x">click</a> &lt; & "q" \'s <b>'
)
ENTITIES = {"taiwan": ["Taiwan", "تايوان"], "red-line": ["red line", "خط أحمر"]}


def _alert(**fields: object) -> Alert:
    values: dict[str, object] = {
        "id": 1,
        "watchlist": "taiwan-red-line",
        "channel": "analysts",
        "recipient": "42",
        "title": "Taiwan is the first red line",
        "body": "Wang Yi said Taiwan is the first red line for China.",
        "link": "https://example.org/a?x=1&y=2",
        "source": "aawsat",
        "published": datetime(2023, 9, 18, 10, 0, tzinfo=UTC),
        "hits": (Hit("taiwan", "body", 13, 19), Hit("red line", "body", 33, 41)),
        "other_sources": ("bbc-arabic", "aljazeera"),
    }
    values.update(fields)
    return Alert(**values)  # type: ignore[arg-type]


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _valid(markup: str) -> str:
    """The text Telegram would show; fails the test if Telegram would refuse the message."""
    plain, _ = parse_html(markup)
    assert 0 < len(plain) <= 4096
    assert _units(plain) <= MAX_UNITS
    assert visible_length(markup) == _units(plain)
    return plain


def _matched(title: str, body: str, language: str = "ar") -> tuple[Hit, ...]:
    matcher = Matcher.compile([WatchlistRule("taiwan-red-line", "@taiwan AND @red-line")], ENTITIES)
    matches = matcher.match(Article(title=title, body=body, language=language))
    assert matches, "the article must match"
    return matches[0].hits


# ---- layout and escaping ------------------------------------------------------------------------


def test_an_alert_shows_watchlist_linked_title_source_time_snippet_and_other_sources() -> None:
    markup = alert_html(_alert())
    plain, entities = parse_html(markup)
    assert plain.splitlines() == [
        "🔔 taiwan-red-line",
        "Taiwan is the first red line",
        "aawsat · 2023-09-18 10:00 UTC",
        "Wang Yi said Taiwan is the first red line for China.",
        "also in: bbc-arabic, aljazeera",
    ]
    links = [(plain[e.start : e.end], e.href) for e in entities if e.type == "a"]
    assert links == [("Taiwan is the first red line", "https://example.org/a?x=1&y=2")]
    bold = [plain[e.start : e.end] for e in entities if e.type == "b"]
    assert bold == ["taiwan-red-line", "Taiwan", "red line"]


def test_the_time_is_local_to_the_zone_given() -> None:
    plain = _valid(alert_html(_alert(), tz=ZoneInfo("Asia/Riyadh")))
    assert "aawsat · 2023-09-18 13:00 +03" in plain


def test_fault_63_hostile_feed_text_arrives_as_literal_text() -> None:
    alert = _alert(
        title=HOSTILE,
        body=HOSTILE + " Taiwan " + HOSTILE,
        hits=(Hit("taiwan", "body", len(HOSTILE) + 1, len(HOSTILE) + 7),),
        source="feed<&>",
        watchlist="wl<b>",
        other_sources=("<i>x</i>", "a&b"),
    )
    markup = alert_html(alert)
    plain, entities = parse_html(markup)  # Telegram accepts it …
    lines = plain.splitlines()
    assert lines[0] == "🔔 wl<b>"  # … and shows every piece as it was written
    assert lines[1] == HOSTILE.strip()
    assert lines[2].startswith("feed<&> · ")
    assert HOSTILE.strip() in lines[3]
    assert lines[4] == "also in: <i>x</i>, a&b"
    assert sorted(e.type for e in entities) == ["a", "b", "b", "i"]
    assert [e.href for e in entities if e.type == "a"] == ["https://example.org/a?x=1&y=2"]
    assert "tg://" not in [e.href for e in entities]


@pytest.mark.parametrize(
    "link",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<b>x</b>",
        "file:///etc/passwd",
        "tg://resolve?domain=x",
        "//example.org/no-scheme",
        "https://",
        "https://exa mple.org/",
        "https://example.org/\u202etxt.exe",
        None,
        "",
    ],
)
def test_fault_11_only_http_links_are_links(link: str | None) -> None:
    markup = alert_html(_alert(link=link))
    plain, entities = parse_html(markup)
    assert not [e for e in entities if e.type == "a"]
    assert plain.splitlines()[1] == "Taiwan is the first red line"  # shown, in bold
    assert safe_link(link) is None


def test_a_link_with_quotes_and_ampersands_survives_escaping() -> None:
    link = "https://example.org/a?q=\"x\"&r=<y>&s='z'"
    _, entities = parse_html(alert_html(_alert(link=link)))
    assert [e.href for e in entities if e.type == "a"] == [link]


def test_fault_65_controls_bidi_overrides_and_invisible_characters_are_removed() -> None:
    title = "Breaking\u202e\u2066 news\u200b\x00\x1b[31m\r\nBcc: x\ufeff — \u200dزی\u200cبا"
    assert clean(title) == "Breaking news[31m Bcc: x — \u200dزی\u200cبا"
    plain = _valid(alert_html(_alert(title=title, link=None)))
    assert plain.splitlines()[1] == "Breaking news[31m Bcc: x — \u200dزی\u200cبا"


def test_fault_65_a_long_title_is_cut() -> None:
    plain = _valid(alert_html(_alert(title="word " * 800)))
    title = plain.splitlines()[1]
    assert len(title) <= 301 and title.endswith("…")


def test_title_hits_are_bold_in_the_title_and_a_title_only_match_shows_no_snippet() -> None:
    alert = _alert(
        title="Taiwan and the red line", hits=(Hit("taiwan", "title", 0, 6),), body="other text"
    )
    plain, entities = parse_html(alert_html(alert))
    assert [plain[e.start : e.end] for e in entities if e.type == "b"][1:] == ["Taiwan"]
    assert "other text" not in plain


def test_hits_out_of_range_are_ignored_not_fatal() -> None:
    alert = _alert(hits=(Hit("x", "body", 500, 510), Hit("y", "body", 5, 3)))
    _valid(alert_html(alert))


def test_many_other_sources_are_summarised() -> None:
    plain = _valid(alert_html(_alert(other_sources=tuple(f"feed{i}" for i in range(25)))))
    assert plain.splitlines()[-1].endswith("feed9, and 15 more")


# ---- Arabic -------------------------------------------------------------------------------------


def _arabic_article(length: int = 10_000) -> tuple[str, str]:
    filler = "قال المتحدث إن الاجتماع تناول قضايا التعاون الاقتصادي والأمن الإقليمي. "
    middle = "وأكد الوزير أن تايوان هي أول خط أحمر لا يمكن تجاوزه. "
    body = filler * (length // 2 // len(filler)) + middle
    body += filler * ((length - len(body)) // len(filler) + 1)
    return "وزير الخارجية الصيني يتوجه إلى روسيا", body[:length]


def test_a_10000_character_arabic_article_gives_a_valid_message_with_the_hits_bold() -> None:
    title, body = _arabic_article()
    assert len(body) == 10_000
    hits = _matched(title, body)
    markup = alert_html(_alert(title=title, body=body, hits=hits, link="https://aawsat.com/x"))
    plain, entities = parse_html(markup)
    assert len(plain) <= 4096
    bold = [plain[e.start : e.end] for e in entities if e.type == "b"][1:]
    assert bold == [body[h.start : h.end] for h in hits] == ["تايوان", "خط أحمر"]
    snippet_line = plain.splitlines()[3]
    assert "تايوان هي أول خط أحمر" in snippet_line
    assert 150 <= len(snippet_line) <= 230


def test_the_corpus_arabic_article_keeps_its_hit_offsets() -> None:
    text = (require_corpus() / "seed" / "aawsat-wang-yi-russia.txt").read_text("utf-8")
    title, _, body = text.partition("\n")
    hits = _matched(title, body)
    plain, entities = parse_html(alert_html(_alert(title=title, body=body, hits=hits)))
    bold = [plain[e.start : e.end] for e in entities if e.type == "b"][1:]
    assert bold == [body[h.start : h.end] for h in hits if h.start >= 0]
    assert set(bold) == {"تايوان", "خط أحمر"}


# ---- the 4096 limit -----------------------------------------------------------------------------


def test_fault_48_everything_huge_still_fits() -> None:
    alert = _alert(
        watchlist="w" * 5000,
        title="<&>" * 3000,
        body="& " * 20_000,
        other_sources=tuple("s" * 500 for _ in range(50)),
        source="src" * 1000,
    )
    markup = alert_html(alert)
    plain = _valid(markup)
    assert plain.endswith("…")


def test_fault_48_emoji_at_the_boundary_is_never_split() -> None:
    for shift in range(4):
        text = "x" * shift + "😀" * 3000  # 2 UTF-16 units each
        markup = truncate_html(f"<b>{text}</b>", MAX_UNITS)
        plain = _valid(markup)
        assert plain.endswith("…")
        assert "\ud83d" not in plain and all(c in "x😀…" for c in plain)
        assert _units(plain) <= MAX_UNITS


def test_emoji_sequences_and_flags_stay_whole() -> None:
    family = "👨\u200d👩\u200d👧"
    flags = "🇹🇼🇨🇳"
    for prefix in range(0, 12):
        text = "y" * prefix + (family + flags) * 20
        cut = truncate_html(text, 20 + prefix % 7)
        body = cut.removesuffix("…")
        assert not body.endswith("\u200d")
        regional = sum(1 for c in body if "\U0001f1e6" <= c <= "\U0001f1ff")
        assert regional % 2 == 0
        assert visible_length(cut) <= 20 + prefix % 7


def test_a_combining_mark_stays_with_its_letter() -> None:
    text = "e\u0301" * 10  # é as e + combining acute
    cut = truncate_html(text, 6)
    assert cut.removesuffix("…").endswith("\u0301")


@pytest.mark.parametrize("limit", [1, 2, 5, 17, 100])
def test_fault_48_cuts_inside_tags_and_entities_stay_valid(limit: int) -> None:
    markup = (
        '<b>bold &amp; <i>italic &lt;x&gt;</i></b> <a href="https://e.org/?a=1&amp;b=2">'
        "link &quot;text&quot;</a> &#x1F600; tail " * 20
    )
    cut = truncate_html(markup, limit)
    if limit > 1:
        _valid(cut)
    assert visible_length(cut) <= limit


def test_a_message_that_fits_is_unchanged() -> None:
    markup = "<b>a</b> &amp; b"
    assert truncate_html(markup, 5) == markup
    assert visible_length(markup) == 5
    assert plain_text(markup) == "a & b"


def test_plain_text_fallback_is_capped() -> None:
    plain = alert_plain(_alert(title="t" * 10_000))
    assert _units(plain) <= MAX_UNITS and plain.endswith("…")
    assert truncate_plain("short") == "short"


def test_random_feed_text_always_gives_a_valid_message() -> None:
    rng = random.Random(4)
    alphabet = [*list("<>&\"';/ab =#x"), "&amp;", "</b>", "<a href=", "😀", "تايوان", "\u202e"]
    alphabet += ["\x00", "\n", "\u0301", "👨\u200d👩", "🇹", "&#0;", "&#xD800;", " "]
    for _ in range(300):
        title = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3000)))
        hits = []
        for _ in range(rng.randint(0, 5)):
            start = rng.randint(0, max(len(body) - 1, 0))
            hits.append(Hit("t", "body", start, start + rng.randint(1, 10)))
        alert = _alert(title=title, body=body, hits=tuple(hits), link=rng.choice([None, title]))
        markup = alert_html(alert, limit=rng.choice([MAX_UNITS, 300, 50]))
        try:
            parse_html(markup)
        except EntityParseError as exc:  # pragma: no cover - the failure message shows the input
            pytest.fail(f"{exc}: {markup!r}")
        assert visible_length(markup) <= MAX_UNITS


# ---- digests ------------------------------------------------------------------------------------


def _digest_alerts(count: int) -> list[Alert]:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        _alert(
            id=i,
            watchlist=("taiwan-red-line", "china-russia")[i % 2],
            title=f"Story {i} <&>",
            published=start + timedelta(minutes=i),
            body="Taiwan and the red line " * 20,
            hits=(Hit("taiwan", "body", 0, 6),),
        )
        for i in range(count)
    ]


def test_a_digest_groups_by_watchlist_newest_first() -> None:
    [markup] = digest_html(_digest_alerts(6), "Daily digest")
    plain = _valid(markup)
    lines = [line for line in plain.splitlines() if line.strip()]
    assert lines[0] == "Daily digest"
    assert lines[1] == "china-russia (3)"  # it has the newest alert (5)
    titles = [line.split(" — ")[0] for line in lines if line.startswith("• ")]
    assert titles == [f"• Story {i} <&>" for i in (5, 3, 1, 4, 2, 0)]
    assert lines.index("taiwan-red-line (3)") > lines.index(
        "• Story 1 <&> — aawsat, bbc-arabic, aljazeera · 01 Jan 00:01 UTC"
    )


def test_a_long_digest_is_split_between_entries_under_the_limit() -> None:
    alerts = _digest_alerts(200)
    messages = digest_html(alerts, "Hourly digest")
    assert len(messages) > 1
    seen = []
    for number, markup in enumerate(messages, 1):
        plain = _valid(markup)
        assert plain.startswith(f"Hourly digest ({number}/{len(messages)})")
        assert markup == truncate_html(markup)  # split between entries: nothing was cut
        seen += [line.split(" — ")[0][2:] for line in plain.splitlines() if line.startswith("• ")]
    assert sorted(seen) == sorted(f"Story {i} <&>" for i in range(200))
    assert "china-russia (continued)" in "".join(parse_html(m)[0] for m in messages)


def test_a_digest_entry_names_every_source_of_its_story_escaped() -> None:
    alert = _alert(
        title="Story",
        source="wire",
        other_sources=("bbc", "<b>reuters</b> & co"),
        published=datetime(2025, 1, 1, 10, 0, tzinfo=UTC),
    )
    [markup] = digest_html([alert], "Digest")
    lines = _valid(markup).splitlines()
    assert [line for line in lines if line.startswith("• ")] == [
        "• Story — wire, bbc, <b>reuters</b> & co · 01 Jan 10:00 UTC"
    ]
    [brief] = digest_html([alert], "In the last minute", brief=True)
    assert "• Story — wire, bbc, <b>reuters</b> & co · 10:00 UTC" in _valid(brief)


def test_an_empty_digest_is_no_message() -> None:
    assert digest_html([], "Digest") == []
