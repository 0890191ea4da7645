"""`stories:` in the config file reaches the grouping: a near-copy from another outlet that joins
its story at the default `stories.threshold` (0.4) is a story of its own, and alerts, with
`threshold: 0.9`. The config is read from its file and the service built from it as
`monitor once` does; the feeds are local files, the database SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import pytest
from servicekit import RecordingNotifier
from sqlalchemy import func, select

from monitor.config import Settings, parse_config
from monitor.core import stories as core_stories
from monitor.daemon import Service
from monitor.store import db
from monitor.store.tables import stories

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = (ROOT / "examples" / "articles" / "aawsat-wang-yi-russia.txt").read_text("utf-8")
WANG_YI = REFERENCE.split("\n")[1:49]  # "China's foreign minister heads to Russia", by line
# Another outlet's copy of the wire story, cut after its 42nd line, under another headline: it
# shares about 0.7 of the original's shingles.
CUT_SHORT = "\n".join(WANG_YI[:42])


def write_feed(path: Path, link: str, title: str, body: str, published: datetime) -> None:
    """A feed file of one item (none without a `link`)."""
    item = link and (
        f"<item><guid>{link}</guid><title>{xml_escape(title)}</title><link>{link}</link>"
        f"<description>{xml_escape(body)}</description>"
        f"<pubDate>{format_datetime(published, usegmt=True)}</pubDate></item>"
    )
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{item}</channel></rss>",
        "utf-8",
    )


def settings_from_file(tmp_path: Path, database_url: str, stories_yaml: str) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text(
        f'database: {{url: "{database_url}"}}\n'
        "service: {listen: null}\n"
        f"{stories_yaml}"
        "watchlists:\n"
        "  china-russia: {query: 'الصين AND روسيا'}\n"
        "feeds:\n"
        "  - {name: aawsat, url: aawsat.xml}\n"
        "  - {name: wire, url: wire.xml}\n",
        "utf-8",
    )
    return parse_config(config.read_text("utf-8"), str(config))


def poll_and_deliver(settings: Settings, notifier: RecordingNotifier, now: datetime) -> None:
    async def go() -> None:
        service = Service.build(settings, notifiers={"console": notifier}, clock=lambda: now)
        service.prepare(now=now, alone=True)
        try:
            await service.poll_all(force=True)
            await service.deliver_tick()
        finally:
            await service.close()

    asyncio.run(go())


def story_count(settings: Settings) -> int:
    engine = db.make_engine(settings.database.url)
    try:
        with db.read_session(engine) as session:
            return int(session.execute(select(func.count()).select_from(stories)).scalar_one())
    finally:
        engine.dispose()


def test_the_cut_short_copy_is_between_the_two_thresholds() -> None:
    shared = core_stories.similarity(
        core_stories.fingerprint("\n".join(WANG_YI)), core_stories.fingerprint(CUT_SHORT)
    )
    assert core_stories.THRESHOLD < shared < 0.9


@pytest.mark.parametrize(
    ("stories_yaml", "expected_stories", "expected_alerts"),
    [("", 1, 1), ("stories: {threshold: 0.9}\n", 2, 2)],
    ids=["default", "threshold-0.9"],
)
def test_a_configured_threshold_decides_whether_a_near_copy_joins_its_story(
    tmp_path: Path,
    database_url: str,
    stories_yaml: str,
    expected_stories: int,
    expected_alerts: int,
) -> None:
    settings = settings_from_file(tmp_path, database_url, stories_yaml)
    notifier = RecordingNotifier()
    # A week ago, so that every alert is due by the database's clock when it is delivered.
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7)
    write_feed(
        tmp_path / "aawsat.xml",
        "https://aawsat.example/wang-yi",
        "وزير الخارجية الصيني يتوجه إلى روسيا",
        "\n".join(WANG_YI),
        now,
    )
    write_feed(tmp_path / "wire.xml", "", "", "", now)
    poll_and_deliver(settings, notifier, now)
    assert [alert.watchlist for alert in notifier.sent] == ["china-russia"]

    now += timedelta(hours=1)
    write_feed(
        tmp_path / "wire.xml", "https://wire.example/moscow", "وانغ يي إلى موسكو", CUT_SHORT, now
    )
    poll_and_deliver(settings, notifier, now)
    assert settings.stories.threshold == (0.9 if stories_yaml else 0.4)
    assert story_count(settings) == expected_stories
    assert [alert.watchlist for alert in notifier.sent] == ["china-russia"] * expected_alerts
