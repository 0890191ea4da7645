"""`monitor stories [--json] [--since 3d]`: recent stories, newest first, with their sources and the
alerts they sent. Stories made by the real service polling feeds on loopback (SQLite and
PostgreSQL), at chosen times; the command run as users run it."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from httpserver import LoopbackServer
from servicekit import RecordingNotifier, poll_and_deliver
from servicekit import cli as run

from monitor.config import parse_config


def rss(*items: tuple[str, str, str, datetime]) -> bytes:
    """An RSS feed of (guid, title, description, published) items."""
    body = "".join(
        f"<item><guid isPermaLink='false'>{g}</guid><title>{t}</title>"
        f"<link>https://example.org/{g}</link><description>{d}</description>"
        f"<pubDate>{format_datetime(p)}</pubDate></item>"
        for g, t, d, p in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{body}</channel></rss>"
    ).encode()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


def test_stories_lists_recent_stories_newest_first_with_sources_and_alerts(
    database_url: str, server: LoopbackServer, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    t0, t1, t2 = now - timedelta(days=5), now - timedelta(hours=2), now - timedelta(hours=1)
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            database: {{url: "{database_url}"}}
            fetch: {{allow_private: true}}
            service: {{listen: null}}
            watchlists:
              sunny: {{query: "sunny"}}
            feeds:
              - {{name: wire, url: '{server.url("/wire.xml")}'}}
              - {{name: paper, url: '{server.url("/paper.xml")}'}}
            """
        ),
        "utf-8",
    )
    settings = parse_config(config.read_text("utf-8"), str(config))
    recorder = RecordingNotifier()
    weather = ("w", "Rain", "Rain all week", t0)
    filler = ("f", "Markets", "Markets closed flat", t0 + timedelta(days=1))
    sunny = ("s", "Sunny week", "Sunny all week across the region", t1)
    copy = ("copy-of-s", "Sunny week", "Sunny all week across the region", t2)
    clouds = ("c", "Clouds", "Clouds at noon", t2)

    def poll_at(moment: datetime, wire: bytes, paper: bytes) -> None:
        server.respond("/wire.xml", body=wire, headers={"Content-Type": "application/rss+xml"})
        server.respond("/paper.xml", body=paper, headers={"Content-Type": "application/rss+xml"})

        poll_and_deliver(settings, {"console": recorder}, clock=lambda: moment)

    poll_at(t0, rss(weather), rss())
    poll_at(t0 + timedelta(days=1), rss(weather), rss(filler))
    poll_at(t1, rss(weather, sunny), rss(filler))
    poll_at(t2, rss(weather, sunny, clouds), rss(filler, copy))
    assert [a.title for a in recorder.sent] == ["Sunny week"]  # the copy joined the story

    code, out, err = run("--config", str(config), "stories", "--json")
    assert code == 0, err
    listed = [json.loads(line) for line in out.splitlines()]
    assert [s["title"] for s in listed] == ["Clouds", "Sunny week"]  # newest first; 3 days
    clouds_story, sunny_story = listed
    assert sunny_story == {
        "story": sunny_story["story"],
        "title": "Sunny week",
        "first_seen": f"{t1:%Y-%m-%dT%H:%M:%SZ}",
        "items": [
            {
                "feed": "wire",
                "title": "Sunny week",
                "link": "https://example.org/s",
                "published": f"{t1:%Y-%m-%dT%H:%M:%SZ}",
            },
            {
                "feed": "paper",
                "title": "Sunny week",
                "link": "https://example.org/copy-of-s",
                "published": f"{t2:%Y-%m-%dT%H:%M:%SZ}",
            },
        ],
        "alerts": 1,
    }
    assert (clouds_story["alerts"], len(clouds_story["items"])) == (0, 1)

    code, out, _ = run("--config", str(config), "stories", "--json", "--since", "7d")
    assert code == 0
    assert [json.loads(line)["title"] for line in out.splitlines()] == [
        "Clouds",
        "Sunny week",
        "Markets",
        "Rain",
    ]

    code, out, _ = run("--config", str(config), "stories")
    assert code == 0
    block = out.split("\n\n")[1].splitlines()
    assert block == [
        f"story {sunny_story['story']} · first seen {t1:%Y-%m-%d %H:%M} UTC · 1 alert sent",
        "  Sunny week",
        f"  - wire · {t1:%Y-%m-%d %H:%M} UTC · https://example.org/s",
        f"  - paper · {t2:%Y-%m-%d %H:%M} UTC · https://example.org/copy-of-s",
    ]
    assert out.rstrip().splitlines()[-1].startswith("2 stories first seen since ")

    code, _, err = run("--config", str(config), "stories", "--since", "soon")
    assert code == 2 and "--since" in err
