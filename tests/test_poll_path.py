"""The poll path's work: what it does per item and per poll, counted on real parts (feeds on
loopback, SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from httpserver import LoopbackServer
from servicekit import RecordingNotifier, poll_and_deliver
from sqlalchemy import Engine, event, select
from test_pipeline import (
    Feed,
    rss,
    settings_for,
)

from monitor import language
from monitor.config import Settings, parse_config
from monitor.core import stories as core_stories
from monitor.core.match import Matcher
from monitor.daemon import Service
from monitor.pipeline import CHANGED_AT_ONCE, Poller, PollResult
from monitor.store import db
from monitor.store.tables import feeds, items

ENGLISH = (
    "en-1",
    "Parliament debates the budget",
    "Members of parliament debated the spending plans for the coming year late into the night.",
)
ARABIC = (
    "ar-1",
    "البرلمان يناقش الميزانية",
    "ناقش أعضاء البرلمان خطط الإنفاق للعام المقبل حتى ساعة متأخرة من الليل.",
)


def atom_entry_in(language: str, guid: str, title: str, body: str) -> bytes:
    """An Atom feed without a language of its own, whose one entry declares `language`."""
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>t</title><id>urn:t</id><updated>2023-09-18T08:00:00Z</updated>"
        f'<entry xml:lang="{language}"><id>{guid}</id><title>{title}</title>'
        f"<updated>2023-09-18T08:00:00Z</updated><summary>{body}</summary></entry></feed>"
    ).encode()


def test_the_detector_runs_only_for_items_whose_language_nobody_declared(
    database_url: str, tmp_path: Path, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    detected: list[str] = []
    detect = language.detect_language

    def counting(text: str) -> str | None:
        detected.append(text)
        return detect(text)

    monkeypatch.setattr(language, "detect_language", counting)
    in_config = Feed(http_server, "/config.xml", rss(ARABIC))
    channel = rss(ENGLISH).replace(
        b"<title>t</title>", b"<title>t</title><language>en-GB</language>"
    )
    in_channel = Feed(http_server, "/channel.xml", channel)
    in_entry = Feed(http_server, "/entry.xml", atom_entry_in("ar", "urn:e", *ARABIC[1:]))
    nowhere = Feed(http_server, "/nowhere.xml", rss(ENGLISH))
    settings = settings_for(
        database_url,
        f"""
- {{name: config, url: "{in_config.url}", language: ar}}
- {{name: channel, url: "{in_channel.url}"}}
- {{name: entry, url: "{in_entry.url}"}}
- {{name: nowhere, url: "{nowhere.url}"}}
        """,
        tmp_path,
    )
    results = poll_and_deliver(settings, {"console": RecordingNotifier()})
    assert {r.feed: r.new_items for r in results} == dict.fromkeys(
        ("config", "channel", "entry", "nowhere"), 1
    )
    assert detected == [f"{ENGLISH[1]}\n{ENGLISH[2]}"]  # the one item nobody declared
    engine = db.make_engine(settings.database.url)
    try:
        with engine.connect() as connection:
            stored = dict(
                connection.execute(
                    select(feeds.c.name, items.c.language).join(
                        feeds, feeds.c.id == items.c.feed_id
                    )
                ).all()
            )
    finally:
        engine.dispose()
    assert stored == {"config": "ar", "channel": "en", "entry": "ar", "nowhere": "en"}


WORDS = [
    "harbour",
    "board",
    "council",
    "budget",
    "ferry",
    "bridge",
    "tunnel",
    "market",
    "school",
    "clinic",
    "river",
    "station",
    "airport",
    "library",
    "museum",
    "stadium",
    "theatre",
    "garden",
    "factory",
    "office",
]


def news(n: int, start: int = 0, *, edited: int | None = None) -> bytes:
    """An RSS feed of items start … start+n-1, each its own story (texts that share no run of
    three words), all about sunny weather; item `edited` has another text."""
    entries = []
    for i in range(start, start + n):
        words = [f"{WORDS[(i * 7 + j) % len(WORDS)]}{i}x{j}" for j in range(30)]
        if i == edited:
            words.reverse()
        entries.append((f"n-{i}", f"Headline {i}", " ".join(words) + " sunny"))
    return rss(*entries)


def poll_only(settings: Settings) -> list[PollResult]:
    """`monitor once` without the delivery: poll every feed once."""

    async def go() -> list[PollResult]:
        service = Service.build(settings, notifiers={"console": RecordingNotifier()})
        service.prepare(alone=True)
        try:
            return await service.poll_all()
        finally:
            await service.close()

    return asyncio.run(go())


@contextlib.contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements every engine of this process sends (an executemany counts once)."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()[:3]).upper())

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def test_only_new_and_changed_items_are_detected_fingerprinted_and_matched(
    database_url: str, tmp_path: Path, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = Feed(http_server, "/news.xml", news(10))
    settings = settings_for(database_url, f"- {{name: news, url: '{feed.url}'}}", tmp_path)
    (first,) = poll_only(settings)
    assert (first.new_items, first.alerts) == (10, 10)
    detected: list[str] = []
    fingerprinted: list[str] = []
    matched: list[str] = []
    detect, fingerprint, match = language.detect_language, core_stories.fingerprint, Matcher.match

    def detecting(text: str) -> str | None:
        detected.append(text)
        return detect(text)

    def fingerprinting(text: str) -> tuple[int, ...]:
        fingerprinted.append(text)
        return fingerprint(text)

    def matching(self: Matcher, article: Any) -> Any:
        matched.append(article.title)
        return match(self, article)

    monkeypatch.setattr(language, "detect_language", detecting)
    monkeypatch.setattr(core_stories, "fingerprint", fingerprinting)
    monkeypatch.setattr(Matcher, "match", matching)
    # Two new items on top, one of the eight kept changed: three items to work on, not ten.
    feed.body = news(10, start=2, edited=5)
    (second,) = poll_only(settings)
    assert (second.status, second.new_items, second.updated_items) == ("ok", 2, 1)
    assert sorted(matched) == ["Headline 10", "Headline 11", "Headline 5"]
    assert len(fingerprinted) == len(detected) == 3


def test_a_changed_poll_speaks_to_the_database_as_often_for_fifty_new_items_as_for_two(
    database_url: str, tmp_path: Path, http_server: LoopbackServer
) -> None:
    few = Feed(http_server, "/few.xml", news(10))
    many = Feed(http_server, "/many.xml", news(60, start=1000))
    settings = settings_for(
        database_url,
        f"- {{name: few, url: '{few.url}'}}\n- {{name: many, url: '{many.url}'}}",
        tmp_path,
    )
    poll_only(settings)
    sent = {}
    # Each round one feed gains items, each of them matching (`sunny`): 2, then 50; the other
    # answers 304. Every kind of statement is sent as often in both rounds.
    for name, feed, body, gained in (
        ("few", few, news(10, start=2), 2),
        ("many", many, news(60, start=1050), 50),
    ):
        feed.body = body
        with statements() as sent[name]:
            results = {r.feed: r for r in poll_only(settings)}
        assert (results[name].status, results[name].new_items, results[name].alerts) == (
            "ok",
            gained,
            gained,
        )
    assert sorted(sent["many"]) == sorted(sent["few"])


def test_changed_feeds_are_parsed_matched_and_stored_a_few_at_a_time(
    database_url: str, tmp_path: Path, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls whose feed changed wait for one of `CHANGED_AT_ONCE` slots before their parse, so
    that a round of changed feeds holds a few polls' items in memory, not every poll's."""
    count = 3 * CHANGED_AT_ONCE
    served = [Feed(http_server, f"/changed-{n}.xml", news(3, start=10 * n)) for n in range(count)]
    settings_for(
        database_url,
        "\n".join(f"- {{name: f{n}, url: '{f.url}'}}" for n, f in enumerate(served)),
        tmp_path,
    )
    config = tmp_path / "config.yaml"
    # Every feed fetched at once (the default lets two requests to one host run together).
    config.write_text(
        config.read_text("utf-8").replace(
            "fetch: {allow_private: true}", f"fetch: {{allow_private: true, per_host: {count}}}"
        ),
        "utf-8",
    )
    settings = parse_config(config.read_text("utf-8"), str(config))
    inside = most = 0
    process = Poller._process

    async def counting(self: Poller, *args: Any, **kwargs: Any) -> PollResult:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        try:
            return await process(self, *args, **kwargs)
        finally:
            inside -= 1

    monkeypatch.setattr(Poller, "_process", counting)
    results = poll_only(settings)
    assert sorted(r.new_items for r in results) == [3] * count  # every feed stored
    assert most == CHANGED_AT_ONCE


def test_a_changed_poll_waiting_for_its_slot_is_waiting_for_its_parse(
    database_url: str, tmp_path: Path, http_server: LoopbackServer
) -> None:
    """While a changed feed waits for a processing slot it counts among the feeds waiting for
    their parse (`parsing_feeds`), which a stop gives back at once; once a slot is free it is
    parsed and stored, and leaves that set."""
    feed = Feed(http_server, "/waits.xml", news(3))
    settings = settings_for(database_url, f"- {{name: waits, url: '{feed.url}'}}", tmp_path)

    class Slots(asyncio.Semaphore):
        """The poller's slots, telling when a poll starts to wait for one."""

        def __init__(self) -> None:
            super().__init__(CHANGED_AT_ONCE)
            self.asked = asyncio.Event()

        async def acquire(self) -> Literal[True]:
            self.asked.set()
            return await super().acquire()

    async def go() -> tuple[set[int], list[PollResult], set[int]]:
        service = Service.build(settings, notifiers={"console": RecordingNotifier()})
        service.prepare(alone=True)
        poller = service.poller
        poller.processing = slots = Slots()
        try:
            for _ in range(CHANGED_AT_ONCE):  # every slot taken
                await asyncio.Semaphore.acquire(slots)
            polling = asyncio.create_task(service.poll_all())
            await asyncio.wait_for(slots.asked.wait(), timeout=30)
            waiting = set(poller.parsing_feeds)
            for _ in range(CHANGED_AT_ONCE):
                slots.release()
            results = await polling
            return waiting, results, set(poller.parsing_feeds)
        finally:
            await service.close()

    waiting, results, left = asyncio.run(go())
    assert len(waiting) == 1  # the feed, while it waited for a slot
    assert [(r.status, r.new_items) for r in results] == [("ok", 3)]
    assert left == set()
