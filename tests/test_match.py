"""The matcher: every operator and SPEC §3 rule from tests/data/match_cases.json, hits with offsets,
and the reference article of the project."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.core.match import Matcher, WatchlistRule, proclitic_forms
from monitor.errors import QueryError
from monitor.model import Article

ENTITIES = {
    "taiwan": ["Taiwan", "Taipei", "تايوان", "تايبيه", "台湾", "臺灣"],
    "red-line": ["red line", "red lines", "خط أحمر", "خطوط حمراء", "红线"],
}
CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "match_cases.json").read_text("utf-8")
)
REFERENCE = (
    Path(__file__).resolve().parents[1] / "examples" / "articles" / "aawsat-wang-yi-russia.txt"
)


def article_of(case: dict[str, Any]) -> Article:
    return Article(
        title=case.get("title", ""),
        body=case.get("body", ""),
        language=case.get("lang"),
        source=case.get("source"),
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_match_case(case: dict[str, Any]) -> None:
    matcher = Matcher.compile([WatchlistRule("w", case["query"])], ENTITIES)
    article = article_of(case)
    matches = matcher.match(article)
    if case["hits"] is None:
        assert matches == []
        return
    assert [m.watchlist for m in matches] == ["w"]
    texts = {"title": article.title, "body": article.body}
    got = [[h.field, texts[h.field][h.start : h.end]] for h in matches[0].hits]
    assert got == case["hits"]
    if "starts" in case:
        assert [h.start for h in matches[0].hits] == case["starts"]


def reference_articles() -> tuple[Article, Article]:
    lines = REFERENCE.read_text("utf-8").split("\n")

    def article(first: int, last: int) -> Article:
        chunk = [line for line in lines[first - 1 : last]]
        title_at = next(i for i, line in enumerate(chunk) if line.strip())
        return Article(title=chunk[title_at].strip(), body="\n".join(chunk[title_at + 1 :]))

    return article(1, 49), article(91, 145)


def test_reference_article_matches_taiwan_red_line() -> None:
    first, second = reference_articles()
    matcher = Matcher.compile([WatchlistRule("taiwan-red-line", "@taiwan AND @red-line")], ENTITIES)
    (match,) = matcher.match(first)
    shown = [first.body[h.start : h.end] for h in match.hits]
    assert shown == ["تايوان", "تايوان", "خط أحمر"]
    # the hits sit in «قضية تايوان هي «أول خط أحمر»
    last_taiwan, red_line = match.hits[1], match.hits[2]
    assert first.body[last_taiwan.start - 5 : red_line.end] == "قضية تايوان هي «أول خط أحمر"
    assert matcher.match(second) == []


def test_only_matching_watchlists_are_returned_in_order() -> None:
    rules = [WatchlistRule(f"w{i}", f"word{i}") for i in range(50)] + [
        WatchlistRule("both", "word3 AND word7")
    ]
    matcher = Matcher.compile(rules)
    got = matcher.match(Article(title="word7", body="word3 word49"))
    assert [m.watchlist for m in got] == ["w3", "w7", "w49", "both"]
    assert got[1].hits[0].field == "title"


def test_language_and_feed_filters_apply_when_known() -> None:
    rule = WatchlistRule("ar-only", "china", languages=("ar",), feeds=("aawsat",))
    matcher = Matcher.compile([rule])
    assert matcher.match(Article("China", "", language="en")) == []
    assert matcher.match(Article("China", "", language="ar", source="bbc")) == []
    assert len(matcher.match(Article("China", "", language="ar", source="aawsat"))) == 1
    assert len(matcher.match(Article("China", ""))) == 1  # unknown language and source


def test_compile_errors_name_the_watchlist() -> None:
    with pytest.raises(QueryError) as err:
        Matcher.compile([WatchlistRule("good", "a"), WatchlistRule("bad", "a AND @nope")])
    assert "watchlist 'bad'" in err.value.message
    assert err.value.column == 7


def test_empty_matcher_and_empty_article() -> None:
    assert Matcher.compile([]).match(Article("t", "b")) == []
    assert Matcher.compile([WatchlistRule("w", "xy*")]).match(Article("", "")) == []


def test_proclitic_forms() -> None:
    forms = proclitic_forms("الصين")
    assert {"الصين", "والصين", "فالصين", "بالصين", "كالصين", "للصين", "وبالصين", "وللصين"} <= forms
    assert "صين" not in forms
    assert {"صين", "الصين", "بصين", "للصين", "وصين"} <= proclitic_forms("صين")
    assert proclitic_forms("china") == {"china"}
    assert proclitic_forms("ب") == {"ب"}  # too short to take proclitics


def test_a_watchlist_that_does_not_compile_leaves_the_garbage_collector_on() -> None:
    """Compiling holds the collector (tests/test_collector.py); an error must not leave it off."""
    import gc

    with pytest.raises(QueryError):
        Matcher.compile([WatchlistRule("w", "taiwan AND")], ENTITIES)
    assert gc.isenabled()
