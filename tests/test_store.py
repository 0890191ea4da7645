"""monitor.store on real databases: SQLite in a temp file, and PostgreSQL when
MONITOR_TEST_DATABASE_URL is set (each test in a schema of its own, dropped afterwards)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import DateTime, Engine, String, event, func, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from monitor.errors import SchemaVersionError, StoreError
from monitor.store._shared import database_now
from monitor.store.alerts import (
    alert_counts,
    claim_due_alerts,
    enqueue_alert,
    insert_match,
    mark_alert_failed,
    mark_alert_retry,
    mark_alert_sent,
    purge_failed_alerts,
    retry_failed_alerts,
    unsent_alerts,
    watchlists_matched,
)
from monitor.store.db import (
    HEAD_REVISION,
    current_revision,
    ensure_schema,
    head_revision,
    make_engine,
    read_session,
    transaction,
    upgrade,
)
from monitor.store.feeds import (
    QuietPoll,
    claim_due_feeds,
    feed_health,
    record_poll,
    record_quiet_polls,
    release_feed,
    release_feeds,
    sync_feeds,
)
from monitor.store.stories import (
    NewItem,
    StoredItemRef,
    add_fingerprint,
    find_item,
    forget_story_hashes,
    insert_item,
    items_since,
    prune,
    story_candidates,
    story_for_hash,
    update_item,
)
from monitor.store.tables import (
    UTCDateTime,
    alerts,
    feeds,
    items,
    matches,
    metadata,
    stories,
    story_hashes,
)

PG_URL = os.environ.get("MONITOR_TEST_DATABASE_URL")
LEASE = timedelta(minutes=5)

needs_pg = pytest.mark.skipif(
    not PG_URL, reason="MONITOR_TEST_DATABASE_URL is not set: PostgreSQL store tests skipped"
)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def fresh(database_url: str) -> Iterator[Engine]:
    """An engine on an empty database (not migrated): SQLite, and PostgreSQL when configured
    (the `database_url` fixture of conftest.py gives each test a schema of its own)."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(fresh: Engine) -> Engine:
    """An engine on a database migrated to head."""
    upgrade(fresh)
    return fresh


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _now(engine: Engine) -> datetime:
    with read_session(engine) as session:
        return database_now(session)


def _set(engine: Engine, table: Any, row_id: int, **values: Any) -> None:
    """Test-only shortcut: change a row directly (backdate leases, due times …)."""
    with transaction(engine) as session:
        session.execute(update(table).where(table.c.id == row_id).values(**values))


def _count(session: Session, table: Any) -> int:
    return session.execute(select(func.count()).select_from(table)).scalar_one()


def _item(identity: str, content_hash: str, story_id: int, at: datetime, **kw: Any) -> NewItem:
    values: dict[str, Any] = {
        "identity": identity,
        "content_hash": content_hash,
        "hash_version": 1,
        "title": f"title {identity}",
        "text": f"text {identity}",
        "html": None,
        "link": f"https://example.org/{identity}",
        "author": None,
        "published_at": at,
        "language": "en",
        "fetched_at": at,
        "story_id": story_id,
    }
    return NewItem(**(values | kw))


def _store_item(
    engine: Engine, feed: str, identity: str, content_hash: str, at: datetime, **kw: Any
) -> tuple[int, int]:
    """Feed (synced if new) + story + item in one transaction; (item id, story id)."""
    with transaction(engine) as session:
        feed_id = session.execute(select(feeds.c.id).where(feeds.c.name == feed)).scalar()
        if feed_id is None:
            feed_id = sync_feeds(session, [(feed, f"https://{feed}.example/rss")], at)[feed]
        story_id, _ = story_for_hash(session, content_hash, at)
        item_id = insert_item(session, feed_id, _item(identity, content_hash, story_id, at, **kw))
        assert item_id is not None
        return item_id, story_id


# --- schema version -------------------------------------------------------------------------------


def test_migrations_reach_head_and_match_the_tables(fresh: Engine) -> None:
    with pytest.raises(SchemaVersionError, match=r"not initialised.*run `monitor db upgrade`"):
        ensure_schema(fresh, upgrade=False)
    ensure_schema(fresh, upgrade=True)
    assert current_revision(fresh) == head_revision()
    ensure_schema(fresh, upgrade=False)  # at head: nothing to do
    assert upgrade(fresh) == (head_revision(), head_revision())
    with fresh.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_a_database_at_head_is_checked_without_importing_alembic(engine: Engine) -> None:
    """Alembic (about 11 MB resident) is imported to migrate, not by every start."""
    assert head_revision() == HEAD_REVISION
    probe = (
        "import sys; from monitor.store.db import ensure_schema, make_engine; "
        "ensure_schema(make_engine(sys.argv[1]), upgrade=False); "
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'alembic'))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe, _url(engine)], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "[]"


def test_fault_57_a_newer_schema_is_refused(engine: Engine) -> None:
    with transaction(engine) as session:
        session.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed9999'"))
    message = (
        f"database schema is at revision f00dfeed9999, newer than this monitor "
        f"(head {head_revision()}): upgrade monitor"
    )
    for allow_upgrade in (True, False):
        with pytest.raises(SchemaVersionError) as caught:
            ensure_schema(engine, upgrade=allow_upgrade)
        assert str(caught.value) == message
    with pytest.raises(SchemaVersionError, match="newer than this monitor"):
        upgrade(engine)


# --- feeds ----------------------------------------------------------------------------------------


def test_sync_feeds_adds_updates_and_deactivates(engine: Engine) -> None:
    now = _now(engine)
    with transaction(engine) as session:
        ids = sync_feeds(session, [("a", "https://a/rss"), ("b", "https://b/rss")], now)
    _set(engine, feeds, ids["a"], etag='"v1"', body_hash="0" * 64)
    later = now + timedelta(minutes=1)
    with transaction(engine) as session:
        again = sync_feeds(session, [("a", "https://a/new"), ("c", "https://c/rss")], later)
    assert again["a"] == ids["a"] and set(again) == {"a", "c"}
    with read_session(engine) as session:
        health = {h.name: h for h in feed_health(session)}
        a = session.execute(select(feeds).where(feeds.c.name == "a")).one()
    assert (a.url, a.etag, a.body_hash, a.next_poll_at) == ("https://a/new", None, None, later)
    assert a.next_poll_at.tzinfo is UTC
    assert [h.active for h in (health["a"], health["b"], health["c"])] == [True, False, True]
    with transaction(engine) as session:
        assert claim_due_feeds(session, "w", LEASE, 10, include_not_due=True) != []
        claimed = {f.name for f in claim_due_feeds(session, "x", LEASE, 10)}
    assert "b" not in claimed  # inactive feeds are never claimed
    with transaction(engine) as session:
        sync_feeds(session, [("b", "https://b/rss")], later)
    with read_session(engine) as session:
        assert {h.name for h in feed_health(session) if h.active} == {"b"}


def test_failing_since_starts_at_the_first_failure_and_ends_with_any_success(
    engine: Engine,
) -> None:
    """What `monitor feeds` shows: the first failure of a run of them, and the last success, which
    a quiet poll (a 304) is as much as a poll with news."""
    now = _now(engine)
    times = [now + timedelta(minutes=m) for m in range(4)]
    with transaction(engine) as session:
        feed_id = sync_feeds(session, [("a", "https://a/rss")], now)["a"]
    poll: dict[str, Any] = {
        "error": None,
        "etag": None,
        "last_modified": None,
        "body_hash": None,
        "new_items": 0,
        "next_poll_at": now,
    }

    def health() -> tuple[datetime | None, datetime | None, int]:
        with read_session(engine) as session:
            [row] = feed_health(session)
        return row.failing_since, row.last_success_at, row.consecutive_failures

    with transaction(engine) as session:
        record_poll(session, feed_id, polled_at=times[0], status="ok", failed=False, **poll)
    for moment in times[1:3]:
        with transaction(engine) as session:
            record_poll(session, feed_id, polled_at=moment, status="error", failed=True, **poll)
    assert health() == (times[1], times[0], 2)
    with transaction(engine) as session:
        claim_due_feeds(session, "one", LEASE, 10)
        quiet = QuietPoll(feed_id, times[3], "not_modified", '"e"', None, None, times[3])
        record_quiet_polls(session, [quiet], "one")
    assert health() == (None, times[3], 0)


def test_quiet_polls_write_what_record_poll_writes(engine: Engine) -> None:
    """`record_quiet_polls` hands its rows to the driver itself: each feed's row ends as
    `record_poll` leaves it for the same quiet poll (times stored alike, whole seconds too; text
    cleaned; the lease given back), and a feed whose lease another owner holds is left alone."""
    now = _now(engine).replace(microsecond=0)
    names = [("a", "https://a/rss"), ("b", "https://b/rss"), ("c", "https://c/rss")]
    with transaction(engine) as session:
        ids = sync_feeds(session, names, now)
    _set(engine, feeds, ids["c"], etag='"old"')
    with transaction(engine) as session:
        claim_due_feeds(session, "one", LEASE, 10)
    _set(engine, feeds, ids["c"], lease_owner="two")  # c's lease went to another process
    polled, later = now + timedelta(seconds=1, microseconds=5), now + timedelta(minutes=10)
    dirty = '"e\x01tag"'  # a control character: cleaned on the way in
    with transaction(engine) as session:
        record_poll(
            session,
            ids["a"],
            polled_at=polled,
            status="not_modified",
            error=None,
            etag=dirty,
            last_modified="Mon, 18 Sep 2023 08:00:00 GMT",
            body_hash="h" * 64,
            new_items=0,
            next_poll_at=later,
            failed=False,
            owner="one",
        )
        record_quiet_polls(
            session,
            [
                QuietPoll(
                    ids[name],
                    polled,
                    "not_modified",
                    dirty,
                    "Mon, 18 Sep 2023 08:00:00 GMT",
                    "h" * 64,
                    later,
                )
                for name in ("b", "c")
            ],
            "one",
        )
    with read_session(engine) as session:
        rows = {
            row.name: row._asdict()
            for row in session.execute(select(feeds).where(feeds.c.id.in_(ids.values())))
        }
    written = {k: v for k, v in rows["b"].items() if k not in ("id", "name", "url")}
    assert written == {k: v for k, v in rows["a"].items() if k not in ("id", "name", "url")}
    assert written["etag"] == '"etag"' and written["last_polled_at"] == polled
    assert written["next_poll_at"] == later and written["lease_owner"] is None
    assert rows["c"]["etag"] == '"old"' and rows["c"]["lease_owner"] == "two"
    with engine.connect() as connection:  # stored alike, so that text order is time order
        stored = connection.execute(
            select(feeds.c.next_poll_at.cast(String)).where(feeds.c.id.in_([ids["a"], ids["b"]]))
        ).scalars()
        assert len(set(stored)) == 1


def test_a_feed_twice_in_a_batch_of_quiet_polls_keeps_its_last(engine: Engine) -> None:
    """A batch holding two quiet polls of one feed leaves it as the later one on either database
    (row after row on SQLite, one statement of arrays on PostgreSQL), and validators with
    quotes, backslashes, commas, braces or the word NULL arrive as they were sent."""
    now = _now(engine).replace(microsecond=0)
    with transaction(engine) as session:
        ids = sync_feeds(session, [("a", "https://a/rss"), ("b", "https://b/rss")], now)
    with transaction(engine) as session:
        claim_due_feeds(session, "one", LEASE, 10)
    first, second = now + timedelta(seconds=1), now + timedelta(seconds=2, microseconds=7)
    odd = 'W/"a,b}{\\"c\\\\" NULL'
    modified = "Mon, 18 Sep 2023 08:00:00 GMT"
    with transaction(engine) as session:
        record_quiet_polls(
            session,
            [
                QuietPoll(ids["a"], first, "not_modified", '"first"', None, None, first + LEASE),
                QuietPoll(ids["b"], first, "not_modified", odd, "NULL", "h" * 64, first + LEASE),
                QuietPoll(ids["a"], second, "unchanged", None, modified, "x" * 64, second + LEASE),
            ],
            "one",
        )
    with read_session(engine) as session:
        rows = {row.name: row for row in session.execute(select(feeds))}
    a, b = rows["a"], rows["b"]
    assert (a.last_polled_at, a.last_status, a.etag, a.last_modified, a.body_hash) == (
        second,
        "unchanged",
        None,
        modified,
        "x" * 64,
    )
    assert a.next_poll_at == second + LEASE and a.last_success_at == second
    assert (b.etag, b.last_modified, b.last_polled_at) == (odd, "NULL", first)
    assert a.lease_owner is None and b.lease_owner is None


def test_feed_leases_and_poll_records(engine: Engine) -> None:
    now = _now(engine)
    with transaction(engine) as session:
        ids = sync_feeds(session, [("a", "https://a/rss"), ("b", "https://b/rss")], now)
    with transaction(engine) as session:
        first = claim_due_feeds(session, "one", LEASE, 10)
    assert [f.name for f in first] == ["a", "b"]
    assert first[0].next_poll_at == now and first[0].consecutive_failures == 0
    with transaction(engine) as session:
        assert claim_due_feeds(session, "two", LEASE, 10) == []  # both leased to "one"

    # "one" records a failed poll of a: the lease is released, a is due again in an hour.
    with transaction(engine) as session:
        hour = database_now(session) + timedelta(hours=1)
        assert record_poll(
            session,
            ids["a"],
            polled_at=now,
            status="error",
            error="HTTP 500",
            etag='"e"',
            last_modified=None,
            body_hash=None,
            new_items=0,
            next_poll_at=hour,
            failed=True,
            owner="one",
        )
        assert claim_due_feeds(session, "two", LEASE, 10) == []  # a not due, b leased
    # The lease on b expires (its holder died): "two" may take it; "one" can no longer record.
    _set(engine, feeds, ids["b"], lease_until=now - timedelta(seconds=1))
    with transaction(engine) as session:
        taken = claim_due_feeds(session, "two", LEASE, 10)
        assert [f.name for f in taken] == ["b"]
        poll: dict[str, Any] = {
            "polled_at": now,
            "status": "ok",
            "error": None,
            "etag": None,
            "last_modified": None,
            "body_hash": None,
            "new_items": 3,
            "next_poll_at": hour,
            "failed": False,
        }
        assert not record_poll(session, ids["b"], owner="one", **poll)
        assert record_poll(session, ids["b"], owner="two", **poll)
    # `monitor once` claims feeds that are not due, but not one backing off after a failure unless
    # forced (FAULTS 73); failures count up, then reset.
    with transaction(engine) as session:
        plain = claim_due_feeds(session, "c", LEASE, 10, include_not_due=True)
        assert [f.name for f in plain] == ["b"]
        forced = claim_due_feeds(
            session, "c", LEASE, 10, include_not_due=True, include_waiting=True
        )
        states = {f.name: f for f in forced}
        assert list(states) == ["a"]  # b is leased already
        assert states["a"].consecutive_failures == 1 and states["a"].etag == '"e"'
        record_poll(session, ids["a"], **(poll | {"failed": True, "status": "error"}))
        assert release_feed(session, ids["b"], "c")
        assert not release_feed(session, ids["b"], "c")
    with read_session(engine) as session:
        health = {h.name: h for h in feed_health(session)}
    assert health["a"].consecutive_failures == 2 and health["a"].last_status == "error"
    assert health["b"].consecutive_failures == 0 and health["b"].last_new_items == 3
    with transaction(engine) as session:
        record_poll(session, ids["a"], **poll)
    with read_session(engine) as session:
        assert {h.name: h.consecutive_failures for h in feed_health(session)}["a"] == 0


def test_fault_62_a_clock_set_back_makes_a_feed_due_at_once(engine: Engine) -> None:
    """FAULTS 62: after the clock jumps back a day, a feed polled "tomorrow" with its next poll
    "tomorrow + 10 min" is due now, not in a day."""
    now = _now(engine)
    with transaction(engine) as session:
        ids = sync_feeds(session, [("a", "https://a/rss"), ("b", "https://b/rss")], now)
    tomorrow = now + timedelta(days=1)
    _set(
        engine,
        feeds,
        ids["a"],
        last_polled_at=tomorrow,
        next_poll_at=tomorrow + timedelta(minutes=10),
    )
    _set(engine, feeds, ids["b"], last_polled_at=now, next_poll_at=now + timedelta(minutes=10))
    with transaction(engine) as session:
        assert [f.name for f in claim_due_feeds(session, "one", LEASE, 10)] == ["a"]


def test_fault_61_concurrent_claims_get_disjoint_feeds(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite write transactions are serialised")
    now = _now(engine)
    with transaction(engine) as session:
        sync_feeds(session, [(f"f{i}", f"https://f{i}/rss") for i in range(5)], now)
    replica = make_engine(_url(engine))
    try:
        with transaction(engine) as first:
            mine = claim_due_feeds(first, "one", LEASE, 2)  # rows locked until commit
            with transaction(replica) as second:
                # Without SKIP LOCKED this would wait for `first`: fail instead of hanging.
                second.execute(text("SET LOCAL lock_timeout = '2s'"))
                theirs = claim_due_feeds(second, "two", LEASE, 10)
    finally:
        replica.dispose()
    assert len(mine) == 2 and len(theirs) == 3
    assert {f.id for f in mine}.isdisjoint(f.id for f in theirs)


def test_a_stop_gives_back_every_feed_it_claimed_in_one_statement(engine: Engine) -> None:
    now = _now(engine)
    with transaction(engine) as session:
        sync_feeds(session, [(f"f{i}", f"https://f{i}/rss") for i in range(4)], now)
    with transaction(engine) as session:
        mine = claim_due_feeds(session, "one", LEASE, 3)
        theirs = claim_due_feeds(session, "two", LEASE, 10)
    everything = [f.id for f in [*mine, *theirs]]
    with transaction(engine) as session:
        assert release_feeds(session, everything, "one") == 3  # only its own
        assert release_feeds(session, everything, "one") == 0
    with transaction(engine) as session:
        again = claim_due_feeds(session, "three", LEASE, 10)
    assert sorted(f.id for f in again) == sorted(f.id for f in mine)  # due as they were


# --- items and stories ----------------------------------------------------------------------------


def test_items_stories_and_conflicts(engine: Engine) -> None:
    now = _now(engine)
    with transaction(engine) as session:
        feed_id = sync_feeds(session, [("a", "https://a/rss")], now)["a"]
        story_id, created = story_for_hash(session, "h1", now)
        assert created
        assert story_for_hash(session, "h1", now) == (story_id, False)
        item = _item("guid-1", "h1", story_id, now)
        item_id = insert_item(session, feed_id, item)
        assert item_id is not None
    with transaction(engine) as session:
        assert story_for_hash(session, "h1", now) == (story_id, False)
        assert insert_item(session, feed_id, item) is None  # same (feed, identity)
        assert find_item(session, feed_id, "guid-1") == StoredItemRef(
            item_id, "h1", 1, story_id, now
        )
        assert find_item(session, feed_id, "guid-2") is None
        story2, _ = story_for_hash(session, "h2", now)
        changed = _item("guid-1", "h2", story2, now + timedelta(minutes=5), title="changed")
        update_item(session, item_id, changed, story2)
        long_identity = "https://example.org/?q=" + "x" * 5000
        long_id = insert_item(session, feed_id, _item(long_identity, "h3", story2, now))
    with read_session(engine) as session:
        assert find_item(session, feed_id, "guid-1") == StoredItemRef(item_id, "h2", 1, story2, now)
        row = session.execute(select(items).where(items.c.id == item_id)).one()
        assert (row.title, row.fetched_at, row.updated_at) == ("changed", now, changed.fetched_at)
        found = find_item(session, feed_id, long_identity)
        assert found is not None and found.id == long_id


def test_fault_09_control_characters_are_stripped_before_the_database(engine: Engine) -> None:
    now = _now(engine)
    dirty = "Taiwan\x00 red\x07 line\x1b\ud800 \t\n\rok"
    item_id, _ = _store_item(engine, "a", "guid\x00", "h", now, title=dirty, text=dirty)
    with read_session(engine) as session:
        row = session.execute(select(items).where(items.c.id == item_id)).one()
        assert find_item(session, row.feed_id, "guid\x00") is not None
    assert row.title == row.text == "Taiwan red line \t\n\rok"
    assert row.identity == "guid"


# --- the outbox -----------------------------------------------------------------------------------


def test_outbox_enqueue_claim_and_send(engine: Engine) -> None:
    now = _now(engine)
    item_a, story = _store_item(engine, "a", "g1", "same", now)
    item_b, story_b = _store_item(engine, "b", "g2", "same", now)  # the same story elsewhere
    _store_item(engine, "c", "g3", "same", now)
    assert story_b == story
    hits = '[{"term": "taiwan", "field": "title", "start": 0, "end": 6}]'
    with transaction(engine) as session:
        assert insert_match(session, story, item_a, "taiwan", hits, now)
        assert not insert_match(session, story, item_b, "taiwan", "[]", now)
        assert watchlists_matched(session, story) == {"taiwan"}
        assert enqueue_alert(session, story, item_a, "taiwan", "console", "", now)
        assert not enqueue_alert(session, story, item_b, "taiwan", "console", "", now)
        assert enqueue_alert(session, story, item_a, "taiwan", "email", "", now)
        assert enqueue_alert(session, story, item_a, "taiwan", "email", "x@example.org", now)
    with transaction(engine) as session:
        assert alert_counts(session) == {"pending": 3, "sent": 0, "failed": 0}
        claimed = claim_due_alerts(session, "one", LEASE, 10, channels=["console"])
        assert claim_due_alerts(session, "two", LEASE, 10, channels=["console"]) == []
    [alert] = claimed
    assert (alert.channel, alert.recipient, alert.watchlist, alert.attempts) == (
        "console",
        "",
        "taiwan",
        0,
    )
    assert (alert.title, alert.feed_name, alert.hits, alert.other_feeds) == (
        "title g1",
        "a",
        hits,
        ("b", "c"),
    )
    assert alert.published_at == now and alert.language == "en"
    with transaction(engine) as session:
        assert not mark_alert_sent(session, alert.id, "two", now)
        assert mark_alert_sent(session, alert.id, "one", now)
        assert not mark_alert_sent(session, alert.id, "one", now)  # done already
        assert alert_counts(session) == {"pending": 2, "sent": 1, "failed": 0}
        assert len(claim_due_alerts(session, "two", LEASE, 10)) == 2  # the email ones


def test_retries_wait_until_due_and_give_ups_are_reported(engine: Engine) -> None:
    now = _now(engine)
    item_id, story = _store_item(engine, "a", "g1", "h1", now)
    with transaction(engine) as session:
        enqueue_alert(session, story, item_id, "w", "telegram", "42", now)
        [alert] = claim_due_alerts(session, "one", LEASE, 10)
        later = database_now(session) + timedelta(hours=1)
        assert mark_alert_retry(session, alert.id, "one", "HTTP 502", later)
    with transaction(engine) as session:
        assert claim_due_alerts(session, "one", LEASE, 10) == []  # not due yet
    _set(engine, alerts, alert.id, next_attempt_at=now)
    with transaction(engine) as session:
        [again] = claim_due_alerts(session, "one", LEASE, 10)
        assert again.attempts == 1
    # "one" dies; when its lease expires, "two" takes the alert and "one" can no longer mark it.
    _set(engine, alerts, alert.id, lease_until=now - timedelta(seconds=1))
    with transaction(engine) as session:
        assert [a.id for a in claim_due_alerts(session, "two", LEASE, 10)] == [alert.id]
        assert not mark_alert_failed(session, alert.id, "one", "late")
        assert mark_alert_failed(session, alert.id, "two", "Forbidden: bot was blocked")
    with read_session(engine) as session:
        assert alert_counts(session) == {"pending": 0, "sent": 0, "failed": 1}
        [failed] = unsent_alerts(session, "failed")
        [health] = feed_health(session)
    assert (failed.last_error, failed.attempts, failed.feed_name) == (
        "Forbidden: bot was blocked",
        2,
        "a",
    )
    assert (health.item_count, health.failed_alert_count) == (1, 1)


def test_alerts_given_up_are_retried_with_every_attempt_or_purged(engine: Engine) -> None:
    """`monitor alerts --retry` puts alerts given up back in the outbox, due now and with all
    their attempts ahead; `--purge` deletes them; pending alerts are left alone by both."""
    now = _now(engine)
    item_id, story = _store_item(engine, "a", "x", "h1", now)
    with transaction(engine) as session:
        for recipient in ("1", "2", "3"):
            enqueue_alert(session, story, item_id, "w", "telegram", recipient, now)
        claimed = claim_due_alerts(session, "one", LEASE, 2)
        for alert in claimed:
            assert mark_alert_failed(session, alert.id, "one", f"gave up on {alert.recipient}")
    first, second = (alert.id for alert in claimed)
    with read_session(engine) as session:
        [pending] = unsent_alerts(session, "pending")
        given_up = unsent_alerts(session, "failed")
    assert (pending.recipient, pending.attempts, pending.last_error) == ("3", 0, None)
    assert [(a.id, a.last_error, a.attempts) for a in given_up] == [
        (second, "gave up on 2", 1),
        (first, "gave up on 1", 1),
    ]
    later = now + timedelta(minutes=5)
    with transaction(engine) as session:
        assert retry_failed_alerts(session, later, ids=[first]) == 1
    with read_session(engine) as session:
        retried = unsent_alerts(session, "pending", ids=[first])
        assert alert_counts(session) == {"pending": 2, "sent": 0, "failed": 1}
    assert [(a.attempts, a.next_attempt_at, a.last_error) for a in retried] == [
        (0, later, "gave up on 1")
    ]
    with transaction(engine) as session:
        assert purge_failed_alerts(session) == 1
        assert purge_failed_alerts(session) == 0
        assert retry_failed_alerts(session, later) == 0
    with read_session(engine) as session:
        assert alert_counts(session) == {"pending": 2, "sent": 0, "failed": 0}
        assert [a.id for a in unsent_alerts(session, "pending", limit=1)] == [pending.id]


# --- backtest, retention, transactions ------------------------------------------------------------


def test_items_since_are_those_published_since_oldest_first(engine: Engine) -> None:
    """A backtest's window is by publication date: an archive item first seen today but published
    three days ago is out of a one-day window; an undated item counts by when it was first seen."""
    now = _now(engine)
    _store_item(engine, "a", "archive", "h0", now, published_at=now - timedelta(days=3))
    _store_item(engine, "a", "new2", "h2", now)
    _store_item(engine, "b", "new1", "h1", now, published_at=now - timedelta(hours=1))
    _store_item(engine, "b", "undated", "h3", now - timedelta(hours=2), published_at=None)
    with read_session(engine, streaming=True) as session:
        found = list(items_since(session, now - timedelta(days=1)))
    assert [(i.title, i.feed_name) for i in found] == [
        ("title undated", "b"),
        ("title new1", "b"),
        ("title new2", "a"),
    ]
    assert found[2].fetched_at == now and found[2].fetched_at.tzinfo is UTC


def test_prune_keeps_stories_with_alerts(engine: Engine) -> None:
    now = _now(engine)
    old = now - timedelta(days=100)
    alerted_item, alerted_story = _store_item(engine, "a", "alerted", "h1", old)
    quiet_item, quiet_story = _store_item(engine, "a", "quiet", "h2", old)
    recent_item, _ = _store_item(engine, "a", "recent", "h3", now)
    with transaction(engine) as session:
        insert_match(session, alerted_story, alerted_item, "w", "[]", old)
        enqueue_alert(session, alerted_story, alerted_item, "w", "console", "", old)
        insert_match(session, quiet_story, quiet_item, "v", "[]", old)
        # fingerprints (near-duplicate stories) go with their stories, and stay with the others
        for story in (alerted_story, quiet_story):
            add_fingerprint(session, story, "v1:1 2 3", (story * 10 + 1, story * 10 + 2), old)
    with transaction(engine) as session:
        assert prune(session, now - timedelta(days=90)) == 1
    with read_session(engine) as session:
        assert set(session.scalars(select(items.c.id))) == {alerted_item, recent_item}
        assert quiet_story not in set(session.scalars(select(stories.c.id)))
        assert list(session.scalars(select(matches.c.item_id))) == [alerted_item]
        assert _count(session, alerts) == 1
        assert set(session.scalars(select(story_hashes.c.story_id))) == {alerted_story}
        found = story_candidates(session, [], [(alerted_story * 10 + 2, 999)], since=old, limit=20)
        assert found.ranked == [[(alerted_story, 1)]]
        assert found.fingerprints == {alerted_story: "v1:1 2 3"}
        later = story_candidates(session, [], [(alerted_story * 10 + 2,)], since=now, limit=20)
        assert later.ranked == [[]]
    # past the window no copy joins a story: its hashes go, its fingerprint stays
    with transaction(engine) as session:
        assert forget_story_hashes(session, old + timedelta(seconds=1)) == 2
    with read_session(engine) as session:
        assert _count(session, story_hashes) == 0
        fingerprint = select(stories.c.fingerprint).where(stories.c.id == alerted_story)
        assert session.scalar(fingerprint) == "v1:1 2 3"


def test_transaction_rolls_back_and_translates_errors(engine: Engine) -> None:
    now = _now(engine)
    with pytest.raises(RuntimeError), transaction(engine) as session:
        sync_feeds(session, [("a", "https://a/rss")], now)
        raise RuntimeError("boom")
    with (
        pytest.raises(StoreError, match="database transaction failed"),
        transaction(engine) as session,
    ):
        session.execute(text("SELECT * FROM no_such_table"))
    with read_session(engine) as session:
        assert _count(session, feeds) == 0


# --- SQLite specifics -----------------------------------------------------------------------------


def test_fault_54_sqlite_wal_busy_timeout_and_a_waiting_second_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    engine, other = make_engine(url), make_engine(url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "cache_size")
            }
        # cache_size: negative is KiB, the page cache each pooled connection may hold
        assert pragma == {
            "journal_mode": "wal",
            "busy_timeout": 10_000,
            "foreign_keys": 1,
            "cache_size": -512,
        }

        now = datetime.now(UTC)
        locked, release = threading.Event(), threading.Event()
        begins, done = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def first_writer() -> None:
            with transaction(engine) as session:
                sync_feeds(session, [("first", "https://first/rss")], now)
                locked.set()
                release.wait(10)

        @event.listens_for(other, "before_cursor_execute")
        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement == "BEGIN IMMEDIATE":
                begins.set()

        def second_writer() -> None:
            try:
                with transaction(other) as session:
                    sync_feeds(session, [("first", "u"), ("second", "u")], now)
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        holder = threading.Thread(target=first_writer)
        holder.start()
        assert locked.wait(5)
        with read_session(engine) as session:  # WAL: a reader is not blocked by the writer
            assert _count(session, feeds) == 0
        waiter = threading.Thread(target=second_writer)
        waiter.start()
        assert begins.wait(5)
        assert not done.wait(0.3), f"second writer did not wait: {errors}"
        release.set()
        holder.join(5)
        waiter.join(5)
        assert errors == []
        with read_session(engine) as session:
            assert set(session.scalars(select(feeds.c.name))) == {"first", "second"}
    finally:
        release.set()
        engine.dispose()
        other.dispose()


def test_fault_44_sqlite_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(StoreError, match=re.escape(f"create {missing}, or set database.url")):
        make_engine(f"sqlite:///{missing / 'monitor.db'}")
    assert not missing.exists()


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 6, 4, 10, 23, 278235, tzinfo=UTC),
        datetime(2026, 12, 6, 4, 10, 23, tzinfo=UTC),  # no microseconds: still six digits
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 12, 6, 9, 40, 23, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
)
def test_sqlite_stores_a_time_as_sqlalchemy_writes_it_in_utc(moment: datetime) -> None:
    """Times are compared as text on SQLite (leases, due times): the fast conversion writes what
    SQLAlchemy's own DATETIME does for the same moment in UTC, and refuses a naive time."""
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None and theirs is not None
    assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None))
    assert ours(None) is None
    with pytest.raises(ValueError, match="naive"):
        ours(moment.replace(tzinfo=None))
