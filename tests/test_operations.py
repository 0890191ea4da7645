"""Running the service as an operator does, each case as a real `monitor` process: problems of the
environment (a port taken, a database folder missing or read-only) are one line and exit 2, the
SQLite path is relative to the config file, read-only commands create nothing, and Ctrl-C during
`monitor once` stops cleanly and says what is left."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from httpserver import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "feeds" / "sample.xml"
WATCHLISTS = """
entities:
  taiwan: {aliases: ["Taiwan", "تايوان"]}
  red-line: {aliases: ["red line", "خط أحمر"]}
watchlists:
  taiwan-red-line: {query: "@taiwan AND @red-line"}
"""


def ctrl_c_as_in_a_terminal() -> None:
    """In the child, before it runs: SIGINT as a terminal's Ctrl-C finds it. A test run started in
    the background by a non-interactive shell ignores SIGINT, and its children would inherit that:
    Python then never raises KeyboardInterrupt, and the Ctrl-C these tests send goes unnoticed."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def monitor(
    *args: str, cwd: Path, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def write_config(
    path: Path,
    *,
    database: str = "sqlite:///monitor.db",
    listen: str = "null",
    feeds: str = f"- {{name: sample, url: '{SAMPLE}', alert_max_age: 'off'}}",
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f'database: {{url: "{database}"}}\n'
        f"service: {{listen: {listen}}}\n"
        "fetch: {allow_private: true}\n"
        f"feeds:\n{textwrap.indent(feeds.strip(), '  ')}\n{WATCHLISTS}"
    )
    path.write_text(text, "utf-8")
    return path


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error a command printed: exactly one line, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---- the environment ------------------------------------------------------------------------------


def test_fault_75_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "config.yaml", listen=f"'127.0.0.1:{port}'")
        result = monitor("--config", str(config), "run", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line_error(result)
    assert f"cannot listen on 127.0.0.1:{port} (service.listen)" in line
    assert "already in use" in line


@pytest.mark.parametrize("command", [["once"], ["run"], ["feeds"], ["db", "upgrade"]])
def test_fault_75_a_missing_database_folder_is_one_line_and_exit_2(
    tmp_path: Path, command: list[str]
) -> None:
    config = write_config(tmp_path / "config.yaml", database="sqlite:///no/such/monitor.db")
    result = monitor("--config", str(config), *command, cwd=tmp_path)
    assert result.returncode == 2
    line = one_line_error(result)
    assert f"the folder of the SQLite database {tmp_path}/no/such/monitor.db does not exist" in line
    assert not (tmp_path / "no").exists()


def read_only_mount(directory: Path, *args: str) -> list[str]:
    """`args` run in a private mount namespace where `directory` is a read-only bind mount: a
    read-only folder even for root, which ignores permission bits."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, "sh", str(directory), *args]


def can_mount_read_only(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        read_only_mount(tmp_path, "true"), capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@pytest.mark.parametrize("command", ["once", "run"])
def test_fault_75_a_read_only_database_folder_is_one_line_and_exit_2(
    tmp_path: Path, command: str
) -> None:
    if not can_mount_read_only(tmp_path):
        pytest.skip("cannot make a read-only bind mount here (needs unshare and mount rights)")
    data = tmp_path / "data"
    data.mkdir()
    config = write_config(tmp_path / "config.yaml", database="sqlite:///data/monitor.db")
    first = monitor("--config", str(config), "once", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    result = subprocess.run(
        read_only_mount(
            data, sys.executable, "-m", "monitor.cli", "--config", str(config), command
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert f"the folder of the SQLite database {data}/monitor.db is not writable" in line


def test_check_reports_a_read_only_database_folder_as_an_error(tmp_path: Path) -> None:
    """`monitor check` says what `once` and `run` would refuse, instead of `config.yaml: OK`."""
    data = tmp_path / "data"
    data.mkdir()
    config = write_config(tmp_path / "config.yaml", database="sqlite:///data/monitor.db")
    command = [sys.executable, "-m", "monitor.cli", "--config", str(config), "check"]
    if os.geteuid() != 0:
        data.chmod(0o555)  # read-only for this user (root ignores permission bits)
    elif can_mount_read_only(tmp_path):
        command = read_only_mount(data, *command)
    else:
        pytest.skip("root, and cannot make a read-only bind mount here (needs unshare and mount)")
    try:
        result = subprocess.run(
            command,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"},
        )
    finally:
        data.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert "OK" not in result.stdout
    assert result.stderr.splitlines() == [
        f"error: {config}:1: database.url: the folder of the SQLite database {data}/monitor.db is "
        f"not writable ({data}): the database needs to create files beside it; make it writable "
        "for this user, or set database.url to another path",
        f"1 problem in {config}",
    ]


# ---- where the database is ---------------------------------------------------------------------


def test_the_sqlite_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc" / "config.yaml")
    home = tmp_path / "home"
    home.mkdir()
    first = monitor("--config", str(config), "once", cwd=home)
    assert first.returncode == 0, first.stderr
    assert "[taiwan-red-line]" in first.stdout
    assert (tmp_path / "etc" / "monitor.db").exists()
    assert not (home / "monitor.db").exists()
    # From another working directory, the same database: nothing is sent twice.
    again = monitor("--config", "etc/config.yaml", "once", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "[taiwan-red-line]" not in again.stdout


def test_a_database_at_the_old_location_is_named_and_not_replaced(tmp_path: Path) -> None:
    """Before, `sqlite:///monitor.db` was relative to the working directory: a database left there
    is found, and no second one is started beside the config."""
    config = write_config(tmp_path / "etc" / "config.yaml")
    home = tmp_path / "home"
    home.mkdir()
    old = write_config(home / "old.yaml")  # the same relative path, resolved in home
    assert monitor("--config", str(old), "once", cwd=home).returncode == 0
    assert (home / "monitor.db").exists()
    for command in (["once"], ["run"], ["feeds"]):
        result = monitor("--config", str(config), *command, cwd=home)
        assert result.returncode == 2, result.stderr
        line = one_line_error(result)
        assert f"the database is {tmp_path}/etc/monitor.db, which does not exist" in line
        assert f"there is one at {home}/monitor.db" in line
    assert not (tmp_path / "etc" / "monitor.db").exists()


def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml")
    result = monitor("--config", str(config), "feeds", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line_error(result)
    assert f"no database at {tmp_path}/monitor.db yet" in line
    assert "`monitor once` or `monitor run` creates it" in line
    backtest = monitor("--config", str(config), "backtest", "taiwan-red-line", cwd=tmp_path)
    assert backtest.returncode == 2
    assert list(tmp_path.glob("monitor.db*")) == []


# ---- Ctrl-C ---------------------------------------------------------------------------------


class HeldFeed:
    """A feed whose response waits until the client gives up: a poll held in flight. `requested`
    is set when the request arrives."""

    def __init__(self, server: LoopbackServer, path: str) -> None:
        self.requested = threading.Event()
        self.url = server.url(path)
        server.route(path, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requested.set()
        await asyncio.sleep(60)  # cancelled when the client disconnects
        return web.Response(status=500)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


def polled(database: Path, feed: str) -> bool:
    """Whether `feed`'s poll is committed (read-only, without creating anything)."""
    if not database.exists():
        return False
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        try:
            row = connection.execute(
                "SELECT last_polled_at FROM feeds WHERE name = ?", (feed,)
            ).fetchone()
        except sqlite3.OperationalError:  # the schema is not there yet
            return False
    return row is not None and row[0] is not None


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> bool:
    """Wait for `condition` to hold (checked every 50 ms), at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_ctrl_c_during_once_sends_what_is_queued_and_says_what_is_left(
    tmp_path: Path, server: LoopbackServer
) -> None:
    held = HeldFeed(server, "/slow.xml")
    config = write_config(
        tmp_path / "config.yaml",
        feeds=f"- {{name: sample, url: '{SAMPLE}', alert_max_age: 'off'}}\n- {{name: slow, url: '{held.url}'}}",
    )
    with subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), "once"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=ctrl_c_as_in_a_terminal,
    ) as process:
        try:
            assert held.requested.wait(timeout=60), "the slow feed was never requested"
            assert wait_until(lambda: polled(tmp_path / "monitor.db", "sample"))
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    # The sample's alert was queued before Ctrl-C: it is sent, not left behind.
    assert "[taiwan-red-line]" in stdout
    assert "interrupted: polls stopped; sending the alerts already queued" in stderr
    assert "interrupted: 1 of 2 feeds not polled, 0 alerts still pending" in stderr
    # The slow feed was given back unpolled: the next run takes it up at once.
    with sqlite3.connect(tmp_path / "monitor.db") as connection:
        leases = dict(connection.execute("SELECT name, lease_owner FROM feeds").fetchall())
        last = dict(connection.execute("SELECT name, last_polled_at FROM feeds").fetchall())
    assert leases == {"sample": None, "slow": None}
    assert last["slow"] is None and last["sample"] is not None


@pytest.mark.parametrize("command", ["once", "run"])
def test_ctrl_c_while_waiting_for_the_database_at_start_is_one_line_and_exit_130(
    tmp_path: Path, postgresql_url: str, command: str
) -> None:
    """Ctrl-C before the polls began (here: waiting for another replica's schema upgrade)."""
    from sqlalchemy import text

    from monitor.store.db import _MIGRATION_LOCK, make_engine

    config = write_config(tmp_path / "config.yaml", database=postgresql_url)
    engine = make_engine(postgresql_url)
    try:
        with engine.begin() as holder:  # another replica upgrading the schema
            holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})

            def waiting(pid: int) -> bool:
                """Whether process `pid` waits for the lock: its connections are named after it
                (`monitor HOST:PID`), among the server's other waiters."""
                name = f"monitor {socket.gethostname()}:{pid}"
                with engine.connect() as connection:
                    count = connection.execute(
                        text(
                            "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a "
                            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND NOT l.granted "
                            "AND a.application_name = :name"
                        ),
                        {"name": name},
                    ).scalar_one()
                return bool(count)

            with subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", "--config", str(config), command],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                preexec_fn=ctrl_c_as_in_a_terminal,
            ) as process:
                try:
                    assert wait_until(lambda: waiting(process.pid)), "it never waited"
                    process.send_signal(signal.SIGINT)
                    _, stderr = process.communicate(timeout=30)
                finally:
                    if process.poll() is None:
                        process.kill()
                        process.wait()
    finally:
        engine.dispose()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip() == "interrupted while starting: nothing was polled or sent"
