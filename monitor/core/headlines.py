"""Short items grouped by their headlines (SPEC §5): most news feeds carry a title and a sentence,
too little text for a fingerprint (`core.stories`), so two outlets' items of one wire story are
told by the words their headlines and leads share.

* `telling_words(text, language)` — the words that say what a text is about: normalised tokens
  without stop words (the `stop-words` lists of the item's language, English and Arabic, and a few
  words of headline style such as "says" or "live"), each reduced to its Snowball stem, so that
  "sanctions" meets "sanctioned" and "الصينية" meets "الصين".
* `Headline.of(title, body, language)` — an item's telling title words (at most `TITLE_WORDS`) and
  those of its title and opening (the first `OPENING` words of its text).
* `same_story(a, b)` — a short item and another item (short, or an article) are one story when their titles share at least
  `MIN_TITLE` telling words and title and opening together share at least `MIN_SHARED` of them,
  two fewer for each title word shared beyond `MIN_TITLE`, and never fewer than `MIN_OPENING`:
  a headline alone says little ("Iran talks"), a headline with its lead says who did what.
  And they share at least `MIN_RARE` distinctive word (`rare_words`: a name, a place, a rare
  word, a number): other news of one subject on one day shares the subject's common words
  ("US and Iran to meet for second round of nuclear talks" / "Agreed on guiding principles for
  deal: Iran on US nuclear talks") but rarely what tells one event from another. A distinctive
  word is also worth more than a common one: each shared beyond the first counts as `PER_RARE`
  telling words shared in title and opening ("Nine arrested in France over death of far-right
  student" / "France arrests nine in right-wing activist's death", whose leads both name Quentin
  Deranque). And a question headline ("Why is the Strait of Hormuz off Iran so crucial?") is an
  explainer or an analysis, not the report of an event: it is grouped with none.
  Items of one outlet are never grouped so (the caller's rule): an outlet does not carry one wire
  story twice under two headlines, but does publish different stories on one subject; nor are
  items more than `WITHIN` apart (the caller's rule too): outlets carry a wire story within the
  day, and a headline a day later on the same subject is most often news of its own. And a
  story is joined so when the item tells the same as at least half of its items it is compared
  with (`core.stories.choose_by_headline`), not one: a headline of one event over a sentence of
  another ("Iran announces closure of vital shipping route during US nuclear talks" / "… reached
  an understanding over 'guiding principles'") does not pull the second event into the story.
* `title_keys(title)` — what the store indexes to find candidates, for every item of a story
  (an article's too, and each item that joined it, so that a later item is found by the headline
  of any of them): a key per pair of telling title words. Two titles sharing `MIN_TITLE` words share at least three pairs, and a pair of words is
  far rarer across a day's news than either word, so candidates are few. The keys lie in
  [2**61, 2**62), apart from fingerprint hashes (below 2**61), in the same index.

Stemming in pure Python costs about 0.4 ms a word, and headlines repeat their words all day:
stems are cached, and only the first `SHORT` words of an item are ever looked at.
"""

from __future__ import annotations

import hashlib
import itertools
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

import snowballstemmer
from stop_words import AVAILABLE_LANGUAGES, LANGUAGE_MAPPING, get_stop_words

from monitor.core.text import tokens

SHORT = 120  # words (title and text) under which an item is short: grouped by its headline
TITLE_WORDS = 12  # telling words of a title that count
OPENING = 40  # words of the text that are its opening
MIN_TITLE = 3  # telling words two titles share, at least
MIN_SHARED = 9  # telling words title and opening share with MIN_TITLE in the titles
PER_TITLE_WORD = 2  # fewer for each title word shared beyond MIN_TITLE
MIN_OPENING = 5  # and never fewer than this
MIN_RARE = 1  # distinctive words (`rare_words`) the two share in title and opening, at least
PER_RARE = 4  # fewer telling words needed for each distinctive word shared beyond MIN_RARE
WITHIN = timedelta(hours=24)  # the most time between two items grouped by their headlines
# A word is distinctive — a name, a place, a rare word — when it is rarer than once in 10,000 words
# of its language's general text (Zipf 4, by wordfreq's lists); a number of two digits or more is too.
RARE_ZIPF = 4.0
_RARE_FREQUENCY = 10 ** (RARE_ZIPF - 9)  # Zipf is log10 of the frequency per 10**9 words
_KEY_BASE = 1 << 61

# Words of headline style that say nothing of the story.
_HEADLINE_WORDS = (
    "says said say tells told live latest update updates video watch photos breaking "
    "news report reports analysis opinion explainer new amid after over year years "
    "day days week weeks first"
)

# Stop words that headlines use as names: "US" is not "us".
_NAMES = frozenset({"us", "uk", "un", "eu", "may"})


def is_short(title: str, body: str) -> bool:
    """Whether an item is a headline and a sentence or two, not an article."""
    return len(tokens(f"{title}\n{body}")[:SHORT]) < SHORT


@lru_cache(maxsize=64)
def _stop_words(language: str | None) -> frozenset[str]:
    words = set(tokens(_HEADLINE_WORDS))
    for name in {"en", "ar", language or "en"}:
        if name in LANGUAGE_MAPPING or name in AVAILABLE_LANGUAGES:
            words.update(w for word in get_stop_words(name) for w in tokens(word))
    return frozenset(words - _NAMES)


_SNOWBALL = {
    "ar": "arabic",
    "da": "danish",
    "de": "german",
    "en": "english",
    "es": "spanish",
    "fa": "persian",
    "fi": "finnish",
    "fr": "french",
    "hu": "hungarian",
    "id": "indonesian",
    "it": "italian",
    "nl": "dutch",
    "no": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sv": "swedish",
    "tr": "turkish",
}

# The proclitics and article of an Arabic word (SPEC §3 rule 5), longest first.
_ARABIC_PREFIXES = ("وبال", "وكال", "فبال", "وال", "فال", "بال", "كال", "ولل", "فلل", "لل", "ال")


@lru_cache(maxsize=32)
def _stemmer(language: str) -> Any:
    return snowballstemmer.stemmer(language)


class _StemCache:
    """word → stem, one table per language tag, `size` words in all: when full, the older half of
    the table that grows is dropped. A plain dict entry per word where `functools.lru_cache` kept
    a link node and a (word, language) tuple too, and the stem is the word's own string when
    stemming leaves the word as it is: about 220 bytes a word before, 120 after (65,536 words:
    ~14 MB before, when full). Stems do not change, so a dropped word only costs its stemming
    again; the dict operations are atomic, so threads may share it."""

    __slots__ = ("misses", "size", "tables")

    def __init__(self, size: int) -> None:
        self.size = size
        self.tables: dict[str | None, dict[str, str]] = {}
        self.misses = 0  # words stemmed (for tests)

    def __call__(self, word: str, language: str | None) -> str:
        table = self.tables.get(language)
        if table is None:
            table = self.tables.setdefault(language, {})
        stem = table.get(word)
        if stem is None:
            self.misses += 1
            stem = _stem_word(word, language)
            if stem == word:
                stem = word  # one string, not two equal ones
            if sum(map(len, self.tables.values())) >= self.size:
                for old in list(itertools.islice(table, len(table) // 2 + 1)):
                    table.pop(old, None)
            table[word] = stem
        return stem

    def __len__(self) -> int:
        return sum(map(len, self.tables.values()))

    def cache_clear(self) -> None:
        self.tables = {}
        self.misses = 0


def _stem_word(word: str, language: str | None) -> str:
    """The Snowball stem of a normalised word: by its script for Arabic, else by the item's
    language (English when unknown); a word of another script stays as it is."""
    if "\u0600" <= word[0] <= "\u06ff":
        # Snowball's Arabic stemmer takes the article off some words and not others (والرئيس):
        # the proclitics go first, as the matcher's rules see them, then a final ه (folded ة).
        for prefix in _ARABIC_PREFIXES:
            if word.startswith(prefix) and len(word) - len(prefix) >= 3:
                word = word[len(prefix) :]
                break
        arabic: str = _stemmer("arabic").stemWord(word) or word
        return arabic[:-1] if arabic.endswith("ه") and len(arabic) > 3 else arabic
    base = _base(language)
    if word.isascii():
        algorithm = _SNOWBALL.get(base or "en", "english")
    else:
        algorithm = _SNOWBALL.get(base or "", "")
    stem: str = _stemmer(algorithm).stemWord(word) or word if algorithm else word
    # "Jerí" and "Jeri" are one name: accents go after stemming (some stemmers read them).
    return "".join(c for c in unicodedata.normalize("NFKD", stem) if not unicodedata.combining(c))


_stem = _StemCache(65536)


def _base(language: str | None) -> str | None:
    """A language's base code: en-US and en_GB are en."""
    return language.split("-")[0].split("_")[0].lower() if language else None


@lru_cache(maxsize=64)
def _frequencies(language: str | None) -> str | None:
    """The wordfreq list of a language (its base code: en-US is en), None when it has none."""
    import wordfreq  # on first use: it takes about 0.4 s to import

    code = _base(language) or "en"
    return code if code in wordfreq.available_languages(wordlist="small") else None


# Not cached: a set lookup, where a cache entry cost 150 bytes (10 MB for 65,536 words).
def _is_rare(word: str, language: str | None) -> bool:
    if word.isdigit():
        return len(word) >= 2 and not (len(word) == 4 and word[:2] in ("19", "20"))  # not a year
    listed = _frequencies(language)
    if listed is None or (listed != "ar" and "\u0600" <= word[0] <= "\u06ff"):
        return False
    return word not in _common_words(listed)


@lru_cache(maxsize=64)
def _common_words(language: str) -> frozenset[str]:
    """The words of a language's wordfreq list that are not rare (`RARE_ZIPF`): a fifth of the
    list, kept without their frequencies. Read from the file rather than through
    `wordfreq.get_frequency_dict`, which would keep the whole list twice (as a list and a dict of
    floats, 3-8 MB a language) in wordfreq's own caches for the life of the process."""
    # Looked up as it is: the word is normalised already, and wordfreq's own lookup would
    # tokenise it again, which for Chinese and Japanese needs libraries the service lacks.
    import wordfreq

    buckets = wordfreq.read_cBpack(wordfreq.available_languages(wordlist="small")[language])
    common: set[str] = set()
    # Bucket i holds the words of frequency cB_to_freq(-i); a word listed twice counts at its
    # last bucket, as in get_frequency_dict.
    for index, bucket in enumerate(buckets):
        if wordfreq.cB_to_freq(-index) >= _RARE_FREQUENCY:
            common.update(bucket)
        else:
            common.difference_update(bucket)
    return frozenset(common)


def rare_words(text: str, language: str | None = None, limit: int = SHORT) -> list[str]:
    """The stems of `text`'s first `limit` words that are distinctive (`RARE_ZIPF`), and its
    numbers of two digits or more (years aside), each once, in order: what tells one event
    from another news of the same subject ("Jerí", "Hormuz", "84")."""
    stop = _stop_words(language)
    seen: dict[str, None] = {}
    for word in tokens(text)[:limit]:
        if word in stop or len(word) < 2 or not _is_rare(word, language):
            continue
        seen.setdefault(word if word.isdigit() else _stem(word, language), None)
    return list(seen)


def telling_words(text: str, language: str | None = None, limit: int = SHORT) -> list[str]:
    """The stems of `text`'s first `limit` words that are not stop words, each once, in order."""
    stop = _stop_words(language)
    seen: dict[str, None] = {}
    for word in tokens(text)[:limit]:
        if word in stop or len(word) < 2 or word.isdigit():
            continue
        seen.setdefault(_stem(word, language), None)
    return list(seen)


@dataclass(frozen=True, slots=True)
class Headline:
    """An item's telling title words, those of its title and opening together, and the
    distinctive ones (`rare_words`) of its title and opening."""

    title: frozenset[str]
    words: frozenset[str]
    rare: frozenset[str] = frozenset()
    question: bool = False  # a question headline: an explainer or an analysis

    @classmethod
    def of(cls, title: str, body: str, language: str | None = None) -> Headline:
        in_title = telling_words(title, language)[:TITLE_WORDS]
        opening = telling_words(body, language, limit=OPENING)
        rare = rare_words(title, language) + rare_words(body, language, limit=OPENING)
        return cls(
            frozenset(in_title),
            frozenset(in_title) | frozenset(opening),
            frozenset(rare),
            is_question(title),
        )


@dataclass(frozen=True, slots=True)
class Rule:
    """How many telling words two items of one story share (see the module's doc)."""

    min_title: int = MIN_TITLE
    min_shared: int = MIN_SHARED
    per_title_word: int = PER_TITLE_WORD
    min_opening: int = MIN_OPENING
    min_rare: int = MIN_RARE
    per_rare: int = PER_RARE
    questions: bool = False  # whether question headlines are grouped too


RULE = Rule()


def same_story(first: Headline, second: Headline, rule: Rule = RULE) -> bool:
    """Whether two items (of different outlets, one of them short) are one story by their
    headlines."""
    in_titles = len(first.title & second.title)
    if in_titles < rule.min_title:
        return False
    extra = in_titles - rule.min_title
    if not rule.questions and (first.question or second.question):
        return False
    rare = len(first.rare & second.rare)
    if rare < rule.min_rare:
        return False
    fewer = rule.per_title_word * extra + rule.per_rare * max(0, rare - max(rule.min_rare, 1))
    return len(first.words & second.words) >= max(rule.min_opening, rule.min_shared - fewer)


def is_question(title: str) -> bool:
    """Whether a headline asks a question (its last mark, quotes aside, is "?" or "؟")."""
    return title.rstrip(" \"'\u2019\u201d\u00bb").endswith(("?", "\u061f"))


def title_keys(title: str, language: str | None = None) -> tuple[int, ...]:
    """The index keys of a headline: one per pair of its telling title words (`Headline.title`),
    ascending. From the title alone: the opening, whose stems would cost several times the
    title's, never changes them."""
    words = sorted(set(telling_words(title, language)[:TITLE_WORDS]))
    return tuple(sorted(_key(a, b) for a, b in itertools.combinations(words, 2)))


def _key(first: str, second: str) -> int:
    digest = hashlib.blake2b(f"{first}\0{second}".encode(), digest_size=8).digest()
    return _KEY_BASE + int.from_bytes(digest, "big") % _KEY_BASE


@lru_cache(maxsize=1024)
def headline_of(title: str, body: str, language: str | None) -> Headline:
    """`Headline.of`, cached: the items of a candidate story are weighed by every new item. The
    cache keeps each item's text too (its key): 1,024 items of 1,500 characters hold about 6 MB,
    where 4,096 held 23."""
    return Headline.of(title, body, language)
