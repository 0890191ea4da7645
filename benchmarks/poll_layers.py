"""Benchmark: where a 304 poll's time goes, layer by layer, each beside a bare aiohttp loop.

    python benchmarks/poll_layers.py [--feeds 500] [--rounds 8] [--repeat 5]

The feed server of `poll.py` (a separate process on 127.0.0.1, ETag and 304) serves FEEDS feeds;
this process polls all of them REPEAT times a round, every feed answering 304, through each layer
in turn, and after each round of layers the bare aiohttp loop of `poll.py` (a default session, the
same conditional GETs, 50 in flight) once more, so that every layer is compared with the bare loop
of its own rounds while the machine's speed drifts:

* session — `session.get` on a session of `monitor.fetch.open_session` (the daemon's settings: no
  cookie jar, no decompression by aiohttp), nothing else;
* fetch — `monitor.fetch.fetch` on that session: the deadline, the host's slot, the address
  checks, the validators sent and the result built;
* poll_all, no database — `Service.poll_all` (`monitor once`'s round: a claim, a task, the poller,
  the next poll's time, the metrics) with the database taken out: its claims answered from a list
  of the feeds' states read once, its quiet polls dropped instead of written;
* poll_all — `Service.poll_all` on SQLite (a temporary file) or PostgreSQL (`--postgresql`).

For each: polls a second (the fastest round) and its share of the bare loop's rate, CPU time per
poll of this process (every thread) and of the event loop's thread, the least of the rounds. The
request is CPU-bound on the event loop's thread, so a layer's wall clock follows that thread's CPU
plus whatever it waits for (the database's work at the start and end of a round).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import match as match_bench  # the sibling benchmark script: its corpus
import poll as poll_bench  # the sibling benchmark script: its feed server and bare loop
from databases import fresh_database


@dataclass
class Layer:
    name: str
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # this process's, every thread
    loop_cpu_s: list[float] = field(default_factory=list)  # the event loop's thread's
    bare_s: list[float] = field(default_factory=list)  # the bare loop, after this layer's round
    bare_cpu_s: list[float] = field(default_factory=list)


def without_database(service: Any) -> None:
    """Take the database out of `service`'s 304 polls: claims served from its feeds' states as
    one real claim read them (then given back), quiet polls dropped."""
    states = service._claim(10**6, everything=True)
    service._release_all([state.id for state in states])
    queue: list[Any] = []

    def claim(limit: int, *, everything: bool, waiting: bool = False, ahead: Any = None) -> Any:
        if not queue:
            queue.extend(states)
        page = queue[:limit]
        del queue[:limit]
        if len(page) < limit:
            queue.clear()  # the round is claimed: the next call starts another
        return page

    service._claim = claim
    service.poller.quiet.add = lambda poll: None


async def timed(layer: Layer, work: Callable[[], Awaitable[None]]) -> None:
    started, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    await work()
    layer.wall_s.append(time.perf_counter() - started)
    layer.cpu_s.append(time.process_time() - cpu)
    layer.loop_cpu_s.append(time.thread_time() - loop_cpu)


def measure(database_url: str, tmp: Path, port: int, args: Any) -> list[Layer]:
    from monitor.core.collector import collect_less_often, freeze_survivors
    from monitor.fetch import FetchPolicy, fetch, open_session

    # The service without a database still stores the first polls (the ETags) in one of its own.
    no_database, service = services = [
        poll_bench.build_service(tmp / f"config-{name}.yaml", url, port, args.feeds, ["alpha"])
        for name, url in (
            ("without-database", f"sqlite:///{tmp}/without-database.db"),
            ("database", database_url),
        )
    ]
    policy = FetchPolicy.from_settings(service.settings)
    freeze_survivors()  # as `monitor run` does once started
    collect_less_often()
    base = f"http://127.0.0.1:{port}"
    urls = [f"{base}/feed/{n}.xml" for n in range(args.feeds)]
    layers = [Layer(n) for n in ("session", "fetch", "poll_all, no database", "poll_all")]

    async def run() -> None:
        try:
            await measure_layers()
        finally:
            for each in services:
                await each.close()

    async def measure_layers() -> None:
        await poll_bench.advance(base, to_start=True)
        for each in services:
            await each.poll_all()  # stores every feed's ETag
        without_database(no_database)
        etags = [etag for _, etag in await poll_bench.fetch_all(urls)]
        semaphore = asyncio.Semaphore(poll_bench.CONCURRENCY)
        async with open_session(policy, limit_per_host=poll_bench.CONCURRENCY) as session:

            async def gets() -> None:
                async def one(url: str, etag: str) -> None:
                    headers = {"If-None-Match": etag}
                    async with semaphore, session.get(url, headers=headers) as response:
                        check(response.status == 304, url)

                for _ in range(args.repeat):
                    await asyncio.gather(*map(one, urls, etags))

            async def fetches() -> None:
                async def one(url: str, etag: str) -> None:
                    async with semaphore:
                        result = await fetch(url, policy=policy, session=session, etag=etag)
                    check(result.not_modified, url)

                for _ in range(args.repeat):
                    await asyncio.gather(*map(one, urls, etags))

            def polls(of: Any) -> Callable[[], Awaitable[None]]:
                async def work() -> None:
                    for _ in range(args.repeat):
                        results = await of.poll_all()
                        check(all(r.status == "not_modified" for r in results), "a feed")

                return work

            works = [gets, fetches, polls(no_database), polls(service)]
            await gets()  # warm-up: the session's connections open
            for _ in range(args.rounds):
                for layer, work in zip(layers, works, strict=True):
                    await timed(layer, work)
                    bare_s, bare_cpu_s = await poll_bench.bare_304s(urls, etags, args.repeat)
                    layer.bare_s.append(bare_s)
                    layer.bare_cpu_s.append(bare_cpu_s)

    asyncio.run(run())
    return layers


def check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"{what}: not answered 304")


def report(layers: Sequence[Layer], kind: str, args: Any) -> None:
    polls = args.feeds * args.repeat
    print(
        f"{args.feeds} feeds on loopback, {args.repeat} conditional GETs of each per round, "
        f"{poll_bench.CONCURRENCY} in flight, {kind}; fastest of {args.rounds} rounds "
        "(CPU: least of the rounds)"
    )
    print(
        f"{'layer':22} | {'304/s':>6} | {'aiohttp 304/s':>13} | {'share':>5} | "
        f"{'CPU µs/poll':>11} | {'event loop µs':>13} | {'aiohttp CPU µs':>14}"
    )
    for layer in layers:
        rate, bare = polls / min(layer.wall_s), polls / min(layer.bare_s)
        print(
            f"{layer.name:22} | {rate:>6.0f} | {bare:>13.0f} | {rate / bare:>5.0%} | "
            f"{min(layer.cpu_s) / polls * 1e6:>11.0f} | "
            f"{min(layer.loop_cpu_s) / polls * 1e6:>13.0f} | "
            f"{min(layer.bare_cpu_s) / polls * 1e6:>14.0f}"
        )
    print(
        "share: the layer's rate / the bare aiohttp loop's, measured right after it; CPU µs/poll: "
        "this process's, every thread; event loop µs: the event loop's thread's"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5, help="304 polls per feed per round")
    parser.add_argument(
        "--postgresql", metavar="URL", help="poll_all on this PostgreSQL server instead of SQLite"
    )
    parser.add_argument("--corpus", type=Path, default=match_bench.DEFAULT_CORPUS)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"corpus not found at {args.corpus} (use --corpus)", file=sys.stderr)
        return 2
    kind = "PostgreSQL" if args.postgresql else "SQLite"
    with (
        poll_bench.feed_server(3, 1, args.corpus) as port,
        tempfile.TemporaryDirectory() as tmp_name,
        fresh_database(kind, Path(tmp_name), args.postgresql, "bench_poll") as url,
    ):
        report(measure(url, Path(tmp_name), port, args), kind, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
