"""What the poll path stores and alerts for the corpus's feeds, against a recorded expectation.

A fifth of the feeds under the corpus's `feeds/real/`, and its broken real captures, are polled three times
by the daemon's own poller on a real database, feed after feed in name order at fixed times:

1. as captured (every item new);
2. with every `the ` made `teh ` and every ` and ` made ` and Linux ` (most English items change:
   updates, new matches and alerts; feeds without those words are unchanged);
3. once more, the same bytes (nothing to do).

What is in the database afterwards — items, stories, fingerprints, matches, the outbox, the poll
state — and what each poll reported is compared with `tests/data/poll_corpus_expected.json`, which
was recorded by the code before the poll path was batched. A deliberate change of what is stored
records it again: `MONITOR_RECORD_EXPECTATION=sqlite pytest tests/test_poll_corpus.py` writes it
from the SQLite run, against which the PostgreSQL run is then compared. Story ids are the
database's; stories are named by the content hash that made them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from httpserver import require_corpus
from sqlalchemy import select

from monitor.config import Settings, parse_config
from monitor.daemon import Service
from monitor.store import db
from monitor.store.feeds import claim_due_feeds
from monitor.store.subscribers import get_or_create_subscriber, set_digest, set_mute, subscribe
from monitor.store.tables import alerts, feeds, items, matches, stories, story_hashes

EXPECTED = Path(__file__).parent / "data" / "poll_corpus_expected.json"
START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
TIMES = {START: "t1", START + timedelta(hours=1): "t2", START + timedelta(hours=2): "t3"}
LARGEST = 120_000  # bytes: the larger captures add time, not cases
# Feeds whose stories the database chose: their items share one body, so more than 20 stories were
# near-copy candidates and which 20 the database offered was its own (SQLite's and PostgreSQL's
# differ).
ARBITRARY = {"json_feed_with_escaped_uris.json"}

CONFIG = """\
database: {{url: "{url}"}}
fetch: {{allow_private: true}}
service: {{listen: null}}
defaults: {{alert_max_age: "off"}}  # the corpus's items are years old
telegram: {{token: "123456:test-token"}}
email: {{host: 127.0.0.1, port: 2525, starttls: false}}
entities:
  big-tech: {{aliases: [Google, Microsoft, Apple, Yahoo]}}
channels:
  desk: {{type: email, to: [a@example.org, b@example.org]}}
  morning: {{type: email, to: [c@example.org], digest: hourly}}
watchlists:
  tech: {{query: "@big-tech", notify: [desk, console]}}
  software: {{query: "Linux OR Ubuntu OR Python OR Java", notify: [morning]}}
  russia: {{query: "России OR Москва OR Russia OR Путин", notify: []}}
  feeds-news: {{query: "(RSS OR feed) AND (news OR blog)", languages: [en]}}
  headline: {{query: "title:(new OR release OR update)", notify: [desk]}}
  greek-hebrew: {{query: "Ελλάδα OR ישראל OR Magyar"}}
feeds:
"""


def corpus_feeds() -> list[Path]:
    """Every fifth capture under `feeds/real/` (in path order: every source is there) and the
    broken real captures."""
    corpus = require_corpus() / "feeds"

    def files(folder: Path) -> list[Path]:
        found = [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size <= LARGEST]
        return sorted(found, key=lambda path: path.relative_to(corpus).as_posix())

    chosen = files(corpus / "real")[::5] + files(corpus / "robustness" / "real-broken")
    return [path for path in chosen if path.name not in ARBITRARY]


def edited(body: bytes) -> bytes:
    return body.replace(b"the ", b"teh ").replace(b" and ", b" and Linux ")


def settings_for(url: str, tmp_path: Path, names: list[str], suffixes: list[str]) -> Settings:
    lines = [
        f"  - {{name: {name}, url: 'feeds/{name}{suffix}'}}"
        for name, suffix in zip(names, suffixes, strict=True)
    ]
    text = CONFIG.format(url=url) + "\n".join(lines) + "\n"
    config = tmp_path / "config.yaml"
    config.write_text(text, "utf-8")
    return parse_config(text, str(config))


def add_subscribers(settings: Settings) -> None:
    engine = db.make_engine(settings.database.url)
    try:
        with db.transaction(engine) as session:
            plain = get_or_create_subscriber(session, 1001, START, chat_type="private")
            subscribe(session, plain.id, "russia", START)
            subscribe(session, plain.id, "tech", START)
            digest = get_or_create_subscriber(session, 1002, START, chat_type="private")
            subscribe(session, digest.id, "russia", START)
            set_digest(session, 1002, "hourly", START)
            muted = get_or_create_subscriber(session, -1003, START, chat_type="group")
            subscribe(session, muted.id, "software", START)
            set_mute(session, -1003, START + timedelta(hours=5), START, watchlist="software")
    finally:
        engine.dispose()


def poll_round(settings: Settings, now: datetime) -> dict[str, list[Any]]:
    """Every feed polled once at `now`, one after the other in name order (so that which item
    makes a story is decided the same way every time)."""

    async def go() -> dict[str, list[Any]]:
        service = Service.build(settings, notifiers={}, clock=lambda: now)
        try:
            with db.transaction(service.engine) as session:
                claimed = claim_due_feeds(
                    session,
                    service.owner,
                    timedelta(minutes=30),
                    10_000,
                    include_not_due=True,
                    include_waiting=True,
                )
            results = {}
            for state in sorted(claimed, key=lambda state: state.name):
                r = await service.poller.poll(state, service.feeds[state.name])
                results[r.feed] = [r.status, r.new_items, r.updated_items, r.alerts, r.error]
            await service.close()
            return results
        except BaseException:
            await service.close()
            raise

    return asyncio.run(go())


def digest(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()[:12]


def stored(settings: Settings) -> dict[str, Any]:
    """The database's content, without its ids (stories by the hash that made them, items by
    feed and identity) and with times as t1/t2/t3."""

    def when(value: datetime | None) -> str | None:
        if value is None:
            return None
        return TIMES.get(value, value.isoformat())

    engine = db.make_engine(settings.database.url)
    try:
        with engine.connect() as c:
            feed_name = dict(c.execute(select(feeds.c.id, feeds.c.name)).all())
            story_hash = {
                row.id: digest(row.content_hash)
                for row in c.execute(select(stories.c.id, stories.c.content_hash))
            }
            item_key = {
                row.id: f"{feed_name[row.feed_id]} {digest(row.identity)}"
                for row in c.execute(select(items.c.id, items.c.feed_id, items.c.identity))
            }

            def index_of(found: list[Any]) -> list[list[Any]]:
                by_story: dict[str, list[str]] = {}
                for r in found:
                    by_story.setdefault(story_hash[r.story_id], []).append(
                        f"{r.hash} {when(r.created_at)}"
                    )
                return sorted([key, digest(" ".join(sorted(v)))] for key, v in by_story.items())

            def rows(statement: Any, shape: Callable[[Any], list[Any]]) -> list[list[Any]]:
                return sorted((shape(row) for row in c.execute(statement)), key=json.dumps)

            return {
                "items": rows(
                    select(items),
                    lambda r: [
                        item_key[r.id],
                        digest(r.content_hash),
                        r.hash_version,
                        digest(r.title),
                        digest(r.text),
                        digest(r.html),
                        digest(r.link),
                        digest(r.author),
                        when(r.published_at),
                        r.language,
                        when(r.fetched_at),
                        when(r.updated_at),
                        story_hash[r.story_id],
                    ],
                ),
                "stories": rows(
                    select(stories),
                    lambda r: [digest(r.content_hash), when(r.created_at), digest(r.fingerprint)],
                ),
                "story_hashes": index_of(c.execute(select(story_hashes)).all()),
                "matches": rows(
                    select(matches),
                    lambda r: [
                        story_hash[r.story_id],
                        item_key[r.item_id],
                        r.watchlist,
                        digest(r.hits),
                        when(r.created_at),
                    ],
                ),
                "alerts": rows(
                    select(alerts),
                    lambda r: [
                        story_hash[r.story_id],
                        item_key[r.item_id],
                        r.watchlist,
                        r.channel,
                        r.recipient,
                        r.status,
                        r.attempts,
                        when(r.next_attempt_at),
                        when(r.created_at),
                    ],
                ),
                "feeds": rows(
                    select(feeds),
                    lambda r: [
                        r.name,
                        r.etag,
                        r.body_hash,
                        when(r.last_polled_at),
                        r.last_status,
                        r.last_error,
                        r.last_new_items,
                        r.consecutive_failures,
                        r.lease_owner,
                    ],
                ),
            }
    finally:
        engine.dispose()


def one_row_a_line(found: dict[str, Any]) -> str:
    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = ["{", f'"feeds": {dump(found["feeds"])},', '"polls": {']
    polls = [f"{dump(round_)}: {dump(results)}" for round_, results in found["polls"].items()]
    lines += [",\n".join(polls), "},", '"stored": {']
    tables = [
        f"{dump(table)}: [\n" + ",\n".join(dump(row) for row in rows) + "\n]"
        for table, rows in found["stored"].items()
    ]
    lines += [",\n".join(tables), "}", "}"]
    return "\n".join(lines) + "\n"


def test_the_corpus_feeds_are_stored_and_alerted_as_recorded(
    database_url: str, tmp_path: Path
) -> None:
    paths = corpus_feeds()
    corpus = require_corpus() / "feeds"
    names = [f"f{i:03d}" for i in range(len(paths))]
    (tmp_path / "feeds").mkdir()
    settings = settings_for(database_url, tmp_path, names, [p.suffix for p in paths])
    prepared = Service.build(settings, notifiers={}, clock=lambda: START)
    try:
        prepared.prepare(now=START, alone=True)
    finally:
        asyncio.run(prepared.close())
    add_subscribers(settings)
    files = [
        tmp_path / "feeds" / f"{name}{path.suffix}" for name, path in zip(names, paths, strict=True)
    ]
    polls = {}
    for round_, now in enumerate(TIMES):
        for path, file in zip(paths, files, strict=True):
            body = path.read_bytes()
            file.write_bytes(body if round_ == 0 else edited(body))
        polls[TIMES[now]] = poll_round(settings, now)
    found = {
        "feeds": {
            name: path.relative_to(corpus).as_posix()
            for name, path in zip(names, paths, strict=True)
        },
        "polls": polls,
        "stored": stored(settings),
    }
    found = json.loads(json.dumps(found))  # tuples as lists, as the file has them
    if os.environ.get("MONITOR_FOUND_EXPECTATION"):  # to compare by hand
        Path(os.environ["MONITOR_FOUND_EXPECTATION"]).write_text(one_row_a_line(found), "utf-8")
    if os.environ.get("MONITOR_RECORD_EXPECTATION") in ("1", database_url.split(":")[0]):
        EXPECTED.write_text(one_row_a_line(found), "utf-8")
    expected = json.loads(EXPECTED.read_text("utf-8"))
    assert found["feeds"] == expected["feeds"]
    assert found["polls"] == expected["polls"]
    for table, rows in expected["stored"].items():
        assert found["stored"][table] == rows, table
    # The corpus gives every path something to do: not a comparison of empty tables.
    counts = {table: len(rows) for table, rows in found["stored"].items()}
    assert min(counts.values()) > 0, counts
    statuses = {poll[0] for round_ in polls.values() for poll in round_.values()}
    assert {"ok", "unchanged", "error"} <= statuses


def test_expectation_is_not_empty() -> None:
    expected = json.loads(EXPECTED.read_text("utf-8"))
    assert len(expected["stored"]["alerts"]) > 100
    assert sum(poll[2] for poll in expected["polls"]["t2"].values()) > 100  # updated items
