"""Benchmark: the whole process, `monitor match --json` over 1,000 articles, with 100 and 10,000
watchlists.

    python benchmarks/match_cli.py [--corpus DIR] [--articles 1000] [--sizes 100,10000]

For each size it writes a config of generated watchlists (the same generator as benchmarks/match.py)
and runs the installed CLI as a real process, on one article (start-up: imports, config validation,
compiling the watchlists) and on all the articles, the fastest of three runs each. The time each
article adds is (all − one) / (articles − 1). The smallest size is the baseline the others are
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


def run(config: Path, files: list[Path]) -> tuple[float, int]:
    command = [sys.executable, "-m", "monitor.cli", "--config", str(config), "match", "--json"]
    started = time.perf_counter()
    result = subprocess.run(
        command + [str(f) for f in files], capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"monitor match failed:\n{result.stderr}")
    matches = sum(len(json.loads(line)["matches"]) for line in result.stdout.splitlines())
    return elapsed, matches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=match_bench.DEFAULT_CORPUS)
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each kind; the fastest counts"
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
        baseline: tuple[float, float] | None = None
        for size in (int(s) for s in args.sizes.split(",")):
            config = root / f"config-{size}.yaml"
            write_config(config, match_bench.generate(size, vocab))
            # The least of a few runs: one slow start-up (a cold disk cache, a busy neighbour)
            # would otherwise be charged to every article.
            startup = min(run(config, files[:1])[0] for _ in range(args.repeat))
            total, matches = min(run(config, files) for _ in range(args.repeat))
            per_article = (total - startup) / (len(files) - 1)
            if baseline is None:
                baseline = (startup, per_article)
                versus = "baseline"
            else:
                versus = f"{per_article / baseline[1]:.2f}× +{startup - baseline[0]:.1f}s"
            print(
                f"{size:>10} | {startup:>10.2f} | {total:>14.2f} | {per_article * 1000:>14.2f} | "
                f"{matches:>8} | {versus:>11}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
