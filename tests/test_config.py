"""monitor.config: the YAML file → Settings, or every problem with file, line and key.

Most cases are tables in tests/data/config/: invalid.yaml (snippet → expected problems) and
valid.yaml (snippet → expected values). This file holds the cases a table cannot express.
"""

from __future__ import annotations

import re
import time
from datetime import time as time_of_day
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from monitor.config import (
    ConsoleChannel,
    Digest,
    EmailChannel,
    Settings,
    TelegramChannel,
    load_config,
    parse_config,
    summary,
)
from monitor.durations import format_duration, format_size, parse_duration, parse_size
from monitor.errors import ConfigError, ConfigProblem

DATA = Path(__file__).parent / "data" / "config"
SPEC_EXAMPLE = DATA / "spec_example.yaml"
TOKEN = "123456789:AAE-secret-token-value_xyz"
PASSWORD = "correct horse battery staple"
SPEC_ENV = {"TELEGRAM_BOT_TOKEN": TOKEN, "SMTP_HOST": "smtp.example.org"}


def _cases(name: str, fault: int | None = None) -> list[Any]:
    """The table's cases of one fault of docs/faults.md (`fault: N`), or those of none."""
    cases = yaml.safe_load((DATA / name).read_text(encoding="utf-8"))
    return [pytest.param(case, id=case["name"]) for case in cases if case.get("fault") == fault]


def _problems(text: str, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.yaml", env or {})
    return caught.value.problems


# ---- the tables ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("invalid.yaml"))
def test_invalid_config_reports_every_problem(case: dict[str, Any]) -> None:
    _assert_problems(case)


@pytest.mark.parametrize("case", _cases("invalid.yaml", fault=38))
def test_fault_38_invalid_yaml_is_refused_with_its_line(case: dict[str, Any]) -> None:
    _assert_problems(case)


@pytest.mark.parametrize("case", _cases("invalid.yaml", fault=39))
def test_fault_39_an_unknown_key_is_refused_with_a_suggestion(case: dict[str, Any]) -> None:
    _assert_problems(case)


@pytest.mark.parametrize("case", _cases("invalid.yaml", fault=40))
def test_fault_40_duplicate_keys_and_empty_files_are_errors(case: dict[str, Any]) -> None:
    _assert_problems(case)


@pytest.mark.parametrize("case", _cases("valid.yaml", fault=40))
def test_fault_40_yaml_1_1_values_load_as_typed(case: dict[str, Any]) -> None:
    _assert_values(case)


@pytest.mark.parametrize("case", _cases("invalid.yaml", fault=41))
def test_fault_41_a_query_that_does_not_parse_is_refused_naming_the_watchlist(
    case: dict[str, Any],
) -> None:
    _assert_problems(case)


@pytest.mark.parametrize("case", _cases("invalid.yaml", fault=44))
def test_fault_44_non_positive_durations_and_time_zone_typos_are_refused(
    case: dict[str, Any],
) -> None:
    _assert_problems(case)


def _assert_problems(case: dict[str, Any]) -> None:
    problems = _problems(case["config"], case.get("env"))
    got = [(p.key, p.line, p.message) for p in problems]
    assert len(problems) == len(case["problems"]), got
    for problem, (key, line, fragment) in zip(problems, case["problems"], strict=True):
        assert problem.file == "config.yaml"
        assert (problem.key, problem.line) == (key, line), got
        assert fragment in problem.message, got


def _render(value: Any) -> Any:
    """Settings values in the spelling valid.yaml uses."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, time_of_day):
        return f"{value:%H:%M}"
    if isinstance(value, tuple):
        return [_render(item) for item in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if hasattr(value, "items"):
        return {key: _render(item) for key, item in value.items()}
    return value


def _lookup(settings: Settings, path: str) -> Any:
    value: Any = settings
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        if index:
            value = value[int(index)]
        elif hasattr(value, "keys"):
            value = value[name]
        else:
            value = getattr(value, name)
    return value


@pytest.mark.parametrize("case", _cases("valid.yaml"))
def test_valid_config_loads_as_written(case: dict[str, Any]) -> None:
    _assert_values(case)


def _assert_values(case: dict[str, Any]) -> None:
    settings = parse_config(case["config"], "config.yaml", case.get("env", {}))
    for path, expected in case["expect"].items():
        assert _render(_lookup(settings, path)) == expected, path


def test_a_relative_sqlite_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "config.yaml"
    config.parent.mkdir()
    cases = {
        "sqlite:///monitor.db": f"sqlite:///{tmp_path}/etc/monitor.db",
        "sqlite:///data/m.db?timeout=5": f"sqlite:///{tmp_path}/etc/data/m.db?timeout=5",
        "sqlite:////var/lib/m.db": "sqlite:////var/lib/m.db",
        "sqlite:///:memory:": "sqlite:///:memory:",
        "postgresql+psycopg://u@h/db": "postgresql+psycopg://u@h/db",
    }
    for written, resolved in cases.items():
        config.write_text(f"database: {{url: '{written}'}}\n", "utf-8")
        settings = load_config(config)
        assert settings.database.url == resolved, written
        relative = written.removeprefix("sqlite:///").partition("?")[0]
        expected = relative if resolved != written else None
        assert settings.relative_database_path == expected, written


# ---- the SPEC §2 example -------------------------------------------------------------------------


def test_spec_example_loads_cleanly() -> None:
    settings = load_config(SPEC_EXAMPLE, env=SPEC_ENV)

    assert settings.config_dir == DATA.absolute()
    assert [feed.name for feed in settings.feeds] == ["aawsat", "sample"]
    assert settings.feeds[0].interval == timedelta(minutes=5)
    assert settings.feeds[1].interval == timedelta(minutes=10)  # from defaults.interval
    assert settings.entities["taiwan"].aliases[2] == "تايوان"
    taiwan = settings.watchlists["taiwan-red-line"]
    assert (taiwan.name, taiwan.query, taiwan.notify) == (
        "taiwan-red-line",
        "@taiwan AND @red-line",
        ("analysts", "desk"),
    )
    china = settings.watchlists["china-russia"]
    assert (china.notify, china.languages, china.feeds) == (("console",), ("ar", "en"), ("aawsat",))
    analysts, desk = settings.channels["analysts"], settings.channels["desk"]
    assert isinstance(analysts, TelegramChannel)
    assert analysts.chat_ids == (-1001234567890,)
    assert isinstance(desk, EmailChannel)
    assert desk.digest == Digest(every="daily", at=time_of_day(8, 0), timezone="Europe/London")
    assert str(desk.digest) == "daily 08:00 Europe/London"
    assert isinstance(settings.channels["log"], ConsoleChannel)
    assert settings.telegram is not None
    assert settings.telegram.token.get_secret_value() == TOKEN
    assert settings.email is not None
    assert (settings.email.host, settings.email.port, settings.email.starttls) == (
        "smtp.example.org",
        587,
        True,
    )
    assert settings.email.username is None
    assert settings.email.password is None
    assert settings.fetch.max_body == 10 * 1024 * 1024
    assert settings.database.retention == timedelta(days=90)


def test_fault_43_spec_example_without_its_environment_names_both_variables() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(SPEC_EXAMPLE, env={})
    problems = [(p.key, p.message) for p in caught.value.problems]
    assert [key for key, _ in problems] == ["telegram.token", "email.host"]
    assert "TELEGRAM_BOT_TOKEN is not set" in problems[0][1]
    assert "SMTP_HOST is not set" in problems[1][1]


def test_summary_names_everything_and_hides_secrets() -> None:
    settings = load_config(SPEC_EXAMPLE, env=SPEC_ENV)
    text = summary(settings)
    for expected in (
        "feeds (2)",
        "aawsat",
        "https://aawsat.com/feed",
        "entities (2)",
        "watchlists (2)",
        "@taiwan AND @red-line",
        "→ analysts, desk",
        "channels (4)",
        "digest daily 08:00 Europe/London",
        "telegram ",
        "token set",
    ):
        assert expected in text
    assert TOKEN not in text
    assert len(text.splitlines()) < 40


# ---- secrets -------------------------------------------------------------------------------------

SECRETS_CONFIG = """
database:
  url: postgresql+psycopg://monitor:${DB_PASSWORD}@db.internal/monitor
telegram:
  token: ${TELEGRAM_BOT_TOKEN}
email:
  host: smtp.example.org
  username: monitor
  password: ${SMTP_PASSWORD}
"""
SECRETS_ENV = {"TELEGRAM_BOT_TOKEN": TOKEN, "SMTP_PASSWORD": PASSWORD, "DB_PASSWORD": "pg-secret"}


def test_secrets_never_appear_in_repr_summary_or_dumps() -> None:
    settings = parse_config(SECRETS_CONFIG, env=SECRETS_ENV)
    assert settings.email is not None and settings.email.password is not None
    assert settings.email.password.get_secret_value() == PASSWORD
    for text in (
        repr(settings),
        str(settings),
        summary(settings),
        settings.model_dump_json(exclude={"database"}),
    ):
        for secret in (TOKEN, PASSWORD, "pg-secret"):
            assert secret not in text
    assert "monitor:***@db.internal" in summary(settings)


def test_secrets_never_appear_in_errors() -> None:
    env = {
        "TELEGRAM_BOT_TOKEN": "not a token " + PASSWORD,
        "SMTP_PASSWORD": PASSWORD,
        "SMTP_PORT": PASSWORD,
    }
    text = SECRETS_CONFIG.replace("smtp.example.org", "smtp.example.org\n  port: ${SMTP_PORT}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.yaml", env)
    message = str(caught.value)
    assert "telegram.token: does not look like a bot token" in message
    assert "email.port: expected a whole number (value from ${SMTP_PORT})" in message
    assert "DB_PASSWORD is not set" in message
    assert PASSWORD not in message


VARIABLES_CONFIG = """
database: {url: "${DB_URL}", retention: "${RETENTION}"}
defaults: {interval: "${INTERVAL}", timeout: 30s, alert_max_age: "${MAX_AGE:-2d}"}
fetch: {max_body: "${MAX_BODY}", per_host: "${PER_HOST}", allow_networks: ["${INTRANET}"]}
service: {listen: "${LISTEN}"}
feeds:
  - {name: a, url: "https://${NEWS_HOST}/feed", language: "${LANG_A}"}
  - {name: b, url: "https://b.example/feed", interval: 5m, alert_max_age: "${OLD}"}
  - {name: hidden-feed, url: "https://c.example/feed"}
entities:
  e: {aliases: ["${ALIAS}", plain alias]}
watchlists:
  w: {query: "${QUERY}", notify: [desk, team], feeds: "${FEED_FILTER}"}
channels:
  desk: {type: email, to: ["${DESK_EMAIL}", boss@example.org], digest: "${DIGEST}"}
  team: {type: telegram, chat_ids: "${CHAT}"}
telegram: {token: "${TELEGRAM_BOT_TOKEN}", api_url: "${BOT_API}"}
email: {host: "${SMTP_HOST}", port: "${SMTP_PORT}", from: "${FROM}"}
"""
VARIABLES_ENV = {
    "DB_URL": "postgresql+psycopg://monitor@db.secret.example/news",
    "RETENTION": "33d",
    "INTERVAL": "7m",
    "MAX_AGE": "",
    "MAX_BODY": "3MB",
    "PER_HOST": "17",
    "INTRANET": "172.16.0.0/12",
    "LISTEN": "127.0.0.1:9999",
    "NEWS_HOST": "news.secret.example",
    "LANG_A": "sv",
    "OLD": "5d",
    "ALIAS": "Hidden Alias",
    "QUERY": "secretword",
    "FEED_FILTER": "hidden-feed",
    "DESK_EMAIL": "desk@secret.example",
    "DIGEST": "daily 09:45",
    "CHAT": "-100424242",
    "TELEGRAM_BOT_TOKEN": TOKEN,
    "BOT_API": "https://bot.secret.example",
    "SMTP_HOST": "smtp.secret.example",
    "SMTP_PORT": "2525",
    "FROM": "monitor@secret.example",
}


def test_check_shows_a_value_from_a_variable_as_its_reference_never_the_value() -> None:
    text = summary(parse_config(VARIABLES_CONFIG, "config.yaml", VARIABLES_ENV))
    for value in VARIABLES_ENV.values():
        assert value not in text or value in ("", "hidden-feed"), value
    for shown in (
        "database    ${DB_URL}, keep ${RETENTION}",
        "poll every ${INTERVAL}, timeout 30s, alerts on items up to ${MAX_AGE:-2d} old",
        "max body ${MAX_BODY}, ${PER_HOST} per host",
        "private addresses refused except ${INTRANET}",
        "listen ${LISTEN}",
        "https://${NEWS_HOST}/feed  (every ${INTERVAL}, ${LANG_A})",
        "https://b.example/feed  (every 5m, alerts on items up to ${OLD} old)",
        "2 aliases: ${ALIAS}, plain alias",
        "${QUERY}",
        "→ desk, team; feeds ${FEED_FILTER}",
        "${DESK_EMAIL}, boss@example.org, digest ${DIGEST}",
        "telegram    ${BOT_API}, subscriptions open",
        "email       ${SMTP_HOST}:${SMTP_PORT}, starttls, no login, from ${FROM}",
    ):
        assert shown in text


def test_an_invalid_value_from_a_variable_is_named_by_its_reference() -> None:
    env = VARIABLES_ENV | {"RETENTION": "33 parsecs", "DESK_EMAIL": "desk-at-secret.example"}
    problems = _problems(VARIABLES_CONFIG, env)
    assert [(p.key, p.message) for p in problems] == [
        (
            "database.retention",
            "'${RETENTION}' is not a duration; write a number and a unit: 90s, 10m, 2h, 1d "
            "(or combined, 1h30m) (value from ${RETENTION})",
        ),
        (
            "channels.desk.to[0]",
            "'${DESK_EMAIL}' is not an email address (value from ${DESK_EMAIL})",
        ),
    ]


def test_enabled_false_keeps_a_feed_or_watchlist_in_the_file_but_out_of_use() -> None:
    settings = parse_config(
        "feeds:\n"
        "  - {name: on-air, url: https://a.example/feed}\n"
        "  - {name: resting, url: https://b.example/feed, enabled: false}\n"
        "watchlists:\n"
        "  live: {query: x}\n"
        "  parked: {query: y, enabled: no, feeds: [resting]}\n",
        "config.yaml",
        {},
    )
    assert [f.name for f in settings.feeds] == ["on-air"]
    assert list(settings.watchlists) == ["live"]
    assert [(f.name, f.enabled) for f in settings.all_feeds] == [
        ("on-air", True),
        ("resting", False),
    ]
    assert [(w.name, w.enabled) for w in settings.all_watchlists.values()] == [
        ("live", True),
        ("parked", False),
    ]
    text = summary(settings)
    assert "feeds (2, 1 disabled)" in text and "watchlists (2, 1 disabled)" in text
    assert "https://b.example/feed  (disabled, every 10m)" in text
    assert "→ console; feeds resting; disabled" in text
    # A disabled entry is checked like any other.
    problems = _problems("watchlists:\n  parked: {query: 'x AND', enabled: false}\n")
    assert [p.key for p in problems] == ["watchlists.parked.query"]


def test_literal_secrets_are_not_echoed_either() -> None:
    text = "database:\n  url: mysql://u:hunter2@db/x\ntelegram:\n  token: hunter2\n"
    problems = _problems(text)
    assert [p.key for p in problems] == ["database.url", "telegram.token"]
    assert "hunter2" not in str(ConfigError(problems))


# ---- files, environment, immutability ------------------------------------------------------------


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.file == str(path)
    assert problem.line is None
    assert "cannot read the file: No such file or directory" in problem.message


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path)


def test_non_utf8_file_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"feeds: []\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [ConfigProblem(str(path), 2, "", "the file is not UTF-8 text")]


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes("\ufeffwatchlists:\n  w: {query: تايوان}\n".encode())
    assert load_config(path).watchlists["w"].query == "تايوان"


def test_config_dir_is_the_files_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("feeds: [{name: a, url: feeds/a.xml}]\n")
    monkeypatch.chdir(tmp_path)
    settings = load_config("conf/config.yaml")
    assert settings.config_dir == tmp_path / "conf"
    assert settings.config_dir.is_absolute()
    assert parse_config("{}").config_dir == tmp_path


def test_error_text_lists_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("defaults:\n  intervall: 5m\n  timeout: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).splitlines() == [
        f"{path}:2: defaults.intervall: unknown key 'intervall'; did you mean 'interval'?",
        f"{path}:3: defaults.timeout: must be longer than 0 (e.g. 30s)",
    ]


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_TEST_AGENT", "agent/2.0")
    monkeypatch.delenv("MONITOR_TEST_UNSET", raising=False)
    settings = parse_config("fetch: {user_agent: '${MONITOR_TEST_AGENT}'}\n")
    assert settings.fetch.user_agent == "agent/2.0"
    with pytest.raises(ConfigError, match="MONITOR_TEST_UNSET is not set"):
        parse_config("fetch: {user_agent: '${MONITOR_TEST_UNSET}'}\n")


def test_keys_are_not_interpolated() -> None:
    problems = _problems("defaults:\n  ${KEY}: 5m\n", {"KEY": "interval"})
    assert [(p.key, p.line) for p in problems] == [("defaults.${KEY}", 2)]


def test_settings_are_frozen() -> None:
    settings = parse_config("watchlists:\n  w: {query: taiwan}\n")
    with pytest.raises(ValidationError):
        settings.feeds = ()
    with pytest.raises(ValidationError):
        settings.watchlists["w"].query = "china"
    with pytest.raises(TypeError):
        settings.watchlists["x"] = settings.watchlists["w"]  # type: ignore[index]


def test_alias_bomb_is_refused_with_little_cpu() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for number in range(1, 9):
        previous, name = chr(ord("a") + number - 1), chr(ord("a") + number)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    started = time.process_time()
    problems = _problems("\n".join(lines) + "\n")
    # CPU time, not the wall clock: a busy machine slows the test, not the work (9**9 values
    # expanded would take minutes).
    assert time.process_time() - started < 2
    assert [p.message for p in problems] == [
        "the file expands to more than 100000 values (aliases?)"
    ]


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    problems = _problems("a: " + "[" * 3000 + "]" * 3000 + "\n")
    assert "nested too deeply" in problems[0].message


# ---- durations and sizes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("1d 2h", 93600)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "0", "0s", "10", "10 minutes", "m", "1m1h", "-1m", "1.5h", "1M"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", 512), ("512B", 512), ("512KB", 524288), ("10MB", 10485760), ("1 GiB", 1 << 30)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("text", ["", "0", "10 MBs", "1.5MB", "-1KB", "KB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_story_grouping_settings_default_and_are_checked() -> None:
    settings = parse_config("{}", "config.yaml")
    assert settings.stories.threshold == 0.4
    assert settings.stories.window == timedelta(days=3)
    assert (
        "stories     one story from 0.4 of the text in common across outlets (0.6 within one), joined for 3d"
        in summary(settings)
    )
    custom = parse_config("stories: {threshold: 0.7, window: 2d}\n", "config.yaml")
    assert (custom.stories.threshold, custom.stories.window) == (0.7, timedelta(days=2))
    assert (
        "from 0.7 of the text in common across outlets (0.7 within one), joined for 2d"
        in summary(custom)
    )
    with pytest.raises(ConfigError) as caught:
        parse_config("stories: {threshold: 0, windw: 2d}\n", "config.yaml")
    keys = sorted(p.key for p in caught.value.problems)
    assert keys == ["stories.threshold", "stories.windw"]


def test_the_matcher_keeps_no_parse_cache_of_the_watchlists() -> None:
    from monitor.core import query
    from monitor.model import Article
    from monitor.watchlists import compile_watchlists

    text = "watchlists:\n" + "".join(
        f"  w{n}: {{query: 'tariff{n} AND steel'}}\n" for n in range(50)
    )
    query.parse.cache_clear()
    settings = parse_config(text, env={})
    assert query.parse.cache_info().currsize == 50  # the config check parsed every query
    matcher = compile_watchlists(settings)
    assert query.parse.cache_info().currsize == 0  # and none stays beside the matcher
    article = Article(title="tariff7 on steel", body="")
    assert [hit.watchlist for hit in matcher.match(article)] == ["w7"]


def test_the_line_of_each_key_is_read_again_from_the_text_when_asked() -> None:
    """The settings keep the file's text, compressed, not the line of every key: the lines are
    worked out when first asked for, and are those the loader saw (variables and all)."""
    from monitor.config.yaml_loader import read_yaml

    text = SPEC_EXAMPLE.read_text(encoding="utf-8")
    text += "\nx-defaults: &feed {language: ar}\n"
    env = SPEC_ENV | {"HOST": "example.org"}
    settings = parse_config(text, "config.yaml", env)
    assert settings._lines is None  # nothing worked out while loading
    lines = read_yaml(text, env).lines
    assert len(lines) > 30
    for path, line in lines.items():
        assert settings.wrote(path)
        assert settings.line_of(path) == line
    assert settings._lines == lines
    assert not settings.wrote(("fetch", "gone_after")) or ("fetch", "gone_after") in lines
    assert not settings.wrote(("nothing", "here"))
    assert settings.line_of(("nothing", "here")) is None
    # a copy (as a reload makes) answers the same
    copy = settings.model_copy(update={"feeds": settings.feeds})
    assert all(copy.line_of(path) == line for path, line in lines.items())
    # and settings made in code, with no file, know no line
    bare = Settings.model_validate({})
    assert bare.line_of(("feeds",)) is None
    assert not bare.wrote(("feeds",))
