"""Scale-out: 1, 2 and 3 `monitor run` replicas on one PostgreSQL database, over thousands of
local feeds that keep publishing, with the Telegram Bot API double as the sink.

    python benchmarks/replicas.py [--feeds 5000] [--replicas 1,2,3] [--locks per-hash,global]
                                  [--warmup 60] [--seconds 60] [--drain 240] [--postgresql URL]

FEEDS feeds on loopback (benchmarks/soak.py's `PublishingFeeds`) publish an item each every
PUBLISH seconds, each feed at its own offset; every feed is due again INTERVAL after its last poll,
shorter than a round of all the feeds takes, so the replicas poll as fast as they can and nearly
every poll finds new items. One item in ALERT_EVERY carries the word a watchlist asks for and
alerts one of CHATS Telegram chats. Replicas are real processes (tests/replicas.py's `Cluster`).

For each lock and each number of replicas, after WARMUP seconds (every feed's first poll), over
SECONDS: polls per second (the replicas' `monitor_polls_total`), and the CPU seconds per poll of
the replicas (with their parse workers), of their PostgreSQL backends and of this script (the feed
server and the Bot API double). Then the alert latency — from an item's publication to its alert
reaching the Bot API double — median and p99 over the items published in the window (waiting up
to DRAIN seconds for their alerts), and repeats: alerts that reached Telegram more than once
(must be 0).

Locks: `per-hash`, what the service does (a transaction locks the indexed hashes of its new
items' fingerprints); `global`, the baseline, one advisory lock for every transaction that stores
an item with a fingerprint (the service before), run by starting the replicas through this script
with the lock swapped.

Where the machine is shared, its load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# tests/ first: its replicas.py (the cluster of processes) is not this script.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

from botapi import BotAPIDouble  # noqa: E402
from replicas import Cluster, eventually  # noqa: E402
from soak import (  # noqa: E402
    MARK,
    PublishingFeeds,
    children,
    database,
    load_average,
    percentile,
    soak_config,
    soak_text,
    table,
)

GLOBAL_LOCK_REPLICA = "replica-with-global-lock"
_GLOBAL_LOCK_KEY = 7_261_504_119  # the key the service used for it
TICKS = os.sysconf("SC_CLK_TCK")


# ---- the baseline's lock ------------------------------------------------------------------------


def run_replica_with_global_lock(argv: Sequence[str]) -> int:
    """`monitor ARGV…` with the one global lock instead of a lock per hash."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    import monitor.store.story_locks as story_locks

    def one_lock_for_all(session: Session, hashes: Any) -> None:
        if any(True for _ in hashes):
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _GLOBAL_LOCK_KEY})

    story_locks.lock_stories = one_lock_for_all  # before monitor.pipeline imports it
    from monitor.cli import main

    sys.argv = ["monitor", *argv]
    main()
    return 0


# ---- what is measured ---------------------------------------------------------------------------


def alerting_text(groups: int, every: int) -> Callable[[int, int], tuple[str, str]]:
    """soak.py's items (a mark "Soak n-k", the group word, random words), one in `every` with the
    word "flash" that the watchlists ask for."""
    base = soak_text(groups)

    def text(n: int, k: int) -> tuple[str, str]:
        title, body = base(n, k)
        return (f"{title} flash", body) if (n * 7 + k) % every == 0 else (title, body)

    return text


def alert_config(
    url: str, feeds: PublishingFeeds, chats: int, interval: str
) -> Callable[[str, str, str], str]:
    """soak.py's config with watchlists that alert only the "flash" items."""
    base = soak_config(url, feeds, chats, interval)

    def config(name: str, api_url: str, listen: str) -> str:
        text = base(name, api_url, listen)
        for g in range(chats):
            text = text.replace(f"query: 'grp{g}'", f"query: 'flash AND grp{g}'")
        return text

    return config


def polls_done(port: int) -> float:
    """The replica's `monitor_polls_total`, all outcomes together."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        body = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        if family.name == "monitor_polls"
        for sample in family.samples
        if sample.name == "monitor_polls_total"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (0 if it is gone)."""
    with contextlib.suppress(OSError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    return 0.0


def backend_pids(url: str) -> list[int]:
    """The PostgreSQL backends of the replicas (their connections are named `monitor HOST:PID`)."""
    from sqlalchemy import text

    from monitor.store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'monitor %' "
                    "AND datname = current_database()"
                )
            )
            return [row.pid for row in rows]
    finally:
        engine.dispose()


@dataclass
class CpuSample:
    replicas: dict[int, float]
    backends: dict[int, float]
    harness: float

    @classmethod
    def take(cls, cluster: Cluster, url: str) -> CpuSample:
        replicas = {}
        for replica in cluster.replicas.values():
            for pid in [replica.pid, *children(replica.pid)]:
                replicas[pid] = cpu_seconds(pid)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            replicas,
            {pid: cpu_seconds(pid) for pid in backend_pids(url)},
            usage.ru_utime + usage.ru_stime,
        )

    def since(self, before: CpuSample) -> tuple[float, float, float]:
        """CPU seconds of (replicas, their backends, this script) between two samples."""

        def spent(now: dict[int, float], then: dict[int, float]) -> float:
            return sum(now[pid] - then.get(pid, 0.0) for pid in now)

        return (
            spent(self.replicas, before.replicas),
            spent(self.backends, before.backends),
            self.harness - before.harness,
        )


@dataclass
class Figures:
    lock: str
    replicas: int
    polls: float = 0.0
    seconds: float = 0.0
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)
    latencies: list[float] | None = field(default=None, repr=False)
    measured_alerts: int = 0
    late: int = 0  # items of the window whose alert had not arrived after the drain
    repeats: int = 0
    load: str = ""

    @property
    def polls_per_second(self) -> float:
        return self.polls / self.seconds if self.seconds else 0.0


# ---- one run ------------------------------------------------------------------------------------


def run_one(lock: str, replicas: int, url: str, args: Any, tmp: Path) -> Figures:
    figures = Figures(lock, replicas)
    chats = args.chats
    directory = tmp / f"{lock}-{replicas}"
    directory.mkdir()
    with (
        BotAPIDouble() as double,
        PublishingFeeds(
            args.feeds, args.publish, args.window, alerting_text(chats, args.alert_every)
        ) as feeds,
    ):
        cluster = Cluster(
            directory, url, alert_config(url, feeds, chats, args.interval), double.api_url_for
        )
        if lock == "global":
            cluster.program = [str(Path(__file__).resolve()), GLOBAL_LOCK_REPLICA]
        with cluster:
            for i in range(replicas):
                cluster.start(chr(ord("a") + i))
            ports = [r.port for r in cluster.replicas.values()]

            def all_polling() -> bool:
                with contextlib.suppress(OSError):
                    return all(polls_done(port) > 0 for port in ports)
                return False

            eventually(all_polling, "every replica polls", timeout=300)
            time.sleep(args.warmup)
            offset = time.time() - time.monotonic()  # the double's times are monotonic
            cpu_before = CpuSample.take(cluster, url)
            polls_before = sum(polls_done(port) for port in ports)
            window_start = time.time()
            time.sleep(args.seconds)
            polls_after = sum(polls_done(port) for port in ports)
            cpu_after = CpuSample.take(cluster, url)
            window_end = time.time()
            figures.polls = polls_after - polls_before
            figures.seconds = window_end - window_start
            figures.cpu = cpu_after.since(cpu_before)
            figures.load = load_average()

            published = published_in(feeds, args.alert_every, window_start, window_end)
            deadline = time.monotonic() + args.drain
            while time.monotonic() < deadline and not published.keys() <= arrivals(double).keys():
                time.sleep(1.0)
            # A replica that outlives its SIGTERM on a loaded machine is killed (then the others).
            with contextlib.suppress(subprocess.TimeoutExpired):
                cluster.stop()
        arrived = arrivals(double)
        figures.latencies = [
            arrived[mark] + offset - at for mark, at in published.items() if mark in arrived
        ]
        figures.measured_alerts = len(published)
        figures.late = len(published.keys() - arrived.keys())
        copies = Counter(mark for mark, _ in marks(double))
        figures.repeats = sum(count - 1 for count in copies.values())
    return figures


def published_in(
    feeds: PublishingFeeds, every: int, start: float, end: float
) -> dict[tuple[int, int], float]:
    """(feed, item) → when it was published (Unix time), for the alerting items published in
    [start, end)."""
    found = {}
    for n in range(feeds.feeds):
        for k in range(feeds.published(n, start), feeds.published(n, end)):
            if (n * 7 + k) % every == 0:
                found[(n, k)] = feeds.start_at + feeds.offsets[n] + k * feeds.every
    return found


def marks(double: BotAPIDouble) -> Iterator[tuple[tuple[int, int], float]]:
    for message in list(double.messages):
        found = MARK.search(message.plain)
        if found:
            yield (int(found.group(1)), int(found.group(2))), message.at


def arrivals(double: BotAPIDouble) -> dict[tuple[int, int], float]:
    """(feed, item) → when its first alert reached the double (monotonic)."""
    first: dict[tuple[int, int], float] = {}
    for mark, at in marks(double):
        first.setdefault(mark, at)
    return first


# ---- report -------------------------------------------------------------------------------------


def report(results: Sequence[Figures], args: Any) -> None:
    print(
        f"Replicas: {args.feeds} feeds on loopback, an item each every {args.publish:g} s "
        f"(polled every {args.interval}, so always due), 1 item in {args.alert_every} alerting one "
        f"of {args.chats} chats; PostgreSQL; warm-up {args.warmup:g} s, measured over "
        f"{args.seconds:g} s; {os.cpu_count()} cores"
    )
    header = ["", *(f"{r.lock} ×{r.replicas}" for r in results)]

    def row(label: str, value: Callable[[Figures], str]) -> list[str]:
        return [label, *(value(r) for r in results)]

    def per_poll(index: int) -> Callable[[Figures], str]:
        return lambda r: f"{r.cpu[index] / r.polls * 1000:.1f}" if r.polls else "-"

    def latency(pct: float) -> Callable[[Figures], str]:
        def value(r: Figures) -> str:
            if not r.latencies and not r.late:
                return "-"
            # An alert that had not arrived by the end of the drain counts as later than it.
            every = [*(r.latencies or []), *([float("inf")] * r.late)]
            found = statistics.median(every) if pct == 50 else percentile(every, pct)
            return f"> {args.drain:g}" if found == float("inf") else f"{found:.1f}"

        return value

    baseline = {r.replicas: r for r in results if r.lock == "global"}

    def gain(r: Figures) -> str:
        base = baseline.get(r.replicas)
        if r.lock == "global" or base is None or not base.polls_per_second:
            return ""
        return f"{r.polls_per_second / base.polls_per_second - 1:+.0%}"

    rows = [
        row("polls/s", lambda r: f"{r.polls_per_second:.1f}"),
        row("  vs the global lock", gain),
        row("alert latency median (s)", latency(50)),
        row("alert latency p99 (s)", latency(99)),
        row("alerts measured", lambda r: str(r.measured_alerts)),
        row(f"  not arrived after {args.drain:g} s", lambda r: str(r.late)),
        row("repeats (must be 0)", lambda r: str(r.repeats)),
        row("CPU ms per poll: replicas", per_poll(0)),
        row("  their PostgreSQL backends", per_poll(1)),
        row("  feed server + Bot API double", per_poll(2)),
        row(
            "CPU cores busy (these three)",
            lambda r: f"{sum(r.cpu) / r.seconds:.2f}" if r.seconds else "-",
        ),
        row("load average (1/5/15 min)", lambda r: r.load),
    ]
    table(header, rows)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == GLOBAL_LOCK_REPLICA:
        return run_replica_with_global_lock(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=5000)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--locks", default="per-hash,global")
    parser.add_argument("--publish", type=float, default=30, help="seconds between a feed's items")
    parser.add_argument("--window", type=int, default=5, help="items in a feed")
    parser.add_argument("--interval", default="5s", help="poll interval of every feed")
    parser.add_argument("--alert-every", type=int, default=10, help="1 item in N alerts")
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--drain", type=float, default=240)
    parser.add_argument(
        "--postgresql",
        default=os.environ.get("MONITOR_SOAK_DATABASE_URL")
        or os.environ.get("MONITOR_TEST_DATABASE_URL"),
        help="default: MONITOR_SOAK_DATABASE_URL or MONITOR_TEST_DATABASE_URL",
    )
    args = parser.parse_args()
    if not args.postgresql:
        print("needs --postgresql URL (or MONITOR_SOAK_DATABASE_URL)", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="replicas-") as tmp_name:
        for count in [int(n) for n in args.replicas.split(",")]:
            for lock in [lock.strip() for lock in args.locks.split(",")]:
                with database("postgresql", Path(tmp_name), args.postgresql) as url:
                    print(f"{lock} lock, {count} replica(s) ...", file=sys.stderr)
                    done = run_one(lock, count, url, args, Path(tmp_name))
                    print(f"  {done}", file=sys.stderr)  # should a later run fail
                    results.append(done)
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
