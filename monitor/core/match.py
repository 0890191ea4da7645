"""Compile many watchlists into one matcher; match an article; report hits with original offsets.

How the cost stays independent of the number of watchlists (the idea of Lucene Monitor's presearcher):

1. Compile once. Every query is reduced to *units*: one normalised token matched whole, as a prefix
   (`missile*`) or, for Han/Kana/Hangul, as a substring, or an Arabic token as written (`=word`).
   Each unit has one *key* per surface form: an Arabic unit one per combination of its clitics (the
   proclitics و ف ب ك ل and ال of SPEC §3 rule 5, the enclitic pronouns and the accusative alif of
   rule 7: `core.clitics`), about 150 of them, so the text itself is never stemmed. Whole-token keys
   go into one hash table, but for the forms with an enclitic (120 of the 150): those are kept
   without their last clitic (a dozen per word) in two tables of their own, where a text's word
   ending in a pronoun or an alif is looked up with it cut off: the same matches from a third of
   the keys, half the memory for 10,000 watchlists; prefix and substring keys into one Aho-Corasick automaton
   (pyahocorasick). Both are shared by all watchlists.
   Each watchlist is indexed under a few *anchor* units, at least one of which must occur for it to
   match (for `a AND b` one side suffices, for `a OR b` both; a top-level OR branch by branch; a
   `title:` term among the title's units); queries with no anchor (`NOT x` alone, `lang:ar`) are
   considered for every article.
2. Per article: one set lookup per distinct word (a table lookup for the words found) and, if any
   watchlist uses a wildcard or CJK, one automaton scan over the distinct words (a text that fits
   code page 1252 uses tables of only the forms that fit, a hundredth the size); then only the
   watchlists anchored on a unit present are considered. Necessary conditions drop most of them
   before any evaluation, in C: the units they
   require (a subset test), one unit of the first OR group (`isdisjoint`); then, for the few left
   that need it, the other groups and a compiled test that also knows fields and phrase adjacency.
   The rest are evaluated exactly; a watchlist that is one word, maybe AND NOT words, is decided by
   the units present without walking its tree. `match_exhaustively` evaluates every watchlist in
   full: a test checks that it always agrees with `match`.
   The work grows with the article's length and with the watchlists that could match it, not with the
   total number of watchlists. (A hash table beats the automaton for whole tokens: the text is already
   split into tokens, and the lookups run in C.) At 10,000 watchlists the tables do not fit the CPU
   caches, so the layout is chosen for fewer cache misses: lists indexed by unit number, a form of
   one unit mapped to its number rather than a tuple, units as tuples rather than sets, the ints of
   unit numbers made together, a set of the forms (whose entries keep their hashes, probed side by
   side) in front of the forms table, one test function per query shape.

Positions are coded as `token index << 16 | character offset in the token`, so a phrase is units on
consecutive tokens and NEAR/n is a difference of token indices. Hits are mapped back to offsets in the
original text only for watchlists that matched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from functools import partial
from itertools import chain, compress, pairwise
from operator import gt, itemgetter
from typing import Any, cast

import ahocorasick

from monitor.core import query as q
from monitor.core.clitics import (
    ACCUSATIVE_ALIF,
    PRONOUN_ENDINGS,
    as_written_forms,
    enclitic_bases,
    prefix_forms,
    proclitic_forms,
    spelt,
)
from monitor.core.collector import collector_paused
from monitor.core.entities import country_names
from monitor.core.text import (
    NormalizedText,
    fits_cp1252,
    fold_word_end,
    is_arabic,
    is_cjk,
    term_words,
)
from monitor.errors import QueryError
from monitor.model import Article, Hit, Match

# ---- compiled form ---------------------------------------------------------------------------------

# How a unit matches a token: whole (with the clitics of Arabic), start, anywhere, or whole as
# written (`=word`: an Arabic word without clitics; a word of another script is EXACT).
EXACT, PREFIX, SUBSTRING, AS_WRITTEN = 0, 1, 2, 3
WHOLE = frozenset({EXACT, AS_WRITTEN})
FIELDS = ("title", "body")
# The names under which the compiled presence tests see the units present in a field, or in either.
_PRESENT_IN = {"title": "T", "body": "B"}

# A position: token index << 16 | offset inside the token (tokens are capped at 65,535 characters).
SHIFT = 16
OFFSET_MASK = (1 << SHIFT) - 1
# An automaton hit is (end, (length of the form, kind, units)).
_VALUE, _UNITS = itemgetter(1), itemgetter(2)
# A raw hit: (term, field, start position, end position), mapped to original offsets at the end.
RawHit = tuple[str, str, int, int]
# Evaluators exchange groups of occurrences: (field, term, spans). A leaf's group has its term and
# spans (start, end), each a hit; a NEAR pair's group has term None and spans (start, end, hits).
Group = tuple[str, str | None, list[Any]]


class _Compiler:
    """Turns query ASTs into evaluators and collects the automaton's keys."""

    def __init__(self, entities: Mapping[str, Sequence[str]]) -> None:
        self.entities = entities
        self.units: dict[tuple[int, str], int] = {}
        # Unit 0 is no unit: every real unit number is true, for `filter` and `compress`.
        self.unit_forms: list[str] = [""]
        # How rare each unit likely is, to choose anchors (Lucene Monitor's presearcher weighs
        # terms by length too): its length, less two for a prefix, which matches many words.
        self.weights: list[int] = [0]
        # The int objects of the unit numbers, made a few thousand at a time so that they lie
        # together in memory: every set test per article reads the ints it hashes.
        self.numbers: list[int] = list(range(4096))

    def unit(self, kind: int, form: str) -> int:
        key = (kind, form)
        uid = self.units.get(key)
        if uid is None:
            number = len(self.unit_forms)
            if number == len(self.numbers):
                self.numbers.extend(range(number, number + 4096))
            uid = self.units[key] = self.numbers[number]
            self.unit_forms.append(form)
            self.weights.append(len(form) - 2 if kind == PREFIX else len(form))
        return uid

    def leaf(
        self,
        label: str,
        text: str,
        field: str | None,
        prefix: bool = False,
        as_written: bool = False,
    ) -> _Leaf | None:
        words = list(term_words(text))
        if not words:
            return None
        # Han/Kana/Hangul is written without spaces: adjacent CJK tokens of a term are one substring.
        merged: list[str] = []
        for w in words:
            if merged and is_cjk(w) and is_cjk(merged[-1]):
                merged[-1] += w
            else:
                merged.append(w)
        units, kinds = [], set()
        for i, w in enumerate(merged):
            if is_cjk(w):
                kind = SUBSTRING
            elif prefix and i == len(merged) - 1:
                kind = PREFIX
            elif as_written and is_arabic(w):
                kind = AS_WRITTEN
            else:
                kind = EXACT
            kinds.add(kind)
            units.append(self.unit(kind, w))
        return _Leaf(label, tuple(units), field, whole=kinds <= WHOLE)

    def compile(self, node: q.Node, field: str | None = None) -> _Node:
        match node:
            case q.Term(text=text, prefix=prefix, as_written=as_written):
                label = ("=" if as_written else "") + text + ("*" if prefix else "")
                leaf = self.leaf(label, text, field, prefix, as_written)
                return leaf if leaf is not None else _NEVER
            case q.Phrase(text=text, as_written=as_written):
                leaf = self.leaf("=" + text if as_written else text, text, field, False, as_written)
                return leaf if leaf is not None else _NEVER
            case q.EntityRef(name=name, column=column):
                if name not in self.entities:
                    known = ", ".join(sorted(self.entities)) or "none defined"
                    raise QueryError(f"unknown entity @{name} (entities: {known})", column)
                return self.aliases(self.entities[name], field)
            case q.CountryRef(code=code, column=column):
                names = country_names(code)
                if not names:
                    raise QueryError(f"unknown country code {code!r}", column)
                return self.aliases(sorted(names), field)
            case q.Field(name=name, child=child):
                return self.compile(child, name)
            case q.Filter(name=name, value=value):
                return _Filter(name, value)
            case q.Not(child=child):
                return _Not(self.compile(child, field))
            case q.And(children=children):
                return _And(tuple(self.compile(c, field) for c in children))
            case q.Or(children=children):
                return _Or(tuple(self.compile(c, field) for c in children))
            case q.Near(left=left, right=right, distance=distance):
                return _Near(self.compile(left, field), self.compile(right, field), distance)
        raise AssertionError(f"unhandled node {node!r}")  # pragma: no cover

    def aliases(self, aliases: Iterable[str], field: str | None) -> _Node:
        leaves = [leaf for a in aliases if (leaf := self.leaf(a, a, field)) is not None]
        return _Or(tuple(leaves)) if leaves else _NEVER


# ---- evaluators ------------------------------------------------------------------------------------


class _FieldScan:
    """Which units occur in one field's tokens; where they occur is worked out only when asked.

    Memory latency, not arithmetic, is the cost here (the tables of 10,000 watchlists do not fit in
    the CPU caches), so each distinct word is looked up once, in C, among the keys of the table of
    forms, only the words found in the forms' units, and the positions of a unit are worked out
    only for the units a candidate watchlist needs. (A frozenset of the forms beside the table,
    whose entries hold their hashes side by side, made that look-up about 5 µs an article faster,
    for 8.4 MB with 10,000 watchlists.)
    """

    __slots__ = (
        "_found",
        "_haystack",
        "_positions",
        "_sets",
        "index",
        "matcher",
        "present",
        "unit_words",
        "words",
    )

    def __init__(
        self,
        words: list[str],
        matcher: Matcher,
        forms: dict[str, int | tuple[int, ...]],
        automaton: Any,
        enclitics: _EncliticTables | None = None,
    ) -> None:
        self.words = words
        self.matcher = matcher
        # word → indices of its tokens
        self.index: dict[str, list[int]] = {}
        index = self.index
        for i, word in enumerate(words):
            at = index.get(word)
            if at is None:
                index[word] = [i]
            else:
                at.append(i)
        # unit → the words of this field it matches whole
        self.unit_words: dict[int, list[str]] = {}
        known = forms.keys() & index.keys()  # iterates the text's words, looks each up in C
        if known:
            unit_words = self.unit_words
            for word, units in zip(known, map(forms.__getitem__, known), strict=True):
                if isinstance(units, int):  # most words are a form of one unit only
                    words_of = unit_words.get(units)
                    if words_of is None:
                        unit_words[units] = [word]
                    else:
                        words_of.append(word)
                    continue
                for unit in units:
                    words_of = unit_words.get(unit)
                    if words_of is None:
                        unit_words[unit] = [word]
                    else:
                        words_of.append(word)
        if enclitics is not None:
            for word, fresh in enclitics.units_of(index, forms):
                for unit in fresh:
                    words_of = self.unit_words.get(unit)
                    if words_of is None:
                        self.unit_words[unit] = [word]
                    else:
                        words_of.append(word)
        self.present: set[int] = set(self.unit_words)
        self._positions: dict[int, list[tuple[int, int]]] = {}
        self._sets: dict[int, frozenset[int]] = {}
        # The automaton's hits (prefixes, CJK) in the distinct words between single spaces: only
        # their units are taken now; where they are is worked out for the units asked for.
        self._haystack = ""
        self._found: list[tuple[int, tuple[int, int, tuple[int, ...]]]] = []
        if automaton is not None and index:
            self._haystack = " " + " ".join(index) + " "
            self._found = list(automaton.iter(self._haystack))
            if self._found:
                self.present.update(chain.from_iterable(map(_UNITS, map(_VALUE, self._found))))

    def token_indices(self, unit: int) -> list[int]:
        """Indices of the tokens a whole-token unit matches, in text order."""
        index = self.index
        words = self.unit_words[unit]
        if len(words) == 1:
            return index[words[0]]
        return sorted(i for w in words for i in index[w])

    def token_set(self, unit: int) -> frozenset[int]:
        """Indices of the tokens a whole-token unit matches, as a set (cached)."""
        found = self._sets.get(unit)
        if found is None:
            found = self._sets[unit] = frozenset(self.token_indices(unit))
        return found

    def positions(self, unit: int) -> list[tuple[int, int]]:
        """(start, end) positions of every occurrence of the unit, in text order."""
        cached = self._positions.get(unit)
        if cached is not None:
            return cached
        if unit in self.matcher._partial_units:  # a prefix or substring: the automaton found it
            out = self._partial_positions(unit)
        else:
            out = self._whole_positions(unit)
        self._positions[unit] = out
        return out

    def _partial_positions(self, unit: int) -> list[tuple[int, int]]:
        haystack = self._haystack
        out = []
        for end, (length, kind, units) in self._found:
            if unit not in units:
                continue
            at = end - length + 1  # where the surface form starts in the haystack
            start = haystack.rfind(" ", 0, at + 1) + 1  # where its word starts
            word_length = haystack.find(" ", at) - start
            offset = at - start
            for i in self.index[haystack[start : start + word_length]]:
                if kind == PREFIX:  # a prefix is highlighted to the end of its word
                    out.append((i << SHIFT, i << SHIFT | min(word_length, OFFSET_MASK)))
                else:
                    out.append(
                        (
                            i << SHIFT | min(offset, OFFSET_MASK),
                            i << SHIFT | min(offset + length, OFFSET_MASK),
                        )
                    )
        # Two forms of a unit can both start one word (a stem that repeats its first letters):
        # one position each, as whole words have.
        return sorted(set(out))

    def _whole_positions(self, unit: int) -> list[tuple[int, int]]:
        index = self.index
        words = self.unit_words[unit]
        if len(words) == 1:  # the common case: one form of the unit occurs, maybe several times
            end = min(len(words[0]), OFFSET_MASK)
            return [(i << SHIFT, i << SHIFT | end) for i in index[words[0]]]
        return sorted(
            (i << SHIFT, i << SHIFT | min(len(word), OFFSET_MASK))
            for word in words
            for i in index[word]
        )


class _Context:
    """What evaluators see of one article: the scan of each field, and its metadata."""

    __slots__ = ("language", "scans", "source")

    def __init__(self, scans: dict[str, _FieldScan], language: str, source: str) -> None:
        self.scans = scans
        self.language = language
        self.source = source

    def adjacent(self, first: int, second: int) -> bool:
        """Whether a word of unit `first` is directly followed by a word of unit `second`, in
        either field (both are whole-token units)."""
        for scan in self.scans.values():
            firsts = scan.unit_words.get(first)
            if firsts is None:
                continue
            seconds = scan.unit_words.get(second)
            if seconds is None:
                continue
            words, index = scan.words, scan.index
            last = len(words) - 1
            for x in firsts:
                for i in index[x]:
                    if i < last and words[i + 1] in seconds:
                        return True
        return False


class _Node:
    """An evaluator: `evaluate` returns (matched, occurrences). `anchors` are units of which one must
    occur for the node to match, or None when it can match without any (NOT, filters)."""

    __slots__ = ()  # no instance dicts: 10,000 watchlists make many nodes, read cold per article

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Group]]:
        raise NotImplementedError

    def anchors(self, weights: list[int]) -> frozenset[int] | None:
        raise NotImplementedError

    def test_expr(self) -> str:
        """A Python expression over `P`, the set of units present in the article, that is true
        whenever the node could match: a cheap necessary condition evaluated before `evaluate`."""
        raise NotImplementedError

    def required(self) -> tuple[frozenset[int], bool]:
        """Units that must all be present for the node to match, and whether that is the whole
        of `test_expr` (then the compiled test need not run)."""
        return frozenset(), True

    def groups(self, weights: list[int]) -> list[frozenset[int]]:
        """Sets of units of each of which one must be present for the node to match: checked in
        C before the compiled test runs (which they do not replace)."""
        return []


class _Never(_Node):
    def evaluate(self, ctx: _Context) -> tuple[bool, list[Group]]:
        return False, []

    def anchors(self, weights: list[int]) -> frozenset[int] | None:
        return frozenset()

    def test_expr(self) -> str:
        return "False"

    def required(self) -> tuple[frozenset[int], bool]:
        return frozenset(), False


_NEVER = _Never()


class _Leaf(_Node):
    """A term or phrase: a sequence of units on consecutive tokens, in one field or in both."""

    __slots__ = ("fields", "label", "units", "whole")

    def __init__(
        self, label: str, units: tuple[int, ...], field: str | None, whole: bool = False
    ) -> None:
        self.label = label
        self.units = units
        self.fields = (field,) if field else FIELDS
        self.whole = whole  # every unit matches whole tokens: a phrase is consecutive indices

    def anchors(self, weights: list[int]) -> frozenset[int] | None:
        # Any word of a phrase must occur; the longest is likely the rarest.
        return frozenset((max(self.units, key=weights.__getitem__),))

    def test_expr(self) -> str:
        present = _PRESENT_IN[self.fields[0]] if len(self.fields) == 1 else "P"
        tests = [f"{u} in {present}" for u in dict.fromkeys(self.units)]
        if self.whole:
            tests += [f"A({a}, {b})" for a, b in pairwise(self.units)]
        return " and ".join(tests)

    def required(self) -> tuple[frozenset[int], bool]:
        # The test must run for a phrase (are its words adjacent?) and for a single field
        # (presence in the other does not count).
        return frozenset(self.units), len(self.fields) > 1 and not (
            self.whole and len(self.units) > 1
        )

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Group]]:
        out: list[Group] = []
        units = self.units
        if len(units) == 1:  # a word: most watchlists are one, or one and a NOT
            unit = units[0]
            for field in self.fields:
                scan = ctx.scans[field]
                if unit in scan.present:
                    out.append((field, self.label, scan.positions(unit)))
            return bool(out), out
        for field in self.fields:
            scan = ctx.scans[field]
            present = scan.present
            if not present.issuperset(units):
                continue
            spans = self._consecutive(scan) if self.whole else self._adjacent(scan)
            if spans:
                out.append((field, self.label, spans))
        return bool(out), out

    def _adjacent(self, scan: _FieldScan) -> list[tuple[int, int]]:
        """Phrases with a prefix or substring unit: each following unit must start at the
        beginning of the next token."""
        following = [dict(scan.positions(unit)) for unit in self.units[1:]]
        spans = []
        for start, end in scan.positions(self.units[0]):
            last: int | None = end
            for by_start in following:
                last = by_start.get(((last >> SHIFT) + 1) << SHIFT)  # type: ignore[operator]
                if last is None:
                    break
            if last is not None:
                spans.append((start, last))
        return spans

    def _consecutive(self, scan: _FieldScan) -> list[tuple[int, int]]:
        """Phrases of whole-token units by token index: most candidate phrases have both words
        somewhere but never side by side, and this finds that without building positions."""
        starts = scan.token_indices(self.units[0])
        for offset, unit in enumerate(self.units[1:], 1):
            following = scan.token_set(unit)
            starts = [i for i in starts if i + offset in following]
            if not starts:
                return []
        last = len(self.units) - 1
        words = scan.words
        return [
            (i << SHIFT, (i + last) << SHIFT | min(len(words[i + last]), OFFSET_MASK))
            for i in starts
        ]


class _Filter(_Node):
    __slots__ = ("name", "value")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value.casefold()

    def anchors(self, weights: list[int]) -> frozenset[int] | None:
        return None

    def test_expr(self) -> str:
        return "True"

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Group]]:
        actual = ctx.language if self.name == "lang" else ctx.source
        return actual == self.value, []


class _Not(_Node):
    __slots__ = ("child",)

    def __init__(self, child: _Node) -> None:
        self.child = child

    def anchors(self, weights: list[int]) -> frozenset[int] | None:
        return None

    def test_expr(self) -> str:
        return "True"  # absence in the field cannot be told from the set of units present anywhere

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Group]]:
        return not self.child.evaluate(ctx)[0], []


class _And(_Node):
    __slots__ = ("children",)

    def __init__(self, children: tuple[_Node, ...]) -> None:
        self.children = children

    def anchors(self, weights: list[int]) -> frozenset[int] | None:
        # Any one child's anchors will do. The fewest, longest words keep the watchlist off most
        # articles (Lucene Monitor's presearcher weighs terms by length the same way).
        best: frozenset[int] | None = None
        best_score: tuple[int, int] = (0, 0)
        for child in self.children:
            a = child.anchors(weights)
            if a is None:
                continue
            score = (len(a), -min((weights[u] for u in a), default=0))
            if best is None or score < best_score:
                best, best_score = a, score
        return best

    def test_expr(self) -> str:
        parts = [e for c in self.children if (e := c.test_expr()) != "True"]
        return "(" + " and ".join(parts) + ")" if parts else "True"

    def required(self) -> tuple[frozenset[int], bool]:
        units: frozenset[int] = frozenset()
        exact = True
        for child in self.children:
            child_units, child_exact = child.required()
            units |= child_units
            exact = exact and child_exact
        return units, exact

    def groups(self, weights: list[int]) -> list[frozenset[int]]:
        found = []
        for child in self.children:
            anchors = child.anchors(weights)
            if anchors is not None:
                found.append(anchors)
            found += child.groups(weights)
        return found

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Group]]:
        occurrences: list[Group] = []
        for child in self.children:
            ok, occ = child.evaluate(ctx)
            if not ok:
                return False, []
            occurrences.extend(occ)
        return True, occurrences


class _Or(_Node):
    __slots__ = ("children",)

    def __init__(self, children: tuple[_Node, ...]) -> None:
        self.children = children

    def anchors(self, weights: list[int]) -> frozenset[int] | None:
        union: set[int] = set()
        for child in self.children:
            a = child.anchors(weights)
            if a is None:
                return None
            union |= a
        return frozenset(union)

    def test_expr(self) -> str:
        parts = [c.test_expr() for c in self.children]
        if "True" in parts:
            return "True"
        return "(" + " or ".join(f"({p})" for p in parts) + ")" if parts else "False"

    def required(self) -> tuple[frozenset[int], bool]:
        if not self.children:
            return frozenset(), False
        units, exact = self.children[0].required()
        if len(self.children) > 1:
            for child in self.children[1:]:
                units &= child.required()[0]
            exact = False
        return units, exact

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Group]]:
        matched = False
        occurrences: list[Group] = []
        for child in self.children:
            ok, occ = child.evaluate(ctx)
            if ok:
                matched = True
                occurrences.extend(occ)
        return matched, occurrences


class _Near(_Node):
    """Both sides in the same field, at most `distance` tokens apart (1 = adjacent), either order."""

    __slots__ = ("distance", "left", "right")

    def __init__(self, left: _Node, right: _Node, distance: int) -> None:
        self.left = left
        self.right = right
        self.distance = distance

    def anchors(self, weights: list[int]) -> frozenset[int] | None:
        return _And((self.left, self.right)).anchors(weights)

    def test_expr(self) -> str:
        return _And((self.left, self.right)).test_expr()

    def required(self) -> tuple[frozenset[int], bool]:
        return _And((self.left, self.right)).required()

    def groups(self, weights: list[int]) -> list[frozenset[int]]:
        return _And((self.left, self.right)).groups(weights)

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Group]]:
        ok, lefts = self.left.evaluate(ctx)
        if not ok:
            return False, []
        ok, rights = self.right.evaluate(ctx)
        if not ok:
            return False, []
        n = self.distance
        out: list[Group] = []
        for field, spans in _spans_with_hits(lefts):
            for rfield, rspans in _spans_with_hits(rights):
                if rfield != field:
                    continue
                pairs = []
                for ls, le, lh in spans:
                    for rs, re_, rh in rspans:
                        if le <= rs:
                            gap = (rs >> SHIFT) - (le >> SHIFT)
                        elif re_ <= ls:
                            gap = (ls >> SHIFT) - (re_ >> SHIFT)
                        else:
                            gap = 0  # overlapping
                        if gap <= n:
                            pairs.append((min(ls, rs), max(le, re_), lh + rh))
                if pairs:
                    out.append((field, None, pairs))
        return bool(out), out


def _spans_with_hits(
    groups: list[Group],
) -> Iterator[tuple[str, list[tuple[int, int, tuple[RawHit, ...]]]]]:
    """Each group's spans as (start, end, hits), for NEAR to combine."""
    for field, term, spans in groups:
        if term is None:
            yield field, spans
        else:
            yield field, [(s, e, ((term, field, s, e),)) for s, e in spans]


# ---- the matcher -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchlistRule:
    """What the matcher needs of a watchlist. Empty `languages`/`feeds` mean no filter."""

    name: str
    query: str
    languages: tuple[str, ...] = ()
    feeds: tuple[str, ...] = ()


# A watchlist that is one word (its leaf), maybe AND NOT words in either field (their units):
# whether it matches follows from which units are present.
_Word = tuple[_Leaf, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str
    root: _Node
    languages: frozenset[str]
    feeds: frozenset[str]
    word: _Word | None = None
    filtered: bool = False  # has a language or feed filter


def _as_word(root: _Node) -> _Word | None:
    """The root as a `_Word` if it is one word, alone or AND NOT words (most watchlists are)."""
    children = root.children if isinstance(root, _And) else (root,)
    words = [c for c in children if not isinstance(c, _Not)]
    absent = [c.child for c in children if isinstance(c, _Not)]
    if len(words) != 1 or not isinstance(words[0], _Leaf) or len(words[0].units) != 1:
        return None
    # A word absent from the units present is absent from both fields; not so for one field.
    if not all(isinstance(a, _Leaf) and len(a.units) == 1 and a.fields == FIELDS for a in absent):
        return None
    return (words[0], tuple(cast(_Leaf, a).units[0] for a in absent))


# A compiled presence test: (units present anywhere, in the title, in the body, whether two units
# are adjacent) → could match.
_Test = Callable[[Set[int], Set[int], Set[int], Callable[[int, int], bool]], bool]
_NONE: frozenset[str] = frozenset()
# An index entry: (watchlist index, other units that must be present, test or None when those are all).
_Entry = tuple[int, frozenset[int], _Test | None]
# While indexing: (watchlist, other units required, groups of which one unit must be present,
# test or None when the required units are the whole test).
_IndexEntry = tuple[int, frozenset[int], list[frozenset[int]], _Test | None]
_Units = tuple[int, ...]
_TestedEntry = tuple[int, tuple[_Units, ...], _Test]


class _UnitTuples(dict[tuple[int, ...], tuple[int, ...]]):
    """Units as tuples for the subset and disjointness tests of sets (which take any iterable):
    a quarter of the memory of a frozenset, and one tuple for all equal ones, so fewer cache
    misses per article."""

    def of(self, units: Iterable[int]) -> tuple[int, ...]:
        key = tuple(sorted(units))
        return self.setdefault(key, key)


# What one unit anchors, as two flat tuples (one object each, for fewer trips to memory):
# (watchlist, its other required units, …) for the watchlists those units settle, and
# ((watchlist, groups but the first, test), required units, first group, …) for those that also
# need a test, whose first group is one of which a unit must be present.
_Anchored = tuple[tuple[int | _Units, ...], tuple[_TestedEntry | _Units, ...]]
_SETTLED, _TESTED = itemgetter(0), itemgetter(1)


class _AnchorIndex:
    """unit → what it anchors (`_Anchored`), in a list indexed by unit number: the candidates of
    all the units present are gathered by chaining iterators in C, with no Python loop over
    units or watchlists but for the few watchlists whose test must run."""

    __slots__ = ("anchored",)

    def __init__(
        self, anchored: dict[int, list[_IndexEntry]], units: int, shared: _UnitTuples
    ) -> None:
        self.anchored: list[_Anchored | None] = [None] * units
        for unit, entries in anchored.items():
            settled: list[int | _Units] = []
            tested: list[_TestedEntry | _Units] = []
            for i, others, groups, test in entries:
                if test is None:
                    settled += (i, shared.of(others))
                    continue
                # A watchlist without groups gets its anchor as its group: present when looked up.
                first = shared.of(groups[0] if groups else (unit,))
                rest = tuple(map(shared.of, groups[1:]))
                tested += ((i, rest, test), shared.of(others), first)
            self.anchored[unit] = (tuple(settled), tuple(tested))

    def candidates(
        self,
        found: set[int],
        present: set[int],
        in_title: set[int],
        in_body: set[int],
        adjacent: Callable[[int, int], bool],
        candidates: set[int],
    ) -> None:
        """Add to `candidates` the watchlists anchored on the units `found` that could match an
        article with the units `present` (`in_title`, `in_body`)."""
        anchored = list(filter(None, map(self.anchored.__getitem__, found)))
        if not anchored:
            return
        is_present, is_absent = found.issuperset, present.isdisjoint
        settled = list(chain.from_iterable(map(_SETTLED, anchored)))
        candidates.update(compress(settled[0::2], map(is_present, settled[1::2])))
        tested = list(chain.from_iterable(map(_TESTED, anchored)))
        if not tested:
            return
        # True > False: the required units present and the first group not absent.
        passed = map(gt, map(is_present, tested[1::3]), map(is_absent, tested[2::3]))
        for index, needed, test in compress(tested[0::3], passed):
            if needed and any(map(is_absent, needed)):
                continue
            if test(present, in_title, in_body, adjacent):
                candidates.add(index)


_UNIT_NUMBER = re.compile(r"\b\d+\b")


def _test_function(node: _Node, cache: dict[str, Callable[..., bool]], numbers: list[int]) -> _Test:
    """The node's `test_expr` as a function.

    Watchlists of one shape share one compiled function, with their unit numbers bound as
    arguments: the per-article loop calls a hundred tests, and code shared by many watchlists
    stays in the CPU caches where one function per watchlist would not.
    """
    units: dict[str, str] = {}
    template = _UNIT_NUMBER.sub(
        lambda m: units.setdefault(m.group(), f"_{len(units)}"), node.test_expr()
    )
    function = cache.get(template)
    if function is None:
        # The expression holds only unit numbers, `in`, `and`, `or`, calls of A and booleans:
        # nothing from the query text reaches the code, so compiling it is safe. It is ~10×
        # faster than walking the tree.
        parameters = "".join(f"{name}, " for name in units.values())
        code = compile(f"lambda {parameters}P, T, B, A: {template}", "<watchlist>", "eval")
        function = cache[template] = eval(code, {"__builtins__": {}})
    return partial(function, *[numbers[int(unit)] for unit in units])


class Matcher:
    """All watchlists compiled into one automaton plus an index unit → watchlists.

    Build with `Matcher.compile(rules, entities)`; `match(article)` only reads the compiled
    structures, so one matcher serves any number of articles and threads.
    """

    def __init__(self, compiler: _Compiler, watchlists: list[_Compiled]) -> None:
        self._watchlists = watchlists
        weights = compiler.weights
        # unit → entries anchored on it, among all the units present, or the title's only
        anchored: dict[int, list[_IndexEntry]] = {}
        in_title: dict[int, list[_IndexEntry]] = {}
        always: list[_Entry] = []
        tests: dict[str, Callable[..., bool]] = {}
        for index, w in enumerate(watchlists):
            # An OR at the top is indexed branch by branch: each branch brings its own required
            # words and a narrower test, so that a present anchor seldom runs a test in vain.
            root = w.root
            branches = root.children if isinstance(root, _Or) and root.children else (root,)
            if any(branch.anchors(weights) is None for branch in branches):
                required, exact = root.required()
                always.append(
                    (
                        index,
                        required,
                        None if exact else _test_function(root, tests, compiler.numbers),
                    )
                )
                continue
            for branch in branches:
                required, exact = branch.required()
                # A term in the title only is indexed apart and its required units are checked
                # among the title's: only a phrase of whole words still needs its test (adjacency).
                title_only = False
                if isinstance(branch, _Leaf) and branch.fields == ("title",):
                    title_only = True
                    exact = len(branch.units) == 1 or not branch.whole
                test = None if exact else _test_function(branch, tests, compiler.numbers)
                for unit in branch.anchors(weights) or ():
                    # The groups that the anchor or the required units do not settle already
                    groups = [
                        g
                        for g in branch.groups(weights)
                        if unit not in g and g.isdisjoint(required)
                    ]
                    entry = (index, required - {unit}, groups, test)
                    (in_title if title_only else anchored).setdefault(unit, []).append(entry)
        shared = _UnitTuples()
        self._anchored = _AnchorIndex(anchored, len(weights), shared)
        self._in_title = _AnchorIndex(in_title, len(weights), shared)
        self._always = tuple(always)
        self._build_keys(compiler)
        # Whether any watchlist filters on the article's language (`languages:` or `lang:`): if
        # none does, matching needs no language.
        self.uses_language = any(w.languages or _filters_language(w.root) for w in watchlists)

    @property
    def names(self) -> list[str]:
        return [w.name for w in self._watchlists]

    @classmethod
    def compile(
        cls, rules: Iterable[WatchlistRule], entities: Mapping[str, Sequence[str]] | None = None
    ) -> Matcher:
        """Compile every rule; raise QueryError naming the watchlist if one does not parse."""
        with collector_paused():  # a million long-lived objects for 10,000 watchlists
            compiler = _Compiler(entities or {})
            compiled: list[_Compiled] = []
            for rule in rules:
                try:
                    root = compiler.compile(q.parse(rule.query))
                except QueryError as exc:
                    raise QueryError(
                        f"watchlist {rule.name!r}: {exc.message}", exc.column, rule.query
                    ) from None
                compiled.append(
                    _Compiled(
                        rule.name,
                        root,
                        frozenset(_language(x) for x in rule.languages) or _NONE,
                        frozenset(f.casefold() for f in rule.feeds) or _NONE,
                        _as_word(root),
                        bool(rule.languages or rule.feeds),
                    )
                )
            return cls(compiler, compiled)

    def match(self, article: Article) -> list[Match]:
        """Every watchlist the article matches, in compile order, each with its hits."""
        texts, ctx = self._context(article)
        in_title, in_body = ctx.scans["title"].present, ctx.scans["body"].present
        present = in_title | in_body
        adjacent = ctx.adjacent
        candidates: set[int] = set()
        self._anchored.candidates(present, present, in_title, in_body, adjacent, candidates)
        # Title-only terms are anchored among the title's units.
        self._in_title.candidates(in_title, present, in_title, in_body, adjacent, candidates)
        for index, required, always_test in self._always:
            if required <= present and (
                always_test is None or always_test(present, in_title, in_body, adjacent)
            ):
                candidates.add(index)
        if not candidates:
            return []

        matched: list[tuple[str, list[Group]]] = []
        for index in sorted(candidates):
            w = self._watchlists[index]
            if w.filtered and _filtered_out(w, ctx):
                continue
            if w.word is None:
                ok, groups = w.root.evaluate(ctx)
            else:  # a word, maybe with words that must be absent: no tree to walk
                leaf, absent = w.word
                if absent and not present.isdisjoint(absent):
                    continue
                ok, groups = leaf.evaluate(ctx)
            if ok:
                matched.append((w.name, groups))
        return _with_hits(texts, matched) if matched else []

    def match_exhaustively(self, article: Article) -> list[Match]:
        """What `match` returns, found the slow way: every watchlist evaluated in full, none
        skipped by the index, the presence tests or the shortcut for single words. For tests,
        and for telling a suspected matcher bug from a surprising query."""
        texts, ctx = self._context(article, everywhere=True)
        matched: list[tuple[str, list[Group]]] = []
        for w in self._watchlists:
            if w.filtered and _filtered_out(w, ctx):
                continue
            ok, groups = w.root.evaluate(ctx)
            if ok:
                matched.append((w.name, groups))
        return _with_hits(texts, matched) if matched else []

    def _build_keys(self, compiler: _Compiler) -> None:
        """The lookup tables: whole-token forms map to their units in a dict; prefix and substring
        forms are keys of one automaton, whose value for a key is (length of the form, kind,
        units)."""
        # Forms that fit in code page 1252 and the others, apart: every form of a unit is in the
        # same script as the unit (Arabic forms add Arabic letters), so no form is in both.
        latin: dict[str, Any] = {}
        other: dict[str, Any] = {}
        # Arabic words that take an enclitic pronoun, and those that take the accusative alif
        before_pronoun: dict[str, Any] = {}
        before_accusative: dict[str, Any] = {}
        shared: list[tuple[dict[str, Any], str]] = []  # forms of several units
        partial: dict[str, tuple[int, int, list[int]]] = {}
        for (kind, form), unit in compiler.units.items():
            if kind == SUBSTRING:
                partial.setdefault(form, (len(form), kind, []))[2].append(unit)
                continue
            if kind == PREFIX:
                for surface in prefix_forms(form):
                    partial.setdefault(" " + surface, (len(surface), kind, []))[2].append(unit)
                continue
            if kind == EXACT:
                surfaces = spelt(proclitic_forms(fold_word_end(form)))
                before_pronouns, before_alif = enclitic_bases(form)
                _add_forms(before_pronoun, before_pronouns, unit, shared)
                _add_forms(before_accusative, before_alif, unit, shared)
            else:
                surfaces = set(as_written_forms(form))
            _add_forms(latin if fits_cp1252(form) else other, surfaces, unit, shared)
        # A form of one unit maps to its number, saving a tuple per form (a million of them for
        # 10,000 watchlists): a smaller table means fewer cache misses per lookup.
        for table, surface in shared:
            table[surface] = tuple(table[surface])
        # Most words before an enclitic are whole forms too (وبحكومت of حكومة is one of حكومت),
        # built apart as equal strings: the tables share the whole forms' strings instead, 7 MB
        # of Arabic strings for 10,000 watchlists.
        same_string = {surface: surface for surface in other}
        before_pronoun = {same_string.get(k, k): v for k, v in before_pronoun.items()}
        before_accusative = {same_string.get(k, k): v for k, v in before_accusative.items()}
        del same_string
        self._enclitics = (
            _EncliticTables(before_pronoun, before_accusative)
            if before_pronoun or before_accusative
            else None
        )
        # The forms that fit in code page 1252, all that a Western text's words can be: for such
        # texts a table a tenth the size (a hundredth, with the forms of Arabic words), which
        # stays in the CPU caches. Every text may look up every form.
        self._cp1252_forms: dict[str, int | tuple[int, ...]] = latin
        other.update(latin)
        self._whole_forms: dict[str, int | tuple[int, ...]] = other
        self._partial_units = frozenset(
            unit for (kind, _), unit in compiler.units.items() if kind not in WHOLE
        )
        self._automaton = _automaton(partial.items())
        self._cp1252_automaton = _automaton((k, v) for k, v in partial.items() if fits_cp1252(k))

    def _context(
        self, article: Article, everywhere: bool = False
    ) -> tuple[dict[str, NormalizedText], _Context]:
        """The article's fields normalised, and what evaluators see of it."""
        texts = {"title": NormalizedText.of(article.title), "body": NormalizedText.of(article.body)}
        scans = {field: self._scan(text, everywhere) for field, text in texts.items()}
        language = _language(article.language) if article.language else ""
        return texts, _Context(scans, language, (article.source or "").casefold())

    def _scan(self, text: NormalizedText, everywhere: bool = False) -> _FieldScan:
        """The scan of one field; a text that fits in code page 1252 is looked up only among the
        forms that do, unless `everywhere`."""
        if text.cp1252 and not everywhere:
            return _FieldScan(text.tokens, self, self._cp1252_forms, self._cp1252_automaton)
        return _FieldScan(text.tokens, self, self._whole_forms, self._automaton, self._enclitics)


def _add_forms(
    table: dict[str, Any],
    surfaces: Set[str],
    unit: int,
    shared: list[tuple[dict[str, Any], str]],
) -> None:
    """Map each of `surfaces` to `unit` in `table`; a surface already there (of another unit)
    maps to a list of the units, noted in `shared` to become a tuple."""
    # A dozen forms of an Arabic word, a hundred thousand for 10,000 watchlists: added in C, and
    # only the forms already there looked at one by one.
    before = {s: table[s] for s in table.keys() & surfaces}
    table.update(dict.fromkeys(surfaces, unit))
    for surface, units in before.items():
        if isinstance(units, list):
            units.append(unit)
            table[surface] = units
        else:
            table[surface] = [units, unit]
            shared.append((table, surface))


class _EncliticTables:
    """The forms of Arabic words with an enclitic pronoun or accusative alif, kept without it:
    `before_pronoun` maps وبحكومت to the units of حكومة, which the text writes وبحكومتهم,
    وبحكومتها …; `before_alif` maps وخط to those of خط (وخطا). Both are kept in one table, `bases`:
    a base → (its units before a pronoun, its units before the alif), None for either it does not
    take, one tuple for all the bases with equal units. Its keys are what a word cut short is
    looked up in (two tables and a frozenset of their keys took 4.8 MB more for 10,000 watchlists)."""

    __slots__ = ("bases",)

    def __init__(self, before_pronoun: dict[str, Any], before_alif: dict[str, Any]) -> None:
        self.bases: dict[str, tuple[Any, Any]] = {}
        pairs: dict[tuple[Any, Any], tuple[Any, Any]] = {}
        for base in chain(before_pronoun, before_alif):
            if base not in self.bases:
                pair = (before_pronoun.get(base), before_alif.get(base))
                self.bases[base] = pairs.setdefault(pair, pair)

    def units_of(
        self, words: Mapping[str, Any], forms: Mapping[str, int | tuple[int, ...]]
    ) -> list[tuple[str, list[int]]]:
        """Each of `words` that is a form with an enclitic, with the units it is one of that
        `forms` (the table of its other forms) does not already give it."""
        found: dict[str, list[int]] = {}
        for length, pronouns, alif in _CUTS:
            # Every word cut short, looked up in C; the few bases found are then checked for
            # the clitic the word really ended in.
            bases = self.bases
            for base in bases.keys() & [word[:-length] for word in words]:
                before_pronoun, before_alif = bases[base]
                for units, endings in ((before_pronoun, pronouns), (before_alif, alif)):
                    if units is None:
                        continue
                    for ending in endings:
                        word = base + ending
                        if word in words:
                            units_of = found.setdefault(word, [])
                            units_of.extend((units,) if isinstance(units, int) else units)
        out = []
        for word, units in found.items():
            known = forms.get(word, ())
            known = (known,) if isinstance(known, int) else known
            fresh = [u for u in dict.fromkeys(units) if u not in known]
            if fresh:
                out.append((word, fresh))
        return out


# (length, the pronouns of that length, the accusative alif if it is that long)
_CUTS = tuple(
    (length, pronouns, (ACCUSATIVE_ALIF,) if len(ACCUSATIVE_ALIF) == length else ())
    for length, pronouns in PRONOUN_ENDINGS
)


def _automaton(keys: Iterable[tuple[str, tuple[int, int, list[int]]]]) -> Any:
    """An Aho-Corasick automaton whose value for a key is (length of the form, kind, units), or
    None for no keys."""
    automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY)
    for key, (length, kind, units) in keys:
        automaton.add_word(key, (length, kind, tuple(units)))
    if not len(automaton):
        return None
    automaton.make_automaton()
    return automaton


def _filters_language(node: _Node) -> bool:
    if isinstance(node, _Filter):
        return node.name == "lang"
    if isinstance(node, _Not):
        return _filters_language(node.child)
    if isinstance(node, _And | _Or):
        return any(map(_filters_language, node.children))
    if isinstance(node, _Near):
        return _filters_language(node.left) or _filters_language(node.right)
    return False


def _filtered_out(w: _Compiled, ctx: _Context) -> bool:
    """Whether the watchlist's language or feed filter excludes the article: a filter applies
    only when the article's language or feed is known."""
    if w.languages and ctx.language and ctx.language not in w.languages:
        return True
    return bool(w.feeds and ctx.source and ctx.source not in w.feeds)


def _language(tag: str) -> str:
    return tag.replace("_", "-").split("-", 1)[0].casefold()


def _with_hits(
    texts: Mapping[str, NormalizedText], matched: list[tuple[str, list[Group]]]
) -> list[Match]:
    """The matches with their hits in original offsets: every place any match needs is mapped in
    one call per field (many watchlists share their hits), then each match lists its hits, title
    first, then by place, one per place even when aliases fold alike."""
    places: dict[str, dict[tuple[int, int], None]] = {"title": {}, "body": {}}
    for _, groups in matched:
        for field, term, spans in groups:
            if term is not None:
                places[field].update(dict.fromkeys(spans))
                continue
            for _, _, pair_hits in spans:  # a NEAR pair: the hits of both sides
                for _, hit_field, s, e in pair_hits:
                    places[hit_field][(s, e)] = None
    # field → (start position, end position) → (original start, original end)
    mapped: dict[str, dict[tuple[int, int], tuple[int, int]]] = {}
    # The fields whose distinct spans stay distinct and in order once mapped (normalising only
    # deleted characters): there the spans of one term are its hits as they are.
    in_order: set[str] = set()
    for field, needed in places.items():
        if needed:
            text = texts[field]
            original = text.original_spans(
                [(s >> SHIFT, s & OFFSET_MASK, e >> SHIFT, e & OFFSET_MASK) for s, e in needed]
            )
            mapped[field] = dict(zip(needed, original, strict=True))
            if text.maps_in_order:
                in_order.add(field)
    matches = []
    for name, groups in matched:
        if len(groups) == 1:  # most matches: one term in one field
            field, term, spans = groups[0]
            if term is not None and field in in_order:
                to_original = mapped[field]
                hits = tuple([_new_hit((term, field, *to_original[span])) for span in spans])
                matches.append(_new_match((name, hits)))
                continue
        found: dict[tuple[bool, int, int], Hit] = {}
        for field, term, spans in groups:
            if term is not None:
                to_original, after_title = mapped[field], field != "title"
                for span in spans:
                    start, end = to_original[span]
                    if (after_title, start, end) not in found:
                        found[after_title, start, end] = _new_hit((term, field, start, end))
                continue
            for _, _, pair_hits in spans:
                for label, hit_field, s, e in pair_hits:
                    start, end = mapped[hit_field][s, e]
                    place = (hit_field != "title", start, end)
                    if place not in found:
                        found[place] = _new_hit((label, hit_field, start, end))
        matches.append(_new_match((name, tuple([found[place] for place in sorted(found)]))))
    return matches


# The constructors of NamedTuples are Python functions; these build the same tuples in C.
_new_hit = cast("Callable[[tuple[str, str, int, int]], Hit]", partial(tuple.__new__, Hit))
_new_match = cast("Callable[[tuple[str, tuple[Hit, ...]]], Match]", partial(tuple.__new__, Match))
