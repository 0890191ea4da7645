"""Short items grouped by their headlines (core.headlines): items of a headline and a sentence from
different outlets are one story when their headlines and leads share enough telling words."""

from __future__ import annotations

import itertools

from monitor.core import headlines
from monitor.core.headlines import Headline, is_short, keys, same_story, telling_words

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
        return Headline(frozenset(title), frozenset(title | words))

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
    found = keys(ABC)
    assert len(found) == len(ABC.title) * (len(ABC.title) - 1) // 2
    assert all(1 << 61 <= key < 1 << 62 for key in found)
    shared = len(set(found) & set(keys(BBC)))
    assert shared >= 3
    assert keys(ABC) == keys(Headline.of("Civil rights leader Jesse Jackson dies, aged 84", ""))


def test_only_short_items_and_a_bounded_number_of_words_count() -> None:
    assert is_short("A headline", "A sentence or two.")
    assert not is_short("A headline", "word " * 200)
    title = " ".join(f"word{n}x" for n in range(40))
    assert len(Headline.of(title, "").title) == headlines.TITLE_WORDS


def test_stems_are_cached() -> None:
    headlines._stem.cache_clear()
    telling_words("sanctions sanctions sanctions")
    assert headlines._stem.cache_info().misses == 1
