"""Short items grouped by their headlines (core.headlines): items of a headline and a sentence from
different outlets are one story when their headlines and leads share enough telling words, one of
them distinctive, and they came within a day of each other."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from monitor.core import headlines, stories
from monitor.core.headlines import (
    Headline,
    Rule,
    is_question,
    is_short,
    rare_words,
    same_story,
    telling_words,
    title_keys,
)

# Three outlets' items of one wire story, and another outlet's item of another (2026-02-17).
ABC = Headline.of(
    "Civil rights leader Jesse Jackson dies, aged 84",
    "Jesse Jackson was America's pre-eminent civil rights figure for decades.",
)
BBC = Headline.of(
    "US civil rights leader Jesse Jackson dies aged 84",
    "Tributes poured in from politicians who described Jackson as an agent of change and "
    "transformative leader.",
)
JAPAN_TODAY = Headline.of(
    "Jesse Jackson, civil rights leader and U.S. presidential hopeful, dies at 84",
    "Charismatic U.S. civil rights leader Jesse Jackson, an eloquent Baptist minister raised in "
    "the segregated South who became a close associate of Martin Luther King Jr and twice…",
)
DUVALL = Headline.of(
    "'Apocalypse Now' actor Robert Duvall dies aged 95",
    "The actor, known for The Godfather and Apocalypse Now, has died at his home in Virginia.",
)


def test_telling_words_leave_out_stop_words_and_meet_at_their_stems() -> None:
    assert telling_words("The US says it sanctioned the banks") == ["us", "sanction", "bank"]
    assert telling_words("New sanctions on banks") == ["sanction", "bank"]
    # the article and proclitics go, as the matcher sees them: والحكومة، للحكومة، حكومة
    assert telling_words("والحكومة بالعقوبات", "ar") == telling_words("حكومة العقوبات", "ar")
    assert telling_words("للحكومة", "ar") == telling_words("حكومة", "ar")


def test_one_wire_story_under_three_headlines_is_one_story() -> None:
    for first, second in itertools.combinations((ABC, BBC, JAPAN_TODAY), 2):
        assert same_story(first, second)
    assert not same_story(ABC, DUVALL)  # "dies aged": another story


def test_few_title_words_in_common_need_more_of_the_lead() -> None:
    def headline(title: set[str], words: set[str]) -> Headline:
        return Headline(frozenset(title), frozenset(title | words), frozenset({"peru"}))

    three = {"peru", "congress", "presid"}
    lead = {f"w{n}" for n in range(6)}
    # 3 title words need 9 shared in title and lead; 4 need 7; 5 and more need 5
    assert same_story(headline(three, lead), headline(three, lead))
    assert not same_story(headline(three, lead - {"w0"}), headline(three, lead))
    four = three | {"ous"}
    assert same_story(headline(four, {"w0", "w1", "w2"}), headline(four, lead))
    assert not same_story(headline(four, {"w0", "w1"}), headline(four, lead))
    five = three | {"ous", "jeri"}
    assert same_story(headline(five, set()), headline(five, lead))
    two = {"peru", "congress"}
    assert not same_story(headline(two, lead), headline(two, lead))


def test_keys_are_pairs_of_title_words_apart_from_fingerprint_hashes() -> None:
    found = title_keys("Civil rights leader Jesse Jackson dies, aged 84")
    assert len(found) == len(ABC.title) * (len(ABC.title) - 1) // 2
    assert all(1 << 61 <= key < 1 << 62 for key in found)
    shared = len(set(found) & set(title_keys("US civil rights leader Jesse Jackson dies aged 84")))
    assert shared >= 3


def test_only_short_items_and_a_bounded_number_of_words_count() -> None:
    assert is_short("A headline", "A sentence or two.")
    assert not is_short("A headline", "word " * 200)
    title = " ".join(f"word{n}x" for n in range(40))
    assert len(Headline.of(title, "").title) == headlines.TITLE_WORDS


def test_stems_are_cached() -> None:
    headlines._stem.cache_clear()
    telling_words("sanctions sanctions sanctions")
    assert headlines._stem.misses == 1


def test_the_stem_cache_is_bounded_and_gives_the_stems_of_the_stemmer() -> None:
    cache = headlines._StemCache(10)
    words = [f"sanction{'s' * (n % 3)}x{n}" for n in range(25)] + ["حكومة", "والحكومة", "talks"]
    for word in words:
        language = "ar" if word[0] > "z" else "en"
        assert cache(word, language) == headlines._stem_word(word, language)
        assert len(cache) <= 10
    assert cache.misses == len(words)
    # the latest words are kept (one table per language), the oldest went
    assert cache("talks", "en") == "talk" and cache.misses == len(words)
    assert "sanctionx0" not in cache.tables["en"]
    cache("sanctionx0", "en")
    assert cache.misses == len(words) + 1
    # a word that is its own stem keeps one string for both
    cache.cache_clear()
    word = "".join(["ira", "n"])
    assert cache(word, "en") is word


# Items of the real feeds of 2026-02-17 (corpus/feeds/real/fastfeedparser): NPR's preview of the
# day's US-Iran talks, and NDTV's and Al Jazeera's reports of what the talks agreed.
NPR_PREVIEW = Headline.of(
    "US and Iran to meet for second round of nuclear talks",
    "Representatives for the U.S. and Iran will meet in Geneva Tuesday for a second round of "
    "nuclear talks as the U.S. builds up military forces in the region.",
    "en",
)
NDTV_RESULT = Headline.of(
    "'Agreed On Guiding Principles For Deal': Iran On US Nuclear Talks",
    'Iran and the United States agreed to "a set of guiding principles" laying the groundwork '
    "for a broader deal during talks in Geneva on Tuesday, Tehran's top diplomat said, after the "
    "leaders of both countries traded warnings of military action.",
    "en",
)
ALJAZEERA_RESULT = Headline.of(
    "US and Iran reach \u2018guiding principles\u2019 in Geneva nuclear talks",
    "The US and Iran reached an understanding on key \u201cguiding principles\u201d at indirect "
    "nuclear talks in Geneva.",
    "en",
)


def test_distinctive_words_are_names_rare_words_and_numbers() -> None:
    assert rare_words("Peru's Congress removes interim President Jer\u00ed, 84, in 2026", "en") == [
        "peru",
        "remov",
        "jeri",
        "84",
    ]
    # an accent does not make another name; a year and a common word are not distinctive
    assert rare_words("Jeri", "en") == rare_words("Jer\u00ed", "en-US") == ["jeri"]
    assert rare_words("president talks 2026 the", "en") == []
    # a language without a frequency list has no distinctive word but its numbers
    assert rare_words("Tervetuloa 84", "xx") == ["84"]


def test_distinctive_words_keep_only_the_common_words_of_a_language() -> None:
    import wordfreq

    wordfreq.get_frequency_list.cache_clear()
    wordfreq.get_frequency_dict.cache_clear()
    headlines._common_words.cache_clear()
    assert rare_words("Nuclear talks between Washington and Tehran resume in Geneva", "en")
    # The words at Zipf 4 and over, about a quarter of the 29,000 of the English list; not the
    # whole list, and not wordfreq's caches of it, for the life of the process.
    assert 5_000 < len(headlines._common_words("en")) < 10_000
    assert wordfreq.get_frequency_list.cache_info().currsize == 0
    assert wordfreq.get_frequency_dict.cache_info().currsize == 0


def test_other_news_of_one_subject_on_one_day_shares_no_distinctive_word() -> None:
    """A preview of the talks and the report of their outcome share the subject's words (Iran,
    US, nuclear, talks) but nothing that tells one event from the other; two outlets' reports of
    the outcome share "guiding principles"."""
    assert len(NPR_PREVIEW.title & NDTV_RESULT.title) >= 4  # the rule before grouped them
    assert not same_story(NPR_PREVIEW, NDTV_RESULT)
    assert not same_story(NPR_PREVIEW, ALJAZEERA_RESULT)
    assert same_story(NDTV_RESULT, ALJAZEERA_RESULT)


def test_one_event_told_in_other_words_shares_its_names() -> None:
    """ABC News and MercoPress on Peru's president: other verbs, the same names."""
    abc = Headline.of(
        "Peru's Congress removes interim President Jer\u00ed as he faces corruption allegations",
        "Peru\u2019s Congress has voted to remove interim President Jos\u00e9 Jer\u00ed from "
        "office as he faces corruption allegations",
        "en",
    )
    mercopress = Headline.of(
        "Peru\u2019s Congress ousts interim President Jos\u00e9 Jer\u00ed",
        "Peru\u2019s Congress voted on Tuesday to remove interim President Jos\u00e9 Jer\u00ed, "
        "just four months after he took office, deepening political uncertainty only weeks "
        "before",
        "en",
    )
    assert {"peru", "jeri"} <= abc.rare & mercopress.rare
    assert same_story(abc, mercopress)


def report(outlet: str, at: datetime, title: str, body: str) -> stories.Report:
    return stories.Report(outlet, at, title, body, "en")


def test_short_items_a_day_and_more_apart_are_not_grouped_by_their_headlines() -> None:
    """The same headlines that make one story within a day make two when a day and a half
    lies between them: a headline on the same subject a day later is most often news of its own."""
    at = datetime(2026, 2, 17, 10, 0, tzinfo=UTC)
    abc = report(
        "abc.net.au",
        at,
        "Civil rights leader Jesse Jackson dies, aged 84",
        "Jesse Jackson was America's pre-eminent civil rights figure for decades.",
    )
    bbc_title = "US civil rights leader Jesse Jackson dies aged 84"
    bbc_text = "Tributes poured in from politicians who described Jackson as an agent of change."
    story = {7: [abc]}
    soon = report("bbc.com", at + timedelta(hours=9), bbc_title, bbc_text)
    assert stories.choose_by_headline([7], soon, story) == 7
    late = report("bbc.com", at + timedelta(hours=36), bbc_title, bbc_text)
    assert stories.choose_by_headline([7], late, story) is None
    earlier = report("bbc.com", at - timedelta(hours=36), bbc_title, bbc_text)
    assert stories.choose_by_headline([7], earlier, story) is None


def test_a_second_distinctive_word_stands_for_common_ones() -> None:
    """BBC and DW on the arrests over Quentin Deranque's death (2026-02-17): three title words
    and six words in all in common, too few by common words alone (nine), but two names."""
    bbc = Headline.of(
        "Nine arrested in France over death of far-right student",
        "Quentin Deranque died on Saturday, two days after being beaten in Lyon by masked men "
        "believed to be far-left militants.",
        "en-GB",
    )
    dw = Headline.of(
        "France arrests nine in right-wing activist's death",
        "Far-right activist Quentin Deranque was killed last week, seemingly in a clash with the "
        "far left.",
        None,
    )
    assert bbc.rare & dw.rare == {"quentin", "deranqu"}
    assert same_story(bbc, dw)
    assert not same_story(bbc, dw, Rule(per_rare=0))


def test_a_question_headline_is_grouped_with_none() -> None:
    """DW's explainer on the Strait of Hormuz and NYT's report of Iran's exercises there share
    the strait's names, but the explainer reports no event."""
    explainer = Headline.of(
        "Why is the Strait of Hormuz off Iran so crucial?",
        "The Strait of Hormuz is considered the world's most critical chokepoint for the oil "
        "trade. Iran has repeatedly threatened to block the waterway and now is partially closing "
        "it for military drills.",
        None,
    )
    exercises = Headline.of(
        "Iran Holds Exercises in Strait of Hormuz After Trump Threatens Military Action",
        "The island of Qeshm, in the Strait of Hormuz. The strait is a key shipping lane for oil "
        "and gas and connects the Persian Gulf to the open ocean.",
        "en-US",
    )
    assert explainer.question and not exercises.question
    assert not same_story(explainer, exercises)
    assert same_story(explainer, exercises, Rule(questions=True))
    assert is_question("\u00bfQu\u00e9 pasa? \u00bb") and is_question(
        "\u0644\u0645\u0627\u0630\u0627\u061f"
    )
