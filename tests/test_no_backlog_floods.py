"""No backlog floods (`alert_max_age`, FAULTS 67): a feed with years of archive, or undated items on
its first poll, is stored and matched but sends nothing old. Real parts: feeds on the loopback
HTTP server, SQLite and PostgreSQL, `monitor once` and `monitor backtest` as real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web
from httpserver import LoopbackServer
from servicekit import RecordingNotifier

from monitor.config import parse_config
from monitor.config.check_summary import summary
from monitor.core.alert_age import too_old_to_alert
from monitor.daemon import Service
from monitor.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def item(guid: str, title: str, body: str, published: datetime | None) -> str:
    date = f"<pubDate>{format_datetime(published)}</pubDate>" if published else ""
    return (
        f"<item><guid isPermaLink='false'>{guid}</guid><title>{title}</title>"
        f"<link>https://example.org/{guid}</link><description>{body}</description>{date}</item>"
    )


def rss(items: list[str]) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{''.join(items)}</channel></rss>"
    ).encode()


class Feed:
    """A feed on the loopback server whose body the test changes between polls."""

    def __init__(self, server: LoopbackServer, path: str, body: bytes) -> None:
        self.body = body
        self.url = server.url(path)
        server.route(path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=self.body, content_type="application/rss+xml")


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


def write_config(tmp_path: Path, database_url: str, feeds_yaml: str, defaults: str = "") -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            database: {{url: "{database_url}"}}
            fetch: {{allow_private: true}}
            service: {{listen: null}}
            {defaults}
            watchlists:
              sunny: {{query: "sunny"}}
            feeds:
            """
        )
        + textwrap.indent(feeds_yaml.strip(), "  ")
        + "\n",
        "utf-8",
    )
    return config


def monitor(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), *args],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )


def poll(config: Path, notifier: RecordingNotifier, now: datetime) -> list[object]:
    """One poll of every feed and one delivery round, in process, at the time `now`."""
    settings = parse_config(config.read_text("utf-8"), str(config))

    async def go() -> list[object]:
        service = Service.build(settings, notifiers={"console": notifier}, clock=lambda: now)
        service.prepare(now=now, alone=True)
        try:
            results: list[object] = await service.poll_all(force=True)
            await service.deliver_tick()
            return results
        finally:
            await service.close()

    return asyncio.run(go())


# ---- the decision (pure) -------------------------------------------------------------------------


def test_age_counts_from_the_feed_date_else_first_seen_and_undated_is_old_on_a_first_poll() -> None:
    limit = DAY
    assert not too_old_to_alert(NOW - 23 * timedelta(hours=1), NOW, NOW, limit, first_poll=True)
    assert too_old_to_alert(NOW - 25 * timedelta(hours=1), NOW, NOW, limit, first_poll=False)
    assert not too_old_to_alert(NOW - 3000 * DAY, NOW, NOW, None, first_poll=True)  # off
    assert too_old_to_alert(None, NOW, NOW, limit, first_poll=True)
    assert not too_old_to_alert(None, NOW, NOW, limit, first_poll=False)
    # An undated item updated long after it was first seen is as old as that first sight.
    assert too_old_to_alert(None, NOW - 2 * DAY, NOW, limit, first_poll=False)
    assert not too_old_to_alert(None, NOW, NOW, None, first_poll=True)


# ---- the config ----------------------------------------------------------------------------------


def test_alert_max_age_defaults_to_24h_is_inherited_and_off_means_no_limit(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "sqlite:///m.db",
        "- {name: a, url: a.xml}\n- {name: b, url: b.xml, alert_max_age: off}\n"
        "- {name: c, url: c.xml, alert_max_age: 3d}",
    )
    settings = parse_config(config.read_text("utf-8"), str(config))
    assert settings.defaults.alert_max_age == DAY
    assert [f.alert_max_age for f in settings.feeds] == [DAY, None, 3 * DAY]
    shown = summary(settings)  # `monitor check`
    assert "timeout 20s, alerts on items up to 1d old" in shown
    feeds = {line.split()[0]: line for line in shown.splitlines() if ".xml" in line}
    assert "alerts on" not in feeds["a"]  # as the default
    assert feeds["b"].endswith(", alerts on items of any age)")
    assert feeds["c"].endswith(", alerts on items up to 3d old)")

    config = write_config(
        tmp_path,
        "sqlite:///m.db",
        "- {name: a, url: a.xml}\n- {name: c, url: c.xml, alert_max_age: 2h}",
        defaults="defaults: {alert_max_age: 'off'}",
    )
    settings = parse_config(config.read_text("utf-8"), str(config))
    assert [f.alert_max_age for f in settings.feeds] == [None, timedelta(hours=2)]


def test_a_wrong_alert_max_age_names_the_line_and_the_way_out(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sqlite:///m.db", "- {name: a, url: a.xml, alert_max_age: 10}")
    with pytest.raises(ConfigError) as raised:
        parse_config(config.read_text("utf-8"), str(config))
    (problem,) = raised.value.problems
    assert "feeds[0].alert_max_age" in str(problem) and "or off for no limit" in str(problem)


# ---- end to end ----------------------------------------------------------------------------------


def test_fault_67_archive_of_2018_sends_only_todays_item_and_backtest_sees_all(
    database_url: str, server: LoopbackServer, tmp_path: Path
) -> None:
    """A new feed of twenty 2018 items and one from today: `monitor once` alerts only today's and
    says how many matches were too old; the old ones are stored, and `backtest` counts them all."""
    today = datetime.now(UTC) - timedelta(hours=1)
    archive = [
        item(f"old-{n}", f"Sunny day {n}", "sunny", datetime(2018, 4, 24, 8, n, tzinfo=UTC))
        for n in range(20)
    ]
    feed = Feed(server, "/archive.xml", rss([*archive, item("new", "Sunny today", "sunny", today)]))
    config = write_config(tmp_path, database_url, f"- {{name: archive, url: '{feed.url}'}}")

    once = monitor(config, "once")
    assert once.returncode == 0, once.stderr
    alerts = [line for line in once.stdout.splitlines() if line.startswith("[sunny]")]
    assert alerts == ["[sunny] Sunny today"]
    assert "21 new and 0 updated items; 1 alerts queued, 1 sent" in once.stderr
    assert "20 matches too old to alert (alert_max_age)" in once.stderr

    recent = monitor(config, "backtest", "sunny", "--since", "1d")  # by publication date
    assert recent.returncode == 0, recent.stderr
    assert recent.stdout.startswith("sunny: 1 of 1 items published since")
    backtest = monitor(config, "backtest", "sunny", "--since", "4000d")
    assert backtest.returncode == 0, backtest.stderr
    assert backtest.stdout.startswith("sunny: 21 of 21 items published since")
    per_day = {
        cells[0]: cells[1]
        for line in backtest.stdout.splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 2
    }
    assert per_day == {"2018-04-24": "20", today.date().isoformat(): "1"}

    # The same archive under other titles, on a feed that says `alert_max_age: off`: all alert.
    other = Feed(
        server, "/other.xml", rss([a.replace("Sunny day", "Sunny old day") for a in archive])
    )
    feeds_yaml = (
        f"- {{name: archive, url: '{feed.url}'}}\n"
        f"- {{name: other, url: '{other.url}', alert_max_age: off}}"
    )
    again = monitor(write_config(tmp_path, database_url, feeds_yaml), "once")
    assert again.returncode == 0, again.stderr
    assert len([line for line in again.stdout.splitlines() if line.startswith("[sunny]")]) == 20
    assert "too old" not in again.stderr


def test_fault_67_undated_items_alert_only_after_the_first_poll(
    database_url: str, server: LoopbackServer, tmp_path: Path
) -> None:
    """On a feed's first poll nothing says whether an undated item is news or archive: it is
    stored, not alerted. A new undated item on a later poll is news: it alerts."""
    undated = [item(f"u-{n}", f"Sunny {n}", "sunny", None) for n in range(5)]
    feed = Feed(server, "/undated.xml", rss(undated))
    config = write_config(tmp_path, database_url, f"- {{name: undated, url: '{feed.url}'}}")
    notifier = RecordingNotifier()

    (first,) = poll(config, notifier, NOW)
    assert (first.new_items, first.alerts, first.too_old) == (5, 0, 5)  # type: ignore[attr-defined]
    assert notifier.sent == []

    feed.body = rss([item("u-new", "Sunny news", "sunny", None), *undated])
    (second,) = poll(config, notifier, NOW + timedelta(minutes=10))
    assert (second.new_items, second.alerts, second.too_old) == (1, 1, 0)  # type: ignore[attr-defined]
    assert [a.title for a in notifier.sent] == ["Sunny news"]

    # An old undated item that changes a day later is still old: its first sight dates it.
    feed.body = rss([item("u-0", "Sunny 0", "sunny and warm", None), *undated[1:]])
    (third,) = poll(config, notifier, NOW + 2 * DAY)
    assert (third.updated_items, third.alerts) == (1, 0)  # type: ignore[attr-defined]
    assert [a.title for a in notifier.sent] == ["Sunny news"]
