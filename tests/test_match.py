"""The matcher: every operator and SPEC §3 rule from the data tables in tests/data — match_cases.json,
enclitics.json (rule 7), as_written.json (`=term`) — hits with offsets, and the reference article of
the project."""

from __future__ import annotations

import json
import random
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from httpserver import corpus_dir

from monitor.core.clitics import (
    ACCUSATIVE_ALIF,
    PRONOUNS,
    enclitic_forms,
    proclitic_forms,
    whole_word_forms,
)
from monitor.core.match import Matcher, WatchlistRule
from monitor.core.text import NormalizedText, is_arabic
from monitor.errors import QueryError
from monitor.model import Article

ENTITIES = {
    "taiwan": ["Taiwan", "Taipei", "تايوان", "تايبيه", "台湾", "臺灣"],
    "red-line": ["red line", "red lines", "خط أحمر", "خطوط حمراء", "红线"],
}
CASES: list[dict[str, Any]] = [
    case
    for table in ("match_cases", "enclitics", "as_written")
    for case in json.loads((Path(__file__).parent / "data" / f"{table}.json").read_text("utf-8"))
]
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
    assert matches == matcher.match_exhaustively(article)
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


@pytest.mark.parametrize("term", ["حكومة", "خط", "صواريخ", "لجنة"])
def test_every_form_of_an_arabic_term_matches_it_from_a_third_of_the_keys(term: str) -> None:
    """Each of the ~120 forms with an enclitic pronoun or alif (rule 7) matches the term whole, as
    its other forms do, though the matcher keeps those forms without the clitic (a dozen keys);
    a word that is no form of it, close as it comes, does not."""
    matcher = Matcher.compile([WatchlistRule("w", term)])
    forms = whole_word_forms(term)
    assert len(enclitic_forms(term)) > 100
    for form in sorted(forms):
        found = matcher.match(Article(f"قال {form} اليوم", ""))
        assert [(m.watchlist, [(h.start, h.end) for h in m.hits]) for m in found] == [
            ("w", [(4, 4 + len(form))])
        ], form
    stem = term[:-1] + "ت" if term.endswith("ة") else term
    near_misses = [
        stem + "ي",  # a nisba or first-person pronoun: not rule 7's
        stem + "ات",  # a plural
        "ال" + stem + "ها",  # the article with a pronoun
        "بال" + stem + "ا",  # the article with the accusative alif
        stem + "هماه",
    ]
    for word in near_misses:
        assert word not in forms
        assert matcher.match(Article(word, "")) == [], word
    enclitics = matcher._enclitics
    assert enclitics is not None
    keys = len(matcher._whole_forms) + len(enclitics.bases)
    assert keys * 2 < len(forms)  # 60 keys for the 168 forms of حكومة


def test_the_matcher_keeps_its_forms_once() -> None:
    """The forms are the keys of their tables and nothing else: no set of them beside a table,
    one table for the words before a pronoun or the alif, and one (units, units) pair for all
    the bases of a word, whose words with enclitics still match."""
    words = ["حكومة", "وزير", "خط", "الصين", "مفاوضات", "Taiwan", "red line"]
    matcher = Matcher.compile([WatchlistRule(f"w{n}", word) for n, word in enumerate(words)])
    sets = [v for v in vars(matcher).values() if isinstance(v, (set, frozenset)) and len(v) > 50]
    assert sets == []
    enclitics = matcher._enclitics
    assert enclitics is not None
    assert list(type(enclitics).__slots__) == ["bases"]
    pairs = {id(pair) for pair in enclitics.bases.values()}
    assert len(pairs) == len(set(enclitics.bases.values()))  # equal pairs: one object
    assert len(enclitics.bases) > 5 * len(pairs)
    # bases before a pronoun only (وبحكومت) and before both a pronoun and the alif (وخط)
    kinds = {(p is not None, a is not None) for p, a in enclitics.bases.values()}
    assert kinds == {(True, False), (True, True)}
    found = matcher.match(Article("وبحكومتهم ووزيرها في الصين", "وخطا Taiwan"))
    assert sorted(m.watchlist for m in found) == ["w0", "w1", "w2", "w3", "w5"]


def test_a_watchlist_that_does_not_compile_leaves_the_garbage_collector_on() -> None:
    """Compiling holds the collector (tests/test_collector.py); an error must not leave it off."""
    import gc

    with pytest.raises(QueryError):
        Matcher.compile([WatchlistRule("w", "taiwan AND")], ENTITIES)
    assert gc.isenabled()


def generated_queries(words: list[str], phrases: list[str], n: int, seed: int) -> list[str]:
    """Queries of every shape (as benchmarks/match.py makes them) from the words of real texts,
    so that many of them match."""
    rng = random.Random(seed)

    def w() -> str:
        return rng.choice(words)

    def p() -> str:
        return f'"{rng.choice(phrases)}"'

    shapes = [
        lambda: w(),
        lambda: f"{w()} AND {w()}",
        lambda: f"({w()} OR {w()}) AND {w()}",
        lambda: p(),
        lambda: f"{w()} NEAR/{rng.randint(1, 12)} {w()}",
        lambda: f"{w()} NOT {w()}",
        lambda: f"{w()[:3]}* AND {w()}",
        lambda: f"@{rng.choice(list(ENTITIES))} AND {w()}",
        lambda: f"title:{w()} OR {p()}",
        lambda: f"({w()} OR {p()}) NEAR/10 ({w()} OR {w()})",
        lambda: f"title:{w()} NOT {w()}",
        lambda: f"{w()} NOT title:{w()}",
        lambda: f"body:{w()} NOT {w()[:3]}*",
        lambda: f"{w()} NOT ({w()} OR {w()})",
        lambda: f'{w()} NOT "{rng.choice(phrases)}"',
        lambda: f"lang:{rng.choice(['ar', 'en'])} AND {w()}",
        lambda: f"={w()}",
        lambda: f"={w()} AND {w()}",
        lambda: f'="{rng.choice(phrases)}" OR {w()}',
        lambda: f"{w()} NOT ={w()}",
    ]
    return [shapes[i % len(shapes)]() for i in range(n)]


def stems(words: list[str]) -> list[str]:
    """The Arabic words among `words` (as the matcher reads them) that end in a pronoun or an
    alif, without it, as a term would name them (ت before the pronoun back to ة): the terms that
    match those words only by SPEC §3 rule 7."""
    out = []
    for word in words:
        for ending in (*PRONOUNS, ACCUSATIVE_ALIF):
            stem = word.removesuffix(ending)
            if stem != word and len(stem) >= 3 and is_arabic(stem):
                out.append(stem)
                if stem.endswith("ت"):
                    out.append(stem[:-1] + "ة")
    return out


def test_the_index_and_its_shortcuts_never_change_a_result() -> None:
    """1,700 watchlists of every shape, from the words of Arabic and English texts and the stems
    of the Arabic ones: `match` (the index, the presence tests, the shortcut for single words)
    returns exactly what evaluating every watchlist in full returns, rule 7 and `=` included."""
    first, second = reference_articles()
    texts = [first, second]
    corpus = corpus_dir()
    if corpus is not None:
        for sub in ("articles/ar", "articles/en"):
            for path in sorted((corpus / sub).rglob("*.txt"))[:12]:
                title, _, body = path.read_text("utf-8", errors="replace").partition("\n")
                texts.append(Article(title, body, language=sub[-2:]))
    texts.append(Article("وبصواريخها", "يشكل خطاً أحمر، ورفض تسليم سلاحه، وحكومتهم خطة خطأ"))
    words, phrases = [], []
    for article in texts:
        found = NormalizedText.of(article.title + "\n" + article.body).tokens
        words += [t for t in found if len(t) > 3]
        phrases += [f"{a} {b}" for a, b in pairwise(found)]
    words += stems(words)
    queries = generated_queries(words, phrases, 1700, seed=2)
    matcher = Matcher.compile([WatchlistRule(f"w{i}", q) for i, q in enumerate(queries)], ENTITIES)
    matched = by_rule_7 = 0
    for article in texts:
        expected = matcher.match_exhaustively(article)
        assert matcher.match(article) == expected, article.title
        matched += len(expected)
        fields = {"title": article.title, "body": article.body}
        for hit in (h for m in expected for h in m.hits):
            word = NormalizedText.of(fields[hit.field][hit.start : hit.end]).tokens
            by_rule_7 += len(word) == 1 and word[0] in enclitic_forms(hit.term)
    # the comparison is not between empty lists, nor without the forms of rule 7
    assert matched > 10 * len(texts)
    assert by_rule_7 > 50


def test_the_forms_before_an_enclitic_share_the_whole_forms_strings() -> None:
    words = ["حكومة", "وزير", "خط", "الصين", "مفاوضات", "رئيس"]
    matcher = Matcher.compile([WatchlistRule(f"w{n}", word) for n, word in enumerate(words)])
    enclitics = matcher._enclitics
    assert enclitics is not None
    bases = list(enclitics.bases)
    whole = {form: form for form in matcher._whole_forms}
    assert sum(base in whole for base in bases) > len(bases) // 2
    # one string object for each form, not an equal copy built apart
    assert [base for base in bases if base in whole and whole[base] is not base] == []
    # and the words with their enclitics still match
    found = matcher.match(Article("وبحكومتهم ووزيرها", "وخطا"))
    assert sorted(m.watchlist for m in found) == ["w0", "w1", "w2"]
