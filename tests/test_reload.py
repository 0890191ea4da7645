"""Reloading the config of a running `monitor run` (a real process): SIGHUP with a valid file
swaps feeds and watchlists while a poll is in flight, which finishes; a new feed is polled
without a restart; an invalid file is logged and changes nothing; `monitor reload` does the same
through the health port and says what changed."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from httpserver import LoopbackServer
from servicekit import ROOT, SAMPLE, SAMPLE_WATCHLISTS, MonitorProcess, service_config

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
