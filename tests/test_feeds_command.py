"""`monitor feeds [--json|--check]`: each configured feed's health, read the way operators read it —
on an 80-column terminal (a real pseudo-terminal, compared with a golden file), in a pipe, as JSON,
and as a Nagios-style check. The database holds poll records at fixed times, written through the
store as the service writes them."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from datetime import UTC, datetime, timedelta
from pathlib import Path

from servicekit import cli

from monitor.store import db
from monitor.store.feeds import record_poll, sync_feeds
from monitor.store.stories import NewItem, insert_item, story_for_hash

GOLDEN = Path(__file__).parent / "data" / "feeds_80_columns.txt"
T = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
LONG_NAME = "reuters-world-news-and-analysis"
CONFIGURED = ["sample", "aawsat", LONG_NAME, "oldblog", "added-today"]


def poll(
    session: db.Session, feed_id: int, at: datetime, status: str, error: str | None = None
) -> None:
    record_poll(
        session,
        feed_id,
        polled_at=at,
        status=status,
        error=error,
        etag=None,
        last_modified=None,
        body_hash=None,
        new_items=2 if status == "ok" else 0,
        next_poll_at=at + timedelta(minutes=10),
        failed=status in ("error", "gone"),
    )


def make_database(
    tmp_path: Path, configured: list[str] = CONFIGURED, disabled: tuple[str, ...] = ()
) -> Path:
    """A database as a service leaves it: a healthy feed with two items, one failing three times
    in a row, one failing since its first poll (with a long name), one gone, and one that was
    removed from the config since; a config of `configured`, those of `disabled` with `enabled:
    false`."""
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    engine = db.make_engine(url)
    try:
        db.ensure_schema(engine, upgrade=True)
        names = ["sample", "aawsat", LONG_NAME, "oldblog", "removed"]
        with db.transaction(engine) as session:
            ids = sync_feeds(session, [(n, f"https://{n}.example/rss") for n in names], T)
            for n in range(2):
                story, _ = story_for_hash(session, f"hash{n}", T)
                item = NewItem(f"i{n}", f"hash{n}", 1, f"title {n}", "text", None, None, None,
                               T, "en", T, story)  # fmt: skip
                insert_item(session, ids["sample"], item)
            poll(session, ids["sample"], T, "ok")
            poll(session, ids["aawsat"], T - timedelta(hours=10), "ok")
            for minutes in (40, 20, 0):
                error = "cannot connect to www.aawsat.com (Name or service not known)"
                poll(session, ids["aawsat"], T - timedelta(minutes=minutes), "error", error)
            error = (
                "HTTP 503 Service Unavailable: the server is down for maintenance; "
                "see https://status.example.org/incidents/2026-11-26-maintenance-window"
            )
            poll(session, ids[LONG_NAME], T - timedelta(minutes=5), "error", error)
            gone = "HTTP 404 Not Found since 2026-11-23 09:00 UTC"
            poll(session, ids["oldblog"], T - timedelta(days=1), "gone", gone)
            poll(session, ids["removed"], T, "error", "HTTP 500")
    finally:
        engine.dispose()
    config = tmp_path / "config.yaml"
    listed = "".join(
        f"  - {{name: {n}, url: 'https://{n}.example/rss'"
        + (", enabled: false" if n in disabled else "")
        + "}\n"
        for n in configured
    )
    config.write_text(f"database: {{url: 'sqlite:///monitor.db'}}\nfeeds:\n{listed}", "utf-8")
    return config


def on_terminal(config: Path, columns: int) -> str:
    """`monitor feeds` with its output on a pseudo-terminal `columns` wide, as a user sees it."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    with subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "feeds", "--config", str(config)],
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        os.close(controller)
        _, errors = process.communicate(timeout=120)
    assert process.returncode == 0, errors
    return output.decode("utf-8").replace("\r\n", "\n")


def test_feeds_at_80_columns_matches_the_golden_file(tmp_path: Path) -> None:
    """Every line within 80 columns, every date whole, an error on its own lines, a long name on
    its own line, the removed feed left out and the new one shown as never polled."""
    shown = on_terminal(make_database(tmp_path), 80)
    assert shown == GOLDEN.read_text("utf-8")
    assert max(len(line) for line in shown.splitlines()) <= 80


def test_feeds_in_a_pipe_has_every_column_and_one_line_per_error(tmp_path: Path) -> None:
    code, out, _ = cli("feeds", "--config", str(make_database(tmp_path)))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split("  ")[0] == "feed"
    assert "next poll" in lines[0] and "last poll" in lines[0] and lines[0].endswith("new")
    assert lines[1].startswith("sample ") and lines[1].endswith("2026-11-26 09:00    2")
    assert lines[4].startswith(f"{LONG_NAME}  error ")  # no terminal: the name fits its column
    assert lines[5] == (
        "  1 failure: HTTP 503 Service Unavailable: the server is down for maintenance; see "
        "https://status.example.org/incidents/2026-11-26-maintenance-window"
    )
    assert not [line for line in lines if line.startswith("removed")]
    assert lines[-2:] == [
        "5 feeds, 3 failing, 1 never polled; times in UTC",
        "outbox: 0 pending, 0 sent, 0 given up",
    ]


def test_feeds_json_has_one_record_per_configured_feed(tmp_path: Path) -> None:
    code, out, _ = cli("--config", str(make_database(tmp_path)), "feeds", "--json")
    assert code == 0
    records = {r["feed"]: r for r in map(json.loads, out.splitlines())}
    assert list(records) == CONFIGURED
    assert records["aawsat"] == {
        "feed": "aawsat",
        "enabled": True,
        "status": "error",
        "last_poll": "2026-11-26T09:00:00Z",
        "last_success": "2026-11-25T23:00:00Z",
        "failing_since": "2026-11-26T08:20:00Z",
        "failures": 3,
        "last_error": "cannot connect to www.aawsat.com (Name or service not known)",
        "new_items": 0,
        "next_poll": "2026-11-26T09:10:00Z",
        "items": 0,
        "alerts_given_up": 0,
    }
    assert (records["sample"]["items"], records["sample"]["failing_since"]) == (2, None)
    assert records["added-today"] == {
        "feed": "added-today",
        "enabled": True,
        "status": None,
        "last_poll": None,
        "last_success": None,
        "failing_since": None,
        "failures": 0,
        "last_error": None,
        "new_items": None,
        "next_poll": None,
        "items": 0,
        "alerts_given_up": 0,
    }


def test_feeds_check_is_one_nagios_line_exit_1_while_feeds_fail(tmp_path: Path) -> None:
    config = make_database(tmp_path)
    code, out, _ = cli("--config", str(config), "feeds", "--check")
    assert code == 1
    assert out == (
        "FEEDS WARNING - 3 of 5 feeds failing: "
        "aawsat since 2026-11-26 08:20 UTC: cannot connect to www.aawsat.com (Name or service "
        f"not known); {LONG_NAME} since 2026-11-26 08:55 UTC: HTTP 503 Service Unavailable: the "
        "server is down for maintenance; see "
        "https://status.example.org/incidents/2026-11-26-maintenance-window; "
        "oldblog since 2026-11-25 09:00 UTC: HTTP 404 Not Found since 2026-11-23 09:00 UTC "
        "| failing=3;;;0;5\n"
    )
    (tmp_path / "healthy").mkdir()
    healthy = make_database(tmp_path / "healthy", ["sample", "added-today"])
    code, out, _ = cli("--config", str(healthy), "feeds", "--check")
    assert (code, out) == (0, "FEEDS OK - 2 feeds, none failing | failing=0;;;0;2\n")
    code, _, err = cli("--config", str(healthy), "feeds", "--check", "--json")
    assert code == 2 and err == "error: give --json or --check, not both\n"


def test_feeds_check_failing_for_counts_only_feeds_failing_that_long(tmp_path: Path) -> None:
    config = make_database(tmp_path)
    # A cutoff half a day after oldblog's first failure: aawsat and the long-named feed, failing
    # since the next morning, have not failed for that long yet.
    age = datetime.now(UTC) - datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
    minutes = f"{int(age.total_seconds() // 60)}m"
    code, out, _ = cli("--config", str(config), "feeds", "--check", "--failing-for", minutes)
    assert code == 1
    assert out == (
        f"FEEDS WARNING - 1 of 5 feeds failing for {minutes} or more: oldblog since "
        "2026-11-25 09:00 UTC: HTTP 404 Not Found since 2026-11-23 09:00 UTC; 2 more for less "
        f"than {minutes} | failing=1;;;0;5\n"
    )
    code, out, _ = cli("--config", str(config), "feeds", "--check", "--failing-for", "99999d")
    assert (code, out) == (
        0,
        "FEEDS OK - 5 feeds, none failing for 99999d (3 for less) | failing=0;;;0;5\n",
    )
    code, _, err = cli("--config", str(config), "feeds", "--failing-for", "1h")
    assert code == 2 and err == "error: --failing-for goes with --check\n"


def test_a_disabled_feed_is_listed_as_disabled_and_left_out_of_the_check(tmp_path: Path) -> None:
    """aawsat, failing, is disabled, and so is a feed being tried out that was never polled: both
    are listed where the config has them, as disabled, their old failures not shown; the check
    looks at the enabled feeds only and says how many are disabled."""
    configured = [*CONFIGURED, "trial"]
    config = make_database(tmp_path, configured, disabled=("aawsat", "trial"))
    code, out, _ = cli("feeds", "--config", str(config))
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:-2] if not line.startswith(" ")] == configured
    # status, last success, failing since, items, next poll, last poll, new: not failing and
    # not due, what it did when it was polled kept
    assert lines[2].split() == [
        "aawsat", "disabled", "2026-11-25", "23:00", "-", "0", "-", "2026-11-26", "09:00", "0"
    ]  # fmt: skip
    assert not lines[3].startswith(" ")  # no error below it
    assert lines[-3].split()[:2] == ["trial", "disabled"]
    assert lines[-2] == "6 feeds, 2 failing, 1 never polled, 2 disabled; times in UTC"

    code, out, _ = cli("feeds", "--json", "--config", str(config))
    records = {r["feed"]: r for r in map(json.loads, out.splitlines())}
    assert list(records) == configured
    assert [name for name, r in records.items() if not r["enabled"]] == ["aawsat", "trial"]
    assert records["aawsat"] == {  # as in the table: disabled, no error, what it did kept
        "feed": "aawsat",
        "enabled": False,
        "status": "disabled",
        "last_poll": "2026-11-26T09:00:00Z",
        "last_success": "2026-11-25T23:00:00Z",
        "failing_since": None,
        "failures": 0,
        "last_error": None,
        "new_items": 0,
        "next_poll": None,
        "items": 0,
        "alerts_given_up": 0,
    }
    assert (records["trial"]["status"], records["trial"]["last_poll"]) == ("disabled", None)

    code, out, _ = cli("feeds", "--check", "--config", str(config))
    assert code == 1
    assert out.startswith("FEEDS WARNING - 2 of 4 feeds failing: " + LONG_NAME)
    assert "aawsat" not in out
    assert out.endswith("; 2 disabled | failing=2;;;0;4\n")

    healthy = tmp_path / "healthy"
    healthy.mkdir()
    config = make_database(healthy, ["sample", "aawsat"], disabled=("aawsat",))
    code, out, _ = cli("feeds", "--check", "--config", str(config))
    assert (code, out) == (0, "FEEDS OK - 1 feed, none failing; 1 disabled | failing=0;;;0;1\n")


def test_a_feed_the_service_registered_but_has_not_polled_yet_is_never_polled(
    tmp_path: Path,
) -> None:
    """The service registers a config's new feeds before it polls them: `monitor feeds` run in
    between shows such a feed as never polled, like one it has not registered yet."""
    config = make_database(tmp_path, ["sample", "registered"])
    engine = db.make_engine(f"sqlite:///{tmp_path / 'monitor.db'}")
    try:
        with db.transaction(engine) as session:
            sync_feeds(session, [("registered", "https://registered.example/rss")], T)
    finally:
        engine.dispose()
    code, out, err = cli("feeds", "--config", str(config))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[2].split()[:3] == ["registered", "never", "polled"]
    assert lines[-2] == "2 feeds, 0 failing, 1 never polled; times in UTC"
    code, out, _ = cli("feeds", "--json", "--config", str(config))
    assert json.loads(out.splitlines()[1])["status"] is None
