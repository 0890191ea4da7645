"""Scale-out: 1, 2 and 3 `monitor run` replicas on one PostgreSQL database over local feeds that
keep publishing, with the Telegram Bot API double as the sink.

    python benchmarks/replicas.py [--feeds 5000] [--latency-feeds 50] [--replicas 1,2,3]
                                  [--locks per-hash,global] [--postgresql URL]

Each lock and number of replicas is run twice, on a fresh database each time, with the replicas
as real processes (tests/replicas.py's `Cluster`), because one load cannot show both figures:

- Throughput: FEEDS (5,000) feeds on loopback (benchmarks/soak.py's `PublishingFeeds`), each
  with WINDOW items waiting from the start and one more every PUBLISH seconds, every feed due
  INTERVAL after its last poll: more than the replicas can poll, so they poll as fast as they can
  and every poll stores new items. After WARMUP seconds, over SECONDS: polls and items stored per
  second (the replicas' `monitor_polls_total`, `monitor_items_total`), how long a round of every
  feed takes at that rate, and the CPU seconds per poll of the replicas (with their parse
  workers), of their PostgreSQL backends and of this script (the feed server and the Bot API
  double). An alert here waits for its feed's turn in the round, so its latency is the round,
  and is not measured.
- Latency: LATENCY_FEEDS (50) feeds, each publishing an item every LATENCY_PUBLISH (10)
  seconds and polled every INTERVAL: fewer polls a second than the replicas can make even on a
  loaded machine, as a service sized for its feeds runs (the table shows the polls per second
  that keep up beside those made: if they fall short, the latency includes a backlog). One item
  in LATENCY_ALERT_EVERY (2) carries the word a watchlist asks for and alerts one of CHATS (50)
  Telegram chats (in the throughput part, one in ALERT_EVERY, 5).
  For the alerting items published over LATENCY_SECONDS after LATENCY_WARMUP: the time from an
  item's publication to its alert reaching the Bot API double, median and p99 (waiting up to
  DRAIN seconds for them; one still missing then counts as later than that, and the missing
  are counted). It includes the wait for the feed's next poll, up to INTERVAL.

Both count repeats, alerts that reached Telegram more than once (must be 0), and the seconds from
a SIGTERM to all the replicas to the last one's exit (the service promises 10).

Locks: `per-hash`, what the service does (a transaction locks the indexed hashes of its new
items' fingerprints); `global`, the baseline, one advisory lock for every transaction that stores
an item with a fingerprint (the service before), run by starting the replicas through this script
with the lock swapped.

The machine's load average is printed with the figures: on a shared machine they are only what
the replicas got of it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# tests/ first: its replicas.py (the cluster of processes) is not this script.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

from botapi import BotAPIDouble  # noqa: E402
from databases import fresh_database  # noqa: E402
from replicas import Cluster, eventually  # noqa: E402
from soak import (  # noqa: E402
    MARK,
    PublishingFeeds,
    children,
    load_average,
    percentile,
    soak_config,
    soak_text,
    table,
)

from monitor.durations import parse_duration  # noqa: E402

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


def counters(port: int) -> tuple[float, float]:
    """The replica's polls (`monitor_polls_total`, all outcomes together) and items stored
    (`monitor_items_total`)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        body = response.read().decode()
    found = {"monitor_polls_total": 0.0, "monitor_items_total": 0.0}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name] += sample.value
    return found["monitor_polls_total"], found["monitor_items_total"]


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
class Stop:
    """From a SIGTERM to every replica: the slowest one's exit, and the longest a replica took to
    begin its stop (its `run.stopping`), in seconds."""

    exit: float = 0.0
    noticed: float = 0.0

    def __str__(self) -> str:
        return f"{self.exit:.1f} ({self.noticed:.1f})"


@dataclass
class Throughput:
    lock: str
    replicas: int
    polls: float = 0.0
    items: float = 0.0
    seconds: float = 0.0
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)
    repeats: int = 0
    stop: Stop = field(default_factory=Stop)
    load: str = ""

    @property
    def polls_per_second(self) -> float:
        return self.polls / self.seconds if self.seconds else 0.0


@dataclass
class Latency:
    lock: str
    replicas: int
    polls_per_second: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    measured: int = 0
    late: int = 0  # items of the window whose alert had not arrived after the drain
    repeats: int = 0
    stop: Stop = field(default_factory=Stop)
    load: str = ""


# ---- one run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def cluster_of(
    lock: str,
    replicas: int,
    url: str,
    feeds: PublishingFeeds,
    double: BotAPIDouble,
    args: Any,
    directory: Path,
) -> Iterator[tuple[Cluster, list[int]]]:
    """`replicas` replicas over `feeds`, every one polling; yields them and their metrics ports."""
    directory.mkdir()
    cluster = Cluster(
        directory, url, alert_config(url, feeds, args.chats, args.interval), double.api_url_for
    )
    if lock == "global":
        cluster.program = [str(Path(__file__).resolve()), GLOBAL_LOCK_REPLICA]
    with cluster:
        for i in range(replicas):
            cluster.start(chr(ord("a") + i))
        ports = [r.port for r in cluster.replicas.values()]

        def all_polling() -> bool:
            with contextlib.suppress(OSError):
                return all(counters(port)[0] > 0 for port in ports)
            return False

        eventually(all_polling, "every replica polls", timeout=300)
        yield cluster, ports


def stop_all(cluster: Cluster, patience: float = 60.0) -> Stop:
    """SIGTERM every replica at once and wait for them (one still running after `patience` is
    killed, and counts as `patience`)."""
    running = [r for r in cluster.replicas.values() if r.running]
    sent, sent_at = time.monotonic(), time.time()
    for replica in running:
        replica.process.send_signal(signal.SIGTERM)
    stop = Stop()
    for replica in running:
        try:
            replica.process.wait(timeout=max(0.0, sent + patience - time.monotonic()))
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait()
        stop.exit = max(stop.exit, time.monotonic() - sent)
        for line in replica.output().splitlines():
            if " run.stopping" in line:
                began = datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00"))
                stop.noticed = max(stop.noticed, began.timestamp() - sent_at)
    return stop


def measure_throughput(lock: str, replicas: int, url: str, args: Any, tmp: Path) -> Throughput:
    """FEEDS feeds, each with WINDOW items waiting from the start and a new one every PUBLISH s:
    more than the replicas can poll, so every poll stores new items."""
    figures = Throughput(lock, replicas)
    text = alerting_text(args.chats, args.alert_every)
    with (
        BotAPIDouble() as double,
        PublishingFeeds(args.feeds, args.publish, args.window, text) as feeds,
    ):
        # Every feed's window is full at once: a feed's first poll stores as much as later ones.
        feeds.start_at -= args.window * args.publish
        directory = tmp / f"throughput-{lock}-{replicas}"
        with cluster_of(lock, replicas, url, feeds, double, args, directory) as (cluster, ports):
            time.sleep(args.warmup)
            cpu_before = CpuSample.take(cluster, url)
            before = [counters(port) for port in ports]
            started = time.monotonic()
            time.sleep(args.seconds)
            after = [counters(port) for port in ports]
            cpu_after = CpuSample.take(cluster, url)
            figures.seconds = time.monotonic() - started
            figures.polls = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
            figures.items = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
            figures.cpu = cpu_after.since(cpu_before)
            figures.load = load_average()
            figures.stop = stop_all(cluster)
        figures.repeats = repeats(double)
    return figures


def measure_latency(lock: str, replicas: int, url: str, args: Any, tmp: Path) -> Latency:
    """LATENCY_FEEDS feeds publishing every LATENCY_PUBLISH s, fewer than the replicas can poll every
    INTERVAL: an item's alert waits for its feed's next poll, not for a backlog."""
    figures = Latency(lock, replicas)
    text = alerting_text(args.chats, args.latency_alert_every)
    with (
        BotAPIDouble() as double,
        PublishingFeeds(args.latency_feeds, args.latency_publish, args.window, text) as feeds,
    ):
        directory = tmp / f"latency-{lock}-{replicas}"
        with cluster_of(lock, replicas, url, feeds, double, args, directory) as (cluster, ports):
            time.sleep(args.latency_warmup)
            offset = time.time() - time.monotonic()  # the double's times are monotonic
            window_start = time.time()
            before = sum(counters(port)[0] for port in ports)
            time.sleep(args.latency_seconds)
            figures.polls_per_second = (sum(counters(port)[0] for port in ports) - before) / (
                time.time() - window_start
            )
            published = published_in(feeds, args.latency_alert_every, window_start, time.time())
            deadline = time.monotonic() + args.drain
            while time.monotonic() < deadline and not published.keys() <= arrivals(double).keys():
                time.sleep(0.5)
            figures.load = load_average()
            figures.stop = stop_all(cluster)
        arrived = arrivals(double)
        figures.latencies = [
            arrived[mark] + offset - at for mark, at in published.items() if mark in arrived
        ]
        figures.measured = len(published)
        figures.late = len(published.keys() - arrived.keys())
        figures.repeats = repeats(double)
    return figures


def repeats(double: BotAPIDouble) -> int:
    """Alerts that reached Telegram more than once."""
    copies = Counter(mark for mark, _ in marks(double))
    return sum(count - 1 for count in copies.values())


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


def report(throughput: Sequence[Throughput], latency: Sequence[Latency], args: Any) -> None:
    cores = os.cpu_count()
    print(
        f"Replicas on PostgreSQL ({cores} cores), the story lock per hash and, as the baseline, "
        "one global lock"
    )
    print(
        f"Throughput: {args.feeds} feeds on loopback, each with {args.window} new items waiting "
        f"and one more every {args.publish:g} s (more than the replicas can poll); "
        f"warm-up {args.warmup:g} s, measured over {args.seconds:g} s"
    )
    header = ["", *(f"{r.lock} ×{r.replicas}" for r in throughput)]

    def row(label: str, value: Callable[[Throughput], str]) -> list[str]:
        return [label, *(value(r) for r in throughput)]

    def per_poll(index: int) -> Callable[[Throughput], str]:
        return lambda r: f"{r.cpu[index] / r.polls * 1000:.1f}" if r.polls else "-"

    baseline = {r.replicas: r for r in throughput if r.lock == "global"}

    def gain(r: Throughput) -> str:
        base = baseline.get(r.replicas)
        if r.lock == "global" or base is None or not base.polls_per_second:
            return ""
        return f"{r.polls_per_second / base.polls_per_second - 1:+.0%}"

    table(
        header,
        [
            row("polls/s", lambda r: f"{r.polls_per_second:.1f}"),
            row("  vs the global lock", gain),
            row("items stored/s", lambda r: f"{r.items / r.seconds:.1f}" if r.seconds else "-"),
            row(
                "a round of every feed (s)",
                lambda r: f"{args.feeds / r.polls_per_second:.0f}" if r.polls else "-",
            ),
            row("CPU ms per poll: replicas", per_poll(0)),
            row("  their PostgreSQL backends", per_poll(1)),
            row("  feed server + Bot API double", per_poll(2)),
            row(
                "CPU cores busy (these three)",
                lambda r: f"{sum(r.cpu) / r.seconds:.2f}" if r.seconds else "-",
            ),
            row("repeats (must be 0)", lambda r: str(r.repeats)),
            row("SIGTERM → last exit (→ run.stopping) (s)", lambda r: str(r.stop)),
            row("load average (1/5/15 min)", lambda r: r.load),
        ],
    )
    if not latency:
        return
    interval_seconds = parse_duration(args.interval).total_seconds()
    print()
    print(
        f"Latency: {args.latency_feeds} feeds on loopback, an item each every "
        f"{args.latency_publish:g} s, polled every {args.interval} (fewer than the replicas can "
        f"poll: {args.latency_feeds / interval_seconds:g} polls/s keep up); 1 item in "
        f"{args.latency_alert_every} alerts one of {args.chats} chats; from publication to the Bot API "
        f"double, for the items published over {args.latency_seconds:g} s after a "
        f"{args.latency_warmup:g} s warm-up"
    )

    def lrow(label: str, value: Callable[[Latency], str]) -> list[str]:
        return [label, *(value(r) for r in latency)]

    def pct(p: float) -> Callable[[Latency], str]:
        def value(r: Latency) -> str:
            # An alert that had not arrived by the end of the drain counts as later than it.
            every = [*r.latencies, *([float("inf")] * r.late)]
            if not every:
                return "-"
            found = statistics.median(every) if p == 50 else percentile(every, p)
            return f"> {args.drain:g}" if found == float("inf") else f"{found:.1f}"

        return value

    table(
        ["", *(f"{r.lock} ×{r.replicas}" for r in latency)],
        [
            lrow(
                f"polls/s (keeping up: {args.latency_feeds / interval_seconds:g})",
                lambda r: f"{r.polls_per_second:.1f}",
            ),
            lrow("alert latency median (s)", pct(50)),
            lrow("alert latency p99 (s)", pct(99)),
            lrow("alerts measured", lambda r: str(r.measured)),
            lrow(f"  not arrived after {args.drain:g} s", lambda r: str(r.late)),
            lrow("repeats (must be 0)", lambda r: str(r.repeats)),
            lrow("SIGTERM → last exit (→ run.stopping) (s)", lambda r: str(r.stop)),
            lrow("load average (1/5/15 min)", lambda r: r.load),
        ],
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == GLOBAL_LOCK_REPLICA:
        return run_replica_with_global_lock(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--feeds", type=int, default=5000, help="feeds of the throughput part (0: none)"
    )
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--locks", default="per-hash,global")
    parser.add_argument("--publish", type=float, default=30, help="seconds between a feed's items")
    parser.add_argument("--window", type=int, default=5, help="items in a feed")
    parser.add_argument("--interval", default="5s", help="poll interval of every feed")
    parser.add_argument("--alert-every", type=int, default=5, help="1 item in N alerts")
    parser.add_argument("--latency-alert-every", type=int, default=2)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument(
        "--latency-feeds", type=int, default=50, help="feeds of the latency part (0: none)"
    )
    parser.add_argument(
        "--latency-publish", type=float, default=10, help="seconds between a feed's items"
    )
    parser.add_argument("--latency-warmup", type=float, default=10)
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--drain", type=float, default=30, help="most seconds to wait for alerts")
    parser.add_argument(
        "--postgresql",
        default=os.environ.get("MONITOR_SOAK_DATABASE_URL")
        or os.environ.get("MONITOR_TEST_DATABASE_URL"),
        help="default: MONITOR_SOAK_DATABASE_URL or MONITOR_TEST_DATABASE_URL",
    )
    parser.add_argument("--logs", help="keep the replicas' configs and logs in this new directory")
    args = parser.parse_args()
    if not args.postgresql:
        print("needs --postgresql URL (or MONITOR_SOAK_DATABASE_URL)", file=sys.stderr)
        return 2
    throughput: list[Throughput] = []
    latency: list[Latency] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="replicas-") as tmp_name:
        tmp = Path(args.logs) if args.logs else Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        for count in [int(n) for n in args.replicas.split(",")]:
            for lock in [lock.strip() for lock in args.locks.split(",")]:
                if args.feeds:
                    with fresh_database("postgresql", tmp, args.postgresql, "replicas") as url:
                        print(f"{lock} lock, {count} replica(s): throughput ...", file=sys.stderr)
                        throughput.append(measure_throughput(lock, count, url, args, tmp))
                        print(f"  {throughput[-1]}", file=sys.stderr)  # should a later run fail
                if args.latency_feeds:
                    with fresh_database("postgresql", tmp, args.postgresql, "replicas") as url:
                        print(f"{lock} lock, {count} replica(s): latency ...", file=sys.stderr)
                        latency.append(measure_latency(lock, count, url, args, tmp))
                        print(f"  {latency[-1]}", file=sys.stderr)
    report(throughput, latency, args)
    print(f"\n{time.monotonic() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
