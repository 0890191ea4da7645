"""The daemon end to end on real parts: feeds served on loopback, a real database (SQLite, and
PostgreSQL when MONITOR_TEST_DATABASE_URL is set), the outbox and its sender. Only the channel is an
in-memory fake here (the console channel is tested as a real process below)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import pytest
from aiohttp import web
from httpserver import LoopbackServer
from servicekit import RecordingNotifier, poll_and_deliver
from sqlalchemy import select, text
from virtualtime import VirtualTime

from monitor import pipeline
from monitor.config import Settings, parse_config
from monitor.daemon import AlreadyRunningError, Service, run_forever, sqlite_lock
from monitor.daemon import service as service_module
from monitor.daemon.health import start_health_server
from monitor.errors import DeliveryError
from monitor.store import db
from monitor.store._shared import database_now
from monitor.store.alerts import claim_due_alerts
from monitor.store.tables import alerts, feeds, items, matches, stories, story_hashes

ROOT = Path(__file__).resolve().parents[1]


# An hour before the tests start: news, not backlog (older items do not alert, `alert_max_age`).
PUBLISHED = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def rss(*entries: tuple[str, str, str]) -> bytes:
    """A small RSS feed of (guid, title, description) items, published at PUBLISHED."""
    body = "".join(
        f"<item><guid isPermaLink='false'>{g}</guid><title>{t}</title>"
        f"<link>https://example.org/{g}</link><description>{d}</description>"
        f"<pubDate>{format_datetime(PUBLISHED)}</pubDate></item>"
        for g, t, d in entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{body}</channel></rss>"
    ).encode()


REFERENCE = ("ref-1", "وزير الخارجية الصيني يتوجه إلى روسيا", "قضية تايوان هي «أول خط أحمر»")
WEATHER = ("wx-1", "Weather", "Sunny all week")


class Feed:
    """A feed served by the loopback server with ETag / 304 support; its body can change."""

    def __init__(self, server: LoopbackServer, path: str, body: bytes, status: int = 200) -> None:
        self.body = body
        self.status = status
        self.headers: dict[str, str] = {}
        self.requests: list[dict[str, str]] = []
        self.url = server.url(path)
        server.route(path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        if self.status != 200:
            return web.Response(status=self.status, headers=self.headers)
        etag = f'"{hash(self.body) & 0xFFFFFFFF:x}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=self.body, headers={"ETag": etag, "Content-Type": "application/rss+xml"}
        )


def settings_for(
    database_url: str, feeds_yaml: str, tmp_path: Path, listen: str = "null"
) -> Settings:
    text = textwrap.dedent(
        f"""
        database: {{url: "{database_url}"}}
        fetch: {{allow_private: true}}
        service: {{listen: {listen}}}
        entities:
          taiwan: {{aliases: ["Taiwan", "تايوان"]}}
          red-line: {{aliases: ["red line", "خط أحمر"]}}
        watchlists:
          taiwan-red-line: {{query: "@taiwan AND @red-line"}}
          russia: {{query: "روسيا OR Russia"}}
          sunny: {{query: "sunny"}}
        feeds:
        """
    )
    config = tmp_path / "config.yaml"
    config.write_text(text + textwrap.indent(feeds_yaml.strip(), "  ") + "\n", "utf-8")
    return parse_config(config.read_text("utf-8"), str(config))


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


def service_for(settings: Settings, notifier: RecordingNotifier) -> Service:
    service = Service.build(settings, notifiers={"console": notifier})
    service.prepare(now=datetime.now(UTC), alone=True)
    return service


def rows(settings: Settings, table: Any) -> list[Any]:
    engine = db.make_engine(settings.database.url)
    try:
        with db.read_session(engine) as session:
            return list(session.execute(select(table)).mappings())
    finally:
        engine.dispose()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


def test_fault_22_first_poll_stores_and_alerts_then_304_does_nothing(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    feed = Feed(server, "/a.xml", rss(REFERENCE, WEATHER))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)

    (first,) = poll_and_deliver(settings, {"console": notifier})
    assert (first.status, first.new_items, first.alerts) == ("ok", 2, 3)
    assert sorted(a.watchlist for a in notifier.sent) == ["russia", "sunny", "taiwan-red-line"]
    alert = next(a for a in notifier.sent if a.watchlist == "taiwan-red-line")
    assert alert.title == REFERENCE[1] and alert.source == "a"
    assert [alert.body[h.start : h.end] for h in alert.hits] == ["تايوان", "خط أحمر"]
    assert len(rows(settings, items)) == 2

    (second,) = poll_and_deliver(settings, {"console": notifier})
    assert second.status == "not_modified"
    assert feed.requests[-1].get("If-None-Match")  # conditional GET
    assert len(notifier.sent) == 3
    assert len(rows(settings, items)) == 2
    assert [r["status"] for r in rows(settings, alerts)] == ["sent"] * 3


def test_changed_item_is_an_update_and_alerts_only_for_new_watchlists(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    feed = Feed(server, "/a.xml", rss(REFERENCE))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)
    poll_and_deliver(settings, {"console": notifier})
    assert sorted(a.watchlist for a in notifier.sent) == ["russia", "taiwan-red-line"]

    guid, title, body = REFERENCE
    feed.body = rss((guid, title, body + " Sunny weather in Taipei."))
    (result,) = poll_and_deliver(settings, {"console": notifier})
    assert (result.status, result.new_items, result.updated_items) == ("ok", 0, 1)
    assert sorted(a.watchlist for a in notifier.sent) == ["russia", "sunny", "taiwan-red-line"]
    (item,) = rows(settings, items)
    assert "Sunny weather" in item["text"]


def two_feeds(
    server: LoopbackServer,
    database_url: str,
    tmp_path: Path,
    first: tuple[str, str, str],
    second: tuple[str, str, str],
) -> tuple[Settings, Feed]:
    """Feeds `one` and `two`, each of one item: the settings, and feed `two` to change later."""
    one = Feed(server, "/one.xml", rss(first))
    two = Feed(server, "/two.xml", rss(second))
    feeds_yaml = f"- {{name: one, url: '{one.url}'}}\n- {{name: two, url: '{two.url}'}}"
    return settings_for(database_url, feeds_yaml, tmp_path), two


def assert_one_story_alerted_once(settings: Settings, notifier: RecordingNotifier) -> None:
    assert sorted(a.watchlist for a in notifier.sent) == ["russia", "taiwan-red-line"]
    assert len(rows(settings, stories)) == 1
    assert len(rows(settings, items)) == 2
    # the alert names the other feed that carries the story
    taiwan = next(a for a in notifier.sent if a.watchlist == "taiwan-red-line")
    assert {taiwan.source, *taiwan.other_sources} == {"one", "two"}


def test_same_article_in_two_feeds_is_one_story_and_one_alert(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    _, title, body = REFERENCE
    settings, _ = two_feeds(server, database_url, tmp_path, REFERENCE, ("other-guid", title, body))
    poll_and_deliver(settings, {"console": notifier})
    assert_one_story_alerted_once(settings, notifier)


def test_fault_77_a_copy_with_another_headline_and_a_footer_is_one_story_and_one_alert(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """SPEC §5 near-duplicates: the same wire story in another feed under another headline, with
    a caption and a footer added, joins the story and alerts no one again; another article on the
    same subject is another story."""
    lines = (ROOT / "examples" / "articles" / "aawsat-wang-yi-russia.txt").read_text("utf-8")
    body, other = "\n".join(lines.split("\n")[1:49]), "\n".join(lines.split("\n")[91:145])
    copy = "صورة أرشيفية لوزير الخارجية الصيني\n" + body + "\nجميع الحقوق محفوظة © 2023"
    settings, two = two_feeds(
        server,
        database_url,
        tmp_path,
        ("a-1", REFERENCE[1], xml_escape(body)),
        ("b-7", "وانغ يي إلى موسكو بعد سوليفان", xml_escape(copy)),
    )
    poll_and_deliver(settings, {"console": notifier})
    assert_one_story_alerted_once(settings, notifier)
    assert rows(settings, stories)[0]["fingerprint"].startswith("v1:")

    two.body = rss(("b-8", "الصين وروسيا", xml_escape(other)))
    poll_and_deliver(settings, {"console": notifier})
    assert len(rows(settings, stories)) == 2
    assert sorted(a.watchlist for a in notifier.sent) == ["russia", "russia", "taiwan-red-line"]


def test_the_hourly_prune_forgets_the_hashes_of_stories_past_the_copy_window(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    lines = (ROOT / "examples" / "articles" / "aawsat-wang-yi-russia.txt").read_text("utf-8")
    body = xml_escape("\n".join(lines.split("\n")[1:49]))
    feed = Feed(server, "/a.xml", rss(("a-1", REFERENCE[1], body)))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)
    poll_and_deliver(settings, {"console": notifier})
    indexed = len(rows(settings, story_hashes))
    assert indexed >= 8  # the fingerprint's smallest hashes, and any headline keys

    async def prune(age: timedelta) -> None:
        service = service_for(settings, notifier)
        try:
            with db.transaction(service.engine) as session:
                session.execute(story_hashes.update().values(created_at=datetime.now(UTC) - age))
            await service.prune_tick()
        finally:
            await service.close()

    asyncio.run(prune(timedelta(days=2)))
    assert len(rows(settings, story_hashes)) == indexed  # a copy may still come
    asyncio.run(prune(timedelta(days=4)))
    assert rows(settings, story_hashes) == []
    assert len(rows(settings, stories)) == 1 and len(rows(settings, items)) == 1


def test_fault_13_same_guid_repeated_in_a_feed_is_stored_once(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    feed = Feed(server, "/a.xml", rss(REFERENCE, REFERENCE, WEATHER))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)
    (result,) = poll_and_deliver(settings, {"console": notifier})
    assert result.new_items == 2
    assert len(notifier.sent) == 3


def test_fault_13_a_guid_that_changes_every_poll_adds_no_row(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    feed = Feed(server, "/a.xml", rss(WEATHER))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)
    for poll in range(1, 4):
        # The same item under a new guid each time, as some CMSs write them.
        feed.body = rss((f"wx-{poll}", WEATHER[1], WEATHER[2]))
        (result,) = poll_and_deliver(settings, {"console": notifier})
        assert result.new_items == (1 if poll == 1 else 0)
    assert len(rows(settings, items)) == 1
    assert len(notifier.sent) == 1
    # Said differently, it is news (an item of its own); items without any text are told apart
    # by their guid alone.
    feed.body = rss(("wx-4", WEATHER[1], "Rain all week"), ("e-1", "", ""), ("e-2", "", ""))
    (result,) = poll_and_deliver(settings, {"console": notifier})
    assert result.new_items == 3


def test_fault_69_two_huge_feeds_fail_alone_and_every_other_feed_is_parsed(
    database_url: str,
    server: LoopbackServer,
    notifier: RecordingNotifier,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two feeds of 60,000 tiny items (seconds of CPU each for the parser) against a parse budget
    of 1 s of CPU, and four normal feeds served only once both huge ones are on their way to the
    parser: the huge ones fail on their budget, every normal feed is parsed and stored."""
    monkeypatch.setattr(pipeline, "PARSE_CPU_SECONDS", 1.0)
    tiny = "".join(f"<item><title>t{i}</title></item>" for i in range(60_000))
    huge_body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{tiny}</channel></rss>'.encode()
    served: list[str] = []
    both_huge_served = threading.Event()

    def huge(path: str) -> None:
        async def handle(request: web.Request) -> web.Response:
            served.append(path)
            if len(served) == 2:
                both_huge_served.set()
            return web.Response(body=huge_body, content_type="application/rss+xml")

        server.route(path, handle)

    def normal(path: str, entry: tuple[str, str, str]) -> None:
        async def handle(request: web.Request) -> web.Response:
            await asyncio.to_thread(both_huge_served.wait, 30)
            return web.Response(body=rss(entry), content_type="application/rss+xml")

        server.route(path, handle)

    huge("/huge-1.xml")
    huge("/huge-2.xml")
    normals = {f"n{i}": (f"n{i}", f"Weather {i}", f"Sunny all week in town {i}") for i in range(4)}
    for name, entry in normals.items():
        normal(f"/{name}.xml", entry)
    feeds_yaml = "\n".join(
        f"- {{name: {name}, url: '{server.url(f'/{name}.xml')}'}}"
        for name in ["huge-1", "huge-2", *normals]
    )
    settings = settings_for(database_url, feeds_yaml, tmp_path)
    results = {r.feed: r for r in poll_and_deliver(settings, {"console": notifier})}
    assert {name: results[name].status for name in normals} == dict.fromkeys(normals, "ok")
    assert len(rows(settings, items)) == 4
    for name in ("huge-1", "huge-2"):
        assert results[name].status == "error"
        assert results[name].error == "over budget: parsing took more than 1 s of CPU time"


def test_fault_24_a_feed_answering_404_for_three_days_is_gone_polled_daily_and_reported(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    port = free_port()
    feed = Feed(server, "/a.xml", b"", status=404)
    settings = settings_for(
        database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path, listen=f"'127.0.0.1:{port}'"
    )
    start, day = datetime.now(UTC), timedelta(days=1)

    async def poll_at(moment: datetime) -> tuple[Any, bytes]:
        """A poll of every feed with the clock at `moment`, and /metrics after it."""
        service = Service.build(settings, notifiers={"console": notifier}, clock=lambda: moment)
        service.prepare(now=moment, alone=True)
        runner = await start_health_server(service, f"127.0.0.1:{port}")
        try:
            (result,) = await service.poll_all(force=True)
            metrics = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
            )
            return result, metrics
        finally:
            await runner.cleanup()
            await service.close()

    polls = [asyncio.run(poll_at(start + n * day)) for n in range(4)]
    assert [result.status for result, _ in polls] == ["error", "error", "error", "gone"]
    gone, metrics = polls[-1]
    assert gone.error == f"HTTP 404 Not Found since {start:%Y-%m-%d %H:%M} UTC"
    assert b"\nmonitor_feeds_gone 1.0\n" in metrics
    assert b"\nmonitor_feeds_gone 0.0\n" in polls[-2][1]
    (row,) = rows(settings, feeds)
    assert row["next_poll_at"] == start + 4 * day  # daily from now on, whatever the back-off
    listing = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(tmp_path / "config.yaml"), "feeds"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )
    lines = listing.stdout.splitlines()
    (at,) = [n for n, line in enumerate(lines) if line.startswith("a ")]
    assert lines[at].split()[1] == "gone"
    assert lines[at + 1].startswith("  ") and "HTTP 404 Not Found since" in lines[at + 1]

    feed.status, feed.body = 200, rss(WEATHER)  # back
    back, metrics = asyncio.run(poll_at(start + 5 * day))
    assert back.status == "ok"
    assert b"\nmonitor_feeds_gone 0.0\n" in metrics
    (row,) = rows(settings, feeds)
    assert (row["missing_since"], row["consecutive_failures"]) == (None, 0)


def test_fault_23_retry_after_sets_the_next_poll_and_is_not_a_failure(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    feed = Feed(server, "/a.xml", b"", status=429)
    feed.headers = {"Retry-After": "120"}
    settings = settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)
    before = datetime.now(UTC)
    (result,) = poll_and_deliver(settings, {"console": notifier})
    assert result.status == "retry_later"
    (row,) = rows(settings, feeds)
    assert row["consecutive_failures"] == 0
    assert row["next_poll_at"] >= before + timedelta(seconds=120)


def test_fault_06_server_error_backs_off_and_a_broken_body_keeps_stored_items(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    feed = Feed(server, "/a.xml", rss(REFERENCE))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)
    poll_and_deliver(settings, {"console": notifier})

    feed.status = 500
    (result,) = poll_and_deliver(settings, {"console": notifier})
    assert result.status == "error" and "500" in (result.error or "")
    feed.status = 200
    feed.body = b"<html><head><title>Login</title></head><body>Sign in</body></html>"
    before = datetime.now(UTC)
    (result,) = poll_and_deliver(settings, {"console": notifier})
    assert result.status == "error" and "not a feed" in (result.error or "")
    (row,) = rows(settings, feeds)
    assert row["consecutive_failures"] == 2
    assert row["next_poll_at"] > before + timedelta(minutes=10)  # backed off past the interval
    assert len(rows(settings, items)) == 1


def test_delivery_failures_are_retried_then_given_up_with_the_reason(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    feed = Feed(server, "/a.xml", rss(WEATHER))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)
    notifier.fail_with = DeliveryError("channel down")
    before = datetime.now(UTC)
    poll_and_deliver(settings, {"console": notifier})
    (alert,) = rows(settings, alerts)
    assert alert["status"] == "pending" and alert["attempts"] == 1
    assert alert["last_error"] == "channel down"
    # Retried later with full jitter: anywhere from the failed attempt to 30 s after it (by the
    # database's clock, which may read a little behind this one).
    assert before - timedelta(seconds=1) <= alert["next_attempt_at"]
    assert alert["next_attempt_at"] <= datetime.now(UTC) + timedelta(seconds=30)

    engine = db.make_engine(settings.database.url)
    try:
        with db.transaction(engine) as session:  # make it due now
            session.execute(alerts.update().values(next_attempt_at=datetime.now(UTC)))
    finally:
        engine.dispose()
    notifier.fail_with = DeliveryError("chat not found", permanent=True)
    poll_and_deliver(settings, {"console": notifier})
    (alert,) = rows(settings, alerts)
    assert alert["status"] == "failed" and alert["last_error"] == "chat not found"
    assert notifier.sent == []


def test_run_polls_delivers_serves_health_and_stops(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    feed = Feed(server, "/a.xml", rss(REFERENCE))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)

    async def go() -> None:
        service = service_for(settings, notifier)
        stop = asyncio.Event()
        original = service.outbox.deliver_due

        async def deliver_then_stop(limit: int = 100) -> Any:
            stats = await original(limit)
            if len(notifier.sent) >= 2:
                stop.set()
            return stats

        service.outbox.deliver_due = deliver_then_stop  # type: ignore[method-assign]
        await asyncio.wait_for(run_forever(service, stop=stop), timeout=30)

    asyncio.run(go())
    assert sorted(a.watchlist for a in notifier.sent) == ["russia", "taiwan-red-line"]
    (row,) = rows(settings, feeds)
    assert row["lease_owner"] is None  # released


# ---- real processes -----------------------------------------------------------------------------

CRASH_AFTER_COMMIT = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from monitor.config import load_config
from monitor.daemon import Service

async def main():
    service = Service.build(load_config(sys.argv[1]))
    service.prepare(now=datetime.now(UTC), alone=True)
    results = await service.poll_all()
    assert results[0].alerts == 2, results
    os.kill(os.getpid(), signal.SIGKILL)  # after the commit, before any delivery

asyncio.run(main())
"""


def monitor(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_fault_58_killed_after_commit_delivers_after_restart_exactly_once(
    database_url: str, server: LoopbackServer, tmp_path: Path
) -> None:
    feed = Feed(server, "/a.xml", rss(REFERENCE))
    settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)
    config = tmp_path / "config.yaml"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_COMMIT, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert crashed.stdout == ""  # nothing was delivered

    first = monitor("--config", str(config), "once", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("[taiwan-red-line]") == 1
    assert first.stdout.count("[russia]") == 1
    again = monitor("--config", str(config), "once", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "[taiwan-red-line]" not in again.stdout


def test_fault_73_once_leaves_feeds_in_retry_after_or_back_off_unless_forced(
    database_url: str, server: LoopbackServer, tmp_path: Path
) -> None:
    throttled = Feed(server, "/throttled.xml", b"", status=429)
    throttled.headers = {"Retry-After": "86400"}
    broken = Feed(server, "/broken.xml", b"", status=500)
    fine = Feed(server, "/fine.xml", rss(WEATHER))
    feeds_yaml = f"""
        - {{name: throttled, url: '{throttled.url}'}}
        - {{name: broken, url: '{broken.url}'}}
        - {{name: fine, url: '{fine.url}'}}
        """
    settings_for(database_url, textwrap.dedent(feeds_yaml), tmp_path)
    config = str(tmp_path / "config.yaml")
    first = monitor("--config", config, "once", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "1 with news, 1 asked us to wait, 1 failed" in first.stderr

    second = monitor("--config", config, "once", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert (len(throttled.requests), len(broken.requests), len(fine.requests)) == (1, 1, 2)
    assert "polled 1 feed: 1 not modified" in second.stderr
    lines = second.stderr.splitlines()
    assert (
        "not polled, waiting as asked or backing off after failures (--force polls them now):"
        in lines
    )
    waiting = sorted(line.split(" until ")[0] for line in lines if line.startswith("  waiting"))
    assert waiting == ["  waiting broken", "  waiting throttled"]
    assert any("HTTP 429 Too Many Requests; retry after 86400 s" in line for line in lines)

    forced = monitor("--config", config, "once", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (len(throttled.requests), len(broken.requests), len(fine.requests)) == (2, 2, 3)
    assert "polled 3 feeds" in forced.stderr and "waiting" not in forced.stderr


def test_quick_start_once_prints_the_reference_alert_offline(tmp_path: Path) -> None:
    """The README's run command on the bundled sample feed, as the example config lists it (with
    its own `alert_max_age: off`: its items are years old). The example's other feeds are left
    out here: tests talk to nothing but loopback."""
    (tmp_path / "examples" / "feeds").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "feeds" / "sample.xml", tmp_path / "examples" / "feeds")
    example = (ROOT / "config.example.yaml").read_text("utf-8")
    config = tmp_path / "config.yaml"
    head, _, rest = example.partition("feeds:\n")
    sample = rest[: rest.index("\n  - name: aawsat")]
    assert "alert_max_age: off" in sample
    tail = rest[rest.index("\nentities:") :]
    config.write_text(f"{head}feeds:\n{sample}\n{tail}", "utf-8")
    result = monitor("--config", str(config), "once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[taiwan-red-line] بعد لقائه مستشار الأمن القومي" in result.stdout
    assert "*تايوان* هي «أول *خط أحمر*" in result.stdout
    assert "polled 1 feed: 1 with news" in result.stderr
    assert (tmp_path / "monitor.db").exists()


def test_fault_60_run_stops_on_sigterm_within_ten_seconds(
    server: LoopbackServer, tmp_path: Path
) -> None:
    unused_tcp_port = free_port()
    feed = Feed(server, "/a.xml", rss(WEATHER))
    settings_for(
        f"sqlite:///{tmp_path / 'monitor.db'}",
        f"- {{name: a, url: '{feed.url}'}}",
        tmp_path,
        listen=f"'127.0.0.1:{unused_tcp_port}'",
    )
    config = tmp_path / "config.yaml"
    with subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as process:
        try:
            assert process.stdout is not None
            # The alert on stdout says the daemon polled and delivered; then it is healthy.
            first_line = process.stdout.readline()
            assert first_line.startswith("[sunny] Weather"), first_line
            health = f"http://127.0.0.1:{unused_tcp_port}"
            with urllib.request.urlopen(f"{health}/healthz", timeout=5) as response:
                assert json.load(response)["status"] == "ok"
            with urllib.request.urlopen(f"{health}/metrics", timeout=5) as response:
                assert b'monitor_polls_total{status="ok"} 1.0' in response.read()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_fault_60_sigterm_with_huge_feeds_parsing_and_queued_stops_within_ten_seconds(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """Four feeds of 150,000 tiny items (several seconds of parser CPU each) are being parsed or
    wait for a parser when SIGTERM comes: the parses are stopped, their feeds given back, and the
    daemon exits 0 within SPEC's 10 s (a parse thread could not be stopped: 145 s, seen)."""
    tiny = "".join(f"<item><title>t{i}</title></item>" for i in range(150_000))
    body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{tiny}</channel></rss>'.encode()
    served: list[str] = []
    all_served = threading.Event()

    async def huge(request: web.Request) -> web.Response:
        served.append(request.path)
        if len(served) == 4:
            all_served.set()
        return web.Response(body=body, content_type="application/rss+xml")

    for n in range(4):
        server.route(f"/huge-{n}.xml", huge)
    feeds_yaml = "\n".join(
        f"- {{name: huge-{n}, url: '{server.url(f'/huge-{n}.xml')}'}}" for n in range(4)
    )
    settings_for(f"sqlite:///{tmp_path / 'monitor.db'}", feeds_yaml, tmp_path)
    log = tmp_path / "run.log"
    with (
        log.open("w") as log_file,
        subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "--config", str(tmp_path / "config.yaml"), "run"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ) as process,
    ):
        try:
            assert all_served.wait(timeout=60)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = log.read_text("utf-8").splitlines()
    assert any("shutdown.drained finished=0 abandoned=4" in line for line in lines), lines
    assert not any("poll.failed" in line for line in lines), lines  # given back, not failed
    engine = db.make_engine(f"sqlite:///{tmp_path / 'monitor.db'}")
    try:
        with db.read_session(engine) as session:
            owners = set(session.execute(select(feeds.c.lease_owner)).scalars())
    finally:
        engine.dispose()
    assert owners == {None}


def test_one_process_per_sqlite_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    with sqlite_lock(url) as alone:
        assert alone
        with (
            pytest.raises(AlreadyRunningError, match="another monitor is already running"),
            sqlite_lock(url),
        ):
            pass
    with sqlite_lock(url) as alone:  # released with the first
        assert alone


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_feeds_backtest_db_upgrade_and_strict(server: LoopbackServer, tmp_path: Path) -> None:
    """The maintenance commands on a database filled by `monitor once`."""
    feed = Feed(server, "/a.xml", rss(REFERENCE, WEATHER))
    broken = Feed(server, "/broken.xml", b"", status=500)
    settings_for(
        f"sqlite:///{tmp_path / 'monitor.db'}",
        f"- {{name: a, url: '{feed.url}'}}\n- {{name: broken, url: '{broken.url}'}}",
        tmp_path,
    )
    config = str(tmp_path / "config.yaml")

    upgraded = monitor("--config", config, "db", "upgrade", cwd=tmp_path)
    assert upgraded.returncode == 0 and "upgraded from empty to revision" in upgraded.stdout
    again = monitor("--config", config, "db", "upgrade", cwd=tmp_path)
    assert "up to date" in again.stdout

    strict = monitor("--config", config, "once", "--strict", cwd=tmp_path)
    assert strict.returncode == 1
    assert "failed broken: HTTP 500" in strict.stderr or "failed broken:" in strict.stderr
    assert "polled 2 feeds: 1 with news, 1 failed; 2 new and 0 updated items" in strict.stderr

    health = monitor("--config", config, "feeds", cwd=tmp_path)
    assert health.returncode == 0, health.stderr
    lines = health.stdout.splitlines()
    assert any(line.split()[:2] == ["a", "ok"] for line in lines)
    assert any(line.split()[:2] == ["broken", "error"] for line in lines)
    assert "outbox: 0 pending, 3 sent, 0 given up" in health.stdout

    found = monitor(
        "--config", config, "backtest", "taiwan-red-line", "--since", "1d", cwd=tmp_path
    )
    assert found.returncode == 0, found.stderr
    assert "taiwan-red-line: 1 of 2 items published since" in found.stdout
    assert f"{PUBLISHED:%Y-%m-%d}" in found.stdout and REFERENCE[1] in found.stdout
    query = monitor("--config", config, "backtest", "--query", "sunny OR weather", cwd=tmp_path)
    assert "--query: 1 of 2 items" in query.stdout
    bad = monitor("--config", config, "backtest", "--query", "(sunny", cwd=tmp_path)
    assert bad.returncode == 2 and "unbalanced parenthesis" in bad.stderr
    neither = monitor("--config", config, "backtest", cwd=tmp_path)
    assert neither.returncode == 2


def test_fault_57_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    settings_for(f"sqlite:///{tmp_path / 'monitor.db'}", "[]", tmp_path)
    config = str(tmp_path / "config.yaml")
    assert monitor("--config", config, "db", "upgrade", cwd=tmp_path).returncode == 0
    engine = db.make_engine(f"sqlite:///{tmp_path / 'monitor.db'}")
    try:
        with db.transaction(engine) as session:
            session.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    for command in (["once"], ["feeds"]):
        result = monitor("--config", config, *command, cwd=tmp_path)
        assert result.returncode == 1
        assert "newer than this monitor" in result.stderr


def test_full_text_feed_matches_the_page_and_is_not_refetched(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    page = (
        "<html><head><title>Forecast</title></head><body><article><h1>Forecast</h1>"
        + "<p>The week ahead will be sunny across the region, forecasters said.</p>" * 5
        + "</article></body></html>"
    ).encode()
    server.respond("/story.html", body=page, headers={"Content-Type": "text/html"})
    item = (
        "<item><guid>story-1</guid><title>Forecast</title>"
        f"<pubDate>{format_datetime(PUBLISHED)}</pubDate>"
        f"<link>{server.url('/story.html')}</link><description>Read more</description></item>"
    )
    feed = Feed(server, "/a.xml", b"")
    feed.body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{item}</channel></rss>'.encode()
    settings = settings_for(
        database_url, f"- {{name: a, url: '{feed.url}', full_text: true}}", tmp_path
    )
    (first,) = poll_and_deliver(settings, {"console": notifier})
    assert (first.new_items, first.alerts) == (1, 1)
    assert [a.watchlist for a in notifier.sent] == ["sunny"]
    (stored,) = rows(settings, items)
    assert "sunny across the region" in stored["text"]

    page_requests = len([r for r in server.requests if r.path == "/story.html"])
    feed.body = feed.body.replace(
        b"</channel>", b"<item><guid>x</guid><title>Other</title></item></channel>"
    )
    (second,) = poll_and_deliver(settings, {"console": notifier})
    assert (second.new_items, second.updated_items) == (1, 0)  # the first item is not "updated"
    assert len([r for r in server.requests if r.path == "/story.html"]) == page_requests


def test_fault_76_a_full_text_feed_allowed_on_a_private_address_reads_no_private_page(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """The feed itself is on loopback and allowed there (`allow_private` on the feed); its item
    links point at loopback too, and the global policy refuses those: the page is never asked
    for, and the item keeps the feed's own text."""
    server.respond("/internal.html", body=b"<html><body><p>secret</p></body></html>")
    item = (
        "<item><guid>story-1</guid><title>Forecast</title>"
        f"<link>{server.url('/internal.html')}</link><description>Sunny, read more</description>"
        "</item>"
    )
    feed = Feed(server, "/a.xml", b"")
    feed.body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{item}</channel></rss>'.encode()
    settings_for(
        database_url,
        f"- {{name: a, url: '{feed.url}', full_text: true, allow_private: true}}",
        tmp_path,
    )
    config = tmp_path / "config.yaml"
    text = config.read_text("utf-8").replace("fetch: {allow_private: true}", "")
    settings = parse_config(text, str(config))
    assert not settings.fetch.allow_private and settings.feeds[0].allow_private

    (result,) = poll_and_deliver(settings, {"console": notifier})
    assert (result.status, result.new_items) == ("ok", 1)
    (stored,) = rows(settings, items)
    assert stored["text"] == "Sunny, read more"
    assert [r.path for r in server.requests] == ["/a.xml"]


def test_email_channels_immediate_and_daily_digest(
    database_url: str, server: LoopbackServer, tmp_path: Path
) -> None:
    """Alerts by email through a real SMTP server: one channel at once, one as a daily digest
    that waits for its time and then arrives as one message."""
    from smtpserver import SMTPTestServer

    feed = Feed(server, "/a.xml", rss(REFERENCE, WEATHER))
    with SMTPTestServer() as smtp:
        settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)
        config = tmp_path / "config.yaml"
        text = (
            config.read_text("utf-8")
            .replace(
                'taiwan-red-line: {query: "@taiwan AND @red-line"}',
                'taiwan-red-line: {query: "@taiwan AND @red-line", notify: [desk, morning]}',
            )
            .replace(
                'sunny: {query: "sunny"}',
                'sunny: {query: "sunny", notify: [morning]}',
            )
        )
        text += textwrap.dedent(
            f"""
            channels:
              desk: {{type: email, to: [desk@example.org]}}
              morning: {{type: email, to: [chief@example.org], digest: daily 08:00 Europe/London}}
            email: {{host: 127.0.0.1, port: {smtp.port}, starttls: false, from: "Monitor <m@example.org>"}}
            """
        )
        config.write_text(text, "utf-8")
        settings = parse_config(text, str(config))

        async def poll() -> None:
            service = Service.build(settings)
            service.prepare(now=datetime.now(UTC), alone=True)
            try:
                await service.poll_all()
                await service.deliver_tick()
            finally:
                await service.close()

        asyncio.run(poll())
        (immediate,) = smtp.messages
        message = immediate.message
        assert message["To"] == "desk@example.org"
        assert message["Subject"] == f"[taiwan-red-line] {REFERENCE[1]}"
        pending = [r for r in rows(settings, alerts) if r["status"] == "pending"]
        assert {r["recipient"] for r in pending} == {"chief@example.org"}
        assert all(r["next_attempt_at"] > datetime.now(UTC) for r in pending)

        engine = db.make_engine(settings.database.url)
        try:
            with db.transaction(engine) as session:  # the digest's time has come
                session.execute(alerts.update().values(next_attempt_at=datetime.now(UTC)))
        finally:
            engine.dispose()

        async def deliver() -> None:
            service = Service.build(settings)
            try:
                await service.deliver_tick()
            finally:
                await service.close()

        asyncio.run(deliver())
        assert len(smtp.messages) == 2
        digest = smtp.messages[1].message
        assert digest["To"] == "chief@example.org"
        assert "2 alerts" in digest["Subject"]
        body = digest.get_body(("plain",)).get_content()
        assert "taiwan-red-line" in body and "sunny" in body
    assert {r["status"] for r in rows(settings, alerts)} == {"sent"}


def test_fault_59_a_crash_between_claim_and_send_delivers_after_restart_once(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    feed = Feed(server, "/a.xml", rss(WEATHER))
    settings = settings_for(database_url, f"- {{name: a, url: '{feed.url}'}}", tmp_path)

    async def poll_only() -> None:
        service = service_for(settings, notifier)
        try:
            await service.poll_all()
        finally:
            await service.close()

    asyncio.run(poll_only())
    engine = db.make_engine(settings.database.url)
    try:
        with db.transaction(engine) as session:  # a process claims the alert, then dies
            (claimed,) = claim_due_alerts(session, "crashed:1", timedelta(minutes=5), 10)
        with db.transaction(engine) as session:
            assert claim_due_alerts(session, "other:2", timedelta(minutes=5), 10) == []
            # …until its lease runs out (by the database clock)
            session.execute(
                alerts.update().values(lease_until=database_now(session) - timedelta(seconds=1))
            )
    finally:
        engine.dispose()

    async def restart() -> None:
        service = Service.build(settings, notifiers={"console": notifier})
        try:
            await service.deliver_tick()
            await service.deliver_tick()
        finally:
            await service.close()

    asyncio.run(restart())
    assert [a.id for a in notifier.sent] == [claimed.id]
    (row,) = rows(settings, alerts)
    assert row["status"] == "sent"


SOLAR_EN = (
    "en-1",
    "Solar power sets a record",
    "Solar panels produced more electricity than coal across the country this spring, "
    "the grid operator said on Monday, and prices fell for the third month in a row.",
)
SOLAR_AR = (
    "ar-1",
    "رقم قياسي للطاقة الشمسية",
    "أنتجت الألواح الشمسية (solar) كهرباء أكثر من الفحم في أنحاء البلاد هذا الربيع، "
    "بحسب ما قال مشغل الشبكة يوم الاثنين، وانخفضت الأسعار للشهر الثالث على التوالي.",
)
SOLAR_SHORT = ("en-2", "Solar", "Sunny")  # too short to tell its language
SOLAR_HINTED = ("ar-2", "الطاقة الشمسية", "ارتفع إنتاج الألواح الشمسية (solar) هذا الشهر كثيرا.")


def test_monitor_match_sees_the_language_and_source_the_daemon_gives_an_item(
    database_url: str, server: LoopbackServer, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """The same feeds polled by the daemon and read by `monitor match`: each item matches the
    same watchlists, `lang:`, `languages:` and `source:` included — from the detected language,
    the feed's `language:` hint (which comes before detection) or no language at all."""
    from typer.testing import CliRunner

    from monitor.cli import app

    detected = Feed(server, "/detected.xml", rss(SOLAR_EN, SOLAR_AR, SOLAR_SHORT))
    hinted = Feed(server, "/hinted.xml", rss(SOLAR_HINTED))
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            database: {{url: "{database_url}"}}
            fetch: {{allow_private: true}}
            service: {{listen: null}}
            feeds:
              - {{name: detected, url: "{detected.url}"}}
              - {{name: hinted, url: "{hinted.url}", language: en}}
            watchlists:
              lang-en: {{query: "lang:en AND solar"}}
              languages-en: {{query: solar, languages: [en]}}
              languages-ar: {{query: solar, languages: [ar]}}
              from-detected: {{query: "source:detected AND solar"}}
              elsewhere: {{query: solar, feeds: [hinted]}}
            """
        ),
        "utf-8",
    )
    settings = parse_config(config.read_text("utf-8"), str(config))
    poll_and_deliver(settings, {"console": notifier})
    by_item: dict[str, set[str]] = {}
    item_titles = {r["id"]: r["title"] for r in rows(settings, items)}
    for match in rows(settings, matches):
        by_item.setdefault(item_titles[match["item_id"]], set()).add(match["watchlist"])

    runner = CliRunner()
    in_match: dict[str, set[str]] = {}
    for feed in (detected, hinted):
        result = runner.invoke(app, ["--config", str(config), "match", "--json", feed.url])
        assert result.exit_code == 0, result.stderr
        for line in result.stdout.splitlines():
            record = json.loads(line)
            in_match[record["title"]] = {m["watchlist"] for m in record["matches"]}

    assert in_match == by_item
    assert by_item == {
        SOLAR_EN[1]: {"lang-en", "languages-en", "from-detected"},
        SOLAR_AR[1]: {"languages-ar", "from-detected"},
        SOLAR_SHORT[1]: {"languages-en", "languages-ar", "from-detected"},  # unknown language
        SOLAR_HINTED[1]: {"lang-en", "languages-en", "elsewhere"},  # the feed's hint says en
    }


def test_fault_72_a_feed_queued_behind_its_hosts_other_feeds_is_not_failed(
    database_url: str, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Three feeds on one host that answers in 40 s, one connection at a time (`per_host: 1`), a 45 s
    deadline: the second feed waits 40 s for the connection and is fetched; the third would wait
    80 s, gives up after 60 s without asking, and is not counted as failing. (Virtual time: the
    server is on the test's own loop.)"""

    async def main() -> tuple[list[Any], list[str]]:
        requests: list[str] = []

        async def slow(request: web.Request) -> web.Response:
            requests.append(request.path)
            await asyncio.sleep(40)
            return web.Response(body=rss(WEATHER), content_type="application/rss+xml")

        app = web.Application()
        app.router.add_get("/{name}", slow)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        config = tmp_path / "config.yaml"
        config.write_text(
            textwrap.dedent(
                f"""
                database: {{url: "{database_url}"}}
                defaults: {{timeout: 45s}}
                fetch: {{allow_private: true, per_host: 1}}
                watchlists: {{sunny: {{query: sunny}}}}
                feeds:
                  - {{name: a, url: "{base}/a"}}
                  - {{name: b, url: "{base}/b"}}
                  - {{name: c, url: "{base}/c"}}
                """
            ),
            "utf-8",
        )
        service = service_for(parse_config(config.read_text("utf-8"), str(config)), notifier)
        clock.wait_while(lambda: service.poller.parsing)  # feeds parsed in worker processes
        try:
            return await service.poll_all(), requests
        finally:
            await service.close()
            await runner.cleanup()

    with VirtualTime(datetime.now(UTC)) as clock:
        results, requests = clock.run(main())
    statuses = {r.feed: (r.status, r.error) for r in results}
    assert sorted(s for s, _ in statuses.values()) == ["ok", "ok", "retry_later"]
    (queued,) = [name for name, (status, _) in statuses.items() if status == "retry_later"]
    assert statuses[queued][1] == (
        "not sent: waited 60 s for a free connection to 127.0.0.1 (fetch.per_host: 1)"
    )
    assert sorted(requests) == sorted(f"/{name}" for name in "abc" if name != queued)
    engine = db.make_engine(f"{database_url}")
    try:
        with db.read_session(engine) as session:
            failures = session.execute(select(feeds.c.consecutive_failures)).scalars().all()
    finally:
        engine.dispose()
    assert failures == [0, 0, 0]


def test_monitor_once_claims_in_pages_and_polls_every_feed_once(
    database_url: str,
    server: LoopbackServer,
    notifier: RecordingNotifier,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`poll_all` claims a page of feeds, starts their polls, claims the next page meanwhile:
    every active feed is polled once, however many pages they take, and `total` hears of all."""
    monkeypatch.setattr(service_module, "ONCE_FIRST_PAGE", 2)
    monkeypatch.setattr(service_module, "ONCE_PAGE", 3)
    served = [Feed(server, f"/p{n}.xml", rss((f"p{n}", f"Sunny {n}", "sunny"))) for n in range(8)]
    settings = settings_for(
        database_url,
        "\n".join(f"- {{name: p{n}, url: '{f.url}'}}" for n, f in enumerate(served)),
        tmp_path,
    )
    told: list[int] = []

    async def go() -> list[pipeline.PollResult]:
        service = service_for(settings, notifier)
        try:
            return await service.poll_all(total=told.append)
        finally:
            await service.close()

    results = asyncio.run(go())
    assert sorted(r.feed for r in results) == [f"p{n}" for n in range(8)]
    assert all(r.new_items == 1 for r in results)
    assert [len(f.requests) for f in served] == [1] * 8
    assert told == [8]
