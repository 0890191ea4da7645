"""OPML import and export: the mapping (monitor.core.opml), adding feeds to a config file without
touching the rest of it (monitor.config.edit), and `monitor opml import|export` run as users run
them, with a round trip on a reader's export (tests/data/opml/subscriptions.opml: folders, Arabic
titles, a feed listed twice, a link outline and an ftp: one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import listparser
import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import load_config, parse_config
from monitor.config.edit import EditError, add_feeds
from monitor.core.opml import (
    ConfiguredFeed,
    ImportedFeed,
    OpmlError,
    export_opml,
    plan_import,
    read_opml,
)

ROOT = Path(__file__).resolve().parents[1]
SUBSCRIPTIONS = Path(__file__).parent / "data" / "opml" / "subscriptions.opml"
NEW = [
    ("aljazeera-net", "https://www.aljazeera.net/aljazeerarss/a7c186be-1baa-4bd4-9d80-a84db769f779/73d0e1b4-532f-45ef-b135-bfdff8b8cab9"),
    ("reuters-world-news", "https://www.reutersagency.com/feed/?best-topics=political-general&post_type=best"),
    ("the-guardian-world-news", "https://www.theguardian.com/world/rss"),
    ("focus-taiwan-cna-english-news", "https://focustaiwan.tw/rss/aall.xml"),
    ("scmp-china", "https://www.scmp.com/rss/4/feed"),
]  # fmt: skip


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The example config, comments and all, with its sample feed file beside it."""
    (tmp_path / "examples" / "feeds").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "feeds" / "sample.xml", tmp_path / "examples" / "feeds")
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "config.example.yaml", path)
    return path


# ---- the mapping ---------------------------------------------------------------------------------


def test_an_import_names_new_feeds_and_skips_configured_repeated_and_non_http_ones() -> None:
    configured = [
        ConfiguredFeed("aawsat", "https://aawsat.com/feed"),
        ConfiguredFeed("world", "https://feeds.bbci.co.uk/news/world/rss.xml"),
        ConfiguredFeed("scmp-china", "https://example.org/another-feed-of-that-name"),
    ]
    plan = plan_import(read_opml(SUBSCRIPTIONS.read_bytes()), configured)
    assert [(f.name, f.title, f.folders) for f in plan.feeds] == [
        ("bbc", "BBC عربي", ("Arabic",)),  # the Latin part of the title
        ("aljazeera-net", "الجزيرة نت", ("Arabic",)),  # no Latin letters: the host
        ("al-jazeera-english", "Al Jazeera English", ("World",)),
        ("reuters-world-news", "Reuters: World News", ("World",)),
        ("the-guardian-world-news", "The Guardian – World news", ("World",)),
        ("focus-taiwan-cna-english-news", "Focus Taiwan – CNA English News", ("Asia",)),
        ("scmp-china-2", "SCMP – China", ("Asia",)),  # the name is taken
    ]
    assert plan.already_configured == ("aawsat", "world")
    assert plan.repeated == 1  # BBC World again under Asia, in capitals and with a slash
    assert plan.not_http == ("ftp://ftp.example.org/wire/news.rss",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<rss version='2.0'><channel><title>x</title></channel></rss>", "not an OPML"),
        (b"", "not an OPML"),
        (b"<opml version='2.0'><head/><body><outline text='x'/></body></opml>", "no feed"),
    ],
)
def test_what_is_not_an_opml_list_of_feeds_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(OpmlError, match=message):
        read_opml(data)


def test_an_export_is_opml_2_with_every_http_feed_escaped() -> None:
    document = export_opml(
        [
            ConfiguredFeed("wire", "https://example.org/feed?a=1&b=<2>", "ar"),
            ConfiguredFeed("sample", "examples/feeds/sample.xml"),
        ]
    )
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">')
    assert 'xmlUrl="https://example.org/feed?a=1&amp;b=&lt;2&gt;" language="ar"' in document
    parsed = listparser.parse(document.encode())
    assert parsed.version == "opml2" and not parsed.bozo
    assert [(f.title, f.url) for f in parsed.feeds] == [
        ("wire", "https://example.org/feed?a=1&b=<2>")
    ]


# ---- adding to the file --------------------------------------------------------------------------

ADDED = [ImportedFeed("new-one", "https://n.example/feed?x=1&y=2", "New: one", ("Folder",))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "feeds:\n  - name: a   # first\n    url: https://a.example/f\n\n# watch\nwatchlists: {}\n",
            "feeds:\n  - name: a   # first\n    url: https://a.example/f\n"
            "  - name: new-one  # New: one · Folder\n    url: https://n.example/feed?x=1&y=2\n"
            "\n# watch\nwatchlists: {}\n",
            id="block items: after the last, before the blank line and comment that follow",
        ),
        pytest.param(
            "feeds:\n- {name: a, url: 'https://a.example/f'}  # A\n# end\n",
            "feeds:\n- {name: a, url: 'https://a.example/f'}  # A\n"
            "- {name: new-one, url: https://n.example/feed?x=1&y=2}  # New: one · Folder\n# end\n",
            id="flow items, not indented",
        ),
        pytest.param(
            "watchlists:\n  w: {query: x}",
            "watchlists:\n  w: {query: x}\nfeeds:\n"
            "  - name: new-one  # New: one · Folder\n    url: https://n.example/feed?x=1&y=2\n",
            id="no feeds section, no final newline",
        ),
        pytest.param(
            "feeds:  # none yet\r\nwatchlists: {}\r\n",
            "feeds:  # none yet\r\n  - name: new-one  # New: one · Folder\r\n"
            "    url: https://n.example/feed?x=1&y=2\r\nwatchlists: {}\r\n",
            id="an empty feeds section, CRLF line ends",
        ),
    ],
)
def test_feeds_are_added_as_lines_and_nothing_else_changes(text: str, expected: str) -> None:
    assert add_feeds(text, ADDED) == expected
    assert [f.name for f in parse_config(expected, env={}).feeds][-1] == "new-one"


def test_a_feeds_list_on_one_line_is_not_edited() -> None:
    with pytest.raises(EditError, match="add the entries by hand"):
        add_feeds("feeds: [{name: a, url: 'https://a.example/f'}]\n", ADDED)


# ---- the commands --------------------------------------------------------------------------------


def test_import_prints_the_entries_to_add_and_changes_nothing(config: Path) -> None:
    before = config.read_bytes()
    code, out, err = run("--config", str(config), "opml", "import", str(SUBSCRIPTIONS))
    assert code == 0
    assert out.splitlines()[:2] == [
        "  - name: aljazeera-net  # الجزيرة نت · Arabic",
        f"    url: {NEW[0][1]}",
    ]
    assert err.splitlines() == [
        "4 feeds already configured: aawsat, bbc-arabic, bbc-world, aljazeera-en",
        f"1 feed listed twice in {SUBSCRIPTIONS}: taken once",
        "skipped ftp://ftp.example.org/wire/news.rss: not an http(s) URL",
        f"5 feeds to add: put the lines above under feeds: in {config}, or run again with --write",
    ]
    assert config.read_bytes() == before


def test_opml_round_trip_through_the_config_file(config: Path) -> None:
    original = config.read_text("utf-8")
    code, _, err = run("--config", str(config), "opml", "import", "--write", str(SUBSCRIPTIONS))
    assert code == 0, err
    assert "added 5 feeds" in err
    written = config.read_text("utf-8")
    # Every line of the file is still there, in order, comments included; only feeds were added.
    added = [line for line in written.splitlines() if line not in original.splitlines()]
    assert len(added) == 2 * len(NEW)
    assert [line for line in written.splitlines() if line in original.splitlines()] == (
        original.splitlines()
    )
    settings = load_config(config, env={})
    configured = [(f.name, f.url) for f in settings.feeds]
    assert configured[-5:] == NEW
    # A second import has nothing to add.
    code, out, err = run("--config", str(config), "opml", "import", "--write", str(SUBSCRIPTIONS))
    assert (code, out) == (0, "") and err.rstrip().endswith("nothing to add")
    assert config.read_text("utf-8") == written
    # The export lists every http(s) feed of the file; importing it elsewhere gives the same feeds.
    code, exported, err = run("--config", str(config), "opml", "export")
    assert code == 0
    assert err == "left out 1 local feed file(s): sample\n"
    parsed = listparser.parse(exported.encode())
    assert [(f.title, f.url) for f in parsed.feeds] == configured[1:]
    elsewhere = config.parent / "elsewhere.yaml"
    elsewhere.write_text("# a second monitor\nwatchlists: {w: {query: x}}\n", "utf-8")
    (config.parent / "feeds.opml").write_text(exported, "utf-8")
    code, _, err = run(
        "--config", str(elsewhere), "opml", "import", "--write", str(config.parent / "feeds.opml")
    )
    assert code == 0, err
    assert [(f.name, f.url) for f in load_config(elsewhere, env={}).feeds] == configured[1:]


def test_import_of_a_file_that_is_not_opml_is_one_line_and_exit_1(config: Path) -> None:
    code, _, err = run("--config", str(config), "opml", "import", str(ROOT / "config.example.yaml"))
    assert code == 1
    assert err.startswith(f"error: {ROOT / 'config.example.yaml'}: not an OPML subscription list")
    code, _, err = run("--config", str(config), "opml", "import", str(config.parent / "none.opml"))
    assert code == 1
    assert err == f"error: cannot read {config.parent / 'none.opml'}: No such file or directory\n"
