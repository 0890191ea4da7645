"""What `monitor check` reports about a valid config: errors where it surely cannot work, warnings
where it most likely does not do what was meant (monitor.config.advice), each with file, line and
key. The command's output and exit codes are in test_cli.py."""

from __future__ import annotations

from pathlib import Path

from monitor.config import parse_config
from monitor.config.advice import Finding, advise


def _findings(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[Finding]:
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    return advise(parse_config(text, str(config), env or {}), cwd=tmp_path)


def _where(findings: list[Finding]) -> list[tuple[int | None, str, bool]]:
    return [(f.problem.line, f.problem.key, f.error) for f in findings]


def test_a_feed_on_a_non_public_address_is_an_error_unless_allowed(tmp_path: Path) -> None:
    findings = _findings(
        tmp_path,
        "feeds:\n"
        "  - {name: loopback, url: 'http://127.0.0.1:8080/feed'}\n"
        "  - {name: local-name, url: 'http://LocalHost:8080/feed'}\n"
        "  - {name: allowed, url: 'http://127.0.0.1:8081/feed', allow_private: true}\n"
        "  - {name: intranet, url: 'http://10.1.2.3/rss'}\n"
        "  - {name: other-lan, url: 'http://192.168.1.9/rss'}\n"
        "  - {name: public, url: 'https://93.184.216.34/rss'}\n"
        "  - {name: by-name, url: 'https://news.example/rss'}\n"
        "  - {name: resting, url: 'http://127.0.0.1:8082/feed', enabled: false}\n"
        "fetch: {allow_networks: [10.1.0.0/16]}\n",
    )
    assert _where(findings) == [  # not the disabled feed: off on purpose
        (2, "feeds[0].url", True),
        (3, "feeds[1].url", True),
        (6, "feeds[4].url", True),
    ]
    assert findings[0].problem.message == (
        "this feed will never be fetched: address 127.0.0.1 is not public; set allow_private: "
        "true on the feed (or fetch.allow_private), or add its range to fetch.allow_networks"
    )
    assert findings[1].problem.message.startswith(
        "this feed will never be fetched: localhost is 127.0.0.1: address 127.0.0.1 is not public"
    )
    assert (
        _findings(
            tmp_path,
            "fetch: {allow_private: true}\n" + "feeds:\n"
            "  - {name: loopback, url: 'http://127.0.0.1:8080/feed'}\n",
        )
        == []
    )


def test_a_refused_url_from_a_variable_is_not_shown(tmp_path: Path) -> None:
    (finding,) = _findings(
        tmp_path,
        "feeds:\n  - {name: a, url: '${FEED_URL}'}\n",
        {"FEED_URL": "http://10.9.8.7/secret-path"},
    )
    assert finding.error
    assert "10.9.8.7" not in finding.problem.message and "secret" not in finding.problem.message
    assert finding.problem.message == (
        "this feed will never be fetched: the fetch rules refuse ${FEED_URL}"
    )


def test_a_missing_local_feed_file_is_a_warning_naming_where_it_was_looked_for(
    tmp_path: Path,
) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "there.xml").write_text("<rss/>", encoding="utf-8")
    findings = _findings(
        tmp_path,
        "feeds:\n"
        "  - {name: there, url: feeds/there.xml}\n"
        "  - {name: missing, url: feeds/missing.xml}\n"
        "  - {name: folder, url: feeds}\n",
    )
    assert _where(findings) == [(3, "feeds[1].url", False), (4, "feeds[2].url", False)]
    assert findings[0].problem.message.startswith(
        f"there is no file {tmp_path / 'feeds' / 'missing.xml'}: create it, or correct the path"
    )
    assert findings[1].problem.message == (
        f"{tmp_path / 'feeds'} is not a file: give the path of a feed file"
    )


def test_a_channel_no_watchlist_notifies_is_a_warning(tmp_path: Path) -> None:
    findings = _findings(
        tmp_path,
        "watchlists:\n"
        "  w: {query: x, notify: [desk]}\n"
        "  quiet: {query: y}\n"
        "channels:\n"
        "  desk: {type: console}\n"
        "  forgotten: {type: console}\n",
    )
    assert _where(findings) == [(6, "channels.forgotten", False)]
    assert findings[0].problem.message == (
        "no watchlist notifies channel 'forgotten', so it gets no alerts: add it to a "
        "watchlist's notify, or remove it"
    )
    # The built-in console channel is not the user's to remove; one written in the file is.
    assert _findings(tmp_path, "watchlists:\n  w: {query: x, notify: []}\n") == []
    written = _findings(
        tmp_path,
        "watchlists:\n  w: {query: x, notify: []}\nchannels:\n  console: {type: console}\n",
    )
    assert _where(written) == [(4, "channels.console", False)]


def test_lower_case_and_or_not_in_a_query_is_a_warning_with_its_column(tmp_path: Path) -> None:
    findings = _findings(
        tmp_path,
        "watchlists:\n"
        "  fine: {query: 'China OR Russia'}\n"
        "  meant-or: {query: 'china or russia'}\n"
        "  on-purpose: {query: 'war \"and\" peace'}\n",
    )
    assert _where(findings) == [(3, "watchlists.meant-or.query", False)]
    assert findings[0].problem.message == (
        "'or' at column 7 is an ordinary word that every match must contain: write OR for the "
        'operator, or "or" if you mean the word'
    )


def test_a_database_left_at_its_old_place_is_an_error_naming_both(tmp_path: Path) -> None:
    config_dir, old_cwd = tmp_path / "etc", tmp_path / "home"
    config_dir.mkdir()
    old_cwd.mkdir()
    (old_cwd / "monitor.db").write_bytes(b"")
    text = "database: {url: 'sqlite:///monitor.db'}\n"
    settings = parse_config(text, str(config_dir / "config.yaml"), {})
    (finding,) = advise(settings, cwd=old_cwd)
    assert (finding.problem.line, finding.problem.key, finding.error) == (1, "database.url", True)
    assert str(config_dir / "monitor.db") in finding.problem.message
    assert str(old_cwd / "monitor.db") in finding.problem.message
    assert "move that file" in finding.problem.message
    (config_dir / "monitor.db").write_bytes(b"")
    assert advise(settings, cwd=old_cwd) == []


def test_a_database_folder_that_does_not_exist_is_an_error_naming_it(tmp_path: Path) -> None:
    (finding,) = _findings(tmp_path, "database: {url: 'sqlite:///data/monitor.db'}\n")
    assert (finding.problem.line, finding.problem.key, finding.error) == (1, "database.url", True)
    assert finding.problem.message == (
        f"the folder of the SQLite database {tmp_path}/data/monitor.db does not exist: create "
        f"{tmp_path}/data, or set database.url to another path"
    )
    (tmp_path / "data").mkdir()
    assert _findings(tmp_path, "database: {url: 'sqlite:///data/monitor.db'}\n") == []


def test_the_example_config_has_nothing_to_report() -> None:
    example = Path(__file__).resolve().parents[1] / "config.example.yaml"
    settings = parse_config(example.read_text("utf-8"), str(example), {})
    assert advise(settings, cwd=example.parent) == []
