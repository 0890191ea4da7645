"""Compile many watchlists into one matcher; match an article; report hits with original offsets.

How the cost stays independent of the number of watchlists (the idea of Lucene Monitor's presearcher):

1. Compile once. Every query is reduced to *units*: one normalised token to match exactly, as a prefix
   (`missile*`) or, for Han/Kana/Hangul, as a substring. Each unit becomes one or more keys of a single
   Aho-Corasick automaton (pyahocorasick) shared by all watchlists. An Arabic unit gets one key per
   proclitic form (و ف ب ك ل and ال, SPEC §3 rule 5), so the text itself is never stemmed.
   Each watchlist is indexed under a few *anchor* units, at least one of which must occur for it to
   match (for `a AND b` one side suffices, for `a OR b` both); queries with no anchor (`NOT x` alone,
   `lang:ar`) are evaluated for every article.
2. Per article: one automaton scan per field over its tokens joined by single spaces, which yields the
   positions of every unit present; then only the watchlists anchored on a present unit are evaluated.
   The work grows with the article's length and with the watchlists that could match it, not with the
   total number of watchlists.

Evaluation works on occurrences (field, first token, last token, hits), so phrases are consecutive
tokens, NEAR/n compares token positions, and every match carries its hits. Offsets are mapped back to the
original text only for watchlists that matched.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ahocorasick

from monitor.core import query as q
from monitor.core.entities import country_names
from monitor.core.text import NormalizedText, is_arabic, is_cjk, term_tokens, token_starts
from monitor.errors import QueryError
from monitor.model import Article, Hit, Match

# ---- compiled form ---------------------------------------------------------------------------------

EXACT, PREFIX, SUBSTRING = 0, 1, 2  # how a unit matches a token: whole, start, anywhere
FIELDS = ("title", "body")

# An occurrence: (field, first token, last token, hits). A raw hit: (term, field, first token,
# haystack start, last token, haystack end); mapped to original offsets only when reported.
RawHit = tuple[str, str, int, int, int, int]
Occurrence = tuple[str, int, int, tuple[RawHit, ...]]
# Per field: unit id → list of (first token, last token, haystack start, haystack end).
Positions = dict[int, list[tuple[int, int, int, int]]]

_CONJUNCTIONS = ("", "و", "ف")
_PREPOSITIONS = ("", "ب", "ك", "ل")
_ARTICLE = "ال"


def proclitic_forms(word: str) -> set[str]:
    """The surface forms of an Arabic `word` with every proclitic combination of SPEC §3 rule 5.

    `صين` → صين, الصين, والصين, بالصين, للصين, وللصين …; `الصين` keeps its article: الصين, والصين,
    بالصين, للصين … but not bare صين. A lām prefix fuses with the article (ل + الصين → للصين) and, before a
    word that starts with lām, with the word itself (ل + اللجنه → للجنه). Non-Arabic words are returned
    as they are; so are stems shorter than two letters, where stripping would match almost anything.
    """
    if not is_arabic(word):
        return {word}
    has_article = word.startswith(_ARTICLE) and len(word) >= 4
    core = word[2:] if has_article else word
    if len(core) < 2:
        return {word}
    forms = {word}
    for conj in _CONJUNCTIONS:
        for prep in _PREPOSITIONS:
            with_article = _ARTICLE + core
            if prep == "ل":
                fused = "ل" + core if core.startswith("ل") else "لل" + core
                forms.add(conj + fused)
            else:
                forms.add(conj + prep + with_article)
            if not has_article:
                forms.add(conj + prep + core)
    return forms


class _Compiler:
    """Turns query ASTs into evaluators and collects the automaton's keys."""

    def __init__(self, entities: Mapping[str, Sequence[str]]) -> None:
        self.entities = entities
        self.units: dict[tuple[int, str], int] = {}
        self.unit_forms: list[str] = []

    def unit(self, kind: int, form: str) -> int:
        key = (kind, form)
        uid = self.units.get(key)
        if uid is None:
            uid = self.units[key] = len(self.unit_forms)
            self.unit_forms.append(form)
        return uid

    def leaf(self, label: str, text: str, field: str | None, prefix: bool = False) -> _Leaf | None:
        words = list(term_tokens(text))
        if not words:
            return None
        # Han/Kana/Hangul is written without spaces: adjacent CJK tokens of a term are one substring.
        merged: list[str] = []
        for w in words:
            if merged and is_cjk(w) and is_cjk(merged[-1]):
                merged[-1] += w
            else:
                merged.append(w)
        units = []
        for i, w in enumerate(merged):
            if is_cjk(w):
                kind = SUBSTRING
            elif prefix and i == len(merged) - 1:
                kind = PREFIX
            else:
                kind = EXACT
            units.append(self.unit(kind, w))
        return _Leaf(label, tuple(units), field)

    def compile(self, node: q.Node, field: str | None = None) -> _Node:
        match node:
            case q.Term(text=text, prefix=prefix):
                leaf = self.leaf(text + ("*" if prefix else ""), text, field, prefix)
                return leaf if leaf is not None else _NEVER
            case q.Phrase(text=text):
                leaf = self.leaf(text, text, field)
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


class _Context:
    """What evaluators see of one article: unit positions per field, and its metadata."""

    __slots__ = ("language", "positions", "source")

    def __init__(self, positions: dict[str, Positions], language: str, source: str) -> None:
        self.positions = positions
        self.language = language
        self.source = source


class _Node:
    """An evaluator: `evaluate` returns (matched, occurrences). `anchors` are units of which one must
    occur for the node to match, or None when it can match without any (NOT, filters)."""

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Occurrence]]:
        raise NotImplementedError

    def anchors(self) -> frozenset[int] | None:
        raise NotImplementedError


class _Never(_Node):
    def evaluate(self, ctx: _Context) -> tuple[bool, list[Occurrence]]:
        return False, []

    def anchors(self) -> frozenset[int] | None:
        return frozenset()


_NEVER = _Never()


class _Leaf(_Node):
    """A term or phrase: a sequence of units on consecutive tokens, in one field or in both."""

    __slots__ = ("fields", "label", "units")

    def __init__(self, label: str, units: tuple[int, ...], field: str | None) -> None:
        self.label = label
        self.units = units
        self.fields = (field,) if field else FIELDS

    def anchors(self) -> frozenset[int] | None:
        return frozenset((self.units[0],))

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Occurrence]]:
        out: list[Occurrence] = []
        first, rest = self.units[0], self.units[1:]
        for field in self.fields:
            positions = ctx.positions[field]
            starts = positions.get(first)
            if not starts:
                continue
            if not rest:
                label = self.label
                out.extend(
                    (field, a, b, ((label, field, a, hs, b, he),)) for a, b, hs, he in starts
                )
                continue
            following = []
            for u in rest:
                found = positions.get(u)
                if not found:
                    break
                following.append({a: (b, he) for a, b, _, he in found})
            else:
                for a, b, hs, _ in starts:
                    end_token, end_offset, ok = b, 0, True
                    for by_start in following:
                        nxt = by_start.get(end_token + 1)
                        if nxt is None:
                            ok = False
                            break
                        end_token, end_offset = nxt
                    if ok:
                        hit = (self.label, field, a, hs, end_token, end_offset)
                        out.append((field, a, end_token, (hit,)))
        return bool(out), out


class _Filter(_Node):
    __slots__ = ("name", "value")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value.casefold()

    def anchors(self) -> frozenset[int] | None:
        return None

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Occurrence]]:
        actual = ctx.language if self.name == "lang" else ctx.source
        return actual == self.value, []


class _Not(_Node):
    __slots__ = ("child",)

    def __init__(self, child: _Node) -> None:
        self.child = child

    def anchors(self) -> frozenset[int] | None:
        return None

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Occurrence]]:
        return not self.child.evaluate(ctx)[0], []


class _And(_Node):
    __slots__ = ("children",)

    def __init__(self, children: tuple[_Node, ...]) -> None:
        self.children = children

    def anchors(self) -> frozenset[int] | None:
        # Any one child's anchors will do; the smallest set keeps the watchlist off most articles.
        best: frozenset[int] | None = None
        for child in self.children:
            a = child.anchors()
            if a is not None and (best is None or len(a) < len(best)):
                best = a
        return best

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Occurrence]]:
        occurrences: list[Occurrence] = []
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

    def anchors(self) -> frozenset[int] | None:
        union: set[int] = set()
        for child in self.children:
            a = child.anchors()
            if a is None:
                return None
            union |= a
        return frozenset(union)

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Occurrence]]:
        matched = False
        occurrences: list[Occurrence] = []
        for child in self.children:
            ok, occ = child.evaluate(ctx)
            if ok:
                matched = True
                occurrences.extend(occ)
        return matched, occurrences


class _Near(_Node):
    """Both sides in the same field with at most `distance` tokens from one to the other."""

    __slots__ = ("distance", "left", "right")

    def __init__(self, left: _Node, right: _Node, distance: int) -> None:
        self.left = left
        self.right = right
        self.distance = distance

    def anchors(self) -> frozenset[int] | None:
        return _And((self.left, self.right)).anchors()

    def evaluate(self, ctx: _Context) -> tuple[bool, list[Occurrence]]:
        ok, lefts = self.left.evaluate(ctx)
        if not ok:
            return False, []
        ok, rights = self.right.evaluate(ctx)
        if not ok:
            return False, []
        n = self.distance
        out: list[Occurrence] = []
        for lf, la, lb, lh in lefts:
            for rf, ra, rb, rh in rights:
                if lf == rf and ra - lb <= n and la - rb <= n:
                    out.append((lf, min(la, ra), max(lb, rb), lh + rh))
        return bool(out), out


# ---- the matcher -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchlistRule:
    """What the matcher needs of a watchlist. Empty `languages`/`feeds` mean no filter."""

    name: str
    query: str
    languages: tuple[str, ...] = ()
    feeds: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Compiled:
    name: str
    root: _Node
    languages: frozenset[str]
    feeds: frozenset[str]


class Matcher:
    """All watchlists compiled into one automaton plus an index unit → watchlists.

    Build with `Matcher.compile(rules, entities)`; `match(article)` is safe to call from several
    threads (it only reads the compiled structures).
    """

    def __init__(
        self,
        watchlists: list[_Compiled],
        automaton: Any,
        anchored: dict[int, tuple[int, ...]],
        always: tuple[int, ...],
    ) -> None:
        self._watchlists = watchlists
        self._automaton = automaton
        self._anchored = anchored
        self._always = always

    @property
    def names(self) -> list[str]:
        return [w.name for w in self._watchlists]

    @classmethod
    def compile(
        cls, rules: Iterable[WatchlistRule], entities: Mapping[str, Sequence[str]] | None = None
    ) -> Matcher:
        """Compile every rule; raise QueryError naming the watchlist if one does not parse."""
        compiler = _Compiler(entities or {})
        compiled: list[_Compiled] = []
        anchored: dict[int, list[int]] = {}
        always: list[int] = []
        for rule in rules:
            try:
                root = compiler.compile(q.parse(rule.query))
            except QueryError as exc:
                raise QueryError(
                    f"watchlist {rule.name!r}: {exc.message}", exc.column, rule.query
                ) from None
            index = len(compiled)
            compiled.append(
                _Compiled(
                    rule.name,
                    root,
                    frozenset(_language(x) for x in rule.languages),
                    frozenset(f.casefold() for f in rule.feeds),
                )
            )
            anchors = root.anchors()
            if anchors is None:
                always.append(index)
            else:
                for uid in anchors:
                    anchored.setdefault(uid, []).append(index)
        automaton = _build_automaton(compiler)
        return cls(
            compiled,
            automaton,
            {uid: tuple(ws) for uid, ws in anchored.items()},
            tuple(always),
        )

    def match(self, article: Article) -> list[Match]:
        """Every watchlist the article matches, in compile order, each with its hits."""
        texts = {"title": NormalizedText.of(article.title), "body": NormalizedText.of(article.body)}
        positions: dict[str, Positions] = {}
        present: set[int] = set()
        for field, text in texts.items():
            positions[field] = found = self._scan(text.tokens)
            present.update(found)

        candidates: set[int] = set(self._always)
        for uid in present:
            ws = self._anchored.get(uid)
            if ws:
                candidates.update(ws)
        if not candidates:
            return []

        language = _language(article.language) if article.language else ""
        source = (article.source or "").casefold()
        ctx = _Context(positions, language, source)
        starts = {field: token_starts(text.tokens) for field, text in texts.items()}
        matches = []
        for index in sorted(candidates):
            w = self._watchlists[index]
            # A filter on language or feed applies only when the article's is known.
            if w.languages and language and language not in w.languages:
                continue
            if w.feeds and source and source not in w.feeds:
                continue
            ok, occurrences = w.root.evaluate(ctx)
            if ok:
                matches.append(Match(w.name, _hits(occurrences, texts, starts)))
        return matches

    def _scan(self, words: list[str]) -> Positions:
        found: Positions = {}
        if not words:
            return found
        haystack = " " + " ".join(words) + " "
        starts = token_starts(words)
        for end, (hit_len, kind, units) in self._automaton.iter(haystack):
            # `end` is the index of the key's last character: the trailing space of an exact key.
            if kind == EXACT:
                hs = end - hit_len
                i = bisect.bisect_right(starts, hs) - 1
                entry = (i, i, hs, end)
            else:
                hs = end - hit_len + 1
                i = bisect.bisect_right(starts, hs) - 1
                # a prefix hit is highlighted to the end of its word
                he = end + 1 if kind == SUBSTRING else starts[i] + len(words[i])
                entry = (i, i, hs, he)
            for uid in units:
                found.setdefault(uid, []).append(entry)
        return found


def _build_automaton(compiler: _Compiler) -> Any:
    keys: dict[str, tuple[int, list[int]]] = {}
    for (kind, form), uid in compiler.units.items():
        for surface in proclitic_forms(form) if kind != SUBSTRING else (form,):
            key = f" {surface} " if kind == EXACT else f" {surface}" if kind == PREFIX else surface
            keys.setdefault(key, (kind, []))[1].append(uid)
    automaton = ahocorasick.Automaton()
    for key, (kind, uids) in keys.items():
        # (length of the hit inside the key, kind, units); exact and prefix keys carry spaces.
        hit_len = len(key) - (2 if kind == EXACT else 1 if kind == PREFIX else 0)
        automaton.add_word(key, (hit_len, kind, tuple(uids)))
    if keys:
        automaton.make_automaton()
    else:
        automaton = _EmptyAutomaton()
    return automaton


class _EmptyAutomaton:
    """pyahocorasick refuses to search an automaton without keys; nothing matches here anyway."""

    def iter(self, haystack: str) -> Iterable[Any]:
        return ()


def _language(tag: str) -> str:
    return tag.replace("_", "-").split("-", 1)[0].casefold()


def _hits(
    occurrences: list[Occurrence],
    texts: Mapping[str, NormalizedText],
    starts: Mapping[str, list[int]],
) -> tuple[Hit, ...]:
    seen: set[tuple[str, int, int]] = set()
    hits = []
    for _, _, _, raw in occurrences:
        for term, field, first, hs, last, he in raw:
            text = texts[field]
            spans = text.token_spans()
            field_starts = starts[field]
            norm_start = spans[first][0] + (hs - field_starts[first])
            norm_end = spans[last][0] + (he - field_starts[last])
            start, end = text.to_original(norm_start, norm_end)
            key = (field, start, end)  # one hit per place, even when two aliases fold alike
            if key not in seen:
                seen.add(key)
                hits.append(Hit(term, field, start, end))
    hits.sort(key=lambda h: (h.field != "title", h.start, h.end, h.term))
    return tuple(hits)
