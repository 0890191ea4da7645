"""Near-duplicate stories (core.stories): copies with another headline, caption or footer are one
story; other articles, even on the same subject, are not."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from httpserver import corpus_dir

from monitor.core import stories
from monitor.core.stories import closest, decode, encode, fingerprint, same_story, similarity

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "examples" / "articles" / "aawsat-wang-yi-russia.txt"


def reference_bodies() -> tuple[str, str]:
    """The two articles of the reference page (Asharq Al-Awsat): Wang Yi's visit to Moscow, and
    another story from the same page on China and Russia."""
    lines = REFERENCE.read_text("utf-8").split("\n")
    return "\n".join(lines[1:49]), "\n".join(lines[91:145])


def test_a_copy_with_a_caption_and_a_footer_is_the_same_story() -> None:
    body, other = reference_bodies()
    copy = "صورة أرشيفية: وزير الخارجية الصيني في موسكو\n" + body + "\nجميع الحقوق محفوظة © 2023"
    assert same_story(fingerprint(body), fingerprint(copy))
    assert similarity(fingerprint(body), fingerprint(copy)) > 0.85
    # the other article of the same page shares its subject, not its text
    assert similarity(fingerprint(body), fingerprint(other)) < 0.1
    assert not same_story(fingerprint(body), fingerprint(other))


def test_diacritics_and_letter_forms_do_not_make_another_story() -> None:
    body, _ = reference_bodies()
    vocalised = body.replace("الصين", "الصِّينِ").replace("تايوان", "تَايْوَان")
    assert similarity(fingerprint(body), fingerprint(vocalised)) == 1.0


def test_a_body_too_short_has_no_fingerprint() -> None:
    assert fingerprint("Breaking: markets fall") == ()
    assert fingerprint(" ".join(f"w{i}" for i in range(stories.MIN_SHINGLES + 1))) == ()
    assert len(fingerprint(" ".join(f"w{i}" for i in range(stories.MIN_SHINGLES + 2)))) == 20
    assert similarity((), fingerprint(reference_bodies()[0])) == 0.0


def test_fingerprints_are_the_same_in_every_process() -> None:
    """Stored fingerprints are compared by other replicas: the hashes must not depend on Python's
    per-process string hashing."""
    text = " ".join(f"word{i}" for i in range(40))
    assert fingerprint(text)[:3] == (11747522802955471, 88401742195882226, 120993034921591031)


def test_stored_form_and_versions() -> None:
    found = fingerprint(reference_bodies()[0])
    assert len(found) == stories.SIZE and list(found) == sorted(found)
    assert decode(encode(found)) == found
    assert encode(found).startswith(f"v{stories.VERSION}:")
    assert decode("v0:1 2 3") == () and decode(None) == () and decode("") == ()


def test_closest_takes_the_most_similar_story_above_the_threshold() -> None:
    body, other = reference_bodies()
    mine, theirs = fingerprint(body), fingerprint(other)
    copy = fingerprint(body + "\nجميع الحقوق محفوظة")
    assert closest(copy, [(7, encode(theirs)), (3, encode(mine)), (9, None)]) == 3
    assert closest(copy, [(7, encode(theirs))]) is None
    assert closest(copy, [(5, encode(mine)), (4, encode(mine))]) == 4  # a tie: the older story


def test_real_copies_in_the_corpus() -> None:
    """The BBC business articles of the corpus hold twelve stories twice: nine exact copies and
    three edited ones ("Mixed reaction to Man Utd offer" and "Shares rise on new Man Utd offer",
    0.69). Those pairs, and no other of its 1,596, are one story: every other pair shares under
    0.3 of its shingles."""
    corpus = corpus_dir()
    if corpus is None:
        pytest.skip("the shared corpus is not here (MONITOR_CORPUS)")
    folder = corpus / "articles" / "en" / "bbc-fulltext" / "business"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not in this corpus")
    prints = {
        path.stem: fingerprint(path.read_text("utf-8").split("\n", 1)[1])
        for path in sorted(folder.glob("*.txt"))
    }
    names = sorted(prints)
    copies = {
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if same_story(prints[a], prints[b])
    }
    assert copies == {
        ("007", "253"),
        ("209", "229"),
        ("214", "240"),
        ("215", "494"),
        ("254", "447"),
        ("256", "371"),
        ("258", "356"),
        ("260", "354"),
        ("265", "333"),
        ("286", "493"),
        ("290", "438"),
        ("292", "416"),
    }


def _article(name: str) -> stories.Report:
    """A corpus article kept in tests/data/stories: headline, link, date, body."""
    title, link, date, body = (DATA / f"{name}.txt").read_text("utf-8").split("\n", 3)
    return stories.Report(stories.outlet_of(link, "feed"), parsedate_to_datetime(date), title, body)


DATA = ROOT / "tests" / "data" / "stories"
APOLOGY = "skynews-philippines-apologises-to-kuwait"
EXPULSION = "skynews-kuwait-expels-philippine-ambassador"


def test_a_follow_up_shares_most_of_its_text_and_is_told_apart_by_its_headline_and_lead() -> None:
    """Sky News Arabia, a day apart: "the Philippines apologises to Kuwait", then "Kuwait expels
    the Philippine ambassador" — a new lead over the old text, as close as a rewrite by text."""
    apology, expulsion = _article(APOLOGY), _article(EXPULSION)
    score = similarity(fingerprint(apology.body), fingerprint(expulsion.body))
    assert score >= stories.SAME_OUTLET
    assert apology.outlet == expulsion.outlet == "skynewsarabia.com"
    assert stories.is_follow_up(expulsion, apology)
    assert not stories.joins(score, expulsion, [apology], stories.Rules())
    assert not stories.is_follow_up(apology, expulsion)  # not the later one
    elsewhere = replace(expulsion, outlet="alarabiya.net")
    assert not stories.is_follow_up(elsewhere, apology)  # another outlet's rewrite joins
    assert stories.joins(score, elsewhere, [apology], stories.Rules())
    # the outlet's own update of its report keeps the headline, or the lead: it joins
    retitled = replace(expulsion, title=apology.title)
    assert not stories.is_follow_up(retitled, apology)
    relead = replace(expulsion, body=apology.body.split("\n")[0] + "\n" + expulsion.body)
    assert not stories.is_follow_up(relead, apology)


def test_the_threshold_is_lower_across_outlets_than_within_one() -> None:
    apology = _article(APOLOGY)
    later = replace(apology, at=apology.at + timedelta(hours=1))
    rules = stories.Rules(threshold=0.4)
    assert rules.same_outlet == stories.SAME_OUTLET
    assert stories.joins(0.45, replace(later, outlet="cnn.com"), [apology], rules)
    assert not stories.joins(0.45, later, [apology], rules)
    assert stories.joins(0.65, later, [apology], rules)
    assert not stories.joins(0.35, replace(later, outlet="cnn.com"), [apology], rules)
    assert stories.Rules(threshold=0.7).same_outlet == 0.7


def test_choose_takes_the_most_similar_story_the_item_may_join() -> None:
    apology, expulsion = _article(APOLOGY), _article(EXPULSION)
    ranked = [(0.8, 1), (0.5, 2)]
    other = replace(apology, outlet="cnn.com")
    assert stories.choose(ranked, expulsion, {1: [apology], 2: [other]}, stories.Rules()) == 2
    assert stories.choose(ranked[:1], expulsion, {1: [apology]}, stories.Rules()) is None


def test_the_outlet_is_the_links_host_else_the_feed() -> None:
    assert stories.outlet_of("https://www.bbc.co.uk/news/1", "bbc-world") == "bbc.co.uk"
    assert stories.outlet_of("https://bbc.co.uk/x", "bbc-business") == "bbc.co.uk"
    assert stories.outlet_of(None, "wire") == "feed:wire"
