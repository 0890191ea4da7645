"""SPEC §5: item identity and content hash, from the tables in tests/data/dedup_*.json and from
real duplicate pairs of the shared corpus (MANIFEST: "exact-same-body pairs")."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from httpserver import require_corpus

from monitor.core.dedup import (
    HASH_VERSION,
    MAX_IDENTITY_CHARS,
    clean_link,
    content_hash,
    item_identity,
)

DATA = Path(__file__).parent / "data"
LINKS = json.loads((DATA / "dedup_links.json").read_text("utf-8"))
IDENTITIES = json.loads((DATA / "dedup_identity.json").read_text("utf-8"))
HASHES = json.loads((DATA / "dedup_hash.json").read_text("utf-8"))


def corpus() -> Path:
    """The shared corpus, or skip the test (see tests/httpserver.py)."""
    return require_corpus()


def trec_article(path: Path) -> tuple[str, str]:
    """(title, body) of an ANT corpus document (TREC-style <TITLE> and <TEXT>)."""
    doc = path.read_text("utf-8")
    title = re.search(r"<TITLE>(.*?)</TITLE>", doc, re.DOTALL)
    text = re.search(r"<TEXT>(.*?)</TEXT>", doc, re.DOTALL)
    assert title is not None and text is not None, path
    return title.group(1), text.group(1)


def txt_article(path: Path) -> tuple[str, str]:
    """(title, body) of a text file whose first line is the title."""
    title, _, body = path.read_text("utf-8").partition("\n")
    return title, body


# --- clean_link -------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "url", "expected"), LINKS, ids=[c[0] for c in LINKS])
def test_clean_link(case: str, url: str, expected: str) -> None:
    assert clean_link(url) == expected


def test_clean_link_is_idempotent() -> None:
    for _, url, expected in LINKS:
        assert clean_link(expected) == expected, url


# --- item_identity ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", IDENTITIES, ids=[c["case"] for c in IDENTITIES])
def test_identity_precedence(case: dict[str, Any]) -> None:
    assert item_identity(case["guid"], case["link"], "a title", "a body") == case["expected"]


def test_without_guid_and_link_the_fallback_is_stable_and_content_based() -> None:
    """FAULTS 12: an item with neither guid nor link gets the same key on every poll."""
    first = item_identity(None, None, "Title", "Body text")
    assert first == item_identity(None, "", "Title", "Body text")
    assert first == item_identity("  ", "   ", " Title ", "Body\n text")  # re-poll, new whitespace
    assert first == "content:" + content_hash("Title", "Body text")
    assert first != item_identity(None, None, "Title", "Other body")


def test_a_huge_guid_becomes_a_bounded_key() -> None:
    guid = "x" * 10_000_000
    key = item_identity(guid, None, "", "")
    assert key.startswith("guid:sha256:") and len(key) < 100
    assert key == item_identity(guid, None, "other", "text")
    assert key != item_identity(guid + "y", None, "", "")
    at_limit = "y" * MAX_IDENTITY_CHARS
    assert item_identity(at_limit, None, "", "") == "guid:" + at_limit


# --- content_hash -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", HASHES["pinned"], ids=[c["case"] for c in HASHES["pinned"]])
def test_hash_values_are_pinned(case: dict[str, str]) -> None:
    """Stored hashes depend on these values: a change here needs HASH_VERSION bumped."""
    assert HASH_VERSION == 1
    assert content_hash(case["title"], case["text"]) == case["hash"]


@pytest.mark.parametrize("case", HASHES["pairs"], ids=[c["case"] for c in HASHES["pairs"]])
def test_hash_equal_only_for_presentation_variants(case: dict[str, Any]) -> None:
    same = content_hash(*case["a"]) == content_hash(*case["b"])
    assert same is case["same"]


def test_hash_format() -> None:
    value = content_hash("t", "b")
    assert re.fullmatch(rf"v{HASH_VERSION}:[0-9a-f]{{64}}", value)


def test_hash_survives_lone_surrogates_and_nul() -> None:
    """FAULTS 9: broken feeds hash instead of raising."""
    assert content_hash("bad \ud800 title", "nul\x00body") != content_hash("bad title", "nulbody")


# --- real corpus pairs ------------------------------------------------------------------------

SAME_BODY_PAIRS = [
    # BBC Arabic filed the same article under two categories.
    ("BBC/culture/BB-culture-107-20180410.txt", "BBC/middleEast/BB-middleEast-320-20180410.txt"),
    # Al Arabiya, economy and technology.
    (
        "Alarabia/economy/AL-economy-432-20180412.txt",
        "Alarabia/technology/AL-technology-165-20180412.txt",
    ),
]


@pytest.mark.parametrize(("first", "second"), SAME_BODY_PAIRS)
def test_corpus_same_article_in_two_categories_hashes_equal(first: str, second: str) -> None:
    base = corpus() / "articles" / "ar" / "ant-multisource"
    a, b = trec_article(base / first), trec_article(base / second)
    assert a == b  # the precondition: byte-identical title and body
    assert content_hash(*a) == content_hash(*b)


def test_corpus_identical_bodies_under_different_titles_stay_apart() -> None:
    """The 11-file Al Arabiya group shares one boilerplate body; the titles make them different."""
    base = corpus() / "articles" / "ar" / "ant-multisource" / "Alarabia" / "culture"
    a = trec_article(base / "AL-culture-58-20130112.txt")
    b = trec_article(base / "AL-culture-59-20121222.txt")
    assert a[1] == b[1] and a[0] != b[0]
    assert content_hash(*a) != content_hash(*b)


def test_corpus_titles_differing_only_by_tanween_hash_equal() -> None:
    """MANIFEST example: Al Arabiya «تلقائياً» vs Sky News «تلقائيا» (the bodies differ)."""
    base = corpus() / "articles" / "ar" / "ant-multisource"
    a, _ = trec_article(base / "Alarabia" / "technology" / "AL-technology-72-20180228.txt")
    b, _ = trec_article(base / "SkyNews" / "technology" / "SK-technology-119-20180228.txt")
    assert a != b
    assert content_hash(a, "") == content_hash(b, "")


def test_corpus_byte_identical_bbc_pair_hashes_equal() -> None:
    base = corpus() / "articles" / "en" / "bbc-fulltext" / "tech"
    a, b = txt_article(base / "004.txt"), txt_article(base / "063.txt")
    assert a == b
    assert content_hash(*a) == content_hash(*b)


def test_corpus_reference_article_survives_reflow_and_diacritics() -> None:
    """The reference article re-rendered: paragraphs joined, harakat stripped, presentation
    of whitespace changed — one hash. One changed word — another hash."""
    lines = (corpus() / "seed" / "aawsat-wang-yi-russia.txt").read_text("utf-8").splitlines()
    title, body = lines[0], "\n".join(lines[1:49])
    reflowed = " ".join(re.sub("[\u064b-\u065f\u0670\u0640]", "", body).split())
    assert reflowed != body
    assert content_hash(title, body) == content_hash(title, reflowed)
    changed = body.replace("أول خط أحمر", "ثاني خط أحمر")
    assert changed != body
    assert content_hash(title, body) != content_hash(title, changed)
