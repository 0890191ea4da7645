"""Text normalisation and tokens (SPEC §3), applied identically to item text and to query terms.

What it does:
  1. NFKC, then case-fold (folds Arabic presentation forms and full-width Latin).
  2. Deletes Arabic diacritics (U+064B–U+065F, U+0670), tatweel, zero-width and bidi marks, soft hyphen.
  3. Folds Arabic letters: أ إ آ ٱ → ا, ى → ي, ة → ه, ؤ → و, ئ → ي, Persian/Urdu ک → ك, ی → ي.
  4. Splits into tokens: runs of letters, digits and combining marks. Han/Kana/Hangul runs are tokens of
     their own (a term in those scripts matches as a substring, see `core.match`). A trailing English
     possessive 's belongs to no token.

What it does not do: Arabic clitics — the proclitics و ف ب ك ل ال (rule 5), the enclitic pronouns
and the accusative alif (rule 7) — are not stripped here. The matcher expands each Arabic *term*
into its forms instead (`core.clitics`), so the text is scanned once, untouched. Rule 7 judges a
pronoun or an alif by the letters as written, so the text the matcher reads (`NormalizedText`)
keeps two letters at the end of a word: ة, and أ for any alif with hamza (خطة، خطأ), where rule 3
would make them ه and ا (خطه "his line", خطا "a line"). `tokens` and `normalize` fold them.

Offsets: `NormalizedText.to_original` maps a span of the normalised text back to the original text,
so hits can be highlighted in what the reader sees. In the common case — text already in NFKC whose
case-folding keeps its length — the map is 1:1 apart from the deleted marks, and it is made while
normalising, from where those marks were. Any other text gets its map built character by character,
only when asked for.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate

import regex

_DELETED_RANGES = (
    ("\u064b", "\u065f"),  # harakat incl. shadda, sukun, tanween
    ("\u0670", "\u0670"),  # superscript alef
    ("\u0640", "\u0640"),  # tatweel
    ("\u200b", "\u200f"),  # zero-width space/joiners, LRM, RLM
    ("\u202a", "\u202e"),  # bidi embeddings and overrides
    ("\u2066", "\u2069"),  # bidi isolates
    ("\ufeff", "\ufeff"),  # zero-width no-break space / BOM
    ("\u00ad", "\u00ad"),  # soft hyphen
)
_DELETED = "".join(f"{first}-{last}" for first, last in _DELETED_RANGES)
_DELETED_CHARS = tuple(
    chr(c) for first, last in _DELETED_RANGES for c in range(ord(first), ord(last) + 1)
)
# Deleted characters written on a letter, not between words: harakat, superscript alef, tatweel.
_ON_THE_LETTER = frozenset(
    chr(c) for first, last in _DELETED_RANGES[:3] for c in range(ord(first), ord(last) + 1)
)
_DELETED_RUN = re.compile(f"[{_DELETED}]+")
_DELETED_SPLIT = re.compile(f"([{_DELETED}]+)")

# Rule 3's folds of the letters that rule 7 judges at a word's end (see `_fold_inside_words`).
_WORD_END_FOLDS = {"ة": "ه", "أ": "ا", "إ": "ا", "آ": "ا"}
_FOLDS = {
    **_WORD_END_FOLDS,
    "ٱ": "ا",
    "ى": "ي",
    "ؤ": "و",
    "ئ": "ي",
    "ک": "ك",  # Persian/Urdu keheh
    "ی": "ي",  # Persian/Urdu farsi yeh
}
_OTHER_FOLDS = {k: v for k, v in _FOLDS.items() if k not in _WORD_END_FOLDS}
# A ة or an alif with hamza followed by a letter or digit (so not at the end of its word). Each
# expression starts with its letter, which Python's `re` finds by a fast scan: one expression for
# the three alifs would test every character against a set, ten times slower.
_TEH_MARBUTA_INSIDE = re.compile("ة(?=[^\\W_])")
_HAMZA_ALIF_AT_END = re.compile("أ(?![^\\W_])")
CJK_CLASS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}"
# Katakana's prolonged sound mark ー (U+30FC) is Common script; count it with the run it lengthens.
_CJK_RUN = rf"[{CJK_CLASS}\u30fc]+"
_OTHER_RUN = rf"[[\p{{L}}\p{{N}}\p{{M}}]--[{CJK_CLASS}\u30fc]]+"
TOKEN_PATTERN = regex.compile(rf"({_CJK_RUN}|{_OTHER_RUN})", regex.V1)
_CJK_CHAR = regex.compile(rf"[{CJK_CLASS}]")
_ARABIC_CHAR = regex.compile(r"\p{Arabic}")
# The possessive 's after a letter or digit, not followed by another letter. Replaced by two spaces so
# offsets do not move. After case-folding the apostrophe forms are ' (NFKC of ＇) and ’ and ʼ.
_POSSESSIVE = re.compile(r"['’ʼ]s(?![^\W_])")  # preceded by a letter: checked in _blank_possessives
# Speed: Python's `re` is twice as fast as `regex` here, and `[^\W_]` (letters and digits) is the same
# token class as the full one for any text without combining marks or CJK. Those live in the ranges
# below (whole blocks, to be safe); a text with none of them takes the fast tokenizer.
_FAST_TOKEN = re.compile(r"([^\W_]+)")
_NEEDS_FULL_TOKENIZER = re.compile(
    "[\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u06d6-\u06ed\u0700-\u08ff"
    "\u0900-\u1cff\u1dc0-\u1dff\u20d0-\u20ff\u2e80-\ua4cf\ua670-\ua6ff\ua800-\ud7ff"
    "\uf900-\ufaff\ufe00-\ufe0f\ufe20-\ufe2f\uff65-\uffdc\U00010000-\U0010ffff]"
)
_FAST_CODE_PAGES = ("cp1252", "cp1256")
_GRAPHEME = regex.compile(r"\X")
_CHUNK = regex.compile(r"\S+|\s+")
_LINE = regex.compile(r"[^\n]*\n|[^\n]+")


def normalize(text: str) -> str:
    """The normalised form of `text`: rules 1–3 of SPEC §3 (tokenising is separate)."""
    folded, _ = _fold(text)
    return folded if folded.isascii() else _delete_marks(folded)[0]


def _fold(text: str, keep_word_ends: bool = False) -> tuple[str, bool]:
    """Rules 1 and 3 (NFKC, case-fold, letter folds), and whether every character of `text` became
    exactly one character, so that only the deletions of rule 2 can move offsets.

    With `keep_word_ends`, ة أ إ آ are left for `_fold_inside_words`."""
    if "\xa0" in text:  # the one compatibility character common in news: NFKC makes it a space
        text = text.replace("\xa0", " ")
    nfkc = unicodedata.normalize("NFKC", text)
    folded = nfkc.casefold()
    # `unicodedata.normalize` hands back its argument when it is NFKC already (a new string
    # otherwise, even if equal: then the slow, exact offset map is used). Case-folding never
    # shortens a character.
    one_to_one = nfkc is text and len(folded) == len(text)
    if not folded.isascii():
        folds = _OTHER_FOLDS if keep_word_ends else _FOLDS
        for letter, replacement in folds.items():  # str.replace is ~50× faster than str.translate
            if letter in folded:
                folded = folded.replace(letter, replacement)
    return folded, one_to_one


def _fold_inside_words(text: str) -> str:
    """Rule 3 for ة أ إ آ, except at the end of a word (a run of letters and digits): there ة
    stays, and an alif with hamza becomes أ. Rule 7 judges a pronoun or an accusative alif by
    these letters as written: the ة of خطة is not the pronoun of خطه, nor is the hamza of خطأ
    the alif of خطاً. Offsets do not move."""
    if "ة" in text:
        text = _TEH_MARBUTA_INSIDE.sub("ه", text)
    for alif in "إآ":  # one search for the three alifs with hamza: they become أ first
        if alif in text:
            text = text.replace(alif, "أ")
    if "أ" not in text:
        return text
    ends = [m.start() for m in _HAMZA_ALIF_AT_END.finditer(text)]
    text = text.replace("أ", "ا")
    for end in ends:  # a few per article (خطأ، مبدأ، بدأ)
        text = f"{text[:end]}أ{text[end + 1 :]}"
    return text


def fold_word_end(word: str) -> str:
    """A token as `NormalizedText` makes it (ة or أ kept at its end) in the form of `tokens`."""
    last = word[-1:]
    return word[:-1] + _WORD_END_FOLDS[last] if last in _WORD_END_FOLDS else word


def _delete_marks(folded: str) -> tuple[str, list[int]]:
    """`folded` without the characters rule 2 deletes, and their offsets in `folded`.

    News text holds few of them (a tanween here, a tatweel there), and looking for each one with
    `in` and `find` is ~30× faster than a regular expression over the whole text."""
    present = [c for c in _DELETED_CHARS if c in folded]
    deleted: list[int] = []
    if not present:
        return folded, deleted
    if sum(map(folded.count, present)) > 64:  # a vocalised text: one pass of the expression
        pieces = _DELETED_SPLIT.split(folded)
        offset = 0
        for i, piece in enumerate(pieces):
            if i % 2:
                deleted.extend(range(offset, offset + len(piece)))
            offset += len(piece)
        return "".join(pieces[0::2]), deleted
    for c in present:
        at = folded.find(c)
        while at != -1:
            deleted.append(at)
            at = folded.find(c, at + 1)
    deleted.sort()
    normalized = folded
    for c in present:
        normalized = normalized.replace(c, "")
    return normalized, deleted


def _tokenizer(normalized: str) -> tuple[re.Pattern[str] | regex.Pattern[str], bool]:
    """The pattern that splits `normalized` into tokens, and whether the text fits in code page
    1252 (ASCII and Western European letters), found on the way."""
    if normalized.isascii():
        return _FAST_TOKEN, True
    # Western European and Arabic text fits one of these code pages, which hold none of the
    # characters that need the full tokenizer (a test checks): encoding is 2–3× faster than
    # searching for those characters.
    for code_page in _FAST_CODE_PAGES:
        try:
            normalized.encode(code_page)
        except UnicodeEncodeError:
            continue
        return _FAST_TOKEN, code_page == "cp1252"
    return (TOKEN_PATTERN if _NEEDS_FULL_TOKENIZER.search(normalized) else _FAST_TOKEN), False


def fits_cp1252(text: str) -> bool:
    """Whether `text` can be written in code page 1252 (as every token of a text that can is)."""
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def is_cjk(token: str) -> bool:
    """True for a token of Han, Hiragana, Katakana or Hangul (matched as a substring)."""
    return bool(_CJK_CHAR.match(token))


def is_arabic(token: str) -> bool:
    """True for a token in Arabic script (Arabic, Persian, Urdu …): proclitic rules apply."""
    return bool(_ARABIC_CHAR.match(token))


def tokens(text: str) -> list[str]:
    """The normalised tokens of `text`, e.g. tokens("Taiwan's «red line»") == ["taiwan", "red", "line"]."""
    scanned = _blank_possessives(normalize(text))
    return _tokenizer(scanned)[0].split(scanned)[1::2]


def _blank_possessives(normalized: str) -> str:
    """Replace each possessive 's by two spaces, so that offsets do not move."""
    if "'" not in normalized and "’" not in normalized and "ʼ" not in normalized:
        return normalized

    def blank(m: re.Match[str]) -> str:
        start = m.start()
        return "  " if start and normalized[start - 1].isalnum() else m.group()

    # A lookbehind would do the same, five times slower.
    return _POSSESSIVE.sub(blank, normalized)


@dataclass
class NormalizedText:
    """A text, its normalised form and its tokens, with a lazy map back to the original offsets."""

    original: str
    # normalised, possessives blanked (same length as the normalised form), and ة and أ kept at
    # the end of a word: `fold_word_end` of a token is the token `tokens` gives
    text: str
    parts: list[str]  # separator, token, separator, …, separator: the text split around tokens
    _starts: list[int] | None = field(default=None, repr=False)
    _offsets: _OffsetMap | None = field(default=None, repr=False)
    # Whether the text fits in code page 1252: the matcher then looks its words up only among the
    # forms that fit, a table far smaller than that of every script.
    cp1252: bool = False

    @classmethod
    def of(cls, original: str) -> NormalizedText:
        folded, one_to_one = _fold(original, keep_word_ends=True)
        offsets = None
        if folded.isascii():
            normalized = folded
            if one_to_one:
                offsets = _OffsetMap.identity_map(len(original))
        else:
            normalized, deleted = _delete_marks(folded)
            normalized = _fold_inside_words(normalized)
            if one_to_one:
                offsets = _OffsetMap.around_deletions(len(folded), deleted)
        scanned = _blank_possessives(normalized)
        pattern, cp1252 = _tokenizer(scanned)
        return cls(original, scanned, pattern.split(scanned), _offsets=offsets, cp1252=cp1252)

    @property
    def tokens(self) -> list[str]:
        return self.parts[1::2]

    def token_span(self, index: int) -> tuple[int, int]:
        """(start, end) of token `index` in the normalised text."""
        if self._starts is None:
            # Offsets of every part: token i runs from starts[2i + 1] to starts[2i + 2].
            self._starts = list(accumulate(map(len, self.parts), initial=0))
        return self._starts[2 * index + 1], self._starts[2 * index + 2]

    def _offset_map(self) -> _OffsetMap:
        offsets = self._offsets
        if offsets is None:
            offsets = self._offsets = _OffsetMap.build(self.original)
        return offsets

    @property
    def maps_in_order(self) -> bool:
        """Whether distinct spans of the normalised text map to distinct original spans, in the
        same order: true when normalising only deleted characters (marks, tatweel, bidi)."""
        return self._offset_map().one_to_one

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map the normalised span [start, end) to the smallest original span that produced it."""
        offsets = self._offset_map()
        if offsets.identity:
            return start, end
        return offsets.start(start), offsets.end(end)

    def original_spans(self, spans: Sequence[tuple[int, int, int, int]]) -> list[tuple[int, int]]:
        """The original span of each (first token, characters into it, last token, characters
        into it): the matcher's hits, mapped in one call. Each ends after the harakat and tatweel
        written on its last letter (the tanween of خطاً belongs to the word a hit covers)."""
        spans_out = self._original_spans(spans)
        if self._offset_map().identity:  # nothing was deleted, so no mark follows a hit
            return spans_out
        original, length = self.original, len(self.original)
        out = []
        for start, end in spans_out:
            while end < length and original[end] in _ON_THE_LETTER:
                end += 1
            out.append((start, end))
        return out

    def _original_spans(self, spans: Sequence[tuple[int, int, int, int]]) -> list[tuple[int, int]]:
        # Only the tokens asked for are located, by the length of the text between them: a list
        # of every part's offset would cost a thousand additions for a few dozen hits.
        parts = self.parts
        at = offset = 0
        token_start: dict[int, int] = {}
        for token in sorted({f for f, _, _, _ in spans} | {t for _, _, t, _ in spans}):
            part = 2 * token + 1
            offset += len("".join(parts[at:part]))
            at = part
            token_start[token] = offset
        offsets = self._offset_map()
        if offsets.identity:
            return [(s + token_start[f], e + token_start[t]) for f, s, t, e in spans]
        if not (offsets.one_to_one and offsets.norm):
            start, end = offsets.start, offsets.end
            return [(start(s + token_start[f]), end(e + token_start[t])) for f, s, t, e in spans]
        # Every piece keeps its length (only deletions): OffsetMap.start and .end, inlined.
        norm, orig, lengths = offsets.norm, offsets.orig, offsets.orig_len
        out = []
        for f, s, t, e in spans:
            a = s + token_start[f]
            i = bisect.bisect_right(norm, a) - 1 if a > 0 else 0
            b = e + token_start[t]
            j = bisect.bisect_right(norm, b - 1) - 1 if b > 1 else 0
            out.append(
                (orig[i] + min(a - norm[i], lengths[i]), orig[j] + min(b - norm[j], lengths[j]))
            )
        return out


@dataclass(frozen=True)
class _OffsetMap:
    """Piecewise map from normalised offsets to original offsets.

    `norm[i]`, `orig[i]` start a piece; inside a piece flagged exact, offsets advance together;
    inside an inexact piece (an NFKC expansion such as ﻻ → لا) every offset maps to the piece's ends.
    """

    norm: list[int]
    orig: list[int]
    norm_len: list[int]
    orig_len: list[int]
    identity: bool = False  # every offset maps to itself
    one_to_one: bool = False  # every piece keeps its length: the text only lost characters

    @classmethod
    def identity_map(cls, length: int) -> _OffsetMap:
        return cls([0], [0], [length], [length], identity=True, one_to_one=True)

    @classmethod
    def around_deletions(cls, length: int, deleted: list[int]) -> _OffsetMap:
        """The map of a text of `length` characters, each kept as one character but those at the
        offsets `deleted` (in order)."""
        if not deleted:
            return cls.identity_map(length)
        norm: list[int] = []
        orig: list[int] = []
        lengths: list[int] = []
        n = start = 0
        for end in [*deleted, length]:
            if end > start:  # the kept piece [start, end)
                norm.append(n)
                orig.append(start)
                lengths.append(end - start)
                n += end - start
            start = end + 1
        return cls(norm, orig, lengths, lengths, one_to_one=True)

    @classmethod
    def build(cls, original: str) -> _OffsetMap:
        norm: list[int] = []
        orig: list[int] = []
        norm_len: list[int] = []
        orig_len: list[int] = []
        n = 0

        def piece(o: int, olen: int, produced: str) -> None:
            # Deleted characters produce nothing and need no piece: the next piece starts where they end.
            nonlocal n
            produced_len = len(produced)
            if produced_len == 0:
                return
            if (
                produced_len == olen
                and norm_len
                and norm_len[-1] == orig_len[-1]
                and (norm[-1] + norm_len[-1] == n and orig[-1] + orig_len[-1] == o)
            ):
                norm_len[-1] += produced_len  # extend the previous exact piece
                orig_len[-1] += olen
            else:
                norm.append(n)
                orig.append(o)
                norm_len.append(produced_len)
                orig_len.append(olen)
            n += produced_len

        def exact_stretch(o: int, segment: str) -> None:
            # `segment` is NFKC already and keeps its length when case-folded: only deletions move.
            pos = 0
            for m in _DELETED_RUN.finditer(segment):
                if m.start() > pos:
                    piece(o + pos, m.start() - pos, segment[pos : m.start()])
                pos = m.end()
            if pos < len(segment):
                piece(o + pos, len(segment) - pos, segment[pos:])

        def narrow(start: int, segment: str, splitter: list[regex.Pattern[str]]) -> None:
            # Narrow down to what changes length: the whole text, else line by line, else word
            # by word, else grapheme by grapheme (one NBSP must not send a whole article there).
            if _keeps_length(segment):
                exact_stretch(start, segment)
            elif splitter:
                for part in splitter[0].finditer(segment):
                    narrow(start + part.start(), part.group(), splitter[1:])
            else:
                for g in _GRAPHEME.finditer(segment):
                    piece(start + g.start(), len(g.group()), normalize(g.group()))

        narrow(0, original, [_LINE, _CHUNK])
        return cls(norm, orig, norm_len, orig_len)

    def _locate(self, offset: int) -> int:
        return max(bisect.bisect_right(self.norm, offset) - 1, 0)

    def start(self, offset: int) -> int:
        if not self.norm:
            return 0
        i = self._locate(offset)
        inside = offset - self.norm[i]
        if self.norm_len[i] == self.orig_len[i]:
            return self.orig[i] + min(inside, self.orig_len[i])
        return self.orig[i] if inside < self.norm_len[i] else self.orig[i] + self.orig_len[i]

    def end(self, offset: int) -> int:
        if not self.norm:
            return 0
        i = self._locate(offset - 1) if offset > 0 else 0
        inside = offset - self.norm[i]
        if self.norm_len[i] == self.orig_len[i]:
            return self.orig[i] + min(inside, self.orig_len[i])
        return self.orig[i] + self.orig_len[i] if inside > 0 else self.orig[i]


def _keeps_length(segment: str) -> bool:
    """True when NFKC leaves `segment` alone and case-folding keeps its length (so 1:1 but deletions)."""
    return unicodedata.is_normalized("NFKC", segment) and len(segment.casefold()) == len(segment)


@lru_cache(maxsize=4096)
def term_tokens(term: str) -> tuple[str, ...]:
    """Tokens of a query term, cached: watchlists repeat their terms a lot."""
    return tuple(tokens(term))


@lru_cache(maxsize=4096)
def term_words(term: str) -> tuple[str, ...]:
    """Tokens of a query term as the matcher reads text (`NormalizedText`: ة and أ kept at the
    end of a word), cached."""
    folded, _ = _fold(term, keep_word_ends=True)
    if not folded.isascii():
        folded = _fold_inside_words(_delete_marks(folded)[0])
    scanned = _blank_possessives(folded)
    return tuple(_tokenizer(scanned)[0].split(scanned)[1::2])


def token_starts(words: list[str]) -> list[int]:
    """Offsets of each token in `" " + " ".join(words) + " "` (the matcher's haystack)."""
    return list(accumulate((len(w) + 1 for w in words[:-1]), initial=1)) if words else []
