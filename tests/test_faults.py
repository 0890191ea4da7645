"""Faults of the plan (docs/faults.md) that span the pipeline, the store and the outbox, on real
parts: feeds on loopback, the database (SQLite, and PostgreSQL when MONITOR_TEST_DATABASE_URL is
set), the outbox and its sender; the Bot API double where Telegram's answer is the point."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from botapi import TOKEN, BotAPIDouble
from httpserver import LoopbackServer
from servicekit import (
    ALICE,
    DESK,
    RecordingNotifier,
    feed,
    make_due,
    outbox,
    poll_and_deliver,
    running,
    say,
    sent_to,
    serve,
    write_config,
)
from sqlalchemy import Engine, event, text
from test_pipeline import (
    REFERENCE,
    WEATHER,
    Feed,
    rows,
    rss,
    service_for,
    settings_for,
)

from monitor import pipeline
from monitor.config import Settings, parse_config
from monitor.core.match import Matcher, WatchlistRule
from monitor.errors import ConfigError
from monitor.model import Article
from monitor.store import db
from monitor.store._shared import database_now
from monitor.store.tables import alerts, feeds, items


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


# ---- 12: no guid, no link -------------------------------------------------------------------------


def _anonymous(*entries: tuple[str, str]) -> bytes:
    """RSS items with a title, a description and today's date, and neither guid nor link."""
    published = format_datetime(datetime.now(UTC), usegmt=True)
    body = "".join(
        f"<item><title>{t}</title><description>{d}</description><pubDate>{published}</pubDate>"
        "</item>"
        for t, d in entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{body}</channel></rss>"
    ).encode()


def test_fault_12_items_without_guid_or_link_keep_their_key_across_polls(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    reference, weather = REFERENCE[1:], WEATHER[1:]
    feed_ = Feed(server, "/a.xml", _anonymous(reference, weather))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed_.url}'}}", tmp_path)
    (first,) = poll_and_deliver(settings, {"console": notifier})
    assert (first.status, first.new_items) == ("ok", 2)
    assert len(notifier.sent) == 3  # russia and taiwan-red-line for one, sunny for the other
    keys = {row["identity"] for row in rows(settings, items)}

    # Polled again in another order (a new body, so parsed again), then with a new item on top:
    # only the new item is new; no row and no alert for the others.
    feed_.body = _anonymous(weather, reference)
    (again,) = poll_and_deliver(settings, {"console": notifier})
    assert (again.status, again.new_items, again.updated_items) == ("ok", 0, 0)
    feed_.body = _anonymous(("Sunny in Oslo", "Sunny all week in Oslo"), weather, reference)
    (third,) = poll_and_deliver(settings, {"console": notifier})
    assert (third.status, third.new_items, third.updated_items) == ("ok", 1, 0)
    stored = rows(settings, items)
    assert len(stored) == 3 and keys < {row["identity"] for row in stored}
    assert sorted(a.watchlist for a in notifier.sent) == [
        "russia",
        "sunny",
        "sunny",
        "taiwan-red-line",
    ]


# ---- 42: catastrophic regular expressions ---------------------------------------------------------


def test_fault_42_a_regular_expression_is_refused_and_matching_stays_linear(
    tmp_path: Path,
) -> None:
    # The query language has no regular expressions: `(a|aa)+$` is refused at load, naming the
    # watchlist, so no pattern of a subscriber's or an operator's reaches a backtracking engine.
    config = tmp_path / "config.yaml"
    config.write_text(
        "watchlists:\n  bomb: {query: '(a|aa)+$'}\nfeeds: []\n",
        "utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(config.read_text("utf-8"), str(config))
    (problem,) = caught.value.problems
    assert problem.key == "watchlists.bomb.query" and "has no letters or digits" in problem.message

    # What the language does allow, against the text that breaks backtracking engines (the
    # regex took 14 s on 26 characters): prefixes, phrases and NEAR over runs of a's. Matching
    # is a scan of the text, so the CPU it takes is bounded by the text's length, not its shape.
    matcher = Matcher.compile(
        [
            WatchlistRule("prefix", "aa*"),
            WatchlistRule("phrase", '"aa aa aa aa aa aa aa aa aa aa aa aa aa b"'),
            WatchlistRule("near", "aa NEAR/50 b"),
            WatchlistRule("nested", "(aa OR aaa) AND (aa OR aaaa) AND NOT b"),
        ]
    )
    runs = [
        Article(title="a" * 26, body="a" * 200_000),
        Article(title="aa " * 13, body="aa " * 70_000 + "c"),
        Article(title="aaaa" * 7, body=" ".join("a" * n for n in range(1, 700))),
        Article(title="x", body="aa " * 70_000 + "b"),
    ]
    started = time.process_time()
    found = [{m.watchlist for m in matcher.match(article)} for article in runs]
    cpu = time.process_time() - started
    assert found == [
        {"prefix"},
        {"prefix", "nested"},
        {"prefix", "nested"},
        {"prefix", "phrase", "near"},
    ]
    assert cpu < 5, f"{cpu:.2f} s of CPU for 640 kB of adversarial text"


# ---- 55: PostgreSQL restarted mid-run -------------------------------------------------------------


class _Backends:
    """The PostgreSQL backends of a service's connections (by their application_name), and a way
    to end them as a restart of the server would (`pg_terminate_backend`, waiting until each has
    ended, as a restart does before the server is back), from a connection of the test's own;
    `kill_on` ends them just before the service runs a statement starting so."""

    def __init__(self, service: Any, url: str) -> None:
        self.name = f"monitor {service.owner}"[:63]
        self.admin = db.make_engine(url)
        self.kill_on: str | None = None
        self.killed = 0

        @event.listens_for(service.engine, "before_cursor_execute")
        def mid_statement(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if self.kill_on is not None and statement.lstrip().startswith(self.kill_on):
                self.kill_on = None
                self.terminate()

    def terminate(self) -> None:
        with self.admin.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity"
                    " WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": self.name},
            ).scalar_one()
            connection.commit()
        self.killed += int(ended)

    def close(self) -> None:
        self.admin.dispose()


def test_fault_55_postgresql_connections_ended_mid_run_lose_and_repeat_nothing(
    postgresql_url: str,
    server: LoopbackServer,
    notifier: RecordingNotifier,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every connection of the service ended by the server — mid-transaction while a poll stores
    its items, and idle in the pool between ticks — as a PostgreSQL restart ends them: the poll
    that was cut stores nothing and says so, the next one stores everything, the pool reconnects,
    and each alert is delivered once."""
    feed_ = Feed(server, "/a.xml", rss(REFERENCE))
    settings = settings_for(postgresql_url, f"- {{name: a, url: '{feed_.url}'}}", tmp_path)

    async def go() -> None:
        service = service_for(settings, notifier)
        backends = _Backends(service, postgresql_url)
        try:
            backends.terminate()  # the pool's connections from `prepare`, idle
            assert backends.killed >= 1
            backends.kill_on = "INSERT INTO items"
            with caplog.at_level(logging.ERROR, logger="monitor.pipeline"):
                (cut,) = await service.poll_all(force=True)
            assert backends.killed >= 2 and backends.kill_on is None
            assert cut.status == "error" and "database" in (cut.error or "")
            assert "poll.store_failed feed=a" in caplog.text
            assert await service.deliver_tick() is not None
            assert notifier.sent == []

            backends.terminate()  # between ticks, as if the server had restarted again
            (resumed,) = await service.poll_all(force=True)
            assert (resumed.status, resumed.new_items, resumed.alerts) == ("ok", 1, 2)
            backends.terminate()
            stats = await service.deliver_tick()
            assert stats.sent == 2

            feed_.body = rss(REFERENCE, WEATHER)
            backends.terminate()
            (later,) = await service.poll_all(force=True)
            assert (later.new_items, later.alerts) == (1, 1)
            await service.deliver_tick()
        finally:
            backends.close()
            await service.close()

    asyncio.run(go())
    assert sorted(a.watchlist for a in notifier.sent) == ["russia", "sunny", "taiwan-red-line"]
    assert [r["status"] for r in rows(settings, alerts)] == ["sent"] * 3
    assert len(rows(settings, items)) == 2


# ---- 56: disk full, read-only database ------------------------------------------------------------


_DISK_FULL_TRIGGER = """
CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
END $$;
CREATE TRIGGER disk_full BEFORE INSERT ON items FOR EACH STATEMENT EXECUTE FUNCTION disk_full();
"""


class _FullDisk:
    """While full, no item can be written: on SQLite the file may not grow (`max_page_count` at
    its size: SQLITE_FULL, "database or disk is full", what a full disk gives); on PostgreSQL
    the server refuses the insert with SQLSTATE 53100 disk_full, as when it cannot extend a table
    file (a trigger in the test's own schema raises it)."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.full = False
        self.url = url
        self.sqlite = engine.dialect.name == "sqlite"
        if self.sqlite:

            @event.listens_for(engine, "begin")
            def begin(connection: Any) -> None:
                pages = connection.exec_driver_sql("PRAGMA page_count").scalar()
                limit = pages if self.full else 4_294_967_294
                connection.exec_driver_sql(f"PRAGMA max_page_count = {limit}")

    def fill(self) -> None:
        self.full = True
        if not self.sqlite:
            self._execute(_DISK_FULL_TRIGGER)

    def free(self) -> None:
        self.full = False
        if not self.sqlite:
            self._execute("DROP TRIGGER disk_full ON items; DROP FUNCTION disk_full();")

    def _execute(self, sql: str) -> None:
        engine = db.make_engine(self.url)
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql(sql)
        finally:
            engine.dispose()


def test_fault_56_a_full_disk_during_insert_stores_and_alerts_nothing_until_it_has_room(
    database_url: str,
    server: LoopbackServer,
    notifier: RecordingNotifier,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    long_body = " ".join(["Taiwan is the first red line, the minister said."] * 400)
    feed_ = Feed(server, "/a.xml", rss((REFERENCE[0], REFERENCE[1], long_body), WEATHER))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed_.url}'}}", tmp_path)

    async def go() -> None:
        service = service_for(settings, notifier)
        disk = _FullDisk(service.engine, settings.database.url)
        try:
            disk.fill()
            with caplog.at_level(logging.ERROR, logger="monitor.pipeline"):
                (full,) = await service.poll_all(force=True)
            assert full.status == "error"
            assert any(
                reason in (full.error or "")
                for reason in ("database or disk is full", "No space left on device")
            ), full.error
            assert "poll.store_failed feed=a" in caplog.text
            await service.deliver_tick()
            assert notifier.sent == []

            disk.free()  # room again: the feed's next poll stores what the full one did not
            (stored,) = await service.poll_all(force=True)
            assert (stored.status, stored.new_items, stored.alerts) == ("ok", 2, 3)
            await service.deliver_tick()
        finally:
            await service.close()

    asyncio.run(go())
    assert sorted(a.watchlist for a in notifier.sent) == ["russia", "sunny", "taiwan-red-line"]
    assert len(rows(settings, items)) == 2
    assert [r["status"] for r in rows(settings, alerts)] == ["sent"] * 3


def test_fault_56_a_poll_that_could_not_be_stored_is_retried_by_the_daemon(
    database_url: str,
    server: LoopbackServer,
    notifier: RecordingNotifier,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`monitor run`'s ticks: the feed whose items could not be written shows the database's
    error in its state, is not counted as failing, and is polled again on its own soon (not after
    its hour), storing and alerting then."""
    monkeypatch.setattr(pipeline, "STORE_RETRY", timedelta(seconds=1))
    long_body = " ".join(["Sunny all week, the forecast said."] * 400)
    feed_ = Feed(server, "/a.xml", rss((WEATHER[0], WEATHER[1], long_body)))
    settings = settings_for(
        database_url, f"- {{name: a, url: '{feed_.url}', interval: 1h}}", tmp_path
    )

    async def go() -> None:
        service = service_for(settings, notifier)
        disk = _FullDisk(service.engine, settings.database.url)
        try:
            disk.fill()
            await service.poll_tick()
            await _settled(service)
            assert len(feed_.requests) == 1
            disk.free()
            state = _feed_row(settings)
            assert state["last_status"] == "error" and "database" in state["last_error"]
            assert state["consecutive_failures"] == 0  # the feed is not to blame
            deadline = time.monotonic() + 60
            while not notifier.sent and time.monotonic() < deadline:
                await service.poll_tick()
                await _settled(service)
                await service.deliver_tick()
                await asyncio.sleep(0.1)
        finally:
            await service.close()

    asyncio.run(go())
    assert [a.watchlist for a in notifier.sent] == ["sunny"]
    assert len(feed_.requests) == 2
    assert _feed_row(settings)["last_status"] == "ok"


async def _settled(service: Any) -> None:
    while service.in_flight:
        await asyncio.gather(*service.in_flight.values(), return_exceptions=True)


def _feed_row(settings: Settings) -> dict[str, Any]:
    (row,) = rows(settings, feeds)
    return dict(row)


# ---- 78: one message per chat ---------------------------------------------------------------------


def test_fault_78_a_configured_chat_that_also_subscribed_gets_one_message_per_alert(
    database_url: str, tmp_path: Path
) -> None:
    """The desk's group is the `desk` channel of the watchlist, and someone there also subscribed
    the group to it with /subscribe: each alert reaches the group once. (A user taken off
    `telegram.allow` gets nothing afterwards, held alerts included: test_subscriber_access.py,
    test_a_user_removed_from_the_allowlist_gets_nothing_after_the_restart_held_included.)"""
    with BotAPIDouble() as double, LoopbackServer() as feeds_server:
        serve(feeds_server, feed("first"))
        settings = write_config(tmp_path, database_url, double, feeds_server)

        async def go() -> None:
            async with running(settings) as service:
                double.set_member(DESK, ALICE, "administrator")
                reply = await say(double, DESK, "/subscribe taiwan-red-line", user_id=ALICE)
                assert reply.startswith("Subscribed to taiwan-red-line")
                mark = len(double.calls)
                await service.poll_all()
                await service.deliver_tick()
                serve(feeds_server, feed("first", "second"))
                await service.poll_all()
                await service.deliver_tick()
                sent = sent_to(double, DESK, mark)
                # (Both bodies say "the first red line": the second item is told by its title.)
                assert ["second" in p["text"] for p in sent] == [False, True]

        asyncio.run(go())
        assert all(row.status in ("sent", "dropped") for row in outbox(settings))


# ---- 21: moved for good ---------------------------------------------------------------------------


def test_fault_21_a_feed_moved_for_good_is_followed_and_its_new_url_reported(
    database_url: str,
    server: LoopbackServer,
    notifier: RecordingNotifier,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 301 to a new URL is followed (each hop checked against the address policy, case 33) and
    the new URL is named in the log for the operator, who owns the config; a temporary 302 is
    followed silently."""
    Feed(server, "/new.xml", rss(WEATHER))
    moved = server.url("/redirect-to?status=301&url=/new.xml")
    elsewhere = server.url("/redirect-to?status=302&url=/new.xml")
    settings = settings_for(
        database_url, f"- {{name: a, url: '{moved}'}}\n- {{name: b, url: '{elsewhere}'}}", tmp_path
    )
    with caplog.at_level(logging.WARNING, logger="monitor.pipeline"):
        results = poll_and_deliver(settings, {"console": notifier})
    assert sorted((r.feed, r.status) for r in results) == [("a", "ok"), ("b", "ok")]
    assert [a.watchlist for a in notifier.sent] == ["sunny"]  # one story, one alert
    moves = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feed.moved")]
    assert moves == [
        f"feed.moved feed=a url={server.url('/new.xml')} "
        "action=set the feed's url to it in the config"
    ]


# ---- 50: Telegram accepted, then the answer timed out -------------------------------------------


def test_fault_50_a_message_accepted_before_the_timeout_is_sent_at_most_once_more(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Telegram takes the message but its answer never reaches the service within its timeout:
    the service cannot know, logs the attempt as ambiguous, retries, and the chat has the alert
    at most twice — never more, however many delivery rounds follow."""
    from monitor.daemon import Service
    from monitor.notify.telegram import TelegramNotifier

    with BotAPIDouble() as double, LoopbackServer() as feeds_server:
        serve(feeds_server, feed("first"))
        settings = write_config(tmp_path, database_url, double, feeds_server)
        double.fail(DESK, "late")

        async def go() -> None:
            telegram = TelegramNotifier(TOKEN, double.api_url, timeout=0.5)
            service = Service.build(settings, notifiers={"desk": telegram})
            service.prepare(alone=True)
            try:
                await service.poll_all()
                with caplog.at_level(logging.WARNING, logger="monitor"):
                    first = await service.deliver_tick()
                assert (first.sent, first.retried) == (0, 1)
                double.release()
                for _ in range(3):
                    make_due(settings)
                    await service.deliver_tick()
            finally:
                await service.close()

        asyncio.run(go())
        copies = [m.plain for m in double.messages_to(DESK)]
        assert len(copies) == 2 and copies[0] == copies[1] and "first" in copies[0]
        assert "ambiguous=true" in caplog.text
        (row,) = outbox(settings)
        assert row.status == "sent"


def test_fault_50_a_second_send_without_an_answer_is_taken_as_delivered_and_no_third_goes(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Telegram takes every message but never answers in time: the first send may have arrived,
    so the alert goes once more; when that one goes unanswered too, it is taken as delivered —
    logged, counted, recorded — and no third copy is sent, however many rounds follow."""
    from monitor.daemon import Service
    from monitor.notify.telegram import TelegramNotifier

    with BotAPIDouble() as double, LoopbackServer() as feeds_server:
        serve(feeds_server, feed("first"))
        settings = write_config(tmp_path, database_url, double, feeds_server)
        double.fail(DESK, "late", times=None)
        rounds = []
        unconfirmed: list[float | None] = []

        async def go() -> None:
            telegram = TelegramNotifier(TOKEN, double.api_url, timeout=0.5)
            service = Service.build(settings, notifiers={"desk": telegram})
            service.prepare(alone=True)
            try:
                await service.poll_all()
                with caplog.at_level(logging.WARNING, logger="monitor"):
                    rounds.append(await service.deliver_tick())
                    for _ in range(3):
                        make_due(settings)
                        rounds.append(await service.deliver_tick())
                unconfirmed.append(
                    service.metrics.registry.get_sample_value(
                        "monitor_deliveries_total", {"outcome": "unconfirmed"}
                    )
                )
            finally:
                double.release()
                await service.close()

        asyncio.run(go())
        copies = [m.plain for m in double.messages_to(DESK)]
    assert len(copies) == 2 and copies[0] == copies[1] and "first" in copies[0]
    assert [(r.sent, r.retried, r.unconfirmed) for r in rounds] == [
        (0, 1, 0),  # the first copy: no answer, sent again
        (0, 0, 1),  # the second: no answer again, taken as delivered
        (0, 0, 0),
        (0, 0, 0),
    ]
    assert unconfirmed == [1.0]
    (line,) = [r.getMessage() for r in caplog.records if "alert.unconfirmed" in r.getMessage()]
    assert "sends=2 action=taken as delivered, not sent again" in line
    (row,) = outbox(settings)
    assert (row.status, row.unconfirmed_sends) == ("sent", 2)


# ---- 54: SQLite locked past the busy timeout ----------------------------------------------------


def test_fault_54_a_write_lock_held_past_the_busy_timeout_loses_no_item(
    tmp_path: Path,
    server: LoopbackServer,
    notifier: RecordingNotifier,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process holds SQLite's write lock longer than the busy timeout while a poll wants
    to store: the poll gives up after the timeout (bounded), says so and stores nothing; the next
    poll stores the items, and each alerts once."""
    monkeypatch.setattr(db, "BUSY_TIMEOUT_SECONDS", 0.5)
    feed_ = Feed(server, "/a.xml", rss(REFERENCE, WEATHER))
    database = tmp_path / "monitor.db"
    settings = settings_for(f"sqlite:///{database}", f"- {{name: a, url: '{feed_.url}'}}", tmp_path)

    async def go() -> None:
        service = service_for(settings, notifier)
        try:
            # The other writer: a plain sqlite3 connection in this test, BEGIN IMMEDIATE held.
            import sqlite3

            other = sqlite3.connect(database, isolation_level=None)
            try:
                (claimed,) = await asyncio.to_thread(service._claim, 10, everything=True)
                other.execute("BEGIN IMMEDIATE")
                with caplog.at_level(logging.ERROR, logger="monitor.pipeline"):
                    locked = await service.poller.poll(claimed, service.feeds["a"])
                other.execute("ROLLBACK")
            finally:
                other.close()
            assert locked.status == "error" and "database is locked" in (locked.error or "")
            assert "poll.store_failed feed=a" in caplog.text
            assert rows(settings, items) == []
            # The lock outlasted the poll, so its failure could not be recorded either: the feed
            # stays leased until the lease runs out (by the database's clock), then is polled.
            assert "poll.record_failed feed=a" in caplog.text
            with db.transaction(service.engine) as session:
                session.execute(feeds.update().values(lease_until=database_now(session)))
            (stored,) = await service.poll_all(force=True)
            assert (stored.status, stored.new_items) == ("ok", 2)
            await service.deliver_tick()
        finally:
            await service.close()

    asyncio.run(go())
    assert sorted(a.watchlist for a in notifier.sent) == ["russia", "sunny", "taiwan-red-line"]


# ---- 62: the clock a day ahead, then set right --------------------------------------------------


def test_fault_62_what_was_written_while_the_clock_ran_a_day_ahead_is_not_held_a_day(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """A poll made while the service's clock ran a day ahead stores and enqueues its alert with
    tomorrow's times; once the clock is right again the alert goes at the next delivery (not in a
    day), the feed is polled again at once (not after its interval from "tomorrow"), and nothing
    already stored alerts again."""
    from monitor.daemon import Service

    # Published an hour before the time of the clock that ran ahead: news to it.
    guid, title, description = WEATHER
    published = format_datetime(datetime.now(UTC) + timedelta(hours=23), usegmt=True)
    feed_ = Feed(
        server,
        "/a.xml",
        (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
            f"<item><guid>{guid}</guid><title>{title}</title><description>{description}"
            f"</description><pubDate>{published}</pubDate></item></channel></rss>"
        ).encode(),
    )
    settings = settings_for(database_url, f"- {{name: a, url: '{feed_.url}'}}", tmp_path)

    async def with_clock(ahead: timedelta, *, deliver: bool) -> Any:
        service = Service.build(
            settings,
            notifiers={"console": notifier},
            clock=lambda: datetime.now(UTC) + ahead,
        )
        service.prepare(alone=True)
        try:
            if not deliver:
                return await service.poll_all()
            states = await asyncio.to_thread(service._claim, 10, everything=False)
            results = [await service.poller.poll(state, service.feeds["a"]) for state in states]
            return results, await service.deliver_tick()
        finally:
            await service.close()

    (ahead,) = asyncio.run(with_clock(timedelta(days=1), deliver=False))
    assert (ahead.status, ahead.alerts) == ("ok", 1)
    feed_.body = rss(WEATHER, REFERENCE)
    results, stats = asyncio.run(with_clock(timedelta(0), deliver=True))
    assert [(r.status, r.new_items) for r in results] == [("ok", 1)]  # due at once
    assert stats.sent == 3
    assert sorted(a.watchlist for a in notifier.sent) == ["russia", "sunny", "taiwan-red-line"]


# ---- 51: Telegram down for a while ---------------------------------------------------------------


def test_fault_51_while_telegram_is_down_alerts_wait_in_the_outbox_and_polling_goes_on(
    database_url: str, tmp_path: Path
) -> None:
    """Every sendMessage answered 502 while three polls find news: each poll stores its item
    and enqueues its alert as usual, the alerts wait in the outbox (retried, not given up), and
    once Telegram is back every alert arrives, each once."""
    with BotAPIDouble() as double, LoopbackServer() as feeds_server:
        settings = write_config(tmp_path, database_url, double, feeds_server)
        double.fail(DESK, "server_error", times=None)

        async def go() -> None:
            async with running(settings, bot=False) as service:
                titles: list[str] = []
                for title in ("alpha", "bravo", "charlie"):
                    titles.append(title)
                    serve(feeds_server, feed(*titles))
                    (result,) = await service.poll_all()
                    assert (result.status, result.new_items, result.alerts) == ("ok", 1, 1)
                    make_due(settings)
                    stats = await service.deliver_tick()
                    assert stats.sent == 0 and stats.failed == 0
                assert [row.status for row in outbox(settings)] == ["pending"] * 3
                assert all(row.attempts >= 1 for row in outbox(settings))

                double.clear_faults()  # back
                sent = 0
                for _ in range(10):
                    make_due(settings)
                    sent += (await service.deliver_tick()).sent
                    if sent == 3:
                        break
                assert sent == 3

        asyncio.run(go())
        texts = [m.plain for m in double.messages_to(DESK)]
        assert [sum(title in t for t in texts) for title in ("alpha", "bravo", "charlie")] == [
            1,
            1,
            1,
        ]
        assert [row.status for row in outbox(settings)] == ["sent"] * 3
