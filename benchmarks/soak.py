"""Reliability and load: `monitor run` as real processes, killed and loaded.

    python benchmarks/soak.py soak [--minutes 10] [--feeds 200] [--kills 20]
                                   [--database sqlite,postgresql] [--replicas 2] [--postgresql URL]
    python benchmarks/soak.py load [--minutes 10] [--feeds 1000] [--watchlists 10000]
                                   [--interval 2m] [--database sqlite]

soak: FEEDS feeds on loopback publish a new item each every PUBLISH seconds (each feed at its own
offset; the newest WINDOW items are in the feed), every item matching one watchlist whose channel
is a Telegram chat (CHATS chats, ~one per ten feeds). The Telegram Bot API double (tests/botapi.py)
answers some sendMessage requests with 429 (retry after 1-3 s), some with 500, and accepts some but
answers only after the client gave up (an ambiguous timeout: the message was delivered, the sender
cannot know). `monitor run` runs as real processes (tests/replicas.py): one on SQLite, REPLICAS on
PostgreSQL, each SIGKILLed at random moments (KILLS in all, spread over the run) and started again
at once. After MINUTES the feeds stop publishing and the killing stops; the service is given until
every published item's alert has arrived (or DRAIN seconds). Printed per database: alerts
expected (items published), delivered (distinct items that reached their chat, each item of a
burst or digest message counted, not only its first), lost, repeated
(copies past the first), each put down to the copy before it: answered after an ambiguous timeout,
sent by a process killed between Telegram's acceptance and its "sent" write, or nothing ambiguous
(which should never happen); restarts, and peak resident memory of a `monitor run` process (and
with its parse workers).

Short mode, a few minutes on a busy machine:
    python benchmarks/soak.py soak --minutes 1.5 --feeds 20 --kills 4 --publish 15 --interval 10s
    python benchmarks/soak.py load --minutes 1 --feeds 50 --watchlists 100 --interval 10s

load: FEEDS feeds (real texts from the corpus, a new item each every PUBLISH seconds) and
WATCHLISTS watchlists (generated as benchmarks/match.py does) under one `monitor run` for MINUTES.
The feeds table is read every second: each time a feed's last poll changes, its lag is when that
poll started minus when it was due (its `next_poll_at` before). Printed: poll lag median and p99
(over all polls, and without each feed's first poll, which finds every feed due at once), polls,
and the resident memory of the process at minute 2 and at the end.

Where the machine is shared, its load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
# tests/ first: its replicas.py (the cluster of processes) is not benchmarks/replicas.py.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

from aiohttp import web  # noqa: E402
from botapi import TOKEN, BotAPIDouble  # noqa: E402
from databases import fresh_database  # noqa: E402
from httpserver import ThreadedServer  # noqa: E402
from replicas import Cluster, Replica  # noqa: E402

MARK = re.compile(r"Soak (\d+)-(\d+)\b")
KILL_WINDOW = 15.0


# ---- feeds that publish -------------------------------------------------------------------------


class PublishingFeeds(ThreadedServer):
    """`/feed/N.xml` on loopback: feed N publishes item k at `start + offset(N) + k × every`; the
    newest `window` items published by now are in the feed (ETag and 304 supported). `stop()`
    of publishing: `freeze()` — nothing more is published after that moment."""

    thread_name = "publishing-feeds"

    def __init__(
        self, feeds: int, every: float, window: int, text: Callable[[int, int], tuple[str, str]]
    ) -> None:
        super().__init__()
        self.feeds, self.every, self.window, self.text = feeds, every, window, text
        self.start_at = time.time()
        self.frozen_at: float | None = None
        rng = random.Random(7)
        self.offsets = [rng.uniform(0, every) for _ in range(feeds)]
        self._cache: dict[tuple[int, int], tuple[bytes, str]] = {}
        self._lock = threading.Lock()

    def url(self, n: int) -> str:
        return f"http://{self.host}:{self.port}/feed/{n}.xml"

    def published(self, n: int, at: float | None = None) -> int:
        """How many items feed `n` has published by `at` (default: now, or the freeze)."""
        now = at if at is not None else (self.frozen_at or time.time())
        elapsed = now - self.start_at - self.offsets[n]
        return 0 if elapsed < 0 else int(elapsed // self.every) + 1

    def freeze(self) -> None:
        self.frozen_at = time.time()

    def published_items(self) -> set[tuple[int, int]]:
        return {(n, k) for n in range(self.feeds) for k in range(self.published(n))}

    def _body(self, n: int) -> tuple[bytes, str]:
        count = self.published(n)
        with self._lock:
            cached = self._cache.get((n, count))
        if cached is not None:
            return cached
        entries = []
        for k in range(count - 1, max(count - self.window, 0) - 1, -1):
            title, body = self.text(n, k)
            published = self.start_at + self.offsets[n] + k * self.every
            date = format_datetime(datetime.fromtimestamp(published, UTC), usegmt=True)
            entries.append(
                f"<item><guid isPermaLink='false'>feed{n}-item{k}</guid>"
                f"<title>{escape(title)}</title><link>https://example.org/{n}/{k}</link>"
                f"<description>{escape(body)}</description><pubDate>{date}</pubDate></item>"
            )
        body_bytes = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Feed {n}</title>{''.join(entries)}</channel></rss>"
        ).encode()
        result = (body_bytes, f'"{hashlib.sha1(body_bytes).hexdigest()[:16]}"')
        with self._lock:
            self._cache[(n, count)] = result
        return result

    async def _handle(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if not 0 <= n < self.feeds:
            return web.Response(status=404)
        body, etag = self._body(n)
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=body, headers={"ETag": etag, "Content-Type": "application/rss+xml"}
        )

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_get("/feed/{n}.xml", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]


def soak_text(groups: int) -> Callable[[int, int], tuple[str, str]]:
    """Item k of feed n: a title carrying its mark ("Soak n-k") and the word of its feed's group
    (`grpG`, what the group's watchlist asks for), and a body of words drawn at random, so that no
    two items are near copies of each other (they would be one story, one alert)."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    pool = ["".join(random.Random(i).choices(syllables, k=3)) for i in range(20_000)]

    def text(n: int, k: int) -> tuple[str, str]:
        rng = random.Random(n * 1_000_003 + k)
        words = rng.sample(pool, 60)
        title = f"Soak {n}-{k} grp{n % groups} " + " ".join(words[:6])
        return title, " ".join(words[6:]) + "."

    return text


# ---- Telegram with faults -----------------------------------------------------------------------


class FaultyBotAPI(BotAPIDouble):
    """The Bot API double answering a share of sendMessage requests with 429 (retry after 1-3 s)
    or 500 (nothing delivered), and accepting a share only to answer after `late` seconds, when
    the client has given up (delivered; the sender cannot know). Seeded."""

    def __init__(
        self, *, p429: float, p500: float, ptimeout: float, late: float, seed: int
    ) -> None:
        super().__init__()
        self.p429, self.p500, self.ptimeout, self.late = p429, p500, ptimeout, late
        self.rng = random.Random(seed)
        self.late_ids: set[int] = set()  # message ids answered after the client gave up
        self.faults: Counter[str] = Counter()

    async def _send_message(self, params: dict[str, Any]) -> web.Response:
        roll = self.rng.random()
        chat_id = params.get("chat_id")
        if isinstance(chat_id, int) and roll < self.p429:
            self.faults["429"] += 1
            wait = self.rng.randint(1, 3)
            return self._refuse(
                chat_id, 429, f"Too Many Requests: retry after {wait}", {"retry_after": wait}
            )
        if isinstance(chat_id, int) and roll < self.p429 + self.p500:
            self.faults["500"] += 1
            return self._refuse(chat_id, 500, "Internal Server Error")
        response = await super()._send_message(params)
        if roll < self.p429 + self.p500 + self.ptimeout and response.status == 200:
            self.faults["timeout"] += 1
            assert response.text is not None
            self.late_ids.add(json.loads(response.text)["result"]["message_id"])
            await asyncio.sleep(self.late)
        return response


# ---- processes ----------------------------------------------------------------------------------


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB; zeros if it is gone."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


class MemoryWatch:
    """Samples every second the resident memory of the running replicas: the peak of a `monitor
    run` process (VmHWM) and of one with its parse workers (sampled)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.peak_main = 0.0
        self.peak_with_workers = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        for replica in list(self.cluster.replicas.values()):
            if not replica.running:
                continue
            rss, hwm = rss_mb(replica.pid)
            workers = sum(rss_mb(c)[0] for c in children(replica.pid))
            self.peak_main = max(self.peak_main, hwm)
            self.peak_with_workers = max(self.peak_with_workers, rss + workers)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def kill(replica: Replica) -> None:
    """SIGKILL the replica; its parse workers see their stdin close and exit (any left over after
    a few seconds are killed too)."""
    workers = children(replica.pid)
    replica.kill()
    deadline = time.monotonic() + 5
    for worker in workers:
        while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{worker}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)


# ---- databases ----------------------------------------------------------------------------------


class FeedTable:
    """Reads the feeds table (id, next_poll_at, last_polled_at) of a database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Any = None
        if not url.startswith("sqlite"):
            from monitor.store.db import make_engine

            self.engine = make_engine(url)

    def rows(self) -> list[tuple[int, datetime | None, datetime | None]]:
        query = "SELECT id, next_poll_at, last_polled_at FROM feeds"
        if self.engine is None:
            path = self.url.removeprefix("sqlite:///")
            if not Path(path).exists():
                return []
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            ) as db:
                try:
                    found = db.execute(query).fetchall()
                except sqlite3.OperationalError:  # no table yet
                    return []
            return [(i, _parse(n), _parse(p)) for i, n, p in found]
        from sqlalchemy import text
        from sqlalchemy.exc import ProgrammingError

        with self.engine.connect() as connection:
            try:
                return [tuple(row) for row in connection.execute(text(query))]  # type: ignore[misc]
            except ProgrammingError:
                return []

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def _parse(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ---- soak ---------------------------------------------------------------------------------------


@dataclass
class SoakFigures:
    database: str
    replicas: int
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    repeated: int = 0
    after_timeout: int = 0
    after_kill: int = 0
    other: int = 0
    most_copies: int = 0
    restarts: int = 0
    peak_mb: float = 0.0
    peak_with_workers_mb: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    drained_s: float = 0.0
    load: str = ""


def soak_config(
    database_url: str, feeds: PublishingFeeds, chats: int, interval: str
) -> Callable[[str, str, str], str]:
    def config(name: str, api_url: str, listen: str) -> str:
        lines = [
            f"database: {{url: {json.dumps(database_url)}}}",
            "fetch: {allow_private: true, per_host: 100}",
            f"service: {{listen: '{listen}'}}",
            f"telegram: {{token: '{TOKEN}', api_url: '{api_url}'}}",
            "channels:",
            *(f"  c{g}: {{type: telegram, chat_ids: [{10_000 + g}]}}" for g in range(chats)),
            "watchlists:",
            *(f"  w{g}: {{query: 'grp{g}', notify: [c{g}]}}" for g in range(chats)),
            "feeds:",
            *(
                f"  - {{name: f{n}, url: '{feeds.url(n)}', interval: {interval}}}"
                for n in range(feeds.feeds)
            ),
        ]
        return "\n".join(lines) + "\n"

    return config


def soak_one(kind: str, url: str, args: Any, tmp: Path) -> SoakFigures:
    replicas = 1 if kind == "sqlite" else args.replicas
    figures = SoakFigures("SQLite" if kind == "sqlite" else "PostgreSQL", replicas)
    chats = max(1, args.feeds // 10)
    rng = random.Random(args.seed)
    run_s = args.minutes * 60
    kill_at = sorted(rng.uniform(0.05 * run_s, 0.95 * run_s) for _ in range(args.kills))
    directory = tmp / kind
    directory.mkdir()
    with (
        FaultyBotAPI(
            p429=args.p429, p500=args.p500, ptimeout=args.ptimeout, late=12.0, seed=args.seed
        ) as double,
        PublishingFeeds(args.feeds, args.publish, args.window, soak_text(chats)) as feeds,
    ):
        generation = Counter[str]()
        killed: dict[str, float] = {}  # replica name → when it was killed (monotonic)

        def start(base: str) -> Replica:
            generation[base] += 1
            return cluster.start(f"{base}{generation[base]}")

        cluster = Cluster(
            directory, url, soak_config(url, feeds, chats, args.interval), double.api_url_for
        )
        with cluster, MemoryWatch(cluster) as memory:
            bases = [chr(ord("a") + i) for i in range(replicas)]
            live = {base: start(base) for base in bases}
            started = time.monotonic()
            for at in kill_at:
                time.sleep(max(0.0, at - (time.monotonic() - started)))
                base = rng.choice(bases)
                memory.sample()
                kill(live[base])
                killed[live[base].name] = time.monotonic()
                figures.restarts += 1
                live[base] = start(base)
                print(f"  {kind}: kill {figures.restarts}/{len(kill_at)} ({base})", file=sys.stderr)
            time.sleep(max(0.0, run_s - (time.monotonic() - started)))
            feeds.freeze()
            expected = feeds.published_items()
            figures.expected = len(expected)
            drain_started = time.monotonic()
            while time.monotonic() - drain_started < args.drain:
                if expected <= delivered_marks(double):
                    break
                time.sleep(1.0)
            figures.drained_s = time.monotonic() - drain_started
            cluster.stop()
        figures.peak_mb = memory.peak_main
        figures.peak_with_workers_mb = memory.peak_with_workers
        count_deliveries(figures, double, expected, killed)
        figures.faults = dict(double.faults)
    figures.load = load_average()
    return figures


def marks_in(text: str) -> list[tuple[int, int]]:
    """The items a message carries: one for an alert, several for a burst or a digest (a
    message listing the alerts a chat would otherwise have got one by one)."""
    return [(int(found.group(1)), int(found.group(2))) for found in MARK.finditer(text)]


def delivered_marks(double: BotAPIDouble) -> set[tuple[int, int]]:
    return {mark for message in double.messages for mark in marks_in(message.plain)}


def count_deliveries(
    figures: SoakFigures,
    double: FaultyBotAPI,
    expected: set[tuple[int, int]],
    killed: dict[str, float],
) -> None:
    """Delivered, lost and repeated items. Each copy after the first is put down to the copy
    before it: "after a timeout" when Telegram answered that one only after the sender gave up
    (the sender could not know it arrived), "after a kill" when the process that sent it was
    killed within KILL_WINDOW seconds after Telegram accepted it (before it could write "sent"),
    else "other"."""
    copies: dict[tuple[int, int], list[Any]] = {}
    for message in double.messages:
        for mark in set(marks_in(message.plain)):  # every alert of a burst, not only its first
            copies.setdefault(mark, []).append(message)
    figures.delivered = len(expected & copies.keys())
    figures.lost = len(expected - copies.keys())
    for sent in copies.values():
        figures.most_copies = max(figures.most_copies, len(sent))
        for before in sent[:-1]:
            figures.repeated += 1
            if before.message_id in double.late_ids:
                figures.after_timeout += 1
            elif 0 <= killed.get(before.client, -1e9) - before.at <= KILL_WINDOW:
                figures.after_kill += 1
            else:
                figures.other += 1


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def soak(args: Any) -> int:
    kinds = [k.strip() for k in args.database.split(",") if k.strip()]
    if "postgresql" in kinds and not args.postgresql:
        print("PostgreSQL needs --postgresql URL (or MONITOR_SOAK_DATABASE_URL)", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp_name:
        for kind in kinds:
            with fresh_database(kind, Path(tmp_name), args.postgresql, "soak") as url:
                print(f"soak on {kind}: {args.minutes} min ...", file=sys.stderr)
                results.append(soak_one(kind, url, args, Path(tmp_name)))
    print_soak(results, args)
    return 0


def print_soak(results: Sequence[SoakFigures], args: Any) -> None:
    print(
        f"Soak: {args.feeds} feeds publishing an item each every {args.publish:g} s "
        f"(polled every {args.interval}), {args.minutes:g} min, SIGKILL at random; Telegram "
        f"answering {args.p429:.0%} 429, {args.p500:.0%} 500, {args.ptimeout:.0%} "
        "accepted-then-timed-out"
    )
    header = ["", *(f"{r.database} ×{r.replicas}" for r in results), "target"]
    rows = [
        ("alerts expected", [r.expected for r in results], ""),
        ("delivered", [r.delivered for r in results], ""),
        ("lost", [r.lost for r in results], "0"),
        ("repeated", [r.repeated for r in results], ""),
        ("  after an ambiguous timeout", [r.after_timeout for r in results], ""),
        (
            f"  after a SIGKILL ≤ {KILL_WINDOW:g} s after Telegram accepted",
            [r.after_kill for r in results],
            "",
        ),
        ("  after nothing ambiguous", [r.other for r in results], "0"),
        ("  most copies of one alert", [r.most_copies for r in results], ""),
        ("restarts (SIGKILL)", [r.restarts for r in results], "≥ 20"),
        ("peak memory, one process (MB)", [f"{r.peak_mb:.0f}" for r in results], ""),
        ("  with its parse workers (MB)", [f"{r.peak_with_workers_mb:.0f}" for r in results], ""),
        (
            "Telegram faults 429/500/timeout",
            ["/".join(str(r.faults.get(k, 0)) for k in ("429", "500", "timeout")) for r in results],
            "",
        ),
        ("drain after the last item (s)", [f"{r.drained_s:.0f}" for r in results], ""),
        ("load average (1/5/15 min)", [r.load for r in results], ""),
    ]
    table(header, [[label, *map(str, values), target] for label, values, target in rows])


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for row in rows:
        print(
            "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


# ---- load ---------------------------------------------------------------------------------------


def load(args: Any) -> int:
    import match as match_bench

    args.corpus = args.corpus or match_bench.DEFAULT_CORPUS
    if not args.corpus.is_dir():
        print(f"corpus not found at {args.corpus} (use --corpus)", file=sys.stderr)
        return 2
    texts = [(a.title, a.body[:1500]) for a in match_bench.load_articles(args.corpus, 400)]

    def text(n: int, k: int) -> tuple[str, str]:
        title, body = texts[(n * 7919 + k) % len(texts)]
        return title, f"{body} (item {n}-{k})"

    queries = match_bench.generate(args.watchlists, match_bench.vocabulary(args.corpus))
    kind = args.database
    with (
        tempfile.TemporaryDirectory(prefix="load-") as tmp_name,
        fresh_database(kind, Path(tmp_name), args.postgresql, "soak") as url,
        PublishingFeeds(args.feeds, args.publish, args.window, text) as feeds,
    ):
        tmp = Path(tmp_name)

        def config(name: str, api_url: str, listen: str) -> str:
            lines = [
                f"database: {{url: {json.dumps(url)}}}",
                "fetch: {allow_private: true, per_host: 100}",
                f"service: {{listen: '{listen}'}}",
                "entities:",
                *(
                    f"  {k}: {{aliases: {json.dumps(v, ensure_ascii=False)}}}"
                    for k, v in match_bench.ENTITIES.items()
                ),
                "watchlists:",
                *(
                    f"  w{i}: {{query: {json.dumps(q, ensure_ascii=False)}}}"
                    for i, q in enumerate(queries)
                ),
                "feeds:",
                *(
                    f"  - {{name: f{n}, url: '{feeds.url(n)}', interval: {args.interval}}}"
                    for n in range(feeds.feeds)
                ),
            ]
            return "\n".join(lines) + "\n"

        table_ = FeedTable(url)
        lags: list[tuple[bool, float]] = []  # (the feed's first poll, lag in seconds)
        memory: dict[str, float] = {}
        lag_log = args.lags.open("w", encoding="utf-8") if args.lags else None
        with Cluster(tmp, url, config, lambda name: "") as cluster:
            replica = cluster.start("load")
            started = time.monotonic()
            seen: dict[int, tuple[datetime | None, datetime | None]] = {}
            marks = {"minute 2": 120.0, "end": args.minutes * 60.0}
            while time.monotonic() - started < args.minutes * 60:
                if not replica.running:
                    print(replica.output()[-2000:], file=sys.stderr)
                    return 1
                for feed_id, due, polled in table_.rows():
                    before = seen.get(feed_id)
                    if before and before[0] and polled is not None and polled != before[1]:
                        lag = (polled - before[0]).total_seconds()
                        lags.append((before[1] is None, lag))
                        if lag_log is not None:
                            lag_log.write(f"{elapsed_s(started):.1f},{feed_id},{lag:.3f}\n")
                    seen[feed_id] = (due, polled)
                elapsed = time.monotonic() - started
                for label, at in marks.items():
                    if label not in memory and elapsed >= at - 1.5:
                        memory[label] = rss_mb(replica.pid)[0]
                        memory[label + " workers"] = sum(
                            rss_mb(c)[0] for c in children(replica.pid)
                        )
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started - elapsed)))
            memory.setdefault("end", rss_mb(replica.pid)[0])
            memory.setdefault("end workers", sum(rss_mb(c)[0] for c in children(replica.pid)))
            memory["peak"] = rss_mb(replica.pid)[1]
            items = count_rows(url, "items")
            cluster.stop()
        table_.close()
        if lag_log is not None:
            lag_log.close()
    print_load(args, lags, memory, items)
    return 0


def elapsed_s(started: float) -> float:
    return time.monotonic() - started


def count_rows(url: str, name: str) -> int:
    from sqlalchemy import text

    from monitor.store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())
    finally:
        engine.dispose()


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def print_load(
    args: Any, lags: Sequence[tuple[bool, float]], memory: dict[str, float], items: int
) -> None:
    every = [lag for _, lag in lags]
    steady = [lag for first, lag in lags if not first]
    print(
        f"Load: {args.feeds} feeds (an item each every {args.publish:g} s, polled every "
        f"{args.interval}) × {args.watchlists} watchlists, one `monitor run` on {args.database}, "
        f"{args.minutes:g} min; {items} items stored; load average {load_average()}"
    )
    growth = (memory["end"] / memory["minute 2"] - 1) if memory.get("minute 2") else float("nan")
    header = ["", "all polls", "after each feed's first", "target"]
    rows = [
        ["polls", str(len(every)), str(len(steady)), ""],
        [
            "poll lag median (s)",
            f"{statistics.median(every):.2f}" if every else "-",
            f"{statistics.median(steady):.2f}" if steady else "-",
            "",
        ],
        [
            "poll lag p99 (s)",
            f"{percentile(every, 99):.2f}",
            f"{percentile(steady, 99):.2f}",
            "< 5",
        ],
        ["poll lag max (s)", f"{max(every, default=0):.2f}", f"{max(steady, default=0):.2f}", ""],
    ]
    table(header, rows)
    print()
    end = f"minute {args.minutes:g}"
    table(
        ["resident memory (MB)", "minute 2", end, "growth", "target"],
        [
            [
                "monitor run",
                f"{memory.get('minute 2', 0):.0f}",
                f"{memory['end']:.0f}",
                f"{growth:+.1%}",
                "< +10 %",
            ],
            [
                "its parse workers",
                f"{memory.get('minute 2 workers', 0):.0f}",
                f"{memory.get('end workers', 0):.0f}",
                "",
                "",
            ],
            ["peak (VmHWM)", "", f"{memory['peak']:.0f}", "", ""],
        ],
    )


# ---- command line -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    postgresql = os.environ.get("MONITOR_SOAK_DATABASE_URL") or os.environ.get(
        "MONITOR_TEST_DATABASE_URL"
    )

    s = commands.add_parser("soak", help="SIGKILL at random while feeds publish")
    s.add_argument("--minutes", type=float, default=10)
    s.add_argument("--feeds", type=int, default=200)
    s.add_argument("--publish", type=float, default=60, help="seconds between a feed's items")
    s.add_argument("--window", type=int, default=30, help="items in a feed")
    s.add_argument("--interval", default="30s", help="poll interval of every feed")
    s.add_argument("--kills", type=int, default=20)
    s.add_argument("--database", default="sqlite,postgresql")
    s.add_argument("--replicas", type=int, default=2, help="on PostgreSQL")
    s.add_argument("--postgresql", default=postgresql, help="default: MONITOR_SOAK_DATABASE_URL")
    s.add_argument("--p429", type=float, default=0.05)
    s.add_argument("--p500", type=float, default=0.05)
    s.add_argument("--ptimeout", type=float, default=0.03)
    s.add_argument("--drain", type=float, default=300, help="seconds to wait for the last alerts")
    s.add_argument("--seed", type=int, default=1)

    lo = commands.add_parser("load", help="many feeds and watchlists for a while")
    lo.add_argument("--minutes", type=float, default=10)
    lo.add_argument("--feeds", type=int, default=1000)
    lo.add_argument("--watchlists", type=int, default=10_000)
    lo.add_argument("--publish", type=float, default=300, help="seconds between a feed's items")
    lo.add_argument("--window", type=int, default=20, help="items in a feed")
    lo.add_argument("--interval", default="2m", help="poll interval of every feed")
    lo.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    lo.add_argument("--postgresql", default=postgresql)
    lo.add_argument(
        "--lags",
        type=Path,
        help="write every poll's lag to this CSV (seconds into the run, feed, lag)",
    )
    lo.add_argument("--corpus", type=Path, default=None, help="default: as benchmarks/match.py")

    args = parser.parse_args()
    return soak(args) if args.command == "soak" else load(args)


if __name__ == "__main__":
    sys.exit(main())
