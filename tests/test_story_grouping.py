"""Stories as a desk would draw them, end to end on real parts: feeds served on loopback, a real
database (SQLite, and PostgreSQL when MONITOR_TEST_DATABASE_URL is set), the outbox and its sender
(the Bot API double where Telegram messages count).

Copies and rewrites of one report are one story and alert once; a follow-up is a story of its own
and alerts; an exact copy of any of its items joins it whenever it arrives; candidate stories are
found by the hashes they share, the most first.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import pytest
from aiohttp import web
from botapi import TOKEN, BotAPIDouble
from httpserver import LoopbackServer
from servicekit import DESK, RecordingNotifier, poll_and_deliver
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from monitor.config import Settings, parse_config
from monitor.core import stories as core_stories
from monitor.errors import StoreError
from monitor.store import db
from monitor.store.alerts import NewMatch, insert_matches
from monitor.store.feeds import sync_feeds
from monitor.store.stories import (
    NewItem,
    add_fingerprint,
    insert_item,
    story_candidates,
    story_for_hash,
    story_reads,
)
from monitor.store.tables import alerts, items, stories

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = (ROOT / "examples" / "articles" / "aawsat-wang-yi-russia.txt").read_text("utf-8")
STORIES = ROOT / "tests" / "data" / "stories"
WANG_YI = "\n".join(REFERENCE.split("\n")[1:49])  # "China's foreign minister heads to Russia"


class FeedItem:
    def __init__(self, guid: str, title: str, body: str, link: str | None = None) -> None:
        self.guid, self.title, self.body = guid, title, body
        self.link = link or f"https://example.org/{guid}"


class Feed:
    """A feed on the loopback server whose items can change; items are dated when served."""

    def __init__(self, server: LoopbackServer, path: str, clock: Callable[[], datetime]) -> None:
        self.items: list[FeedItem] = []
        self.clock = clock
        self.url = server.url(path)
        server.route(path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        date = format_datetime(self.clock(), usegmt=True)
        entries = "".join(
            f"<item><guid isPermaLink='false'>{i.guid}</guid><title>{xml_escape(i.title)}</title>"
            f"<link>{xml_escape(i.link)}</link><description>{xml_escape(i.body)}</description>"
            f"<pubDate>{date}</pubDate></item>"
            for i in self.items
        )
        body = f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>{entries}</channel></rss>'
        return web.Response(body=body.encode(), headers={"Content-Type": "application/rss+xml"})


class Desk:
    """A service over some feeds, run one `monitor once --force` at a time at a chosen time."""

    def __init__(
        self,
        server: LoopbackServer,
        database_url: str,
        tmp_path: Path,
        telegram: BotAPIDouble | None = None,
    ) -> None:
        """`telegram`: alerts go to the Bot API double's chat DESK (a watchlist's `notify:
        [desk]`) through the real notifier, else to a recording console."""
        self.server = server
        self.telegram = telegram
        self.database_url = database_url
        self.tmp_path = tmp_path
        # A week ago: tests move it forward, and an alert is due (by the database's clock) once
        # its time has come.
        self.now = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7)
        self.feeds: dict[str, Feed] = {}
        self.feed_options: dict[str, str] = {}
        self.notifier = RecordingNotifier()

    def feed(self, name: str, options: str = "") -> Feed:
        feed = Feed(self.server, f"/{name}.xml", lambda: self.now)
        self.feeds[name] = feed
        self.feed_options[name] = options
        return feed

    def settings(self, watchlists: str) -> Settings:
        feeds_yaml = "\n".join(
            f"  - {{name: {name}, url: '{feed.url}'{self.feed_options[name]}}}"
            for name, feed in self.feeds.items()
        )
        text = textwrap.dedent(
            f"""
            database: {{url: "{self.database_url}"}}
            fetch: {{allow_private: true}}
            service: {{listen: null}}
            watchlists:
            """
        )
        text += textwrap.indent(textwrap.dedent(watchlists).strip(), "  ") + "\n"
        if self.telegram is not None:
            text += textwrap.dedent(
                f"""\
                channels:
                  desk: {{type: telegram, chat_ids: [{DESK}]}}
                telegram:
                  token: "{TOKEN}"
                  api_url: "{self.telegram.api_url}"
                """
            )
        text += "feeds:\n"
        config = self.tmp_path / "config.yaml"
        config.write_text(text + feeds_yaml + "\n", "utf-8")
        return parse_config(config.read_text("utf-8"), str(config))

    def once(self, settings: Settings) -> list[Any]:
        notifiers = None if self.telegram else {"console": self.notifier}
        return poll_and_deliver(settings, notifiers, clock=lambda: self.now)

    def rows(self, settings: Settings, table: Any) -> list[Any]:
        engine = db.make_engine(settings.database.url)
        try:
            with db.read_session(engine) as session:
                return list(session.execute(select(table)).mappings())
        finally:
            engine.dispose()


@pytest.fixture
def desk(database_url: str, tmp_path: Path) -> Iterator[Desk]:
    with LoopbackServer() as server:
        yield Desk(server, database_url, tmp_path)


def test_an_exact_copy_of_a_near_copy_four_days_later_joins_its_story_and_does_not_alert(
    desk: Desk,
) -> None:
    """Feed `b` carries `a`'s wire story an hour later with a caption and a footer, and joins
    `a`'s story as a near-copy. Four days later — past the window in which near-copies are looked for — feed `c`
    reprints `b`'s item word for word: it is an exact copy of an item of the story, so it joins
    that story and nobody hears of it again."""
    copy = "صورة أرشيفية لوزير الخارجية الصيني\n" + WANG_YI + "\nجميع الحقوق محفوظة © 2023"
    desk.feed("a").items = [FeedItem("a-1", "وزير الخارجية الصيني يتوجه إلى روسيا", WANG_YI)]
    desk.once(desk.settings("china-russia: {query: 'الصين AND روسيا'}"))
    desk.now += timedelta(hours=1)
    desk.feed("b").items = [FeedItem("b-1", "وانغ يي إلى موسكو", copy)]
    settings = desk.settings("china-russia: {query: 'الصين AND روسيا'}")
    desk.once(settings)
    assert len(desk.notifier.sent) == 1
    assert len(desk.rows(settings, stories)) == 1

    desk.now += timedelta(days=4)
    desk.feed("c").items = [FeedItem("c-9", "وانغ يي إلى موسكو", copy)]
    settings = desk.settings("china-russia: {query: 'الصين AND روسيا'}")
    desk.once(settings)
    assert len(desk.notifier.sent) == 1  # no second alert
    assert len(desk.rows(settings, alerts)) == 1
    stored = desk.rows(settings, items)
    assert len(stored) == 3 and len({row["story_id"] for row in stored}) == 1
    assert len(desk.rows(settings, stories)) == 1


def test_a_full_text_item_is_fingerprinted_by_the_page_it_fetched(desk: Desk) -> None:
    """A `full_text` feed whose item is a one-line teaser: the page behind it carries the wire
    story that feed `a` printed in full, so the item joins `a`'s story instead of alerting again."""
    paragraphs = "".join(f"<p>{xml_escape(p)}</p>" for p in WANG_YI.split("\n") if p.strip())
    page = (
        "<html><head><title>وانغ يي في موسكو</title></head><body><article>"
        f"<h1>وانغ يي في موسكو</h1>{paragraphs}</article></body></html>"
    ).encode()
    desk.server.respond("/wang-yi.html", body=page, headers={"Content-Type": "text/html"})
    desk.feed("a").items = [FeedItem("a-1", "وزير الخارجية الصيني يتوجه إلى روسيا", WANG_YI)]
    teaser = FeedItem(
        "t-1", "وانغ يي في موسكو", "وزير الخارجية الصيني في روسيا", desk.server.url("/wang-yi.html")
    )
    desk.feed("t", ", full_text: true").items = [teaser]
    settings = desk.settings("china-russia: {query: 'الصين AND روسيا'}")
    desk.once(settings)
    assert len(desk.notifier.sent) == 1
    stored = desk.rows(settings, items)
    assert len(stored) == 2 and len({row["story_id"] for row in stored}) == 1


def test_candidates_are_ranked_by_the_hashes_they_share(database_url: str) -> None:
    """Among many recent stories that share one hash of a common phrase with a new item, the story
    it copies — sharing most of its indexed hashes — is among the candidates, and is chosen."""
    original = core_stories.fingerprint(WANG_YI)
    indexed = original[: core_stories.INDEXED]
    common = indexed[0]  # a phrase every story of the day uses, hashing low
    engine = db.make_engine(database_url)
    try:
        db.ensure_schema(engine, upgrade=True)
        now = datetime.now(UTC)
        with db.transaction(engine) as session:
            for n in range(60):  # stored first, so an unordered lookup meets them first
                story, _ = story_for_hash(session, f"v1:other-{n}", now)
                others = (common, *(10**15 + n * 100 + k for k in range(1, 8)))
                add_fingerprint(session, story, core_stories.encode(others), others, now)
            target, _ = story_for_hash(session, "v1:original", now)
            add_fingerprint(session, target, core_stories.encode(original), indexed, now)
        copy = core_stories.fingerprint(WANG_YI + "\nجميع الحقوق محفوظة")
        with db.read_session(engine) as session:
            found = story_candidates(
                session, [], [copy[: core_stories.INDEXED]], since=now - timedelta(1), limit=20
            )
        ranked = [story for story, _ in found.ranked[0]]
        assert len(ranked) == 20
        assert ranked[0] == target
        candidates = [(story, found.fingerprints[story]) for story in ranked]
        assert core_stories.closest(copy, candidates) == target
    finally:
        engine.dispose()


def test_a_polls_exact_stories_and_ranked_candidates_come_in_one_query(database_url: str) -> None:
    """`story_candidates`: each lookup's stories ranked by the hashes they share, the best 20
    with their fingerprints, and the story of each exact hash (created, else joined by an item),
    in one statement."""
    original = core_stories.fingerprint(WANG_YI)
    indexed = original[: core_stories.INDEXED]
    engine = db.make_engine(database_url)
    try:
        db.ensure_schema(engine, upgrade=True)
        now = datetime.now(UTC)
        with db.transaction(engine) as session:
            for n in range(30):  # each shares the common hash, and the first ten a second one
                story, _ = story_for_hash(session, f"v1:other-{n}", now)
                others = (indexed[0], *((indexed[1],) if n < 10 else ()), 10**15 + n)
                add_fingerprint(session, story, core_stories.encode(others), others, now)
            target, _ = story_for_hash(session, "v1:original", now)
            add_fingerprint(session, target, core_stories.encode(original), indexed, now)
            old, _ = story_for_hash(session, "v1:old", now - timedelta(days=5))
            add_fingerprint(session, old, "v1:1", indexed, now - timedelta(days=5))
            feed = sync_feeds(session, [("f", "https://f.example/rss")], now)["f"]
            rewrite = NewItem(
                "g", "v1:rewrite", 1, "t", "b", None, None, None, None, "ar", now, target
            )  # joined the story as a near-copy: its hash made no story
            insert_item(session, feed, rewrite)
        statements: list[str] = []
        for listened in {engine, db.read_engine(engine)}:
            event.listen(listened, "before_cursor_execute", lambda *a: statements.append(a[2]))
        copy = core_stories.fingerprint(WANG_YI + "\nجميع الحقوق محفوظة")
        lookups = [copy[: core_stories.INDEXED], (), (indexed[1], 7)]
        with db.read_session(engine) as session:
            found = story_candidates(
                session,
                ["v1:original", "v1:rewrite", "v1:unknown"],
                lookups,
                since=now - timedelta(days=1),
                limit=20,
            )
        assert len([sql for sql in statements if "SELECT" in sql]) == 1
        assert found.exact == {"v1:original": target, "v1:rewrite": target}
        first, none, second = found.ranked
        assert len(first) == 20 and first[0] == (target, sum(h in indexed for h in lookups[0]))
        assert [shared for _, shared in first[1:11]] == [2] * 10  # then the oldest first
        assert [story for story, _ in first[1:]] == sorted(story for story, _ in first[1:])
        assert none == []
        assert sorted(second) == sorted([(target, 1), *((s, 1) for s, n in first[1:11])])
        assert found.fingerprints[target] == core_stories.encode(original)
        assert old not in found.fingerprints  # outside the window
        assert core_stories.closest(copy, found.fingerprints.items()) == target
        # A poll of many items: one statement still, and the same text as the smaller poll's,
        # so that the daemon does not compile and keep a statement per number of lookups.
        small = [sql for sql in statements if "SELECT" in sql]
        statements.clear()
        with db.read_session(engine) as session:
            many = story_candidates(
                session, ["v1:original", "v1:rewrite", "v1:unknown"], [copy[:8]] * 150, now, limit=1
            )
        assert [sql for sql in statements if "SELECT" in sql] == small
        assert many.exact == {"v1:original": target, "v1:rewrite": target}
        assert many.ranked == [[first[0]]] * 150
    finally:
        engine.dispose()


def _insert_items(
    session: Session, feed: int, placed: list[tuple[int, datetime | None]], now: datetime
) -> list[int]:
    """An item n (title "tn", link https://on/) for each (story, date) of `placed`; their ids."""
    made = [
        NewItem(f"g{n}", f"v1:{n}", 1, f"t{n}", "b", None, f"https://o{n}/", None, at, "en", now, story)
        for n, (story, at) in enumerate(placed)
    ]  # fmt: skip
    return [insert_item(session, feed, item) for item in made]


def test_a_polls_story_items_and_matched_watchlists_come_in_one_query(database_url: str) -> None:
    """`story_reads`: the items of some stories, oldest first, and the watchlists other stories
    have matched (an entry for each story asked, empty when none), in one statement."""
    engine = db.make_engine(database_url)
    try:
        db.ensure_schema(engine, upgrade=True)
        now = datetime.now(UTC)
        with db.transaction(engine) as session:
            feed = sync_feeds(session, [("f", "https://f.example/rss")], now)["f"]
            first, _ = story_for_hash(session, "v1:first", now)
            second, _ = story_for_hash(session, "v1:second", now)
            placed = [(first, now), (first, now - timedelta(hours=1)), (second, None)]
            ids = _insert_items(session, feed, placed, now)
            insert_matches(
                session,
                [
                    NewMatch(first, ids[0], "w1", "[]"),
                    NewMatch(first, ids[1], "w2", "[]"),
                    NewMatch(second, ids[2], "w1", "[]"),
                ],
                now,
            )
        statements: list[str] = []
        for listened in {engine, db.read_engine(engine)}:
            event.listen(listened, "before_cursor_execute", lambda *a: statements.append(a[2]))
        with db.read_session(engine) as session:
            read = story_reads(session, [first], [first, second, second + 1])
            nothing = story_reads(session, [], [])
        assert len([sql for sql in statements if "SELECT" in sql]) == 1
        assert [(i.title, i.at, i.feed_name, i.link) for i in read.items[first]] == [
            ("t1", now - timedelta(hours=1), "f", "https://o1/"),
            ("t0", now, "f", "https://o0/"),
        ]
        assert list(read.items) == [first]
        assert read.matched == {first: {"w1", "w2"}, second: {"w1"}, second + 1: set()}
        assert (nothing.items, nothing.matched) == ({}, {})
        with db.read_session(engine) as session:
            only_matches = story_reads(session, [], [second])
        assert (only_matches.items, only_matches.matched) == ({}, {second: {"w1"}})
    finally:
        engine.dispose()


def test_on_postgresql_the_candidates_statement_reads_the_likely_stories_along(
    database_url: str,
) -> None:
    """With `read_along`, PostgreSQL's candidates statement also reads what `story_reads` would of
    the candidates sharing that many hashes (their items, oldest first, and watchlists) and the
    watchlists of the exact hashes' stories and of the stories named: the same, in the same round
    trip. Elsewhere nothing is read along (`story_reads` reads it after)."""
    fingerprint = core_stories.fingerprint(WANG_YI)
    indexed = fingerprint[: core_stories.INDEXED]
    engine = db.make_engine(database_url)
    try:
        db.ensure_schema(engine, upgrade=True)
        now = datetime.now(UTC)
        with db.transaction(engine) as session:
            feed = sync_feeds(session, [("f", "https://f.example/rss")], now)["f"]
            copied, _ = story_for_hash(session, "v1:copied", now)
            add_fingerprint(session, copied, core_stories.encode(fingerprint), indexed, now)
            loose, _ = story_for_hash(session, "v1:loose", now)  # shares one hash: not read
            add_fingerprint(session, loose, core_stories.encode(indexed[:1]), indexed[:1], now)
            exact, _ = story_for_hash(session, "v1:exact", now)
            named, _ = story_for_hash(session, "v1:named", now)
            dated = [(copied, now), (copied, now - timedelta(hours=1))]
            placed = [*dated, (loose, None), (exact, None), (named, None)]
            ids = _insert_items(session, feed, placed, now)
            insert_matches(
                session,
                [
                    NewMatch(copied, ids[0], "w1", "[]"),
                    NewMatch(loose, ids[2], "w2", "[]"),
                    NewMatch(exact, ids[3], "w3", "[]"),
                    NewMatch(named, ids[4], "w4", "[]"),
                ],
                now,
            )
        statements: list[str] = []
        for listened in {engine, db.read_engine(engine)}:
            event.listen(listened, "before_cursor_execute", lambda *a: statements.append(a[2]))
        with db.read_session(engine) as session:
            found = story_candidates(
                session,
                ["v1:exact"],
                [indexed],
                now - timedelta(days=1),
                limit=20,
                read_along=3,
                stories_matched=[named],
            )
            separately = story_reads(session, [copied], [copied, exact, named])
        assert found.ranked == [[(copied, len(indexed)), (loose, 1)]]
        if not database_url.startswith("postgresql"):
            assert (found.items, found.matched) == ({}, {})
            return
        assert len([sql for sql in statements if "SELECT" in sql]) == 2
        assert [(i.title, i.at, i.feed_name, i.link) for i in found.items[copied]] == [
            ("t1", now - timedelta(hours=1), "f", "https://o1/"),
            ("t0", now, "f", "https://o0/"),
        ]
        assert found.items == separately.items
        assert found.matched == {copied: {"w1"}, exact: {"w3"}, named: {"w4"}}
        assert found.matched == separately.matched
    finally:
        engine.dispose()


def test_a_polls_story_reads_are_planned_once_on_postgresql(postgresql_url: str) -> None:
    """The story reads' text is the same whatever the number of items, hashes and stories (their
    values are arrays), and a read session ends with COMMIT (a ROLLBACK makes psycopg forget what
    it prepared): so psycopg prepares each read after a few polls, and PostgreSQL keeps its plan
    instead of planning every poll's statement anew. A read session cannot write."""
    engine = db.make_engine(postgresql_url)
    try:
        db.ensure_schema(engine, upgrade=True)
        now = datetime.now(UTC)
        for n in range(1, 9):  # psycopg prepares a statement at its 5th execution
            with db.read_session(engine) as session:
                hashes = [f"v1:hash-{i}" for i in range(n)]
                lookups = [list(range(3 * n)), [n, n + 1], ()]
                story_candidates(
                    session,
                    hashes,
                    lookups,
                    now - timedelta(days=3),
                    limit=20,
                    read_along=3,
                    stories_matched=range(n),
                )
                story_reads(session, list(range(1, n + 1)), list(range(n, 2 * n + 1)))
        with db.read_session(engine) as session:
            prepared = session.execute(
                text("SELECT statement FROM pg_prepared_statements")
            ).scalars()
            statements = sorted(" ".join(sql.split())[:20] for sql in prepared)
        assert statements == ["SELECT items.story_i", "WITH wanted (lookup,"]
        with (
            pytest.raises(StoreError, match="read-only transaction"),
            db.read_session(engine) as session,
        ):
            session.execute(stories.delete())
    finally:
        engine.dispose()


def corpus_item(name: str) -> FeedItem:
    """An article kept in tests/data/stories (headline, link, date, body) as a feed item."""
    title, link, _, body = (STORIES / f"{name}.txt").read_text("utf-8").split("\n", 3)
    return FeedItem(name, title, body, link)


def test_fault_77_a_follow_up_a_day_later_from_the_same_outlet_alerts_again(
    database_url: str, tmp_path: Path, double: BotAPIDouble
) -> None:
    """Sky News Arabia reports that the Philippines apologise to Kuwait; the next day, that Kuwait
    expels the Philippine ambassador — a new lead over most of the first report's text. A desk
    watching Kuwait and the Philippines hears of both, a day apart."""
    watchlists = "kuwait-philippines: {query: 'الكويت AND الفلبين', notify: [desk]}"
    with LoopbackServer() as server:
        desk = Desk(server, database_url, tmp_path, telegram=double)
        feed = desk.feed("skynews")
        feed.items = [corpus_item("skynews-philippines-apologises-to-kuwait")]
        settings = desk.settings(watchlists)
        desk.once(settings)
        desk.now += timedelta(days=1)
        feed.items.append(corpus_item("skynews-kuwait-expels-philippine-ambassador"))
        desk.once(settings)
        desk.once(settings)  # nothing new: nothing sent

    apology, expulsion = double.messages_to(DESK)
    assert "الفلبين تعتذر للكويت" in apology.plain
    assert "الكويت تطرد السفير الفلبيني" in expulsion.plain
    sent = sorted(desk.rows(settings, alerts), key=lambda row: row["id"])
    assert [row["status"] for row in sent] == ["sent", "sent"]
    assert sent[1]["created_at"] - sent[0]["created_at"] == timedelta(days=1)
    assert len(desk.rows(settings, stories)) == 2
