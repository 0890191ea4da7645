"""Benchmark: the poll path end to end on loopback, beside feedparser and a bare aiohttp loop.

    python benchmarks/poll.py [--feeds 200] [--items 50] [--new 5] [--rounds 3]
                              [--sizes 100,10000] [--postgresql URL | --no-postgresql]
                              [--memory-feeds 1000] [--memory-watchlists 10000] [--memory-only]
                              [--only-304]

A separate process serves RSS feeds of ITEMS items each on 127.0.0.1 (real Arabic and English news
texts from the corpus, each item with its own guid and suffix; ETag and 304 support). When asked,
it advances every feed by NEW items: NEW new items on top, as many old ones dropped — what a news
feed looks like from one poll to the next.

For each database (SQLite in a temporary directory; PostgreSQL in a schema of its own in the
database `bench_poll`, created if missing on the server of --postgresql or of
MONITOR_TEST_DATABASE_URL), this process runs the daemon's own code (`Service.poll_all`: claim →
fetch → parse → dedup → store → match → outbox) for every number of watchlists (generated in every
query shape from the corpus's words) side by side, a service and a database each, every round on
one and then the other, so that the machine's drift during the run falls on all of them alike:

* a first poll of every feed (every item new);
* ROUNDS changed polls (the server advanced every feed: a 200 with NEW new items among ITEMS), each
  round beside `feedparser.parse` of the very same bytes, feed after feed in this process, and
  beside the same bytes parsed through the daemon's parse workers (`ParsePool`, feed after feed:
  what parsing in another process adds, the IPC), measured once a round for all sizes;
* ROUNDS rounds of 304s (nothing changed), each round beside a bare aiohttp loop sending the same
  conditional GETs to the same server with the same concurrency (50 in flight), once a round.

The fastest round of each counts (the machine is shared), and the spread of the rounds is printed
as the noise. Then it starts `monitor run` as a process with MEMORY_FEEDS feeds and
MEMORY_WATCHLISTS watchlists on SQLite, waits until it has polled every feed once, and reads its
peak and current resident memory from /proc; then it makes every feed due again and times the round
of 304s the daemon polls, beside the bare aiohttp loop over the same feeds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))
import match as match_bench  # the sibling benchmark script: corpus texts, watchlist generator
from databases import fresh_database

CONCURRENCY = 50  # the daemon's polls in flight (daemon.service.MAX_CONCURRENT_POLLS)


# ---- the feed server ----------------------------------------------------------------------------


def build_feed(n: int, items: int, first: int, texts: Sequence[tuple[str, str]]) -> bytes:
    """Feed `n` holding items first … first+items-1, newest (highest) first."""
    entries = []
    for index in range(first + items - 1, first - 1, -1):
        title, body = texts[(n * 7919 + index) % len(texts)]
        entries.append(
            f"<item><guid isPermaLink='false'>feed{n}-item{index}</guid>"
            f"<title>{escape(title)}</title><link>https://example.org/{n}/{index}</link>"
            f"<description>{escape(body)} (item {n}-{index})</description>"
            "<pubDate>Mon, 18 Sep 2023 08:00:00 GMT</pubDate></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Feed {n}</title>{''.join(entries)}</channel></rss>"
    ).encode()


def serve(port: int, items: int, new: int, corpus: Path, ready: Any) -> None:
    from aiohttp import web

    texts = [(a.title, a.body[:1500]) for a in match_bench.load_articles(corpus, 400)]
    generation = 0
    cache: dict[tuple[int, int], tuple[bytes, str]] = {}

    def feed(n: int) -> tuple[bytes, str]:
        key = (n, generation)
        if key not in cache:
            body = build_feed(n, items, generation * new, texts)
            cache[key] = (body, f'"{hashlib.sha1(body).hexdigest()[:16]}"')
        return cache[key]

    async def handle(request: web.Request) -> web.Response:
        body, etag = feed(int(request.match_info["n"]))
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=body, headers={"ETag": etag, "Content-Type": "application/rss+xml"}
        )

    async def advance(request: web.Request) -> web.Response:
        nonlocal generation
        generation = 0 if request.query.get("to") == "start" else generation + 1
        cache.clear()
        return web.Response(text=str(generation))

    app = web.Application()
    app.router.add_get("/feed/{n}.xml", handle)
    app.router.add_post("/advance", advance)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


@contextlib.contextmanager
def feed_server(items: int, new: int, corpus: Path) -> Iterator[int]:
    """`serve` in a process of its own, for as long as the `with` lasts: its port."""
    port = free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(
        target=serve, args=(port, items, new, corpus, ready), daemon=True
    )
    server.start()
    try:
        if not ready.wait(120):
            print("the feed server did not start", file=sys.stderr)
            raise SystemExit(1)
        yield port
    finally:
        server.terminate()
        server.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---- configs and databases ----------------------------------------------------------------------


def config_text(database_url: str, port: int, feeds: int, queries: Sequence[str]) -> str:
    lines = [
        f"database: {{url: {json.dumps(database_url)}}}",
        "fetch: {allow_private: true, per_host: 100}",
        "service: {listen: null}",
        # The feeds' items are dated 2023: with the default limit (24h) none would alert, and the
        # alert path would not be measured.
        "defaults: {alert_max_age: off}",
        "entities:",
        *(f"  {k}: {{aliases: {json.dumps(v)}}}" for k, v in match_bench.ENTITIES.items()),
        "watchlists:",
        *(f"  w{i}: {{query: {json.dumps(q, ensure_ascii=False)}}}" for i, q in enumerate(queries)),
        "feeds:",
        *(f"  - {{name: f{n}, url: 'http://127.0.0.1:{port}/feed/{n}.xml'}}" for n in range(feeds)),
    ]
    return "\n".join(lines) + "\n"


BENCH_DATABASE = "bench_poll"


def bench_database(server_url: str) -> str:
    """The URL of the database `bench_poll` on the server of `server_url`, created if missing."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from monitor.store.db import make_engine

    url = make_url(server_url)
    admin = make_engine(url.set(database="postgres").render_as_string(hide_password=False))
    try:
        with admin.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": BENCH_DATABASE}
            ).first()
            if found is None:
                connection.execute(text(f'CREATE DATABASE "{BENCH_DATABASE}"'))
    finally:
        admin.dispose()
    return url.set(database=BENCH_DATABASE).render_as_string(hide_password=False)


# ---- one database × one number of watchlists ----------------------------------------------------


@dataclass
class Figures:
    database: str
    watchlists: int
    first_s: float = 0.0
    first_items: int = 0
    alerts: int = 0
    changed_s: list[float] = field(default_factory=list)
    changed_cpu_s: list[float] = field(default_factory=list)
    changed_items: int = 0
    feedparser_s: list[float] = field(default_factory=list)
    feedparser_cpu_s: list[float] = field(default_factory=list)
    worker_s: list[float] = field(default_factory=list)
    ours_304_s: list[float] = field(default_factory=list)
    bare_304_s: list[float] = field(default_factory=list)
    ours_304_cpu_s: list[float] = field(default_factory=list)  # this process's, all threads
    bare_304_cpu_s: list[float] = field(default_factory=list)


def spread(times: Sequence[float]) -> float:
    return max(times) / min(times) - 1


async def advance(base: str, *, to_start: bool = False) -> None:
    """Advance every feed by NEW items; `to_start`: back to the first items."""
    import aiohttp

    url = f"{base}/advance" + ("?to=start" if to_start else "")
    async with aiohttp.ClientSession() as session, session.post(url) as response:
        response.raise_for_status()


async def fetch_all(urls: Sequence[str]) -> list[tuple[bytes, str]]:
    """Every feed's current bytes and ETag (untimed: the input of the feedparser baseline)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def one(url: str) -> tuple[bytes, str]:
            async with session.get(url) as response:
                return await response.read(), response.headers["ETag"]

        return list(await asyncio.gather(*(one(u) for u in urls)))


async def worker_parses(bodies: Sequence[bytes]) -> float:
    """Seconds to parse `bodies` through the daemon's parse workers, one after the other (the
    workers warm): feedparser plus the body sent and the items pickled back."""
    from monitor.parse_pool import ParsePool

    pool = ParsePool()
    now = datetime.now(UTC)
    try:
        await pool.parse(bodies[0], fetched_at=now)  # warm-up: the workers start
        started = time.perf_counter()
        for body in bodies:
            await pool.parse(body, fetched_at=now)
        return time.perf_counter() - started
    finally:
        await pool.close()


def feedparser_alone(bodies: Sequence[bytes]) -> tuple[float, float]:
    """Seconds and CPU seconds of `feedparser.parse` over `bodies`, one after the other."""
    import feedparser

    started, cpu = time.perf_counter(), time.process_time()
    for body in bodies:
        feedparser.parse(io.BytesIO(body))
    return time.perf_counter() - started, time.process_time() - cpu


async def bare_304s(urls: Sequence[str], etags: Sequence[str], repeat: int) -> tuple[float, float]:
    """A bare aiohttp loop: the same conditional GETs, CONCURRENCY in flight, one session.
    Seconds and CPU seconds of `repeat` rounds."""
    import aiohttp

    semaphore = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as session:

        async def one(url: str, etag: str) -> None:
            async with semaphore, session.get(url, headers={"If-None-Match": etag}) as response:
                await response.read()
                if response.status != 304:
                    raise RuntimeError(f"{url}: {response.status}, not 304")

        async def round_() -> None:
            await asyncio.gather(*(one(u, e) for u, e in zip(urls, etags, strict=True)))

        await round_()  # warm-up: connections open, as the daemon's are
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeat):
            await round_()
        return time.perf_counter() - started, time.process_time() - cpu


def build_service(config: Path, url: str, port: int, feeds: int, queries: Sequence[str]) -> Any:
    """A `Service` (`monitor once`'s) on the database `url` for `feeds` feeds of the server on
    `port` and `queries` as watchlists, its config written to `config`; its schema made."""
    from monitor.config import parse_config
    from monitor.daemon import Service

    config.write_text(config_text(url, port, feeds, queries), encoding="utf-8")
    service = Service.build(parse_config(config.read_text("utf-8"), str(config)), notifiers={})
    service.prepare(now=datetime.now(UTC), alone=url.startswith("sqlite"))
    return service


def measure(
    kind: str,
    databases: Sequence[tuple[int, str]],
    tmp: Path,
    port: int,
    queries: Mapping[int, Sequence[str]],
    args: Any,
) -> list[Figures]:
    """Every number of watchlists of `databases` ((watchlists, database URL) pairs) on one
    database kind, a service each, side by side: each round (changed polls, then 304s) runs on
    every service in turn, beside one measure of the baseline (feedparser, the parse workers,
    the bare aiohttp loop) that all of them are compared with. The machine's speed drifts by more
    than 10,000 watchlists add; run one after the other, the sizes would be compared across it."""
    from monitor.core.collector import collect_less_often, freeze_survivors

    sides: list[tuple[Any, Figures]] = []
    for size, url in databases:
        config = tmp / f"config-{kind}-{size}.yaml"
        service = build_service(config, url, port, args.feeds, queries[size])
        sides.append((service, Figures(kind, size)))
    freeze_survivors()  # as `monitor run` does once started
    collect_less_often()
    base = f"http://127.0.0.1:{port}"
    urls = [f"{base}/feed/{n}.xml" for n in range(args.feeds)]

    def check(results: Sequence[Any], status: str) -> None:
        wrong = [r for r in results if r.status != status]
        if wrong:
            raise RuntimeError(f"{len(wrong)} polls were not {status!r}, e.g. {wrong[0]}")

    async def run() -> None:
        try:
            await advance(base, to_start=True)  # every database × size sees the same feeds
            for service, figures in sides:
                started = time.perf_counter()
                results = await service.poll_all()
                figures.first_s = time.perf_counter() - started
                check(results, "ok")
                figures.first_items = sum(r.new_items for r in results)
                figures.alerts = sum(r.alerts for r in results)
            for _ in range(0 if args.only_304 else args.rounds):
                await advance(base)
                for service, figures in sides:
                    started, cpu = time.perf_counter(), time.process_time()
                    results = await service.poll_all()
                    figures.changed_s.append(time.perf_counter() - started)
                    figures.changed_cpu_s.append(time.process_time() - cpu)
                    check(results, "ok")
                    figures.changed_items = sum(r.new_items for r in results)
                bodies = [body for body, _ in await fetch_all(urls)]
                parse_s, parse_cpu_s = feedparser_alone(bodies)
                worker_s = await worker_parses(bodies)
                for _, figures in sides:
                    figures.feedparser_s.append(parse_s)
                    figures.feedparser_cpu_s.append(parse_cpu_s)
                    figures.worker_s.append(worker_s)
            etags = [etag for _, etag in await fetch_all(urls)]
            for _ in range(args.rounds):
                for service, figures in sides:
                    started, cpu = time.perf_counter(), time.process_time()
                    for _ in range(args.repeat_304):
                        check(await service.poll_all(), "not_modified")
                    figures.ours_304_s.append(time.perf_counter() - started)
                    figures.ours_304_cpu_s.append(time.process_time() - cpu)
                bare_s, bare_cpu_s = await bare_304s(urls, etags, args.repeat_304)
                for _, figures in sides:
                    figures.bare_304_s.append(bare_s)
                    figures.bare_304_cpu_s.append(bare_cpu_s)
        finally:
            for service, _ in sides:
                await service.close()

    asyncio.run(run())
    return [figures for _, figures in sides]


# ---- the daemon's resident memory ---------------------------------------------------------------


def proc_status_mb(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024
    return values


@dataclass
class DaemonFigures:
    memory_mb: dict[str, float]  # VmHWM (peak) and VmRSS once every feed was polled
    first_s: float  # until every feed was polled once
    items: int
    round_304_s: float  # every feed made due again: from the first poll of them to the last
    bare_304_s: float  # the bare aiohttp loop over the same conditional GETs


def daemon_run(
    tmp: Path, port: int, feeds: int, queries: Sequence[str], timeout: float
) -> DaemonFigures:
    """Run `monitor run` until it has polled every feed once; read its resident memory; make
    every feed due again and time the round of 304s it then polls; SIGTERM."""
    db_path = tmp / "daemon.db"
    config = tmp / "daemon.yaml"
    config.write_text(config_text(f"sqlite:///{db_path}", port, feeds, queries), encoding="utf-8")
    log = (tmp / "daemon.log").open("wb")
    started = time.perf_counter()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )

    def wait_for(query: str, interval: float) -> None:
        while _count(db_path, query) < feeds:
            if daemon.poll() is not None:
                last = (tmp / "daemon.log").read_text(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"monitor run exited with {daemon.returncode}: {last}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"monitor run did not get there in {timeout} s: {query}")
            time.sleep(interval)

    try:
        wait_for("SELECT count(*) FROM feeds WHERE last_polled_at IS NOT NULL", 1.0)
        first_s = time.perf_counter() - started
        memory = proc_status_mb(daemon.pid)
        items = _count(db_path, "SELECT count(*) FROM items")
        with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
            db.execute("UPDATE feeds SET next_poll_at = '2000-01-01 00:00:00.000000'")
            db.commit()
        wait_for("SELECT count(*) FROM feeds WHERE last_status = 'not_modified'", 0.05)
        # From the first poll of the round to the last, by the daemon's own clock: the wait for
        # its next tick (up to 2 s) is not polling.
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            first, last = db.execute(
                "SELECT min(last_polled_at), max(last_polled_at) FROM feeds"
            ).fetchone()
        round_304_s = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
    urls = [f"http://127.0.0.1:{port}/feed/{n}.xml" for n in range(feeds)]

    async def bare() -> float:
        etags = [etag for _, etag in await fetch_all(urls)]
        return (await bare_304s(urls, etags, 1))[0]

    return DaemonFigures(memory, first_s, items, round_304_s, asyncio.run(bare()))


def _count(db_path: Path, query: str) -> int:
    if not db_path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            return int(db.execute(query).fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


# ---- the report ---------------------------------------------------------------------------------


def load_average() -> str:
    """The machine's load average over 1, 5 and 15 minutes (what else ran beside us)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report_304(results: Sequence[Figures], args: Any) -> None:
    """The rounds of 304s alone (--only-304): rate and CPU per poll, ours beside aiohttp's."""
    print(f"load average at the start: {args.load_at_start}; now: {load_average()}")
    print(
        f"{args.feeds} feeds on loopback, {args.repeat_304} conditional GETs of each per round, "
        f"{CONCURRENCY} in flight; fastest of {args.rounds} rounds (CPU: least of the rounds)"
    )
    print(
        f"{'database':10} | {'watchlists':>10} | {'304/s':>6} | {'aiohttp 304/s':>13} | "
        f"{'share':>5} | {'CPU µs/poll':>11} | {'aiohttp CPU µs':>14} | {'CPU ratio':>9}"
    )
    for f in results:
        polls = args.feeds * args.repeat_304
        ours, bare = polls / min(f.ours_304_s), polls / min(f.bare_304_s)
        ours_cpu = min(f.ours_304_cpu_s) / polls * 1e6
        bare_cpu = min(f.bare_304_cpu_s) / polls * 1e6
        print(
            f"{f.database:10} | {f.watchlists:>10} | {ours:>6.0f} | {bare:>13.0f} | "
            f"{ours / bare:>5.0%} | {ours_cpu:>11.0f} | {bare_cpu:>14.0f} | "
            f"{ours_cpu / bare_cpu:>8.2f}×"
        )
    print(
        "304/s: polls answered 304 by the daemon's code (Service.poll_all: claim, fetch, "
        "poll state written) and by a bare aiohttp loop; share: ours / aiohttp;\nCPU µs/poll: "
        "this process's CPU time (every thread) per poll"
    )
    for f in results:
        print(
            f"noise ({f.database}, {f.watchlists}): rounds differ by up to "
            f"{spread(f.ours_304_s):.0%} 304, {spread(f.bare_304_s):.0%} aiohttp"
        )


def report(results: Sequence[Figures], args: Any) -> None:
    print(f"load average at the start: {args.load_at_start}; now: {load_average()}")
    print(
        f"{args.feeds} feeds × {args.items} items on loopback; a changed poll finds {args.new} new "
        f"items among {args.items}; fastest of {args.rounds} rounds"
    )
    header = (
        f"{'database':10} | {'watchlists':>10} | {'changed ms':>10} | {'feedparser ms':>13} | "
        f"{'ratio':>6} | {'CPU ratio':>9} | {'worker ms':>9} | {'first ms':>8} | "
        f"{'items/min':>9} | {'304/s':>6} | {'aiohttp 304/s':>13} | {'share':>5}"
    )
    print(header)
    for f in results:
        changed = min(f.changed_s) / args.feeds * 1000
        parse = min(f.feedparser_s) / args.feeds * 1000
        cpu_ratio = min(f.changed_cpu_s) / min(f.feedparser_cpu_s)
        worker = min(f.worker_s) / args.feeds * 1000
        ours_304 = args.feeds * args.repeat_304 / min(f.ours_304_s)
        bare_304 = args.feeds * args.repeat_304 / min(f.bare_304_s)
        print(
            f"{f.database:10} | {f.watchlists:>10} | {changed:>10.2f} | {parse:>13.2f} | "
            f"{changed / parse:>5.2f}× | {cpu_ratio:>8.2f}× | {worker:>9.2f} | "
            f"{f.first_s / args.feeds * 1000:>8.1f} | {f.first_items / f.first_s * 60:>9.0f} | "
            f"{ours_304:>6.0f} | {bare_304:>13.0f} | {ours_304 / bare_304:>5.0%}"
        )
    print(
        "changed ms: one changed poll, claim to outbox (wall clock, 50 polls in flight); "
        "feedparser ms: feedparser.parse of the same bytes;\nCPU ratio: the same in CPU time of "
        "this process (neither the parse workers' nor the database server's is counted);\n"
        "worker ms: the same bytes parsed through the parse workers, one after the other "
        "(feedparser + IPC); first ms: a first poll (every item new);\nitems/min: ingested by "
        "first polls; 304/s: polls answered 304, ours and a bare aiohttp loop's; share: ours / "
        "aiohttp"
    )
    sizes = sorted({f.watchlists for f in results})
    if len(sizes) > 1:
        growth = []
        for kind in dict.fromkeys(f.database for f in results):
            by_size = {f.watchlists: f for f in results if f.database == kind}
            low, high = by_size[sizes[0]], by_size[sizes[-1]]
            wall = min(high.changed_s) / min(low.changed_s) - 1
            cpu = min(high.changed_cpu_s) / min(low.changed_cpu_s) - 1
            growth.append(f"{kind} {wall:+.0%} ({cpu:+.0%} CPU)")
        print(f"changed poll with {sizes[-1]} watchlists against {sizes[0]}: {', '.join(growth)}")
    for f in results:
        print(
            f"noise ({f.database}, {f.watchlists}): rounds differ by up to "
            f"{spread(f.changed_s):.0%} changed, {spread(f.feedparser_s):.0%} feedparser, "
            f"{spread(f.ours_304_s):.0%} 304, {spread(f.bare_304_s):.0%} aiohttp; "
            f"{f.first_items} items stored by first polls, {f.changed_items} by a changed round, "
            f"{f.alerts} alerts"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--new", type=int, default=5, help="new items per feed per changed poll")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat-304", type=int, default=5, help="304 polls per feed per round")
    parser.add_argument("--sizes", default="100,10000", help="numbers of watchlists")
    parser.add_argument(
        "--only-304",
        action="store_true",
        help="only the rounds of 304s (after the first polls that store the validators); "
        "no changed polls, no memory run",
    )
    parser.add_argument(
        "--postgresql",
        default=os.environ.get("MONITOR_TEST_DATABASE_URL"),
        help="a PostgreSQL server's URL (default: MONITOR_TEST_DATABASE_URL); the benchmark "
        f"uses the database {BENCH_DATABASE!r} there",
    )
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite only")
    parser.add_argument("--memory-feeds", type=int, default=1000)
    parser.add_argument("--memory-watchlists", type=int, default=10000, help="0: skip")
    parser.add_argument("--memory-timeout", type=float, default=3600)
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the `monitor run` part: resident memory and the round of 304s",
    )
    parser.add_argument("--corpus", type=Path, default=match_bench.DEFAULT_CORPUS)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"corpus not found at {args.corpus} (use --corpus)", file=sys.stderr)
        return 2

    args.load_at_start = load_average()
    with feed_server(args.items, args.new, args.corpus) as port:
        vocab = match_bench.vocabulary(args.corpus)
        sizes = [int(s) for s in args.sizes.split(",")]
        if args.no_postgresql or args.memory_only:
            args.postgresql = None
        if args.postgresql:
            args.postgresql = bench_database(args.postgresql)
        kinds = ["SQLite", "PostgreSQL"] if args.postgresql else ["SQLite"]
        if args.memory_only:
            kinds = []
            print(f"load average at the start: {args.load_at_start}")
        results = []
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            queries = {size: match_bench.generate(size, vocab) for size in sizes} if kinds else {}
            for kind in kinds:
                with contextlib.ExitStack() as databases:
                    urls = [
                        databases.enter_context(
                            fresh_database(kind, tmp, args.postgresql, "bench_poll")
                        )
                        for _ in sizes
                    ]
                    pairs = list(zip(sizes, urls, strict=True))
                    results += measure(kind, pairs, tmp, port, queries, args)
                print(f"  measured {kind} with {args.sizes} watchlists", file=sys.stderr)
            if results:
                (report_304 if args.only_304 else report)(results, args)
            if not args.postgresql and not args.memory_only:
                print("(PostgreSQL left out: --no-postgresql, or no URL)")
            if args.memory_watchlists and not args.only_304:
                watchlists = match_bench.generate(args.memory_watchlists, vocab)
                daemon = daemon_run(tmp, port, args.memory_feeds, watchlists, args.memory_timeout)
                rate = args.memory_feeds / daemon.round_304_s
                bare = args.memory_feeds / daemon.bare_304_s
                print(
                    f"monitor run, {args.memory_feeds} feeds × {args.memory_watchlists} watchlists "
                    f"(SQLite): resident memory peak {daemon.memory_mb['VmHWM']:.0f} MB, "
                    f"{daemon.memory_mb['VmRSS']:.0f} MB once every feed was polled "
                    f"({daemon.items} items in {daemon.first_s:.0f} s);\n"
                    f"every feed due again: {rate:.0f} polls/s of 304s "
                    f"(a bare aiohttp loop: {bare:.0f}/s, {rate / bare:.0%}); "
                    f"load average now: {load_average()}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
