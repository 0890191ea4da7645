"""`monitor alerts [--retry|--purge] [--json] [ALERT...]`: the alerts not sent, pending with why and
given up, and putting those given up back in the outbox or deleting them. The alerts are made by
the real service polling a feed on loopback (SQLite and PostgreSQL) into channels that fail; the
command is run as users run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from httpserver import LoopbackServer
from servicekit import RecordingNotifier, cli, feed, poll_and_deliver, serve, service_config

from monitor.config import parse_config
from monitor.errors import DeliveryError

WATCHLISTS = """\
watchlists:
  taiwan: {query: taiwan, notify: [log, pager]}
channels:
  log: {type: console}
  pager: {type: console}
"""


def test_alerts_shows_why_alerts_wait_and_retries_or_purges_those_given_up(
    database_url: str, feeds: LoopbackServer, tmp_path: Path
) -> None:
    config = service_config(
        tmp_path / "config.yaml", database_url, {"wire": feeds.url("/a.xml")}, watchlists=WATCHLISTS
    )
    settings = parse_config(config.read_text("utf-8"), str(config))
    log, pager = RecordingNotifier(), RecordingNotifier()
    log.fail_with = DeliveryError("HTTP 502 Bad Gateway")
    pager.fail_with = DeliveryError("550 mailbox unavailable", permanent=True)

    def serve_and_poll(*titles: str) -> None:
        serve(feeds, feed(*titles))
        poll_and_deliver(settings, {"log": log, "pager": pager})

    def listed() -> list[dict[str, Any]]:
        code, out, err = cli("alerts", "--json", "--config", str(config))
        assert code == 0, err
        return [json.loads(line) for line in out.splitlines()]

    serve_and_poll("Sunny week")
    waiting, given_up = listed()
    assert waiting["status"] == "pending" and given_up["status"] == "given_up"
    assert {k: waiting[k] for k in ("channel", "attempts", "last_error")} == {
        "channel": "log",
        "attempts": 1,
        "last_error": "HTTP 502 Bad Gateway",
    }
    # Full jitter: the retry may fall in the very second the alert was queued (shown to the second).
    assert waiting["next_try"] >= waiting["queued"]
    assert given_up == {
        "alert": given_up["alert"],
        "status": "given_up",
        "watchlist": "taiwan",
        "channel": "pager",
        "recipient": "",
        "feed": "wire",
        "title": "Sunny week",
        "queued": given_up["queued"],
        "attempts": 1,
        "last_error": "550 mailbox unavailable",
        "next_try": None,
    }

    code, out, _ = cli("--config", str(config), "alerts")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "pending: 1 alert"
    assert lines[1] == f"#{waiting['alert']} taiwan → log"
    assert lines[2].startswith("  queued ") and ", 1 attempt, next try " in lines[2]
    assert lines[3:5] == ["  wire: Sunny week", "  last error: HTTP 502 Bad Gateway"]
    assert lines[5:] == [
        "given up: 1 alert",
        f"#{given_up['alert']} taiwan → pager",
        lines[-4],
        "  wire: Sunny week",
        "  last error: 550 mailbox unavailable",
        "monitor alerts --retry sends those given up again; --purge deletes them",
    ]
    assert lines[-4].endswith("UTC, given up after 1 attempt")

    # Retried: queued again with every attempt ahead, and sent once the channel works.
    code, out, _ = cli("--config", str(config), "alerts", "--retry")
    assert (code, out) == (
        0,
        "re-queued 1 alert given up: the running service (or the next monitor once) sends them\n",
    )
    # Pending alerts are listed soonest first: the log's retry is due up to 30 s (jitter) after
    # its failure, the pager's at the --retry, so either may come first.
    assert sorted((a["channel"], a["status"]) for a in listed()) == [
        ("log", "pending"),
        ("pager", "pending"),
    ]
    pager.fail_with = None
    serve_and_poll("Sunny week")
    assert [a.title for a in pager.sent] == ["Sunny week"]
    assert [a["channel"] for a in listed()] == ["log"]

    # Purged: a new story given up on the pager is deleted; the pending ones stay.
    pager.fail_with = DeliveryError("550 mailbox unavailable", permanent=True)
    serve_and_poll("Sunny week", "Sunny weekend")
    assert [(a["channel"], a["status"]) for a in listed()] == [
        ("log", "pending"),
        ("log", "pending"),
        ("pager", "given_up"),
    ]
    assert cli("--config", str(config), "alerts", "--purge")[1] == "purged 1 alert given up\n"
    assert [(a["channel"], a["status"]) for a in listed()] == [("log", "pending")] * 2
    assert cli("--config", str(config), "alerts", "--purge")[1] == "purged 0 alerts given up\n"


def test_alerts_refuses_retry_with_purge_and_a_missing_database(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f'database: {{url: "sqlite:///{tmp_path / "monitor.db"}"}}\n', "utf-8")
    code, _, err = cli("--config", str(config), "alerts", "--retry", "--purge")
    assert code == 2 and err == "error: give --retry or --purge, not both\n"
    code, _, err = cli("--config", str(config), "alerts")
    assert code == 2 and "no database at" in err
    assert not (tmp_path / "monitor.db").exists()
