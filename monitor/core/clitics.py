"""The surface forms of an Arabic term: what Arabic attaches to a word (SPEC §3 rules 5 and 7).

English writes "and", "with", "the", "his" as words of their own; Arabic writes them on the word:
وبصواريخها is و + ب + صواريخ + ها, "and with its missiles". The matcher does not strip them from
the text. It expands each Arabic term, once, into every form it may take, and looks the text's
words up among those forms as they are:

* rule 5, proclitics before the word: a conjunction و or ف, then a preposition ب ك ل, then the
  article ال — any of them, in that order (ل + ال is written لل).
* rule 7, enclitics after it: a pronoun ه ها هما هم هن ك كما كم كن نا, before which a ة is
  written ت (حكومة → حكومته); or the alif of an indefinite accusative noun (خط → خطاً، خطا).
  A word with the article never takes either (الخطا is "the mistake" misspelt, not "a line"),
  nor does the alif follow a preposition, whose noun is genitive: those forms are left out.
  The stem keeps at least two letters.

Inflection is not a clitic: حكومات (plural) does not match حكومة, nor إيراني (the nisba ـي)
إيران, just as English "government" does not match "governments"; a prefix (`حكوم*`) does.

Rule 7 judges by the letters as written, which the text the matcher reads keeps at the end of a
word (see `core.text`): a word ending in ة (خطة, "plan") is not خط + the pronoun ه, and one ending
in an alif with hamza (خطأ, "mistake") is not خط + the accusative alif. Words here are in that form
too, so a form is spelt out in every way rule 3 lets the text write it (`spellings`).
"""

from __future__ import annotations

from monitor.core.text import fold_word_end, is_arabic

CONJUNCTIONS = ("", "و", "ف")
PREPOSITIONS = ("", "ب", "ك", "ل")
ARTICLE = "ال"
PRONOUNS = ("ه", "ها", "هما", "هم", "هن", "ك", "كما", "كم", "كن", "نا")
ACCUSATIVE_ALIF = "ا"
# Every proclitic before a word without the article: "", و, ف, ب, وب, فب, …
_BEFORE = tuple(conj + prep for conj in CONJUNCTIONS for prep in PREPOSITIONS)
# … and with it: ال, وال, بال, وبال, and ل + ال written لل (or ل alone before a word that starts
# with ل: ل + اللجنه → للجنه).
_WITH_ARTICLE = tuple(
    conj + (prep + ARTICLE if prep != "ل" else "لل")
    for conj in CONJUNCTIONS
    for prep in PREPOSITIONS
)
_WITH_ARTICLE_BEFORE_LAM = tuple(
    conj + (prep + ARTICLE if prep != "ل" else "ل")
    for conj in CONJUNCTIONS
    for prep in PREPOSITIONS
)
# Written ت before a pronoun, and no alif after it.
_TEH_MARBUTA = "ة"
# What a prefix ending in ة becomes before a pronoun: each pronoun starts with one of these.
_PRONOUN_STARTS = ("ه", "ك", "نا")
_NO_ALIF_AFTER = ("ة", "ا", "أ")
# The letter a text may write, at a word's end, for the one rule 3 folds it to.
_OTHER_SPELLING = {"ه": "ة", "ا": "أ"}


def proclitic_forms(word: str) -> set[str]:
    """The forms of an Arabic `word` (as `tokens` writes it) with every proclitic combination of
    SPEC §3 rule 5.

    `صين` → صين, الصين, والصين, بالصين, للصين, وللصين …; `الصين` keeps its article: الصين, والصين,
    بالصين, للصين … but not bare صين. A lām prefix fuses with the article (ل + الصين → للصين) and, before a
    word that starts with lām, with the word itself (ل + اللجنه → للجنه). Non-Arabic words are returned
    as they are; so are stems shorter than two letters, where stripping would match almost anything.
    """
    if not is_arabic(word):
        return {word}
    has_article = _has_article(word)
    core = word[2:] if has_article else word
    if len(core) < 2:
        return {word}
    with_article = _WITH_ARTICLE_BEFORE_LAM if core.startswith("ل") else _WITH_ARTICLE
    forms = {before + core for before in with_article}
    forms.add(word)
    if not has_article:
        forms.update([before + core for before in _BEFORE])
    return forms


def enclitic_forms(word: str) -> set[str]:
    """The forms of an Arabic `word` (as `NormalizedText` writes it) with a pronoun or the
    accusative alif of SPEC §3 rule 7, and the proclitics that may come with them: حكومة →
    حكومته, وبحكومتهم …; خط → خطا, وخطا. None for a word with the article, a stem shorter than
    two letters, or a word in another script."""
    before_pronouns, before_alif = enclitic_bases(word)
    forms = {base + pronoun for base in before_pronouns for pronoun in PRONOUNS}
    forms.update(base + ACCUSATIVE_ALIF for base in before_alif)
    return forms


def enclitic_bases(word: str) -> tuple[set[str], set[str]]:
    """What `enclitic_forms(word)` holds before its last clitic: the words that take any pronoun
    (وبحكومت for وبحكومتهم) and those that take the accusative alif (وخط for وخطا). A text's
    word is one of those forms when, its pronoun or alif cut off (`PRONOUN_ENDINGS`), it is one
    of these: a matcher keeps a dozen of them per word rather than the 120 forms."""
    if not _takes_enclitics(word):
        return set(), set()
    stem = fold_word_end(word)
    before_pronoun = word[:-1] + "ت" if word.endswith(_TEH_MARBUTA) else stem
    before_pronouns = {before + before_pronoun for before in _BEFORE}
    before_alif = set()
    if not word.endswith(_NO_ALIF_AFTER):
        before_alif = {conj + stem for conj in CONJUNCTIONS}
    return before_pronouns, before_alif


# The pronouns by length, for cutting them off a text's words (`enclitic_bases`).
PRONOUN_ENDINGS = tuple(
    (length, tuple(p for p in PRONOUNS if len(p) == length))
    for length in sorted({len(p) for p in PRONOUNS})
)


def spellings(form: str) -> tuple[str, ...]:
    """The ways a text may write `form` (as `tokens` writes it) at the end of a word, as
    `NormalizedText` keeps it: a final ه may be ة there, a final ا an alif with hamza (أ)."""
    other = _OTHER_SPELLING.get(form[-1:])
    return (form,) if other is None else (form, form[:-1] + other)


def whole_word_forms(word: str) -> set[str]:
    """Every word of a text that matches the term `word` whole: its spellings (rules 1–4) and, in
    Arabic, its forms with clitics (rules 5 and 7)."""
    forms = spelt(proclitic_forms(fold_word_end(word)))
    forms.update(enclitic_forms(word))
    return forms


def spelt(forms: set[str]) -> set[str]:
    """`forms`, all of one word and so ending alike, in every spelling of `spellings`."""
    other = _OTHER_SPELLING.get(next(iter(forms))[-1:])
    if other is not None:
        forms.update([form[:-1] + other for form in list(forms)])
    return forms


def as_written_forms(word: str) -> tuple[str, ...]:
    """Every word of a text that matches `=word`: its spellings only (rules 1–4)."""
    return spellings(fold_word_end(word))


def prefix_forms(word: str) -> set[str]:
    """The starts of the words that match the prefix term `word*`: its forms with proclitics and,
    when it ends in ة, with that ة written ت before a pronoun (حكومة* → حكومتها). A pronoun or an
    alif after any other prefix is already a longer word that starts with it."""
    forms = spelt(proclitic_forms(fold_word_end(word)))
    if word.endswith(_TEH_MARBUTA) and _takes_enclitics(word):
        starts = [word[:-1] + "ت" + pronoun for pronoun in _PRONOUN_STARTS]
        forms.update(before + start for before in _BEFORE for start in starts)
    return forms


def _has_article(word: str) -> bool:
    return word.startswith(ARTICLE) and len(word) >= 4


def _takes_enclitics(word: str) -> bool:
    """An Arabic word of at least two letters without the article."""
    return is_arabic(word) and len(word) >= 2 and not _has_article(word)
