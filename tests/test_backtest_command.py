"""`monitor backtest`: a watchlist of the config run over the items stored, in this process, on a
SQLite database filled through the store as the service fills it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from servicekit import cli

from monitor.store import db
from monitor.store.feeds import sync_feeds
from monitor.store.stories import NewItem, insert_item, story_for_hash

CONFIG = """\
database: {url: 'sqlite:///monitor.db'}
feeds:
  - {name: wire, url: 'https://wire.example/rss'}
watchlists:
  solar:
    query: 'solar'
  eclipse-trial:
    query: 'eclipse'
    enabled: false
"""


def make_database(tmp_path: Path) -> Path:
    """Three items published yesterday: two about an eclipse, one about solar panels."""
    published = datetime.now(UTC) - timedelta(days=1)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'monitor.db'}")
    try:
        db.ensure_schema(engine, upgrade=True)
        with db.transaction(engine) as session:
            ids = sync_feeds(session, [("wire", "https://wire.example/rss")], published)
            titles = ["Eclipse seen over Chile", "Eclipse tours sell out", "Solar panels on roofs"]
            for n, title in enumerate(titles):
                story, _ = story_for_hash(session, f"hash{n}", published)
                item = NewItem(f"i{n}", f"hash{n}", 1, title, "text", None, None, None,
                               published, "en", published, story)  # fmt: skip
                insert_item(session, ids["wire"], item)
    finally:
        engine.dispose()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG, "utf-8")
    return config


def test_a_disabled_watchlist_is_backtested_and_said_to_be_disabled(tmp_path: Path) -> None:
    config = str(make_database(tmp_path))
    code, out, err = cli("backtest", "eclipse-trial", "--since", "7d", "--config", config)
    assert code == 0, err
    assert out.startswith("eclipse-trial (disabled): 2 of 3 items published since")
    assert "Eclipse seen over Chile" in out and "Eclipse tours sell out" in out
    assert "Solar panels" not in out

    code, out, _ = cli("backtest", "solar", "--since", "7d", "--config", config)
    assert code == 0 and out.startswith("solar: 1 of 3 items published since")

    code, _, err = cli("backtest", "eclipse", "--config", config)
    assert code == 2
    assert err == "error: no watchlist 'eclipse' (watchlists: solar, eclipse-trial)\n"


def test_a_window_that_leaves_every_item_out_says_how_far_back_the_stored_ones_go(
    tmp_path: Path,
) -> None:
    """The items were published yesterday: a window of an hour holds none of them, and the
    backtest says so and how long a window would take them in; that window finds the matches."""
    config = str(make_database(tmp_path))
    code, out, err = cli("backtest", "eclipse-trial", "--since", "1h", "--config", config)
    assert code == 0, err
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    assert out.splitlines()[1] == (
        f"3 stored items were published before that, the oldest on {yesterday:%Y-%m-%d};"
        " --since 2d reaches back to it"
    )

    code, out, err = cli("backtest", "eclipse-trial", "--since", "2d", "--config", config)
    assert code == 0, err
    assert out.startswith("eclipse-trial (disabled): 2 of 3 items published since")
    assert "stored item" not in out  # matches found: nothing to say of older items

    # Nothing published before the window, and nothing matched: no line about older items.
    code, out, _ = cli("backtest", "--query", "zebra", "--since", "7d", "--config", config)
    assert code == 0 and out.startswith("--query: 0 of 3 items published since")
    assert "stored item" not in out
