"""Near-duplicate stories (SPEC §5): the same wire story with another headline, caption or footer.

Exact copies already share a content hash (`core.dedup`). A near-copy differs in a few words, so it
is found by how much of its text it shares with a story seen recently:

* `fingerprint(body)` — a bottom-k MinHash: the `SIZE` smallest hashes of the body's shingles (runs
  of `SHINGLE` consecutive normalised tokens). The title does not count, since a copy's headline is
  often rewritten. A body of fewer than `MIN_SHINGLES` shingles has no fingerprint: two short texts
  (a one-line brief, a photo caption) can share most of their words and still be different news,
  so they join a story only by their exact hash.
* `similarity(a, b)` — the estimated Jaccard similarity of two bodies' shingle sets, from their
  fingerprints: of the `SIZE` smallest hashes of both together, the share found in both.
* `SAME_STORY` — the similarity from which two bodies are one story. A copy with another headline
  and a caption or footer added keeps most of its shingles (over 0.85), and so does an edited one
  (the corpus's two versions of one BBC story share 0.69); other articles, even on the same
  subject, share little (under 0.3 for every other pair of the corpus's BBC business articles).

The hashes are stable across processes and machines (CRC-32 of each token, mixed per shingle), so
fingerprints can be stored and compared by any replica. Changing how they are made means bumping
`VERSION`, which is stored with them.

Broder's MinHash ("On the resemblance and containment of documents", 1997), in its bottom-k form:
one hash function and the k smallest values estimate what k hash functions do (datasketch's
`MinHash`), at a k-th of the cost.

Text overlap alone cannot tell a rewrite from a follow-up: two outlets' rewrites of one agency
report share 0.45–0.75 of their shingles, and so does an outlet's report of the next day's
development that reuses its own earlier text below a new lead. What separates them is the rest:

* `Rules.threshold` — the similarity from which items of *different outlets* are one story
  (`stories.threshold` in the config, 0.4 by default); items of the *same outlet* need
  `SAME_OUTLET` (0.6), since an outlet reprints its own paragraphs in every report of a subject.
* `is_follow_up(new, earlier)` — a candidate from the same outlet (the link's host, else the
  feed) that came later, under a headline sharing under `FOLLOW_UP_TITLE` of its words with the
  earlier one's, and whose opening (its first `OPENING` words) is at most `FOLLOW_UP_OPENING`
  contained in the earlier text, reports something new: it is a story of its own, and alerts.
  An outlet's corrected or republished report keeps its headline or its lead, and joins.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from monitor.core import headlines
from monitor.core.text import tokens

VERSION = 1
SIZE = 32  # hashes in a fingerprint
SHINGLE = 3  # tokens per shingle
MIN_SHINGLES = 20
SAME_STORY = 0.6  # the similarity `closest` asks for unless told otherwise
THRESHOLD = 0.4  # across outlets: the default of `stories.threshold`
SAME_OUTLET = 0.6  # within one outlet, whatever `stories.threshold` is below it
FOLLOW_UP_TITLE = 0.3  # a follow-up's headline shares less than this of its words (Jaccard)
FOLLOW_UP_OPENING = 0.5  # and at most this share of its opening's shingles is in the earlier text
OPENING = 40  # words of a body that are its opening (a lead paragraph)
# Headline keys an item shares with a story found by its headline: titles sharing
# `headlines.MIN_TITLE` words share that many pairs of them, at least.
HEADLINE_KEYS_SHARED = headlines.MIN_TITLE * (headlines.MIN_TITLE - 1) // 2
# How many of a fingerprint's smallest hashes are indexed to find candidate stories: a story at
# SAME_STORY shares one of them with all but (1 - 0.6) ** 8 < 0.1 % of its copies.
INDEXED = 8
# How long a story takes copies: a wire story is reprinted within days.
WINDOW = timedelta(days=3)
# Shingle hashes are below this prime (2**61 - 1), so they fit PostgreSQL's BIGINT.
_PRIME = (1 << 61) - 1
_MIX = (0x9E3779B97F4A7C15 % _PRIME, 0xC2B2AE3D27D4EB4F % _PRIME, 0x165667B19E3779F9 % _PRIME)


def fingerprint(body: str) -> tuple[int, ...]:
    """The body's fingerprint, smallest hash first; () for a body too short to have one."""
    words = tokens(body)
    if len(words) - SHINGLE + 1 < MIN_SHINGLES:
        return ()
    crc = [zlib.crc32(word.encode()) for word in words]
    a, b, c = _MIX
    shingles = {
        (x * a + y * b + z * c) % _PRIME for x, y, z in zip(crc, crc[1:], crc[2:], strict=False)
    }
    return tuple(heapq.nsmallest(SIZE, shingles))


def similarity(first: Sequence[int], second: Sequence[int]) -> float:
    """The estimated Jaccard similarity of the two bodies' shingles (0 when either has none)."""
    k = min(len(first), len(second))
    if not k:
        return 0.0
    both = set(first) & set(second)
    smallest = heapq.nsmallest(k, set(first) | set(second))
    return sum(1 for h in smallest if h in both) / k


def same_story(first: Sequence[int], second: Sequence[int]) -> bool:
    return similarity(first, second) >= SAME_STORY


def closest(
    fingerprint: Sequence[int],
    stories: Iterable[tuple[int, str | None]],
    threshold: float = SAME_STORY,
) -> int | None:
    """Of the (story id, stored fingerprint) candidates, the story `fingerprint` is a copy of: the
    most similar at `threshold` or more (the lower id on a tie), else None."""
    ranked = ranked_candidates(fingerprint, stories, threshold)
    return ranked[0][1] if ranked else None


def ranked_candidates(
    fingerprint: Sequence[int], stories: Iterable[tuple[int, str | None]], threshold: float
) -> list[tuple[float, int]]:
    """(similarity, story id) of the candidates at `threshold` or more, the most similar first
    (the lower id on a tie)."""
    found = []
    for story_id, stored in stories:
        other = decode(stored)
        if not other:
            continue
        score = similarity(fingerprint, other)
        if score >= threshold:
            found.append((score, story_id))
    return sorted(found, key=lambda pair: (-pair[0], pair[1]))


@dataclass(frozen=True, slots=True)
class Rules:
    """The grouping settings (`stories:` in the config)."""

    threshold: float = THRESHOLD
    window: timedelta = WINDOW

    @property
    def same_outlet(self) -> float:
        return max(self.threshold, SAME_OUTLET)


@dataclass(frozen=True, slots=True)
class Report:
    """What the rules weigh of an item besides its fingerprint: who published it, when (its date,
    else when it was first seen), its headline and its text."""

    outlet: str
    at: datetime
    title: str
    body: str
    language: str | None = None


def outlet_of(link: str | None, feed: str) -> str:
    """Who published an item: its link's host without `www.`, else the feed's name (two feeds of
    one site — its world and its business sections — are one outlet)."""
    host = urlsplit(link).hostname if link else None
    if not host:
        return f"feed:{feed}"
    return host.removeprefix("www.")


def _shingles(words: Sequence[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def title_overlap(first: str, second: str) -> float:
    """The Jaccard similarity of two headlines' sets of normalised words."""
    a, b = set(tokens(first)), set(tokens(second))
    return len(a & b) / len(a | b) if a or b else 1.0


def opening_contained(later: str, earlier: str) -> float:
    """The share of the shingles of `later`'s opening (first `OPENING` words) found in `earlier`."""
    opening = _shingles(tokens(later)[:OPENING])
    if not opening:
        return 1.0
    return len(opening & _shingles(tokens(earlier))) / len(opening)


def may_follow_up(new: Report, earlier: Report) -> bool:
    """`is_follow_up` up to the texts: the same outlet, later, under another headline. Only when
    this holds does `is_follow_up` read `earlier.body` (`texts_read`)."""
    return (
        new.outlet == earlier.outlet
        and new.at > earlier.at
        and title_overlap(new.title, earlier.title) < FOLLOW_UP_TITLE
    )


def is_follow_up(new: Report, earlier: Report) -> bool:
    """Whether `new` reports a new development after `earlier` rather than copying it: the same
    outlet, later, under another headline (`may_follow_up`), with a lead of its own."""
    return (
        may_follow_up(new, earlier)
        and opening_contained(new.body, earlier.body) <= FOLLOW_UP_OPENING
    )


def joins(score: float, new: Report, story: Sequence[Report], rules: Rules) -> bool:
    """Whether an item whose fingerprint has `score` with a story's joins that story, whose items
    are `story`: from another outlet at `rules.threshold`; where the story has items of the
    item's own outlet, at `rules.same_outlet`, and not as a follow-up of each of them."""
    own = [report for report in story if report.outlet == new.outlet]
    if not own:
        return score >= rules.threshold
    return score >= rules.same_outlet and not all(is_follow_up(new, r) for r in own)


def choose(
    ranked: Sequence[tuple[float, int]],
    new: Report,
    reports: Mapping[int, Sequence[Report]],
    rules: Rules,
) -> int | None:
    """The story of `ranked` candidates (`ranked_candidates`) that the item `new` joins, the most
    similar first; `reports` holds each candidate's items. None: a story of its own."""
    for score, story_id in ranked:
        if joins(score, new, reports.get(story_id, ()), rules):
            return story_id
    return None


def encode(fingerprint: Sequence[int]) -> str:
    """The stored form: `v<VERSION>:` and the hashes, smallest first."""
    return f"v{VERSION}:" + " ".join(map(str, fingerprint))


def decode(stored: str | None) -> tuple[int, ...]:
    """The hashes of a stored fingerprint; () for none, or one made by another version."""
    prefix = f"v{VERSION}:"
    if not stored or not stored.startswith(prefix):
        return ()
    return tuple(map(int, stored[len(prefix) :].split()))


def choose_by_headline(
    candidates: Sequence[int],
    new: Report,
    reports: Mapping[int, Sequence[Report]],
    rule: headlines.Rule = headlines.RULE,
) -> int | None:
    """The story of `candidates` (found by headline keys, the most shared first) that `new` joins
    by its headline: one with no item of `new`'s own outlet, whose items of other outlets at most
    `headlines.WITHIN` apart (short ones, or any when `new` is short: a headline and a sentence
    are compared with a short item or an article, never two articles, which their fingerprints
    compare) tell the same (`headlines.same_story`) at least half of them. One ambiguous member (a
    headline of one event over a sentence of another) does not pull a second event into the
    story. None: no such story."""
    if not candidates:
        return None
    short = headlines.is_short(new.title, new.body)
    mine = headlines.headline_of(new.title, new.body, new.language)
    for story_id in candidates:
        story = reports.get(story_id, ())
        weighed = _weighed_by_headline(new, story)
        compared = [
            r
            for r, weighs in zip(story, weighed, strict=True)
            if weighs and (short or headlines.is_short(r.title, r.body))
        ]
        told = sum(
            1
            for r in compared
            if headlines.same_story(mine, headlines.headline_of(r.title, r.body, r.language), rule)
        )
        if told and 2 * told >= len(compared):
            return story_id
    return None


def _weighed_by_headline(new: Report, story: Sequence[Report]) -> list[bool]:
    """For each of `story`'s items, whether `choose_by_headline` weighs `new` against it, reading
    its text: none when the story has an item of `new`'s own outlet, else those at most
    `headlines.WITHIN` apart."""
    if any(r.outlet == new.outlet for r in story):
        return [False] * len(story)
    return [abs(new.at - r.at) <= headlines.WITHIN for r in story]


def texts_read(
    new: Report,
    stored: Sequence[Report],
    rules: Rules,
    *,
    score: float | None = None,
    by_headline: bool = False,
) -> list[bool]:
    """For each of a story's stored items (`stored`, their `body` unread and never looked at
    here), whether the rules may read its text when they weigh `new` against the story: by its
    fingerprint (`choose`; `score`: their similarity, None when the story is no candidate so), a
    follow-up's test (`is_follow_up`) of an item of `new`'s outlet, when `score` asks for one
    (`rules.same_outlet`) and `may_follow_up` holds; by its headline (`choose_by_headline`, when
    `by_headline`), the items it compares (`_weighed_by_headline`).

    Most of a story's items are never read, and a stored item's text is the most of what deciding
    a poll's stories would hold in memory (`pipeline._plan_stories` reads the others' texts
    alone). The tests here are the rules' own, so the two cannot drift apart; where the story
    holds more items by the time it is weighed (a poll's earlier items that joined it), the rules
    read no more of the stored ones: an own-outlet item of the poll can only stop
    `choose_by_headline` from weighing the story, and `joins` reads the own-outlet items that
    `may_follow_up` before the first that does not, at most (the poll's own come after them)."""
    read = [False] * len(stored)
    if score is not None and score >= rules.same_outlet:
        # `joins` weighs the items of `new`'s outlet in order and stops at the first that is no
        # follow-up: it reads none after the first that cannot be one.
        for place, report in enumerate(stored):
            if report.outlet != new.outlet:
                continue
            if not may_follow_up(new, report):
                break
            read[place] = True
    if by_headline:
        weighed = _weighed_by_headline(new, stored)
        read = [a or b for a, b in zip(read, weighed, strict=True)]
    return read
