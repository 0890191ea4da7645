"""The poll path's work: what it does per item and per poll, counted on real parts (feeds on
loopback, SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from httpserver import LoopbackServer
from sqlalchemy import select
from test_pipeline import (
    Feed,
    RecordingNotifier,
    poll_and_deliver,
    rss,
    settings_for,
)

from monitor import language
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
    results = poll_and_deliver(settings, RecordingNotifier())
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
