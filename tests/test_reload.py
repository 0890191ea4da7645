"""Reloading the config of a running `monitor run` (a real process): SIGHUP with a valid file
swaps feeds and watchlists while a poll is in flight, which finishes; a new feed is polled
without a restart; an invalid file is logged and changes nothing; `monitor reload` does the same
through the health port and says what changed. In one process: alerts claimed before a reload
that removes their channel still go out."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web
from httpserver import LoopbackServer
from servicekit import ROOT, SAMPLE, SAMPLE_WATCHLISTS, MonitorProcess, service_config

from monitor import outbox
from monitor.config import Settings, load_config, parse_config
from monitor.daemon import Service
from monitor.daemon.reload import Reloader, ReloadOutcome
from monitor.model import Alert
from monitor.outbox import DeliveryStats
from monitor.pipeline import PollResult

CHINA = '  china: {query: "الصين"}\n'  # matches the sample's Arabic items about China


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


class GatedFeed:
    """A feed whose answer waits until the test opens the gate: a poll held in flight, which
    then succeeds. `requested` is set when the request arrives."""

    def __init__(self, server: LoopbackServer, path: str) -> None:
        self.requested = threading.Event()
        self.gate = threading.Event()
        self.url = server.url(path)
        server.route(path, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requested.set()
        await asyncio.to_thread(self.gate.wait, 60)
        return web.Response(
            body=SAMPLE.read_bytes(), headers={"Content-Type": "application/rss+xml; charset=utf-8"}
        )


def event(name: str, **fields: object) -> Callable[[str], bool]:
    def matches(line: str) -> bool:
        if not line.startswith("{"):
            return False
        record = json.loads(line)
        return bool(
            record.get("event") == name and all(record.get(k) == v for k, v in fields.items())
        )

    return matches


def records(service: MonitorProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in service.lines]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_sighup_swaps_feeds_and_watchlists_while_a_poll_is_in_flight(
    tmp_path: Path, server: LoopbackServer, database_url: str
) -> None:
    slow = GatedFeed(server, "/slow.xml")
    server.respond(
        "/news.xml",
        body=SAMPLE.read_bytes(),
        headers={"Content-Type": "application/rss+xml; charset=utf-8"},
    )
    config = tmp_path / "config.yaml"
    service_config(config, database_url, {"slow": slow.url}, log_format="json")
    with MonitorProcess(config) as service:
        assert slow.requested.wait(timeout=60), "the first feed was never polled"
        # A second feed and a second watchlist, while the first feed's poll is in flight.
        service_config(
            config,
            database_url,
            {"slow": slow.url, "news": server.url("/news.xml")},
            log_format="json",
            watchlists=SAMPLE_WATCHLISTS + CHINA,
        )
        service.send(signal.SIGHUP)
        done = service.wait_for(event("reload.done", added="news", watchlists=2))
        service.wait_for(event("poll.done", feed="news"), after=done)  # no restart needed
        slow.gate.set()
        service.wait_for(event("poll.done", feed="slow"))  # the poll in flight finished
        assert service.stop() == 0
    log = records(service)
    assert [r for r in log if r["level"] not in ("info", "debug")] == []
    assert sum(r.get("event") == "run.started" for r in log) == 1  # one process all along
    # The new watchlist matched the new feed's items: alerts for it went out.
    assert any(line.startswith("[china]") for line in service.stdout), service.stdout
    assert any(line.startswith("[taiwan-red-line]") for line in service.stdout)


def test_disabled_feeds_and_watchlists_stay_off_until_a_reload_enables_them(
    tmp_path: Path, server: LoopbackServer
) -> None:
    for path in ("/news.xml", "/other.xml"):
        server.respond(
            path,
            body=SAMPLE.read_bytes(),
            headers={"Content-Type": "application/rss+xml; charset=utf-8"},
        )
    config = tmp_path / "config.yaml"
    feeds = {"news": server.url("/news.xml"), "other": server.url("/other.xml")}
    database = f"sqlite:///{tmp_path / 'monitor.db'}"

    def write(enabled: str) -> None:
        watchlists = SAMPLE_WATCHLISTS + CHINA.replace("}", f", enabled: {enabled}}}")
        service_config(config, database, feeds, log_format="json", watchlists=watchlists)
        text = config.read_text("utf-8").replace(
            "{name: other,", f"{{name: other, enabled: {enabled},"
        )
        config.write_text(text, "utf-8")

    write("false")
    with MonitorProcess(config) as service:
        service.wait_for(event("run.started", feeds=1, watchlists=1))
        polled = service.wait_for(event("poll.done", feed="news"))
        assert [r.path for r in server.requests] == ["/news.xml"]
        write("true")
        service.send(signal.SIGHUP)
        done = service.wait_for(event("reload.done", added="other", watchlists=2), after=polled)
        service.wait_for(event("poll.done", feed="other"), after=done)
        assert service.stop() == 0
    assert any(line.startswith("[china]") for line in service.stdout), service.stdout


def test_sighup_with_an_invalid_config_keeps_the_old_one_and_logs_why(
    tmp_path: Path, server: LoopbackServer
) -> None:
    slow = GatedFeed(server, "/slow.xml")
    config = tmp_path / "config.yaml"
    database = f"sqlite:///{tmp_path / 'monitor.db'}"
    service_config(config, database, {"slow": slow.url}, log_format="json")
    with MonitorProcess(config) as service:
        assert slow.requested.wait(timeout=60), "the feed was never polled"
        config.write_text(
            config.read_text("utf-8").replace("@taiwan AND @red-line", "@taiwan AND (@red-line"),
            "utf-8",
        )
        service.send(signal.SIGHUP)
        invalid = service.wait_for(event("reload.invalid"))
        problem = service.wait_for(event("reload.problem"), after=invalid)
        slow.gate.set()  # the poll in flight goes on, with the old watchlists
        service.wait_for(event("poll.done", feed="slow"))
        assert service.stop() == 0
    log = records(service)
    assert log[invalid]["level"] == "error" and log[invalid]["problems"] == 1
    assert str(log[problem]["problem"]).startswith(f"{config}:")
    assert "watchlists.taiwan-red-line" in str(log[problem]["problem"])
    assert not any(r.get("event") == "reload.done" for r in log)
    assert any(line.startswith("[taiwan-red-line]") for line in service.stdout)


def reload_command(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), "reload"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_monitor_reload_asks_the_running_service_and_says_what_changed(
    tmp_path: Path, server: LoopbackServer
) -> None:
    server.respond(
        "/news.xml",
        body=SAMPLE.read_bytes(),
        headers={"Content-Type": "application/rss+xml; charset=utf-8"},
    )
    config = tmp_path / "config.yaml"
    database = f"sqlite:///{tmp_path / 'monitor.db'}"
    listen = f"127.0.0.1:{free_port()}"
    service_config(config, database, {"sample": str(SAMPLE)}, listen=listen, log_format="json")
    nobody = reload_command(config)  # nothing runs yet
    assert nobody.returncode == 1
    assert f"error: no monitor service answers on {listen} (service.listen)" in nobody.stderr
    with MonitorProcess(config) as service:
        service.wait_for(event("health.listening"))
        service_config(  # a new feed, and a log format only a restart changes
            config,
            database,
            {"sample": str(SAMPLE), "news": server.url("/news.xml")},
            listen=listen,
            log_format="text",
        )
        result = reload_command(config)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "reloaded: 2 feeds (1 new: news), 1 watchlist, 1 channel\n"
        assert result.stderr == (
            "warning: service changed: a restart applies it; the service runs with the old values\n"
        )
        service.wait_for(event("poll.done", feed="news"))
        # A file with a problem is not sent for: printed, exit 2, the service untouched.
        config.write_text(
            config.read_text("utf-8").replace("{name: news,", "{name: news, intervall: 5m,"),
            "utf-8",
        )
        bad = reload_command(config)
        assert service.stop() == 0
    assert bad.returncode == 2
    assert "unknown key 'intervall'" in bad.stderr and "did you mean 'interval'" in bad.stderr
    log = records(service)  # still JSON, as started
    assert sum(r.get("event") == "reload.done" for r in log) == 1
    assert [r["settings"] for r in log if r.get("event") == "reload.needs_restart"] == ["service"]


# ---- in one process: a delivery claimed before a reload -----------------------------------------


class HeldNotifier:
    """Holds its first send until `release` is set; records what it sent and whether it was
    closed."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.sent: list[Alert] = []
        self.closed = False

    async def send(self, alert: Alert) -> None:
        if not self.entered.is_set():
            self.entered.set()
            await self.release.wait()
        self.sent.append(alert)

    async def close(self) -> None:
        self.closed = True


def weather_config(tmp_path: Path, database_url: str, channel: str) -> Settings:
    published = format_datetime(datetime.now(UTC))
    items = "".join(
        f"<item><guid>wx-{n}</guid><title>Weather {n}</title><pubDate>{published}</pubDate>"
        f"<link>https://example.org/wx-{n}</link><description>Sunny, day {n}</description></item>"
        for n in (1, 2)
    )
    (tmp_path / "feed.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{items}</channel></rss>",
        "utf-8",
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        f'database: {{url: "{database_url}"}}\n'
        "service: {listen: null}\n"
        f"channels: {{{channel}: {{type: console}}}}\n"
        f"watchlists: {{sunny: {{query: sunny, notify: [{channel}]}}}}\n"
        "feeds: [{name: weather, url: feed.xml}]\n",
        "utf-8",
    )
    return parse_config(config.read_text("utf-8"), str(config))


def test_alerts_claimed_before_a_reload_that_removes_their_channel_are_still_delivered(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One send at a time: the second alert's send starts only after the reload.
    monkeypatch.setattr(outbox, "CONCURRENT_SENDS", 1)
    held = HeldNotifier()
    service = Service.build(
        weather_config(tmp_path, database_url, "desk"), notifiers={"desk": held}
    )
    service.prepare(now=datetime.now(UTC), alone=True)
    renamed = weather_config(tmp_path, database_url, "newsroom")

    async def scenario() -> tuple[DeliveryStats, DeliveryStats]:
        try:
            polled = await service.poll_all()
            assert [r.alerts for r in polled] == [2]
            delivering = asyncio.create_task(service.deliver_tick())
            await asyncio.wait_for(held.entered.wait(), 60)
            await service.reconfigure(renamed)  # the desk channel is gone
            held.release.set()
            first = await asyncio.wait_for(delivering, 60)
            return first, await service.deliver_tick()
        finally:
            await service.close()

    first, second = asyncio.run(scenario())
    assert (first.sent, first.retried, first.failed) == (2, 0, 0)
    assert [alert.channel for alert in held.sent] == ["desk", "desk"]
    assert second.sent == 0
    assert held.closed  # closed once nothing was in flight
    assert "desk" not in service.outbox.notifiers and "newsroom" in service.outbox.notifiers


def test_a_reload_applies_every_fetch_setting_to_the_next_poll(
    tmp_path: Path, server: LoopbackServer
) -> None:
    server.respond(
        "/news.xml",
        body=SAMPLE.read_bytes(),
        headers={"Content-Type": "application/rss+xml; charset=utf-8"},
    )
    config = tmp_path / "config.yaml"
    database = f"sqlite:///{tmp_path / 'monitor.db'}"
    feeds = {"news": server.url("/news.xml"), "missing": server.url("/missing.xml")}
    service_config(
        config, database, feeds, fetch='allow_networks: ["127.0.0.0/8"], user_agent: before/1'
    )
    now = [datetime.now(UTC)]
    service = Service.build(load_config(config), clock=lambda: now[0])
    service.prepare(now=now[0], alone=True)
    with LoopbackServer() as proxy:
        proxy.respond("/news.xml", body=SAMPLE.read_bytes())  # more than 1 KB
        service_config(
            config,
            database,
            feeds,
            fetch=f'allow_networks: ["127.0.0.0/8"], user_agent: after/2, proxy: "{proxy.base_url}",'
            " max_body: 1KB, per_host: 1, gone_after: 1h",
        )

        async def scenario() -> tuple[list[PollResult], ReloadOutcome, list[PollResult]]:
            try:
                before = await service.poll_all()
                outcome = await Reloader(service, config).reload()
                now[0] += timedelta(hours=2)
                return before, outcome, await service.poll_all(force=True)  # missing backs off
            finally:
                await service.close()

        before, outcome, after = asyncio.run(scenario())
        through_proxy = proxy.requests
    assert outcome.ok and outcome.needs_restart == []
    assert {r.path: r.headers["User-Agent"] for r in server.requests} == {
        "/news.xml": "before/1",
        "/missing.xml": "before/1",
    }
    assert {r.path: r.headers["User-Agent"] for r in through_proxy} == {
        "/news.xml": "after/2",
        "/missing.xml": "after/2",
    }
    assert {r.feed: r.status for r in before} == {"news": "ok", "missing": "error"}
    result = {r.feed: r for r in after}
    assert result["news"].status == "error" and "1024-byte limit" in str(result["news"].error)
    assert result["missing"].status == "gone"  # answered 404 for longer than gone_after
    assert service.settings.fetch.per_host == service.poller.per_host == 1
