"""The command line, run the way users run it: `monitor check`, `monitor match`, and every
command's help and `--config`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from httpserver import LoopbackServer
from servicekit import cli as run
from typer.testing import CliRunner

from monitor.cli import app
from monitor.cli.app import MonitorGroup

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "config.example.yaml"
REFERENCE = ROOT / "examples" / "articles" / "aawsat-wang-yi-russia.txt"
WATCHLISTS = """
entities:
  taiwan: {aliases: ["Taiwan", "تايوان", "台湾"]}
  red-line: {aliases: ["red line", "خط أحمر", "红线"]}
watchlists:
  taiwan-red-line: {query: "@taiwan AND @red-line"}
  russia: {query: "روسيا OR Russia"}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(WATCHLISTS, encoding="utf-8")
    return path


def test_check_prints_a_summary_of_the_example_config() -> None:
    code, out, _ = run("--config", str(EXAMPLE_CONFIG), "check")
    assert code == 0
    assert "taiwan-red-line" in out and "@taiwan AND @red-line" in out
    assert out.rstrip().endswith("OK")


def test_check_lists_every_error_with_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "watchlists:\n"
        "  a: {query: '@nope AND x'}\n"
        "  b: {query: 'x AND'}\n"
        "feeds:\n"
        "  - {name: f, url: 'https://example.org/feed', intervall: 5m}\n",
        encoding="utf-8",
    )
    code, out, err = run("--config", str(bad), "check")
    assert code == 2
    assert out == ""
    assert f"{bad}:2: watchlists.a.query:" in err and "unknown entity @nope" in err
    assert f"{bad}:3: watchlists.b.query:" in err and "column 3" in err
    assert f"{bad}:5: feeds[0].intervall:" in err
    assert "3 problems" in err


def test_check_warns_of_what_is_valid_but_likely_wrong_and_still_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    lines = [
        "feeds:",
        "  - {name: local, url: feeds/missing.xml}",
        "watchlists:",
        "  w: {query: 'china or russia', notify: [desk]}",
        "channels:",
        "  desk: {type: console}",
        "  spare: {type: console}",
    ]
    config.write_text("\n".join(lines), encoding="utf-8")
    code, out, err = run("--config", str(config), "check")
    assert code == 0
    assert err.splitlines() == [
        f"warning: {config}:2: feeds[0].url: there is no file {tmp_path / 'feeds/missing.xml'}: "
        "create it, or correct the path (a relative path is relative to the config file's folder)",
        f"warning: {config}:4: watchlists.w.query: 'or' at column 7 is an ordinary word that every "
        'match must contain: write OR for the operator, or "or" if you mean the word',
        f"warning: {config}:7: channels.spare: no watchlist notifies channel 'spare', so it gets "
        "no alerts: add it to a watchlist's notify, or remove it",
    ]
    assert out.splitlines()[-1] == f"{config}: OK (3 warnings)"


def test_check_exits_2_for_a_feed_that_can_never_be_fetched(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("feeds:\n  - {name: lan, url: 'http://192.168.1.20/rss'}\n", "utf-8")
    code, out, err = run("--config", str(config), "check")
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        f"error: {config}:2: feeds[0].url: this feed will never be fetched: address 192.168.1.20 "
        "is not public; set allow_private: true on the feed (or fetch.allow_private), or add its "
        "range to fetch.allow_networks",
        f"1 problem in {config}",
    ]


def test_check_names_a_missing_config(tmp_path: Path) -> None:
    code, _, err = run("--config", str(tmp_path / "none.yaml"), "check")
    assert code == 2
    assert "none.yaml" in err and "MONITOR_CONFIG" in err


def test_match_json_on_the_reference_article(config: Path) -> None:
    code, out, _ = run("--config", str(config), "match", "--json", str(REFERENCE))
    assert code == 0
    (line,) = out.splitlines()
    record = json.loads(line)
    assert line == json.dumps(record, ensure_ascii=False)  # exactly as json.dumps writes it
    assert record["input"] == str(REFERENCE)
    assert record["title"].startswith("بعد لقائه مستشار الأمن القومي")
    assert [m["watchlist"] for m in record["matches"]] == ["taiwan-red-line", "russia"]
    body = REFERENCE.read_text("utf-8").split("\n", 1)[1].lstrip("\n")
    hits = record["matches"][0]["hits"]
    assert set(hits[0]) == {"term", "field", "start", "end"}
    assert [(h["term"], body[h["start"] : h["end"]]) for h in hits] == [
        ("تايوان", "تايوان"),
        ("تايوان", "تايوان"),
        ("خط أحمر", "خط أحمر"),
    ]


def test_match_json_escapes_what_json_escapes(tmp_path: Path) -> None:
    """Quotes, backslashes, control characters, line separators and emoji in the input's name,
    the title and a term: the line is still exactly json.dumps's."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "watchlists:\n  say-no: {query: '\"C:\\\\temp\" OR émoji'}\n  plain: {query: 'tab'}\n",
        encoding="utf-8",
    )
    # Linux file names may hold any character but / and NUL: the input's name carries the
    # control characters the reader would tidy out of a title.
    article = tmp_path / 'odd "name" \\ \t\u2028\x7f\x1b ✓ 🎉.txt'
    article.write_text('A "quoted" C:\\temp\ttab émoji 🎉 title\nbody émoji\n', encoding="utf-8")
    code, out, err = run("--config", str(config), "match", "--json", str(article))
    assert code == 0, err
    (line,) = out.rstrip("\n").split("\n")  # U+2028 is not escaped, so not splitlines()
    record = json.loads(line)
    assert line == json.dumps(record, ensure_ascii=False)
    assert "\\t" in line and "\\u001b" in line and '\\"name\\"' in line
    assert record["input"] == str(article)
    assert record["title"] == 'A "quoted" C:\\temp tab émoji 🎉 title'
    assert [m["watchlist"] for m in record["matches"]] == ["say-no", "plain"]
    assert {h["term"] for h in record["matches"][0]["hits"]} == {"C:\\\\temp", "émoji"}
    assert [h["field"] for h in record["matches"][0]["hits"]] == ["title", "title", "body"]


def test_match_table_highlights_the_hits(config: Path) -> None:
    code, out, _ = run("--config", str(config), "match", str(REFERENCE))
    assert code == 0
    assert "taiwan-red-line" in out
    assert "خط أحمر" in out and "قضية تايوان" in out
    assert "1 of 1 item matched (2 watchlists)" in out


def test_match_reports_a_missing_input_and_still_matches_the_others(
    config: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "latin1.txt"
    broken.write_bytes("Taïwan red line\n\xe9t\xe9".encode("latin-1"))
    code, out, err = run(
        "--config", str(config), "match", "--json", "missing.txt", str(broken), str(REFERENCE)
    )
    assert code == 1
    assert "missing.txt" in err and "no such file" in err
    assert "latin1.txt" in err
    assert "2 of 3 inputs failed" in err
    assert [json.loads(line)["input"] for line in out.splitlines()] == [str(REFERENCE)]


def test_match_reads_standard_input(config: Path) -> None:
    code, out, _ = run(
        "--config", str(config), "match", "--json", "-", stdin=b"Taipei\nTaiwan, a red line"
    )
    assert code == 0
    record = json.loads(out)
    assert record["input"] == "-"
    assert record["matches"][0]["watchlist"] == "taiwan-red-line"


def test_match_a_feed_url_item_by_item(tmp_path: Path, http_server: LoopbackServer) -> None:
    feed = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        "<item><title>قضية تايوان</title><description>أول خط أحمر</description></item>"
        "<item><title>Weather</title><description>Sunny</description></item>"
        "</channel></rss>"
    )
    http_server.respond(
        "/feed.xml", body=feed.encode(), headers={"Content-Type": "application/rss+xml"}
    )
    config = tmp_path / "config.yaml"
    config.write_text(WATCHLISTS + "fetch: {allow_private: true}\n", encoding="utf-8")
    code, out, _ = run("--config", str(config), "match", "--json", http_server.url("/feed.xml"))
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["title"] for r in records] == ["قضية تايوان", "Weather"]
    assert [m["watchlist"] for m in records[0]["matches"]] == ["taiwan-red-line"]
    assert records[0]["matches"][0]["hits"][0]["field"] == "title"
    assert records[1]["matches"] == []


def test_match_refuses_a_private_url_by_default(config: Path, http_server: LoopbackServer) -> None:
    code, _, err = run("--config", str(config), "match", http_server.url("/etag"))
    assert code == 1
    assert "address 127.0.0.1 is not public" in err
    assert "allow_private: true on the feed" in err and "fetch.allow_networks" in err
    assert http_server.requests == []


def test_fetch_allow_networks_opens_only_the_listed_range(
    tmp_path: Path, feeds: LoopbackServer
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(WATCHLISTS + "fetch: {allow_networks: [127.0.0.1/32]}\n", encoding="utf-8")
    assert (
        "private addresses refused except 127.0.0.1/32" in run("--config", str(config), "check")[1]
    )
    code, out, _ = run("--config", str(config), "match", "--json", feeds.url("/a.xml"))
    assert code == 0
    assert [json.loads(line)["title"] for line in out.splitlines()] == ["first"]

    config.write_text(WATCHLISTS + "fetch: {allow_networks: [10.0.0.0/8]}\n", encoding="utf-8")
    code, _, err = run("--config", str(config), "match", feeds.url("/a.xml"))
    assert code == 1
    assert "not public" in err
    assert len(feeds.requests) == 1


def test_match_query_tries_a_query_with_the_configs_entities(config: Path) -> None:
    code, out, err = run(
        "--config",
        str(config),
        "match",
        "--json",
        "--query",
        "@taiwan NEAR/5 @red-line",
        str(REFERENCE),
    )
    assert code == 0, err
    (match,) = json.loads(out)["matches"]
    assert match["watchlist"] == "--query"
    assert [h["term"] for h in match["hits"]] == ["تايوان", "خط أحمر"]
    body = REFERENCE.read_text("utf-8").split("\n", 1)[1].lstrip("\n")
    found = {}
    for query in ("الصين", "=الصين"):
        code, out, _ = run("--config", str(config), "match", "--json", "-q", query, str(REFERENCE))
        assert code == 0
        (match,) = json.loads(out)["matches"]
        found[query] = [body[h["start"] : h["end"]] for h in match["hits"]]
    assert found == {"الصين": ["والصين", "الصين", "والصين", "الصين"], "=الصين": ["الصين"] * 2}
    code, out, _ = run("--config", str(config), "match", "-q", "=الصين", str(REFERENCE))
    assert code == 0
    assert "1 of 1 item matched (1 watchlist)" in out


def test_match_query_that_does_not_parse_points_at_the_column(config: Path) -> None:
    code, out, err = run("--config", str(config), "match", "--query", "taiwan AND =", "-")
    assert code == 2
    assert out == ""
    assert "= needs a word right after it" in err
    assert "taiwan AND =\n           ^" in err


def test_match_detects_the_language_when_a_watchlist_asks_for_it(
    config: Path, tmp_path: Path
) -> None:
    """`lang:` and `languages:` see the language the service would detect (here no feed tags
    it); an item too short to tell has none, and then only `lang:` fails."""
    english = tmp_path / "solar.txt"
    english.write_text(
        "Solar power sets a record\nSolar panels produced more electricity than coal across "
        "the country this spring, the grid operator said.\n",
        encoding="utf-8",
    )
    short = tmp_path / "short.txt"
    short.write_text("Solar\nSunny\n", encoding="utf-8")
    for query, matched in (
        ("lang:en AND solar", [str(english)]),
        ("lang:ar AND solar", []),
        ("solar NOT lang:en", [str(short)]),
    ):
        code, out, err = run(
            "--config", str(config), "match", "--json", "-q", query, str(english), str(short)
        )
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        assert [r["input"] for r in records if r["matches"]] == matched, query


# ---- help ----------------------------------------------------------------------------------------


def _command_paths() -> list[list[str]]:
    """Every command and group of `monitor`, as the words that name it."""
    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]
    pending: list[tuple[list[str], Any]] = [([], root)]
    while pending:
        path, command = pending.pop()
        for name, sub in getattr(command, "commands", {}).items():
            paths.append([*path, name])
            pending.append(([*path, name], sub))
    return sorted(paths)


def test_every_help_has_a_one_line_purpose_and_examples_and_no_type_noise() -> None:
    paths = _command_paths()
    assert ["feeds"] in paths and ["subscribers", "remove"] in paths and ["db", "upgrade"] in paths
    for path in paths:
        code, out, _ = run(*path, "--help")
        assert code == 0, path
        lines = out.splitlines()
        assert lines[0].startswith("Usage: monitor"), path
        for noise in ("<bool>", "<str>", "<int>", "<list", "<path>", "{", "SPEC", "§", "shared/"):
            assert noise not in out, (path, noise)
        purpose = lines[2].strip()
        assert purpose.endswith(".") and (len(lines) < 4 or lines[3] == ""), (path, lines[:4])
        assert "Example" in out, path
    _, root, _ = run("--help")
    listed = root[root.index("Commands:") :].splitlines()[1:]
    truncated = [line for line in listed if line.endswith("...")]
    assert listed and not truncated


def test_a_command_registered_without_the_monitor_classes_gets_the_same_help() -> None:
    extra = typer.Typer(cls=MonitorGroup, rich_markup_mode=None)

    @extra.command()
    def take(file: Annotated[Path, typer.Argument(help="A file to take.")]) -> None:
        """Take a file."""

    @extra.command()
    def leave() -> None:
        """Leave."""

    shown = CliRunner().invoke(extra, ["take", "--help"], prog_name="monitor").output
    assert "Usage: monitor take [OPTIONS] FILE\n" in shown and "  FILE  A file to take." in shown
    assert "<path>" not in shown and "{" not in shown
    wrong = CliRunner().invoke(extra, ["take", "--jsn", "x"], prog_name="monitor")
    assert wrong.exit_code == 2
    assert wrong.stderr == "error: No such option: --jsn; see monitor take --help\n"


def test_config_after_the_command_means_the_same_as_before_it(config: Path) -> None:
    assert run("check", "--config", str(EXAMPLE_CONFIG)) == run(
        "--config", str(EXAMPLE_CONFIG), "check"
    )
    code, out, _ = run("match", "--json", str(REFERENCE), "-c", str(config))
    assert code == 0 and json.loads(out)["matches"], out
    code, _, err = run("--config", str(EXAMPLE_CONFIG), "check", "--config", "missing.yaml")
    assert code == 2 and "missing.yaml" in err  # the one after the command wins


def test_a_usage_error_is_one_line_that_says_where_to_look() -> None:
    assert run("feeds", "--jsn") == (
        2,
        "",
        "error: No such option: --jsn (Possible options: --json); see monitor feeds --help\n",
    )
    code, _, err = run("fedds")
    assert (code, err) == (
        2,
        "error: No such command 'fedds'. Did you mean 'feeds'?; see monitor --help\n",
    )
    code, _, err = run("subscribers", "remove")
    assert (code, err) == (
        2,
        "error: Missing argument 'CHAT'; see monitor subscribers remove --help\n",
    )


def test_an_option_without_its_value_is_a_one_line_usage_error() -> None:
    assert run("--config") == (
        2,
        "",
        "error: Option '--config' requires an argument; see monitor --help\n",
    )
    code, _, err = run("feeds", "--config")
    assert (code, err) == (
        2,
        "error: Option '--config' requires an argument; see monitor feeds --help\n",
    )
    code, _, err = run("feeds", "--check", "--failing-for")
    assert (code, err) == (
        2,
        "error: Option '--failing-for' requires an argument; see monitor feeds --help\n",
    )


def test_subscribers_without_a_bot_says_what_would_start_one(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"database: {{url: 'sqlite:///{tmp_path / 'm.db'}'}}\n{WATCHLISTS}", "utf-8")
    assert run("--config", str(config), "db", "upgrade")[0] == 0
    code, out, err = run("--config", str(config), "subscribers")
    assert (code, out) == (0, "")
    assert err.startswith("no subscribers: this config has no `telegram:` section")

    with_bot = config.read_text("utf-8") + "telegram: {token: '123456:ABCdef'}\n"
    config.write_text(with_bot, "utf-8")
    code, out, err = run("--config", str(config), "subscribers")
    assert (code, out, err) == (
        0,
        "",
        "no subscribers yet: people subscribe by talking to the bot\n",
    )
