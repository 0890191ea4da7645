"""Benchmark: the whole process, `monitor match --json` over 1,000 articles, with 100 and 10,000
watchlists.

    python benchmarks/match_cli.py [--corpus DIR] [--articles 1000] [--sizes 100,10000]
                                   [--article-kb 5] [--mix alternate|mixed|ar|en] [--words-from 1000]
                                   [--compare-with DIR]

For each size it writes a config of generated watchlists (the same generator as benchmarks/match.py)
and runs the installed CLI as a real process, on one article (start-up: imports, config validation,
compiling the watchlists) and on all the articles, in five rounds over every size, keeping the
fastest run of each kind (as `timeit` does: on a shared machine the slower runs measure the
neighbours). The time each article adds is the slope of the output: the time from the
first lines to the last over the articles in between, so that start-up (whose own time varies by
tenths of a second) does not leak into it. The smallest size is the baseline the others are
compared with.

The last two columns count CPU time instead of the clock, over the same stretch of output (read
from /proc, in ticks of 10 ms: 10 µs per article over 1,000). On a machine shared with busy
neighbours it moves far less than the clock, which also counts the time the process waited for a
CPU.

The workload has three knobs: the articles' length (`--article-kb`), their scripts (`--mix`:
Arabic and English articles in turn, both in each article, or one only) and how many watchlists
truly match (`--words-from`: the rarer the watchlists' words, the fewer match). `--compare-with DIR`
runs another source tree of the monitor (a checkout of an earlier version) in the same rounds, on
the same files, as extra rows: before and after measured side by side, under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import match as match_bench  # the sibling benchmark script


def write_config(path: Path, queries: list[str]) -> None:
    lines = ["entities:"]
    for name, aliases in match_bench.ENTITIES.items():
        lines.append(f"  {name}: {{aliases: {json.dumps(aliases, ensure_ascii=False)}}}")
    lines.append("watchlists:")
    for i, query in enumerate(queries):
        lines.append(f"  w{i}: {{query: {json.dumps(query, ensure_ascii=False)}}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(
    config: Path, files: list[Path], code: Path | None = None
) -> tuple[float, float, int, float]:
    """Run `monitor match --json` on `files` (with the monitor of the source tree `code`, if
    given): (seconds in all, seconds per article once running, matches, CPU seconds per article
    once running). The time per article is the slope of the output's arrival, from the first
    lines to the last, so that the start-up, and how long it happened to take, is not part of
    it; the CPU time per article is the process's CPU time over that same stretch."""
    command = [sys.executable, "-m", "monitor.cli", "--config", str(config), "match", "--json"]
    env = None
    if code is not None:
        env = os.environ | {"PYTHONPATH": str(code)}
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(
            command + [str(f) for f in files],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        arrivals = []
        for line in process.stdout:
            arrivals.append((time.perf_counter(), cpu_seconds(process.pid), line))
        returncode = process.wait()
        elapsed = time.perf_counter() - started
        if returncode != 0 or len(arrivals) != len(files):
            errors.seek(0)
            raise SystemExit(f"monitor match failed:\n{errors.read().decode(errors='replace')}")
    matches = sum(len(json.loads(line)["matches"]) for _, _, line in arrivals)
    # The output comes in blocks; the lines of the first block were matched before it arrived.
    first, first_cpu, _ = arrivals[0]
    last, last_cpu, _ = arrivals[-1]
    counted = sum(1 for t, _, _ in arrivals if t > first)
    if not counted:
        return elapsed, float("nan"), matches, float("nan")
    return elapsed, (last - first) / counted, matches, (last_cpu - first_cpu) / counted


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """The CPU time a running process has used so far (Linux; NaN elsewhere). Unlike the clock,
    it does not count the time the process waited for a CPU that a neighbour held."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime and stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=match_bench.DEFAULT_CORPUS)
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs of each kind; the fastest counts"
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="a source tree of another version of the monitor, run in the same rounds",
    )
    match_bench.add_workload_options(parser)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"corpus not found at {args.corpus} (use --corpus)", file=sys.stderr)
        return 2
    if args.compare_with is not None and not (args.compare_with / "monitor").is_dir():
        print(f"no monitor package in {args.compare_with}", file=sys.stderr)
        return 2

    size_bytes = round(args.article_kb * 1000)
    articles = match_bench.load_articles(args.corpus, args.articles, size_bytes, args.mix)
    vocab = match_bench.vocabulary(args.corpus, args.words_from)
    codes: dict[str, Path | None] = {"this": None}
    if args.compare_with is not None:
        codes = {"this": None, "other": args.compare_with.resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = []
        for i, article in enumerate(articles):
            path = root / f"article-{i:04}.txt"
            path.write_text(f"{article.title}\n{article.body}", encoding="utf-8")
            files.append(path)
        print(
            f"{len(files)} articles of {size_bytes / 1000:g} KB ({args.mix} Arabic and English), "
            f"watchlist words past rank {args.words_from}; `monitor match --json` as a process"
        )
        print(
            f"{'code':>5} | {'watchlists':>10} | {'start-up s':>10} | {'all articles s':>14} | "
            f"{'per article ms':>14} | {'matches/article':>15} | {'vs baseline':>11} | "
            f"{'CPU ms/art.':>12} | {'CPU vs':>8}"
        )
        sizes = [int(s) for s in args.sizes.split(",")]
        configs = {}
        for size in sizes:
            configs[size] = root / f"config-{size}.yaml"
            write_config(configs[size], match_bench.generate(size, vocab))
        # Rounds that run every size (and version) in turn, keeping the fastest run of each kind:
        # one slow run (a cold disk cache, a busy neighbour) would otherwise be charged to every
        # article, and a machine that slows down during the benchmark slows every size alike.
        kinds = [(name, size) for name in codes for size in sizes]
        startups = dict.fromkeys(kinds, float("inf"))
        totals = dict.fromkeys(kinds, float("inf"))
        per_article = dict.fromkeys(kinds, float("inf"))
        cpu_per_article = dict.fromkeys(kinds, float("inf"))
        slowest = dict.fromkeys(kinds, 0.0)
        matches = dict.fromkeys(kinds, 0)
        for _ in range(args.repeat):
            for kind in kinds:
                name, size = kind
                code = codes[name]
                startups[kind] = min(startups[kind], run(configs[size], files[:1], code)[0])
                total, each, matches[kind], cpu_each = run(configs[size], files, code)
                totals[kind] = min(totals[kind], total)
                per_article[kind] = min(per_article[kind], each)
                slowest[kind] = max(slowest[kind], each)
                cpu_per_article[kind] = min(cpu_per_article[kind], cpu_each)
        for name in codes:
            baseline = (startups[name, sizes[0]], per_article[name, sizes[0]])
            cpu_baseline = cpu_per_article[name, sizes[0]]
            for size in sizes:
                kind = (name, size)
                if size == sizes[0]:
                    versus = cpu_versus = "baseline"
                else:
                    versus = (
                        f"{per_article[kind] / baseline[1]:.2f}× "
                        f"+{startups[kind] - baseline[0]:.1f}s"
                    )
                    cpu_versus = f"{cpu_per_article[kind] / cpu_baseline:.2f}×"
                print(
                    f"{name:>5} | {size:>10} | {startups[kind]:>10.2f} | {totals[kind]:>14.2f} | "
                    f"{per_article[kind] * 1000:>14.2f} | {matches[kind] / len(files):>15.1f} | "
                    f"{versus:>11} | {cpu_per_article[kind] * 1000:>12.2f} | {cpu_versus:>8}"
                )
        spread = max(slowest[k] / per_article[k] for k in kinds)
        print(
            f"noise: the slowest of the {args.repeat} runs of a kind took {spread:.2f}× "
            "the fastest per article"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
