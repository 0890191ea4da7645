"""Benchmark: polling throughput, end to end, on loopback.

    python benchmarks/poll.py [--feeds 1000] [--items 50] [--baseline-feeds 100]

A separate process serves FEEDS RSS feeds of ITEMS items each on 127.0.0.1 (real Arabic and English
news texts from the corpus, with ETag and 304 support). This process runs the daemon's own code
(`Service.poll_all`: fetch → parse → dedup → store → match 100 watchlists → alerts in the outbox,
one transaction per feed, SQLite in a temporary directory) twice: the first round takes every item
as new (200 responses), the second gets 304s. It prints polls per second for both, items ingested
per second and per minute, and the peak resident memory of this process — beside a naive baseline
in the same run: `feedparser.parse(url)` feed after feed, without conditional GET (and so without
any 304), storing nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import resource
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))
import match as match_bench  # the sibling benchmark script: corpus texts, watchlist generator


def build_feed(n: int, items: int, texts: list[tuple[str, str]]) -> bytes:
    entries = []
    for i in range(items):
        title, body = texts[(n * items + i) % len(texts)]
        entries.append(
            f"<item><guid isPermaLink='false'>feed{n}-item{i}</guid>"
            f"<title>{escape(title)}</title><link>https://example.org/{n}/{i}</link>"
            f"<description>{escape(body)} (item {n}-{i})</description>"
            "<pubDate>Mon, 18 Sep 2023 08:00:00 GMT</pubDate></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Feed {n}</title>{''.join(entries)}</channel></rss>"
    ).encode()


def serve(port: int, feeds: int, items: int, corpus: Path, ready: multiprocessing.Event) -> None:
    from aiohttp import web

    texts = [(a.title, a.body[:1500]) for a in match_bench.load_articles(corpus, 400)]
    bodies = [build_feed(n, items, texts) for n in range(feeds)]
    etags = [f'"{hashlib.sha1(b).hexdigest()[:16]}"' for b in bodies]

    async def handle(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if request.headers.get("If-None-Match") == etags[n]:
            return web.Response(status=304, headers={"ETag": etags[n]})
        return web.Response(
            body=bodies[n], headers={"ETag": etags[n], "Content-Type": "application/rss+xml"}
        )

    app = web.Application()
    app.router.add_get("/feed/{n}.xml", handle)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--baseline-feeds", type=int, default=100)
    parser.add_argument("--corpus", type=Path, default=match_bench.DEFAULT_CORPUS)
    args = parser.parse_args()

    from monitor.config import parse_config
    from monitor.daemon import Service

    port = free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(
        target=serve, args=(port, args.feeds, args.items, args.corpus, ready), daemon=True
    )
    server.start()
    if not ready.wait(120):
        print("the feed server did not start", file=sys.stderr)
        return 1
    try:
        vocab = match_bench.vocabulary(args.corpus)
        queries = match_bench.generate(100, vocab)
        with tempfile.TemporaryDirectory() as tmp:
            lines = [
                f"database: {{url: 'sqlite:///{tmp}/monitor.db'}}",
                "fetch: {allow_private: true, per_host: 100}",
                "service: {listen: null}",
                "entities:",
                *(f"  {k}: {{aliases: {v!r}}}" for k, v in match_bench.ENTITIES.items()),
                "watchlists:",
                *(f"  w{i}: {{query: {q!r}}}" for i, q in enumerate(queries)),
                "feeds:",
                *(
                    f"  - {{name: f{n}, url: 'http://127.0.0.1:{port}/feed/{n}.xml'}}"
                    for n in range(args.feeds)
                ),
            ]
            config = Path(tmp) / "config.yaml"
            config.write_text("\n".join(lines) + "\n", encoding="utf-8")
            settings = parse_config(config.read_text("utf-8"), str(config))
            service = Service.build(settings, notifiers={})
            service.prepare(now=datetime.now(UTC), alone=True)
            rss_before = peak_rss_mb()

            async def rounds() -> tuple[float, int, int, float, int]:
                try:
                    started = time.perf_counter()
                    first = await service.poll_all()
                    first_s = time.perf_counter() - started
                    started = time.perf_counter()
                    second = await service.poll_all()
                    second_s = time.perf_counter() - started
                finally:
                    await service.close()
                new = sum(r.new_items for r in first)
                alerts = sum(r.alerts for r in first)
                not_modified = sum(r.status == "not_modified" for r in second)
                failed = [r for r in first + second if r.failed]
                if failed:
                    print(f"{len(failed)} polls failed, e.g. {failed[0]}", file=sys.stderr)
                return first_s, new, alerts, second_s, not_modified

            first_s, new, alerts, second_s, not_modified = asyncio.run(rounds())
            ours_rss = peak_rss_mb()

        import feedparser

        started = time.perf_counter()
        baseline_items = 0
        for n in range(args.baseline_feeds):
            parsed = feedparser.parse(f"http://127.0.0.1:{port}/feed/{n}.xml")
            baseline_items += len(parsed.entries)
        baseline_s = time.perf_counter() - started
    finally:
        server.terminate()
        server.join()

    feeds = args.feeds
    base_polls = args.baseline_feeds / baseline_s
    print(
        f"{feeds} feeds × {args.items} items on loopback; 100 watchlists; SQLite; "
        f"{new} items stored, {alerts} alerts in the outbox"
    )
    print(f"{'':34} | {'ours':>12} | {'naive baseline':>14}")
    print(f"{'polls/s, 200 (new items)':34} | {feeds / first_s:>12.1f} | {base_polls:>14.1f}")
    print(
        f"{'polls/s, 304 (nothing new)':34} | {not_modified / second_s:>12.1f} | "
        f"{base_polls:>14.1f}"
    )
    print(
        f"{'items/s end to end (fetch→outbox)':34} | {new / first_s:>12.0f} | "
        f"{baseline_items / baseline_s:>14.0f}"
    )
    print(f"{'items/min end to end':34} | {new / first_s * 60:>12.0f} | {'(parse only)':>14}")
    print(f"{'peak RSS MB (this process)':34} | {ours_rss:>12.0f} | {'':>14}")
    print(f"(peak RSS before polling: {rss_before:.0f} MB; baseline: {args.baseline_feeds} feeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
