"""The service as `monitor run` builds it, for tests of what subscribers and readers get: a config
written to a file (a feed on loopback, a watchlist, a Telegram channel, the bot at the Bot API
double), the service with its bot, users talking to the bot, and the outbox as stored.

And `MonitorProcess`: `monitor run` as a real process, for what only a process shows (signals,
exit codes, log lines, the health port); `cli` runs a command in this process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import IO, Any, Self

from aiohttp import web
from botapi import TOKEN, BotAPIDouble
from httpserver import LoopbackServer
from sqlalchemy import select

from monitor.config import Settings, parse_config
from monitor.daemon import Service, start_bot
from monitor.errors import DeliveryError
from monitor.model import Alert
from monitor.notify import Notifier
from monitor.pipeline import PollResult
from monitor.store import db
from monitor.store.tables import alerts

ALICE, BOB, DESK = 1001, 1002, -100777
BODY = "Taiwan is the first red line, the minister said."


def feed(*titles: str, body: str = BODY) -> bytes:
    """An RSS feed with one item per title, each published now (so that it may alert)."""
    published = format_datetime(datetime.now(UTC))
    items = "".join(
        f"<item><guid>{title}</guid><title>{title}</title>"
        f"<link>https://example.org/{title}</link><pubDate>{published}</pubDate>"
        f"<description>{body}</description></item>"
        for title in titles
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{items}</channel></rss>"
    ).encode()


_WORDS = [
    "minister",
    "parliament",
    "harbour",
    "election",
    "budget",
    "drought",
    "satellite",
    "railway",
    "vaccine",
    "treaty",
    "summit",
    "protest",
    "festival",
    "currency",
    "pipeline",
    "refinery",
    "airport",
    "cabinet",
    "senate",
    "tariff",
    "border",
    "reservoir",
    "earthquake",
    "monsoon",
    "wildfire",
    "orchestra",
    "museum",
    "stadium",
    "hospital",
    "university",
]


def stories_feed(count: int, *, first: int = 0) -> bytes:
    """An RSS feed of `count` different stories (numbered from `first`) that each mention
    Taiwan and the red line, all published now: a burst of matches."""
    rng = random.Random(12 + first)
    published = format_datetime(datetime.now(UTC))
    items = []
    for i in range(first, first + count):
        title = f"Taiwan {i}: " + " ".join(rng.sample(_WORDS, 4))
        body = " ".join(rng.sample(_WORDS, 20)) + f" — the red line, report {i}."
        items.append(
            f"<item><guid>s{i}</guid><title>{title}</title><link>https://example.org/s{i}</link>"
            f"<pubDate>{published}</pubDate><description>{body}</description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        + "".join(items)
        + "</channel></rss>"
    ).encode()


def serve(server: LoopbackServer, body: bytes) -> None:
    server.respond("/a.xml", body=body, headers={"Content-Type": "text/xml"})


WATCHLISTS = """\
watchlists:
  taiwan-red-line: {query: 'taiwan AND "red line"', notify: [desk]}
channels:
  desk: {type: telegram, chat_ids: [-100777]}
"""


def write_config(
    tmp_path: Path,
    database_url: str,
    double: BotAPIDouble,
    feeds: LoopbackServer,
    telegram: str = "subscriptions: open\n",
    *,
    watchlists: str = WATCHLISTS,
    extra: str = "",
    feed_names: Sequence[str] = ("a",),
) -> Settings:
    """config.yaml in `tmp_path`: the feeds `feed_names` (`/NAME.xml` on `feeds`; by default one,
    `a`), `watchlists` (with channels), the bot at `double` with the `telegram` keys given;
    returns it parsed."""
    listed = "".join(f"  - {{name: {n}, url: '{feeds.url(f'/{n}.xml')}'}}\n" for n in feed_names)
    text = (
        textwrap.dedent(
            f"""
            database: {{url: "{database_url}"}}
            fetch: {{allow_private: true}}
            service: {{listen: null}}
            feeds:
            """
        )
        + listed
        + textwrap.dedent(
            f"""\
            telegram:
              token: "{TOKEN}"
              api_url: "{double.api_url}"
            """
        )
        + textwrap.indent(telegram, "  ")
        + watchlists
        + extra
    )
    config = tmp_path / "config.yaml"
    config.write_text(text, "utf-8")
    return parse_config(text, str(config))


@contextlib.asynccontextmanager
async def running(settings: Settings, *, bot: bool = True) -> AsyncIterator[Service]:
    """The service (with its subscriber bot unless `bot` is false), closed afterwards."""
    service = Service.build(settings)
    service.prepare(now=datetime.now(UTC), alone=True)
    subscriber_bot = await start_bot(service) if bot else None
    try:
        yield service
    finally:
        if subscriber_bot is not None:
            await subscriber_bot.stop()
        await service.close()


async def say(double: BotAPIDouble, chat: int, command: str, **kwargs: Any) -> str:
    """A user sends a command (`kwargs` as for `send_command`); the bot's reply, as shown."""
    before = len(double.messages_to(chat))
    kwargs.setdefault("user_id", chat if chat > 0 else ALICE)
    double.send_command(command, chat_id=chat, **kwargs)
    replies = await double.messages_eventually(before + 1, chat_id=chat)
    return replies[before].plain


def sent_to(double: BotAPIDouble, chat: int, since: int = 0) -> list[dict[str, Any]]:
    """The parameters of the sendMessage calls for `chat`, from call number `since` on."""
    return [
        params
        for method, params in double.calls[since:]
        if method == "sendMessage" and params.get("chat_id") == chat
    ]


def outbox(settings: Settings) -> list[Any]:
    """Every outbox row, oldest first."""
    engine = db.make_engine(settings.database.url)
    try:
        with db.read_session(engine) as session:
            return list(session.execute(select(alerts).order_by(alerts.c.id)).all())
    finally:
        engine.dispose()


def poll_and_deliver(
    settings: Settings,
    notifiers: Mapping[str, Notifier] | None,
    clock: Callable[[], datetime] | None = None,
) -> list[PollResult]:
    """One `monitor once --force` in this process, delivering through `notifiers` (channel →
    notifier; None: the config's own channels), at `clock`'s time if given (else the database's):
    poll every feed (also one backing off, as if its time had come), deliver, close. The poll
    results."""

    async def go() -> list[PollResult]:
        chosen = dict(notifiers) if notifiers is not None else None
        service = Service.build(settings, notifiers=chosen, clock=clock)
        service.prepare(now=clock() if clock is not None else None, alone=True)
        try:
            results = await service.poll_all(force=True)
            await service.deliver_tick()
            return results
        finally:
            await service.close()

    return asyncio.run(go())


def make_due(settings: Settings) -> None:
    """Every waiting alert's time has come (a digest's hour, a mute's end)."""
    engine = db.make_engine(settings.database.url)
    try:
        with db.transaction(engine) as session:
            session.execute(alerts.update().values(next_attempt_at=datetime.now(UTC)))
    finally:
        engine.dispose()


ROOT = Path(__file__).resolve().parents[1]


class MonitorProcess:
    """`monitor --config CONFIG ARGS…` (default `run`) as a real process. Its stderr (the log) and
    stdout are read line by line as they come; `wait_for` waits for a line. Killed on exit if it
    is still running."""

    def __init__(
        self, config: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.config = config
        self.args = args or ("run",)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.cwd = cwd or config.parent
        self.lines: list[str] = []  # stderr
        self.stdout: list[str] = []
        self._changed = threading.Condition()
        self.process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []

    def __enter__(self) -> Self:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "--config", str(self.config), *self.args],
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        assert self.process.stderr is not None and self.process.stdout is not None
        for stream, into in ((self.process.stderr, self.lines), (self.process.stdout, self.stdout)):
            reader = threading.Thread(target=self._read, args=(stream, into), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self.wait(timeout=30)

    def _read(self, stream: IO[str], into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        stream.close()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_for(
        self, predicate: Callable[[str], bool], *, after: int = 0, timeout: float = 60
    ) -> int:
        """The index of the first stderr line from `after` on that satisfies `predicate`, waiting
        for it up to `timeout` seconds. Fails the test (with the log) when the process ends or
        the time runs out first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(after, len(self.lines)):
                    if predicate(self.lines[index]):
                        return index
                after = max(after, len(self.lines))
                left = deadline - time.monotonic()
                ended = self.process is not None and self.process.poll() is not None
                if left <= 0 or (ended and not any(r.is_alive() for r in self._readers)):
                    log = "\n".join(self.lines)
                    raise AssertionError(f"no such line (exit {self.returncode()}):\n{log}")
                self._changed.wait(min(left, 0.5))

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code."""
        self.send(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        return code

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()


SAMPLE = ROOT / "examples" / "feeds" / "sample.xml"
SAMPLE_WATCHLISTS = """\
entities:
  taiwan: {aliases: ["Taiwan", "تايوان"]}
  red-line: {aliases: ["red line", "خط أحمر"]}
watchlists:
  taiwan-red-line: {query: "@taiwan AND @red-line"}
"""


def service_config(
    path: Path,
    database_url: str,
    feeds: dict[str, str],
    *,
    listen: str | None = None,
    log_format: str = "text",
    watchlists: str = SAMPLE_WATCHLISTS,
    fetch: str = "allow_private: true",
) -> Path:
    """A config file for `MonitorProcess`: `feeds` (name → URL or path), the watchlists (alerts
    go to the console), the health port on `listen` (off by default), the `fetch` settings."""
    listed = "".join(f"  - {{name: {name}, url: '{url}'}}\n" for name, url in feeds.items())
    path.write_text(
        f'database: {{url: "{database_url}"}}\n'
        f"service: {{listen: {repr(listen) if listen else 'null'}, log_format: {log_format}}}\n"
        f"fetch: {{{fetch}}}\n"
        "defaults: {alert_max_age: off}\n"  # the sample's items are from 2023
        f"feeds:\n{listed}{watchlists}",
        "utf-8",
    )
    return path


class HeldFeed:
    """A feed on `server` whose response waits until the client gives up: a poll held in flight.
    `requested` is set when the first request arrives."""

    def __init__(self, server: LoopbackServer, path: str) -> None:
        self.requested = threading.Event()
        self.url = server.url(path)
        server.route(path, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requested.set()
        await asyncio.sleep(30)  # cancelled when the client disconnects
        return web.Response(status=500)


def cli(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """`monitor ARGS…` run in this process: its exit code, stdout and stderr."""
    from typer.testing import CliRunner

    from monitor.cli import app

    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


class RecordingNotifier:
    """The in-memory channel: records what it was asked to send; can be told to fail."""

    def __init__(self) -> None:
        self.sent: list[Alert] = []
        self.fail_with: DeliveryError | None = None

    async def send(self, alert: Alert) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(alert)

    async def close(self) -> None:
        return None
