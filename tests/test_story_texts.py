"""A stored item's text is read only where the story rules may look at it (core.stories.texts_read):
deciding a poll's stories reads the items of its candidate stories without their texts, then the
texts of those that a follow-up's test or the headline rule may compare, in one statement. The
decisions are those of the rules with every text at hand.

End to end on real parts: feeds on loopback, a real database (SQLite, and PostgreSQL when
MONITOR_TEST_DATABASE_URL is set); the statements every engine sends are counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from httpserver import LoopbackServer
from sqlalchemy import event
from sqlalchemy.engine import Engine
from test_story_grouping import WANG_YI, Desk, FeedItem, corpus_item

from monitor.core import headlines, stories
from monitor.core.dedup import content_hash
from monitor.core.headlines import WITHIN
from monitor.store import db
from monitor.store.feeds import sync_feeds
from monitor.store.stories import NewItem, insert_item, item_texts, story_for_hash
from monitor.store.tables import items

AT = datetime(2026, 2, 17, 10, 0, tzinfo=UTC)
APOLOGY = "skynews-philippines-apologises-to-kuwait"
EXPULSION = "skynews-kuwait-expels-philippine-ambassador"
RULES = stories.Rules()


@pytest.fixture
def desk(database_url: str, tmp_path: Path) -> Iterator[Desk]:
    with LoopbackServer() as server:
        yield Desk(server, database_url, tmp_path)


@contextmanager
def text_reads(*, parameters: bool = False) -> Iterator[list[str]]:
    """The reads that fetch stored items' texts to decide stories, of every engine of this
    process: any SELECT (or WITH …) naming `items.text`, but the outbox's, which sends alerts
    with their items' texts; with `parameters`, each followed by its parameters."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, values: Any, *args: Any) -> None:
        words = statement.split()
        if not words or words[0].upper() not in ("SELECT", "WITH"):
            return
        if "items.text" in statement and "alerts." not in statement:
            sent.append(" ".join(words) + (f" {values!r}" if parameters else ""))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def story_ids(desk: Desk, settings: Any) -> dict[str, int]:
    """Each stored item's guid → its story."""
    rows = desk.rows(settings, items)
    return {row["identity"].removeprefix("guid:"): row["story_id"] for row in rows}


# --- the rules: which stored texts they may read ---------------------------------------------


def report(outlet: str, at: datetime, title: str, body: str = "") -> stories.Report:
    return stories.Report(outlet, at, title, body, "en")


def test_a_copy_from_another_outlet_reads_no_stored_text_by_fingerprint() -> None:
    stored = [report("a.example", AT, "China's foreign minister heads to Russia")]
    new = report("b.example", AT + timedelta(hours=1), "Wang Yi in Moscow")
    assert stories.texts_read(new, stored, RULES, score=0.9) == [False]


def test_an_own_outlets_earlier_item_under_another_headline_is_read_for_a_follow_up() -> None:
    earlier = report("a.example", AT, "The Philippines apologises to Kuwait")
    same_title = report("a.example", AT - timedelta(hours=1), "Kuwait expels the ambassador")
    later = report("a.example", AT + timedelta(hours=2), "Kuwait expels the ambassador")
    other = report("c.example", AT, "Kuwait and the Philippines")
    new = report("a.example", AT + timedelta(days=1), "Kuwait expels the ambassador")
    found = [earlier, same_title, later, other]
    assert stories.texts_read(new, found, RULES, score=0.7) == [True, False, False, False]
    # Under `rules.same_outlet`, `joins` looks at no own-outlet item: it does not join.
    assert stories.texts_read(new, found, RULES, score=0.5) == [False] * 4
    # Not a candidate by fingerprint (score None): nothing read for the follow-up's test.
    assert stories.texts_read(new, found, RULES) == [False] * 4
    assert stories.texts_read(new, found, stories.Rules(threshold=0.8), score=0.7) == [False] * 4


def test_a_follow_ups_test_reads_no_item_after_the_first_that_cannot_be_followed_up() -> None:
    """`joins` weighs the outlet's items in order and stops at the first that is no follow-up:
    an item under the same headline stops it before its text is wanted, and so before any item
    after it."""
    same_title = report("a.example", AT, "Kuwait expels the ambassador")
    earlier = report("a.example", AT - timedelta(hours=1), "The Philippines apologises to Kuwait")
    other = report("c.example", AT, "Kuwait and the Philippines")
    new = report("a.example", AT + timedelta(days=1), "Kuwait expels the ambassador")
    assert stories.texts_read(new, [other, same_title, earlier], RULES, score=0.7) == [False] * 3
    assert stories.texts_read(new, [earlier, other, earlier], RULES, score=0.7) == [
        True,
        False,
        True,
    ]


def test_the_headline_rule_reads_the_items_within_a_day_of_a_story_without_the_outlet() -> None:
    near = report("a.example", AT, "Jesse Jackson dies")
    far = report("c.example", AT - WITHIN - timedelta(minutes=1), "Jesse Jackson dies")
    edge = report("d.example", AT + WITHIN, "Jesse Jackson dies")
    new = report("b.example", AT, "US civil rights leader dies")
    read = stories.texts_read(new, [near, far, edge], RULES, by_headline=True)
    assert read == [True, False, True]
    assert stories.texts_read(new, [near, far, edge], RULES) == [False] * 3
    # A story with an item of the new item's outlet is never joined by its headline.
    own = report("b.example", AT - timedelta(hours=2), "Something else")
    assert stories.texts_read(new, [near, own], RULES, by_headline=True) == [False, False]


UNREAD = "\x00 an unread text \x00"


def test_the_rules_read_no_stored_text_but_those_texts_read_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every stored text the rules look at is one `texts_read` names: with the others replaced by
    a text the rules must never be given, they decide as with every text at hand."""

    def guarded(rule: Any) -> Any:
        def checked(*args: Any) -> Any:
            assert UNREAD not in args, f"{rule.__name__} was given an unread text"
            return rule(*args)

        return checked

    monkeypatch.setattr(stories, "opening_contained", guarded(stories.opening_contained))
    monkeypatch.setattr(headlines, "is_short", guarded(headlines.is_short))
    monkeypatch.setattr(headlines, "headline_of", guarded(headlines.headline_of))
    apology, expulsion = corpus_item(APOLOGY), corpus_item(EXPULSION)
    outlet = stories.outlet_of(apology.link, "f")
    earlier = stories.Report(outlet, AT, apology.title, apology.body)
    follow_up = stories.Report(outlet, AT + timedelta(days=1), expulsion.title, expulsion.body)
    abc = report(
        "abc.net.au",
        AT,
        "Civil rights leader Jesse Jackson dies, aged 84",
        "Jesse Jackson was America's pre-eminent civil rights figure for decades.",
    )
    bbc = report(
        "bbc.com",
        AT + timedelta(hours=9),
        "US civil rights leader Jesse Jackson dies aged 84",
        "Tributes poured in from politicians who described Jackson as an agent of change.",
    )
    cases = [  # new, the story's items, score; joins by fingerprint, by headline
        (follow_up, [earlier, abc], 0.7, False, False),  # a follow-up: a story of its own
        (bbc, [abc, earlier], None, False, True),  # short, another outlet, within a day
        (bbc, [abc, earlier], 0.9, True, True),  # another outlet's copy
    ]
    for new, story, score, by_text, by_headline in cases:
        read = stories.texts_read(new, story, RULES, score=score, by_headline=True)
        hidden = [
            r if reads else stories.Report(r.outlet, r.at, r.title, UNREAD, r.language)
            for r, reads in zip(story, read, strict=True)
        ]
        ranked = [(score, 7)] if score is not None else []
        assert (stories.choose(ranked, new, {7: hidden}, RULES) == 7) is by_text
        assert (stories.choose_by_headline([7], new, {7: hidden}) == 7) is by_headline
        assert (stories.choose(ranked, new, {7: story}, RULES) == 7) is by_text
        assert (stories.choose_by_headline([7], new, {7: story}) == 7) is by_headline


# --- the store: texts by item id -------------------------------------------------------------


def test_item_texts_reads_the_texts_of_some_items_in_one_statement(database_url: str) -> None:
    """One statement on PostgreSQL (the ids in an array), one per 500 ids on SQLite; an id of no
    stored item is left out."""
    engine = db.make_engine(database_url)
    try:
        db.ensure_schema(engine, upgrade=True)
        now = datetime.now(UTC)
        ids: list[int] = []
        with db.transaction(engine) as session:
            feed = sync_feeds(session, [("f", "https://f.example/rss")], now)["f"]
            story, _ = story_for_hash(session, "v1:s", now)
            for n in range(3):
                item = NewItem(f"g{n}", f"v1:{n}", 1, f"t{n}", f"body {n}", None, None, None,
                               None, "en", now, story)  # fmt: skip
                made = insert_item(session, feed, item)
                assert made is not None
                ids.append(made)
        missing = range(10**9, 10**9 + 600)
        with text_reads() as sent, db.read_session(engine) as session:
            texts = item_texts(session, [ids[2], ids[0], ids[2], *missing])
            assert item_texts(session, []) == {}
        assert texts == {ids[0]: "body 0", ids[2]: "body 2"}
        assert len(sent) == (1 if database_url.startswith("postgresql") else 2)
    finally:
        engine.dispose()


# --- a poll's stories, end to end --------------------------------------------------------------


def test_a_copy_from_another_outlet_joins_its_story_and_reads_no_stored_text(
    desk: Desk,
) -> None:
    """Feed `b` reprints `a`'s wire story an hour later with a caption and a footer: it joins
    `a`'s story by its fingerprint, and no stored text is read to decide it."""
    copy = "صورة أرشيفية لوزير الخارجية الصيني\n" + WANG_YI + "\nجميع الحقوق محفوظة © 2023"
    desk.feed("a").items = [
        FeedItem("a-1", "وزير الخارجية الصيني يتوجه إلى روسيا", WANG_YI, "https://a.example/1")
    ]
    watchlists = "china-russia: {query: 'الصين AND روسيا'}"
    desk.once(desk.settings(watchlists))
    desk.now += timedelta(hours=1)
    desk.feed("b").items = [FeedItem("b-1", "وانغ يي إلى موسكو", copy, "https://b.example/1")]
    settings = desk.settings(watchlists)
    with text_reads() as sent:
        desk.once(settings)
    assert sent == []
    found = story_ids(desk, settings)
    assert found["a-1"] == found["b-1"]
    assert len(desk.notifier.sent) == 1


def test_an_outlets_follow_up_reads_its_earlier_text_and_is_a_story_of_its_own(
    desk: Desk,
) -> None:
    """Sky News Arabia's report that Kuwait expels the Philippine ambassador, a day after its
    report of the Philippines' apology, shares most of its text: the earlier text is read for
    the follow-up's test, and the later report is a story of its own, which alerts."""
    feed = desk.feed("skynews")
    feed.items = [corpus_item(APOLOGY)]
    settings = desk.settings("kuwait-philippines: {query: 'الكويت AND الفلبين'}")
    desk.once(settings)
    desk.now += timedelta(days=1)
    feed.items.append(corpus_item(EXPULSION))
    with text_reads() as sent:
        desk.once(settings)
    assert len(sent) == 1 and sent[0].startswith("SELECT items.id, items.text FROM items")
    found = story_ids(desk, settings)
    assert found[APOLOGY] != found[EXPULSION]
    assert len(desk.notifier.sent) == 2


JACKSON_ABC = FeedItem(
    "abc-1",
    "Civil rights leader Jesse Jackson dies, aged 84",
    "Jesse Jackson was America's pre-eminent civil rights figure for decades.",
    "https://www.abc.net.au/news/2026-02-17/jesse-jackson-dies/106356528",
)
JACKSON_BBC = FeedItem(
    "bbc-1",
    "US civil rights leader Jesse Jackson dies aged 84",
    "Tributes poured in from politicians who described Jackson as an agent of change and "
    "transformative leader.",
    "https://www.bbc.com/news/articles/cp81l0e1eg5o",
)


def test_a_short_item_of_another_outlet_within_a_day_joins_by_its_headline(desk: Desk) -> None:
    """ABC's headline and sentence of Jesse Jackson's death, then the BBC's nine hours later
    under another headline: too short for fingerprints, they are one story by their headlines
    and leads. ABC's text is read to compare them."""
    desk.feed("abc").items = [JACKSON_ABC]
    watchlists = "jackson: {query: '\"Jesse Jackson\"'}"
    desk.once(desk.settings(watchlists))
    desk.now += timedelta(hours=9)
    desk.feed("bbc").items = [JACKSON_BBC]
    settings = desk.settings(watchlists)
    with text_reads() as sent:
        desk.once(settings)
    assert len(sent) == 1 and sent[0].startswith("SELECT items.id, items.text FROM items")
    found = story_ids(desk, settings)
    assert found["abc-1"] == found["bbc-1"]
    assert len(desk.notifier.sent) == 1


def test_a_short_item_a_day_and_more_later_reads_no_text_and_is_a_story_of_its_own(
    desk: Desk,
) -> None:
    """The same two items a day and a half apart: the headline rule compares neither, so no
    stored text is read, and the BBC's is a story of its own."""
    desk.feed("abc").items = [JACKSON_ABC]
    watchlists = "jackson: {query: '\"Jesse Jackson\"'}"
    desk.once(desk.settings(watchlists))
    desk.now += timedelta(hours=36)
    desk.feed("bbc").items = [JACKSON_BBC]
    settings = desk.settings(watchlists)
    with text_reads() as sent:
        desk.once(settings)
    assert sent == []
    found = story_ids(desk, settings)
    assert found["abc-1"] != found["bbc-1"]


# A long English report (a fingerprint) and a short item of the same news (none).
VISIT = (
    "China's foreign minister Wang Yi will travel to Moscow next week for talks with his Russian "
    "counterpart on the war in Ukraine, the two countries' energy trade and a summit planned for "
    "the spring, officials in Beijing said on Monday, adding that the visit had been agreed during "
    "a telephone call between the two ministers last month."
)


def test_a_polls_item_found_by_the_headline_of_another_that_joined_a_story_reads_its_texts(
    desk: Desk,
) -> None:
    """A poll's later item finds a stored story by the headline of an earlier item of the poll
    that joined it (the joined item's headline keys count as the index's would): the stored
    items that its headline rule then compares are read too. Here the poll's copy of `a`'s report
    joins by its fingerprint, under a headline of its own; the poll's short item shares no
    headline word with `a`'s report, but most with the copy's."""
    headline = "Minister heads to Moscow for talks on the war"
    desk.feed("a").items = [FeedItem("a-1", headline, VISIT, "https://a.example/1")]
    watchlists = "visit: {query: 'Moscow'}"
    desk.once(desk.settings(watchlists))
    desk.now += timedelta(hours=1)
    copy = FeedItem(
        "b-1", "Wang Yi visit to Russia planned amid Ukraine push", VISIT + " (Reuters)",
        "https://b.example/1",
    )  # fmt: skip
    # The copy is weighed first (the poll's items go in content-hash order).
    title = "Wang Yi Russia visit planned, officials confirm"
    short = next(
        FeedItem("c-1", title, f"Moscow talks {n}.", "https://c.example/1")
        for n in range(100)
        if content_hash(title, f"Moscow talks {n}.") > content_hash(copy.title, copy.body)
    )
    desk.feed("b").items = [copy, short]
    settings = desk.settings(watchlists)
    with text_reads(parameters=True) as sent:
        desk.once(settings)
    stored = {row["identity"].removeprefix("guid:"): row for row in desk.rows(settings, items)}
    assert stored["a-1"]["story_id"] == stored["b-1"]["story_id"]
    assert len(sent) == 1
    assert str(stored["a-1"]["id"]) in re.findall(r"\d+", sent[0])
