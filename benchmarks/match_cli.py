"""Benchmark: the whole process, `monitor match --json` over 1,000 articles, with 100 and 10,000
watchlists.

    python benchmarks/match_cli.py [--corpus DIR] [--articles 1000] [--sizes 100,10000]

For each size it writes a config of generated watchlists (the same generator as benchmarks/match.py)
and runs the installed CLI as a real process, on one article (start-up: imports, config validation,
compiling the watchlists) and on all the articles, in five rounds over every size, keeping the
fastest run of each kind (as `timeit` does: on a shared machine the slower runs measure the
neighbours). The time each article adds is the slope of the output: the time from the
first lines to the last over the articles in between, so that start-up (whose own time varies by
tenths of a second) does not leak into it. The smallest size is the baseline the others are
compared with.
"""

from __future__ import annotations

import argparse
import json
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


def run(config: Path, files: list[Path]) -> tuple[float, float, int]:
    """Run `monitor match --json` on `files`: (seconds in all, seconds per article once running,
    matches). The time per article is the slope of the output's arrival, from the first lines to
    the last, so that the start-up, and how long it happened to take, is not part of it."""
    command = [sys.executable, "-m", "monitor.cli", "--config", str(config), "match", "--json"]
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(
            command + [str(f) for f in files], stdout=subprocess.PIPE, stderr=errors, text=True
        )
        assert process.stdout is not None
        arrivals = [(time.perf_counter(), line) for line in process.stdout]
        returncode = process.wait()
        elapsed = time.perf_counter() - started
        if returncode != 0 or len(arrivals) != len(files):
            errors.seek(0)
            raise SystemExit(f"monitor match failed:\n{errors.read().decode(errors='replace')}")
    matches = sum(len(json.loads(line)["matches"]) for _, line in arrivals)
    # The output comes in blocks; the lines of the first block were matched before it arrived.
    first = arrivals[0][0]
    counted = sum(1 for t, _ in arrivals if t > first)
    per_article = (arrivals[-1][0] - first) / counted if counted else float("nan")
    return elapsed, per_article, matches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=match_bench.DEFAULT_CORPUS)
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs of each kind; the fastest counts"
    )
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"corpus not found at {args.corpus} (use --corpus)", file=sys.stderr)
        return 2

    articles = match_bench.load_articles(args.corpus, args.articles)
    vocab = match_bench.vocabulary(args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = []
        for i, article in enumerate(articles):
            path = root / f"article-{i:04}.txt"
            path.write_text(f"{article.title}\n{article.body}", encoding="utf-8")
            files.append(path)
        print(f"{len(files)} articles of ~5 KB, `monitor match --json` as a process")
        print(
            f"{'watchlists':>10} | {'start-up s':>10} | {'all articles s':>14} | "
            f"{'per article ms':>14} | {'matches':>8} | {'vs baseline':>11}"
        )
        sizes = [int(s) for s in args.sizes.split(",")]
        configs = {}
        for size in sizes:
            configs[size] = root / f"config-{size}.yaml"
            write_config(configs[size], match_bench.generate(size, vocab))
        # Rounds that run every size in turn, keeping the fastest run of each kind: one slow run
        # (a cold disk cache, a busy neighbour) would otherwise be charged to every article, and
        # a machine that slows down during the benchmark slows every size alike.
        startups = dict.fromkeys(sizes, float("inf"))
        totals = dict.fromkeys(sizes, float("inf"))
        per_article = dict.fromkeys(sizes, float("inf"))
        matches = dict.fromkeys(sizes, 0)
        for _ in range(args.repeat):
            for size in sizes:
                startups[size] = min(startups[size], run(configs[size], files[:1])[0])
                total, each, matches[size] = run(configs[size], files)
                totals[size] = min(totals[size], total)
                per_article[size] = min(per_article[size], each)
        baseline: tuple[float, float] | None = None
        for size in sizes:
            if baseline is None:
                baseline = (startups[size], per_article[size])
                versus = "baseline"
            else:
                versus = (
                    f"{per_article[size] / baseline[1]:.2f}× +{startups[size] - baseline[0]:.1f}s"
                )
            print(
                f"{size:>10} | {startups[size]:>10.2f} | {totals[size]:>14.2f} | "
                f"{per_article[size] * 1000:>14.2f} | {matches[size]:>8} | {versus:>11}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
