"""Stories as a desk would draw them: pairwise precision and recall of "same story" on pairs
labelled by hand, and the cost per item of fingerprint + lookup with many stored stories.

    python benchmarks/stories.py [--corpus DIR] [--stored 100000] [--probes 400]
                                 [--postgresql URL] [--no-cost | --cost-only]

Three sets from the corpus, labelled by hand in benchmarks/stories_labels.json:

* arabic — the ANT multi-source articles (Al Arabiya, BBC Arabic, CNN Arabic, France 24, Sky News
  Arabia; 849 articles of 2018): cross-outlet copies and rewrites, and one outlet's follow-ups.
* bbc — the BBC full-text articles (456, 2004-5): the same report filed twice, edited or not.
* feeds — the items of the real news feeds of one day (1,127 items of 28 feeds), most a headline
  and a sentence; only pairs of items of different outlets count, and an item a feed repeats
  word for word counts once (the service stores it once).

How they were labelled: for arabic and bbc, every pair of articles whose bodies share at least
0.15 of their shingles (far below any setting measured) was read — headlines, outlets, dates and
openings — and labelled one story or not; an outlet's report of a new development that reuses its
earlier text (a follow-up) is not the earlier story; word-for-word copies are one story. (The
script that listed the pairs to read is not kept: the labels are the record.) For feeds, every pair of items of different
outlets whose headlines share two telling words, or whose texts share 0.15, was read, and the
items reporting one news event grouped into a story; features, analyses, previews and digests
about an event are not its story. A story is the transitive closure of its same pairs; every other
pair counts as different, so a true pair that no filter above would have shown to the labeller
counts as different too (recall can only be overstated by that). One label was corrected after
reading the false groupings and misses of the headline rule: Reuters' "Over 80 Berlin Film
Festival alumni sign open letter" joins the story of the same open letter (the file's
"corrections" say so).

The feeds' pairs are split in two halves, development and held out, by a hash of each labelled
story (an event's pairs all fall in one half; a pair of items of two events in different halves
goes by a hash of the pair): the headline rule was chosen on the development half, and the
held-out half says how far it holds. The false groupings of both were read before, though: the
held-out half is not unseen.

Each pair is decided as the service decides a later item against the story of an earlier one
(`core.stories`, `core.headlines`): an exact copy (same content hash) is one story; else, with
both fingerprints, the estimated share of shingles at the threshold (0.6 within one outlet), unless
the later item is a follow-up; else, for two short items of different outlets, their headlines.
The earlier of a pair is the earlier by date (the BBC articles have none: the one filed under the
lower number). "old rule" is the baseline: an exact copy, or 0.6 of shingles, nothing else.

A pair decided alone is not what a story is: the service puts each item in a story as it
arrives, by the story's items, found by what is indexed of them. So the second table groups each
set's items one after the other in order of date as a poll does (`grouped`: the story of an exact
copy, else of a near-copy among the candidates sharing indexed fingerprint hashes, else of the
headline rule among those sharing headline keys) and counts every pair of items of one story as
"same": a story joined through one ambiguous item counts all its pairs with that story's items.
Its rows are the headline index and rule before and now: the keys of a story's first item or of
every item, and a story joined when any one of its items tells the same, or at least half of
those compared.

Cost: a database (SQLite file; PostgreSQL when --postgresql or MONITOR_TEST_DATABASE_URL is set,
in a schema of its own) is filled in bulk with STORED stories of synthetic text (one item each,
their fingerprints indexed, and the headline keys of the short ones), plus the stories of half of
PROBES corpus items; then each probe is fingerprinted and its story decided as a poll does
(`pipeline._plan_stories`, all of its reads, in a transaction of its own). Median and p90 per
item, beside the old rule's work (the fingerprint's lookup alone); and the stored probes again
as exact copies (their own content hash: the story of an exact hash). Those three look up one
item at a time, a poll of one new item; the last column looks the probes up five at a time, as a
poll of five new items does (benchmarks/poll.py's changed poll) with the same reads for all
five, and gives a poll's time and CPU divided by five: the cost per item in such polls.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from databases import fresh_database  # noqa: E402

from monitor.core import headlines, stories  # noqa: E402
from monitor.core.dedup import content_hash  # noqa: E402
from monitor.feeds import parse_feed  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
LABELS = Path(__file__).resolve().parent / "stories_labels.json"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
CHOSEN = stories.THRESHOLD
SKIPPED_FEEDS = ("integration__",)  # test fixtures of a parser, not news
POLL = 5  # new items per poll in the cost's last column (benchmarks/poll.py's changed poll)


@dataclass
class Item:
    key: str
    outlet: str
    title: str
    body: str
    at: datetime | None
    language: str | None
    order: int = 0
    fingerprint: tuple[int, ...] = ()
    hash: str = ""
    headline: headlines.Headline | None = None  # for a short item
    any_headline: headlines.Headline | None = None  # for every item

    def prepare(self) -> Item:
        self.fingerprint = stories.fingerprint(self.body)
        self.hash = content_hash(self.title, self.body)
        self.any_headline = headlines.Headline.of(self.title, self.body, self.language)
        if headlines.is_short(self.title, self.body):
            self.headline = self.any_headline
        return self

    def report(self, at: datetime) -> stories.Report:
        return stories.Report(self.outlet, at, self.title, self.body, self.language)


# ---- the sets ------------------------------------------------------------------------------------


def arabic(corpus: Path) -> dict[str, Item]:
    found = {}
    for path in sorted((corpus / "articles" / "ar" / "ant-multisource").rglob("*.txt")):
        text = path.read_text("utf-8", errors="replace")

        def tag(name: str, text: str = text) -> str:
            match = re.search(f"<{name}>(.*?)</{name}>", text, re.S)
            return match.group(1).strip() if match else ""

        at = parsedate_to_datetime(tag("TIME")) if tag("TIME") else None
        outlet = stories.outlet_of(tag("URL") or None, path.parts[-3])
        found[path.stem] = Item(path.stem, outlet, tag("TITLE"), tag("TEXT"), at, "ar")
    return found


def bbc(corpus: Path) -> dict[str, Item]:
    found = {}
    for path in sorted((corpus / "articles" / "en" / "bbc-fulltext").glob("*/*.txt")):
        title, _, body = path.read_text("utf-8", errors="replace").partition("\n")
        key = f"{path.parent.name}/{path.stem}"
        found[key] = Item(key, "bbc.co.uk", title.strip(), body.strip(), None, "en")
    return found


def feeds(corpus: Path) -> dict[str, Item]:
    found = {}
    fetched = datetime(2026, 2, 18, tzinfo=UTC)
    for path in sorted((corpus / "feeds" / "real" / "fastfeedparser").iterdir()):
        if path.name.startswith(SKIPPED_FEEDS):
            continue
        name = path.stem.split("__")[0]
        parsed = parse_feed(path.read_bytes(), fetched_at=fetched, source=name)
        seen = set()
        for i, a in enumerate(parsed.articles):
            if (a.title, a.body) in seen:  # stored once, as the service does (one feed, one text)
                continue
            seen.add((a.title, a.body))
            key = f"{name}#{i}"
            outlet = stories.outlet_of(a.link, name)
            found[key] = Item(key, outlet, a.title, a.body, a.published, a.language)
    return found


# ---- labels and decisions ------------------------------------------------------------------------


def truth(labels: dict[str, Any], items: dict[str, Item]) -> set[tuple[str, str]]:
    """Every pair of one story (sorted keys): the transitive closure of the pairs labelled same."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    groups = labels.get("stories") or labels["same"]
    for group in groups:
        for a, b in itertools.pairwise(group):
            parent[root(a)] = root(b)
    members: dict[str, list[str]] = {}
    for key in parent:
        if key in items:
            members.setdefault(root(key), []).append(key)
    return {
        (a, b) for group in members.values() for a, b in itertools.combinations(sorted(group), 2)
    }


@dataclass(frozen=True)
class Setting:
    name: str
    rules: stories.Rules | None  # None: the old rule
    headline: headlines.Rule | None = headlines.RULE
    follow_ups: bool = True
    one_short: bool = True  # the headline rule for an article and a short item too
    within: timedelta = headlines.WITHIN  # the most time between two short items of one story


def same_story(first: Item, second: Item, setting: Setting) -> bool:
    """Whether `setting` makes the later of two items join the story of the earlier one."""
    earlier, later = sorted((first, second), key=_when)
    if earlier.hash == later.hash:
        return True
    if setting.rules is None:
        if not (earlier.fingerprint and later.fingerprint):
            return False
        return stories.similarity(earlier.fingerprint, later.fingerprint) >= stories.SAME_STORY
    if earlier.fingerprint and later.fingerprint:
        score = stories.similarity(earlier.fingerprint, later.fingerprint)
        at = earlier.at or datetime(2000, 1, 1, tzinfo=UTC)
        later_at = later.at or at + timedelta(hours=1)  # undated: the later-filed is later
        new, old = later.report(later_at), earlier.report(at)
        if setting.follow_ups:
            if stories.joins(score, new, [old], setting.rules):
                return True
        elif score >= (
            setting.rules.same_outlet if new.outlet == old.outlet else setting.rules.threshold
        ):
            return True
    if setting.headline is None or earlier.outlet == later.outlet:
        return False
    if earlier.at and later.at and later.at - earlier.at > setting.within:
        return False
    first, second = earlier.headline, later.headline
    if setting.one_short and (first or second):
        first, second = earlier.any_headline, later.any_headline
    if first is None or second is None:
        return False
    return headlines.same_story(first, second, setting.headline)


def _when(item: Item) -> tuple[datetime, int]:
    return (item.at or datetime(2000, 1, 1, tzinfo=UTC), item.order)


def candidate_pairs(items: dict[str, Item]) -> set[tuple[str, str]]:
    """The pairs any setting may call one story: an exact hash, a shared fingerprint hash, or two
    shared telling title words. Every other pair is different under every setting."""
    buckets: dict[object, list[str]] = {}
    for key, item in items.items():
        buckets.setdefault(("hash", item.hash), []).append(key)
        for h in item.fingerprint:
            buckets.setdefault(h, []).append(key)
        if item.any_headline is not None:
            for pair in itertools.combinations(sorted(item.any_headline.title), 2):
                buckets.setdefault(pair, []).append(key)
    pairs: set[tuple[str, str]] = set()
    for keys in buckets.values():
        if len(keys) < 400:  # a stop-word-like key: no pair is one story by it alone
            pairs.update(itertools.combinations(sorted(keys), 2))
    return pairs


def halves(same: set[tuple[str, str]]) -> Callable[[tuple[str, str]], int]:
    """Which half of the pairs a pair is in, 0 (development) or 1 (held out): the half of its
    story's event (its labelled story, named by its least key; else the item alone) when both
    items' events fall in one half, so that no event is split; else by a hash of the pair."""
    event: dict[str, str] = {}
    for a, b in sorted(same):
        event[b] = event[a] = min(event.get(a, a), event.get(b, b), a)
    changed = True
    while changed:  # the least key of each story, through chains of pairs
        changed = False
        for a, b in same:
            least = min(event[a], event[b])
            if event[a] != least or event[b] != least:
                event[a] = event[b] = least
                changed = True

    def half_of(key: str) -> int:
        return hashlib.blake2b(key.encode(), digest_size=1).digest()[0] % 2

    def half(pair: tuple[str, str]) -> int:
        first, second = (half_of(event.get(key, key)) for key in pair)
        return first if first == second else half_of("\0".join(pair))

    return half


@dataclass
class Score:
    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0

    @property
    def precision(self) -> float:
        found = self.true_positive + self.false_positive
        return self.true_positive / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positive + self.false_negative
        return self.true_positive / wanted if wanted else 1.0

    def __str__(self) -> str:
        return f"{self.precision:.3f}/{self.recall:.3f}"


def evaluate(
    items: dict[str, Item],
    same: set[tuple[str, str]],
    settings: Sequence[Setting],
    cross_outlet_only: bool,
    keep: Callable[[tuple[str, str]], bool] | None = None,
) -> list[Score]:
    pairs = candidate_pairs(items) | same
    if cross_outlet_only:
        pairs = {(a, b) for a, b in pairs if items[a].outlet != items[b].outlet}
        same = {(a, b) for a, b in same if items[a].outlet != items[b].outlet}
    if keep is not None:
        pairs = {pair for pair in pairs if keep(pair)}
        same = {pair for pair in same if keep(pair)}
    scores = [Score() for _ in settings]
    for a, b in pairs:
        labelled = (a, b) in same
        for score, setting in zip(scores, settings, strict=True):
            found = same_story(items[a], items[b], setting)
            if found and labelled:
                score.true_positive += 1
            elif found:
                score.false_positive += 1
            elif labelled:
                score.false_negative += 1
    return scores


def _before_by_headline(
    candidates: Sequence[int],
    new: stories.Report,
    reports: dict[int, list[stories.Report]],
    rule: headlines.Rule,
) -> int | None:
    """The headline rule before, to compare: two short items only, and a story joined when any
    one of its items tells the same."""
    if not headlines.is_short(new.title, new.body):
        return None
    mine = headlines.headline_of(new.title, new.body, new.language)
    for story_id in candidates:
        story = reports.get(story_id, [])
        if any(r.outlet == new.outlet for r in story):
            continue
        for r in story:
            if (
                abs(new.at - r.at) <= headlines.WITHIN
                and headlines.is_short(r.title, r.body)
                and headlines.same_story(
                    mine, headlines.headline_of(r.title, r.body, r.language), rule
                )
            ):
                return story_id
    return None


@dataclass(frozen=True)
class Grouping:
    """How the service groups a set's items into stories, one item after the other."""

    name: str
    every_item: bool  # a story's headline keys are those of every item, not only its first
    by_headline: Callable[..., int | None] = stories.choose_by_headline
    rule: headlines.Rule = headlines.RULE


def grouped(items: dict[str, Item], grouping: Grouping) -> dict[str, int]:
    """The story of each item when they arrive in order of date, as the poll decides it
    (`pipeline._plan_stories`): the story of an exact copy; else the candidates found by the
    indexed fingerprint hashes (`core.stories.choose`); else by the headline keys shared
    (`HEADLINE_KEYS_SHARED`, the most shared first, 20 at most); else a story of its own.
    An undated item counts as arriving at the end of the day."""
    end = max(i.at for i in items.values() if i.at) if any(i.at for i in items.values()) else None
    at_of = {key: item.at or end or datetime(2000, 1, 1, tzinfo=UTC) for key, item in items.items()}
    story_of: dict[str, int] = {}
    by_hash: dict[str, int] = {}
    fingerprints: dict[int, tuple[int, ...]] = {}
    index: dict[int, set[int]] = {}
    reports: dict[int, list[stories.Report]] = {}
    rules = stories.Rules(threshold=CHOSEN)
    for item in sorted(items.values(), key=lambda i: (at_of[i.key], i.order)):
        report = item.report(at_of[item.key])
        story = by_hash.get(item.hash)
        if story is None and item.fingerprint:
            near = {s for h in item.fingerprint[: stories.INDEXED] for s in index.get(h, ())}
            ranked = stories.ranked_candidates(
                item.fingerprint,
                [(s, stories.encode(fingerprints[s])) for s in near if fingerprints.get(s)],
                rules.threshold,
            )
            story = stories.choose(ranked, report, reports, rules)
        keys = headlines.title_keys(item.title, item.language)
        if story is None:
            shared: dict[int, int] = {}
            for key in keys:
                for s in index.get(key, ()):
                    shared[s] = shared.get(s, 0) + 1
            candidates = sorted(
                (s for s, n in shared.items() if n >= stories.HEADLINE_KEYS_SHARED),
                key=lambda s: (-shared[s], s),
            )[:20]
            story = grouping.by_headline(candidates, report, reports, grouping.rule)
            joined = story is not None
        else:
            joined = by_hash.get(item.hash) != story
        if story is None:
            story = len(reports)
            fingerprints[story] = item.fingerprint
            for h in item.fingerprint[: stories.INDEXED]:
                index.setdefault(h, set()).add(story)
        if story not in reports or (joined and grouping.every_item):
            for key in keys:
                index.setdefault(key, set()).add(story)
        by_hash.setdefault(item.hash, story)
        reports.setdefault(story, []).append(report)
        story_of[item.key] = story
    return story_of


def evaluate_grouping(
    items: dict[str, Item],
    same: set[tuple[str, str]],
    story_of: dict[str, int],
    cross_outlet_only: bool,
    keep: Callable[[tuple[str, str]], bool] | None = None,
) -> Score:
    """Pairwise precision/recall of the stories `story_of` drew: every pair of items of one story
    is a "same" pair, every other pair a "different" one."""
    members: dict[int, list[str]] = {}
    for key, story in story_of.items():
        members.setdefault(story, []).append(key)
    found = {pair for keys in members.values() for pair in itertools.combinations(sorted(keys), 2)}
    score = Score()
    for pair in found | same:
        a, b = pair
        if cross_outlet_only and items[a].outlet == items[b].outlet:
            continue
        if keep is not None and not keep(pair):
            continue
        if pair in found and pair in same:
            score.true_positive += 1
        elif pair in found:
            score.false_positive += 1
        else:
            score.false_negative += 1
    return score


def quality(corpus: Path) -> None:
    labels = json.loads(LABELS.read_text("utf-8"))
    sets = {"arabic": arabic(corpus), "bbc": bbc(corpus), "feeds": feeds(corpus)}
    old = Setting("old rule (0.6)", None, None, follow_ups=False)
    by_threshold = [
        Setting(f"{t:g}{' (chosen)' if t == CHOSEN else ''}", stories.Rules(threshold=t))
        for t in THRESHOLDS
    ]
    chosen = stories.Rules(threshold=CHOSEN)
    variants = [
        Setting("no follow-up rule", chosen, follow_ups=False),
        Setting("no headline rule", chosen, headline=None),
        Setting("headlines: from 8 shared", chosen, headlines.Rule(min_shared=8)),
        Setting(
            "headlines: never under 7 shared",
            chosen,
            headlines.Rule(min_opening=7),
        ),
        Setting("headlines: no distinctive word", chosen, headlines.Rule(min_rare=0)),
        Setting("headlines: 2 distinctive words", chosen, headlines.Rule(min_rare=2)),
        Setting(
            "headlines: a second distinctive word worth no more", chosen, headlines.Rule(per_rare=0)
        ),
        Setting("headlines: question headlines too", chosen, headlines.Rule(questions=True)),
        Setting("headlines: within 12 hours", chosen, within=timedelta(hours=12)),
        Setting("headlines: within 36 hours", chosen, within=timedelta(hours=36)),
        Setting(
            "headlines: the rule before (no distinctive word, any time)",
            chosen,
            headlines.Rule(min_rare=0, per_rare=0, questions=True),
            one_short=False,
            within=timedelta.max,
        ),
        Setting(
            "headlines: two short items only, as before",
            chosen,
            headlines.Rule(per_rare=0, questions=True),
            one_short=False,
        ),
    ]
    settings = [old, *by_threshold, *variants]
    width = max(len(s.name) for s in settings)
    print('Pairwise precision/recall of "same story" (labels: benchmarks/stories_labels.json)')
    header = f"{'setting':<{width}}"
    results = {}
    for name, items in sets.items():
        for order, item in enumerate(items.values()):
            item.order = order
            item.prepare()
        same = truth(labels[name], items)
        cross = name == "feeds"
        results[name] = evaluate(items, same, settings, cross_outlet_only=cross)
        pairs = {p for p in same if not cross or items[p[0]].outlet != items[p[1]].outlet}
        header += f"  {name + f' ({len(items)} items, {len(pairs)} same pairs)':>34}"
        if cross:  # tuned on the development half; the held-out half says how far that holds
            half = halves(same)
            for part, title in ((0, "feeds dev"), (1, "feeds held-out")):

                def keep(
                    pair: tuple[str, str],
                    part: int = part,
                    half: Callable[[tuple[str, str]], int] = half,
                ) -> bool:
                    return half(pair) == part

                results[title] = evaluate(items, same, settings, cross, keep)
                in_part = sum(1 for p in pairs if keep(p))
                header += f"  {title + f' ({in_part} same pairs)':>30}"
    print(header)
    for i, setting in enumerate(settings):
        print(
            f"{setting.name:<{width}}"
            + "".join(
                f"  {r[i]!s:>{30 if name.startswith('feeds ') else 34}}"
                for name, r in results.items()
            )
        )
    before = headlines.Rule(per_rare=0, questions=True)
    groupings = [
        Grouping(
            "before: first item's headline; any item tells the same",
            False,
            _before_by_headline,
            before,
        ),
        Grouping(
            "every item's headline; any item tells the same", True, _before_by_headline, before
        ),
        Grouping("first item's headline; half its items, an article too", False, rule=before),
        Grouping("every item's headline; half its items, an article too", True, rule=before),
        Grouping(
            "and a second distinctive word worth 4 words",
            True,
            rule=replace(before, per_rare=headlines.PER_RARE),
        ),
        Grouping("and no question headline (now)", True),
    ]
    print()
    print("Grouped as the service groups them, one item after the other in order of date:")
    width = max(len(g.name) for g in groupings)
    print(
        f"{'grouping':<{width}}"
        + header[len(f"{'setting':<{max(len(s.name) for s in settings)}}") :]
    )
    for grouping in groupings:
        row = f"{grouping.name:<{width}}"
        for name, items in sets.items():
            same = truth(labels[name], items)
            cross = name == "feeds"
            story_of = grouped(items, grouping)
            row += f"  {evaluate_grouping(items, same, story_of, cross)!s:>34}"
            if cross:
                half = halves(same)
                for part in (0, 1):

                    def keep(
                        pair: tuple[str, str],
                        part: int = part,
                        half: Callable[[tuple[str, str]], int] = half,
                    ) -> bool:
                        return half(pair) == part

                    score = evaluate_grouping(items, same, story_of, cross, keep)
                    row += f"  {score!s:>30}"
        print(row)


# ---- cost ----------------------------------------------------------------------------------------


def synthetic_text(rng: random.Random, vocabulary: Sequence[str], words: int) -> str:
    return " ".join(rng.choices(vocabulary, k=words))


def fill(url: str, stored: int, probes: Sequence[Item], rng: random.Random) -> None:
    """`stored` stories of synthetic text, one item each, indexed as the service indexes them,
    and the stories of every other probe; written in bulk (executemany; COPY on PostgreSQL)."""
    from monitor.store import db
    from monitor.store.tables import feeds as feeds_table
    from monitor.store.tables import items as items_table
    from monitor.store.tables import stories as stories_table
    from monitor.store.tables import story_hashes

    engine = db.make_engine(url)
    db.ensure_schema(engine, upgrade=True)
    now = datetime.now(UTC)
    vocabulary = sorted({w for p in probes for w in (p.title + " " + p.body).split()})
    texts: list[tuple[str, str, str | None]] = []  # title, body, link
    for n in range(stored):
        short = n % 2 == 0  # half of them a headline and a sentence, like most feeds' items
        body = synthetic_text(rng, vocabulary, 25 if short else 150)
        texts.append(
            (synthetic_text(rng, vocabulary, 9), body, f"https://outlet{n % 50}.example/{n}")
        )
    texts += [(p.title, p.body, f"https://{p.outlet}/{p.key}") for p in probes[::2]]
    story_rows, item_rows, hash_rows = [], [], []
    unique = {content_hash(title, body): (title, body, link) for title, body, link in texts}
    for story_id, (hash_, (title, body, link)) in enumerate(unique.items(), start=1):
        fingerprint = stories.fingerprint(body)
        keys = headlines.title_keys(title, None)
        story_rows.append(
            {
                "id": story_id,
                "content_hash": hash_,
                "created_at": now,
                "fingerprint": stories.encode(fingerprint) if fingerprint else None,
            }
        )
        item_rows.append(
            {
                "id": story_id,
                "feed_id": 1,
                "identity": f"guid:{story_id}",
                "content_hash": hash_,
                "hash_version": 1,
                "title": title,
                "text": body,
                "link": link,
                "fetched_at": now,
                "published_at": now - timedelta(hours=1),
                "story_id": story_id,
            }
        )
        for h in (*fingerprint[: stories.INDEXED], *keys):
            hash_rows.append({"story_id": story_id, "hash": h, "created_at": now})
    with db.transaction(engine) as session:
        feed = {"id": 1, "name": "bench", "url": "bench", "next_poll_at": now, "created_at": now}
        session.execute(feeds_table.insert(), [feed])
        for table, rows in (
            (stories_table, story_rows),
            (items_table, item_rows),
            (story_hashes, hash_rows),
        ):
            _bulk_insert(session, table, rows)
    with engine.connect() as connection:  # planner statistics, as autovacuum would gather
        connection.exec_driver_sql("ANALYZE")
        connection.commit()
    engine.dispose()


def _bulk_insert(session: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    if session.get_bind().dialect.name != "postgresql":
        session.execute(table.insert(), rows)  # an executemany
        return
    columns = list(rows[0])
    cursor = session.connection().connection.cursor()
    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])
    if "id" in columns:
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), (SELECT max(id) FROM {table.name}))"
        )


def lookup_times(
    url: str, probes: Sequence[Item], old_rule: bool, exact: bool = False, per_poll: int = 1
) -> tuple[list[float], float]:
    """Per probe: its fingerprint (and headline keys), then its story decided as a poll does,
    all of `pipeline._plan_stories`' reads in a transaction of its own: the seconds each took,
    and the CPU seconds of this process per probe (the machine's load does not count there).
    `exact`: each probe has its own content hash (a stored probe is then an exact copy); else a
    hash no item has, so that a stored probe is found as a near-copy. `per_poll`: the probes
    are looked up that many at a time, as a poll looks up all its new items with the same
    reads; each time is then a poll's divided by `per_poll` (the time per item in such polls)."""
    from monitor import pipeline
    from monitor.core.dedup import item_identity
    from monitor.model import Article
    from monitor.store import db
    from monitor.store.stories import FeedItems

    engine = db.make_engine(url)
    rules = stories.Rules(threshold=stories.SAME_STORY if old_rule else CHOSEN)
    now = datetime.now(UTC)
    articles = [
        Article(
            title=probe.title,
            body=probe.body,
            link=f"https://probe.example/{n}",
            source="probe",
            published=now,
            language=probe.language,
        )
        for n, probe in enumerate(probes)
    ]
    times = []
    cpu = time.process_time()
    for first in range(0, len(probes), per_poll):
        started = time.perf_counter()
        todo = []
        for n in range(first, min(first + per_poll, len(probes))):
            probe, article = probes[n], articles[n]
            fingerprint = stories.fingerprint(probe.body)
            keys = () if old_rule else headlines.title_keys(probe.title, probe.language)
            keyed = pipeline._Keyed(  # the poll's own types: this measures its code
                n,
                article,
                item_identity(None, article.link, "", ""),
                f"link:{n}",
                probe.hash if exact else f"v1:probe-{n}",
            )
            todo.append(pipeline._Prepared(keyed, article, [], fingerprint, keys))
        with db.read_session(engine) as session:
            pipeline._plan_stories(session, todo, FeedItems({}, {}), now, rules)
        times.append((time.perf_counter() - started) / len(todo))
    cpu = (time.process_time() - cpu) / len(probes)
    engine.dispose()
    return times, cpu


def cost(corpus: Path, stored: int, count: int, postgresql: str | None) -> None:
    rng = random.Random(7)
    pool = [*arabic(corpus).values(), *feeds(corpus).values()]
    probes = rng.sample(pool, min(count, len(pool)))
    kinds = ["sqlite", *(["postgresql"] if postgresql else [])]
    print()
    for probe in probes:
        probe.hash = content_hash(probe.title, probe.body)  # not `prepare`: no stem cached yet
    copies = probes[::2]  # stored by `fill`
    print(
        f"Fingerprint + lookup per item, {stored:,} stored stories, {len(probes)} probes "
        f"(half with a stored copy), ms: median / p90 of the time taken, and CPU of this process;"
        f" exact copies: the {len(copies)} stored probes again with their own content hash;"
        f" the first three columns look up one item at a time (a poll of one new item), the last"
        f" {POLL} at a time as a poll of {POLL} new items does (a poll's time divided by {POLL})"
    )
    print("load average before (1/5/15 min): {:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg()))
    columns = (
        "old rule (fingerprint only)",
        "stories now",
        "exact copies",
        f"stories now, polls of {POLL}",
    )
    print(f"{'database':<12}" + "".join(f"  {c:>30}" for c in columns))
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            started = time.perf_counter()
            with fresh_database(kind, Path(tmp), postgresql, "stories_bench") as url:
                fill(url, stored, probes, rng)
                filled = time.perf_counter() - started
                lookup_times(url, probes[:20], old_rule=False)  # warm the caches
                old, old_cpu = lookup_times(url, probes, old_rule=True)
                new, new_cpu = lookup_times(url, probes, old_rule=False)
                copy, copy_cpu = lookup_times(url, copies, old_rule=False, exact=True)
                polled, polled_cpu = lookup_times(url, probes, old_rule=False, per_poll=POLL)
            figures = (
                _ms(old, old_cpu),
                _ms(new, new_cpu),
                _ms(copy, copy_cpu),
                _ms(polled, polled_cpu),
            )
            print(
                f"{kind:<12}" + "".join(f"  {f:>30}" for f in figures),
                f"  (filled in {filled:.0f} s, {time.perf_counter() - started:.0f} s in all)",
            )
    print("load average after (1/5/15 min): {:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg()))


def _ms(times: Sequence[float], cpu: float) -> str:
    ordered = sorted(times)
    p90 = ordered[int(len(ordered) * 0.9)]
    return f"{statistics.median(ordered) * 1000:.2f} / {p90 * 1000:.2f}, CPU {cpu * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=400)
    parser.add_argument("--postgresql", default=os.environ.get("MONITOR_TEST_DATABASE_URL"))
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--no-cost", action="store_true", help="precision and recall only")
    only.add_argument("--cost-only", action="store_true", help="the cost per item only")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"error: no corpus at {args.corpus}; pass --corpus DIR")
    if not args.cost_only:
        quality(args.corpus)
    if not args.no_cost:
        cost(args.corpus, args.stored, args.probes, args.postgresql)


if __name__ == "__main__":
    main()
