"""Benchmark: matching cost against the number of watchlists, beside a naive per-rule regex baseline.

    python benchmarks/match.py [--corpus DIR] [--sizes 100,1000,10000] [--articles 200]
                               [--article-kb 5] [--mix alternate|mixed|ar|en] [--words-from 1000]
                               [--clock wall|cpu]

Watchlists are generated (fixed seed) in the query shapes of SPEC §4 — single terms, AND, OR, phrases,
NEAR/n, NOT, prefix wildcards, entities, title: — half with Arabic terms, half with English, drawn from
the corpus's own vocabulary. Articles are real Arabic and English news texts from the corpus, joined
into pieces of about 5 KB (`--article-kb`), alternately Arabic and English, or both in each article,
or one only (`--mix`); `--words-from` draws rarer words, so that fewer watchlists match. For each
size it prints the compile time and the median and p95 microseconds per article (the fastest of
three passes after a warm-up; `--clock cpu` counts the thread's CPU time instead of the wall
clock), and, in the same run, the same figures for a naive matcher that evaluates every watchlist
against every article with one regular expression per term.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

from monitor.core import query as q
from monitor.core.match import Matcher, WatchlistRule
from monitor.core.text import normalize, tokens
from monitor.model import Article

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
ARTICLE_BYTES = 5_000
ENTITIES = {
    "taiwan": ["Taiwan", "Taipei", "تايوان", "تايبيه", "台湾", "臺灣"],
    "red-line": ["red line", "red lines", "خط أحمر", "خطوط حمراء", "红线"],
    "russia": ["Russia", "Moscow", "Kremlin", "روسيا", "موسكو", "الكرملين"],
    "china": ["China", "Beijing", "الصين", "بكين"],
}


ARTICLE_SOURCES = ("articles/ar/ant-multisource", "articles/en/bbc-fulltext")


def _article_files(corpus: Path, sub: str) -> list[Path]:
    files = sorted(p for p in (corpus / sub).rglob("*.txt") if p.name != "README.TXT")
    return files[::2]  # every other file; the rest is held out for the vocabulary


# How an article's text is chosen: `alternate` Arabic and English articles; `mixed`, each article
# Arabic and English texts in turn (a bilingual page, a wire digest); `ar` or `en` only.
MIXES = ("alternate", "mixed", "ar", "en")


def load_articles(
    corpus: Path, limit: int, size: int = ARTICLE_BYTES, mix: str = "alternate"
) -> list[Article]:
    """Real texts joined into articles of `size` bytes of UTF-8, in the scripts `mix` says."""
    pools = []
    for sub in ARTICLE_SOURCES:
        files = _article_files(corpus, sub)
        pools.append([p.read_text(encoding="utf-8", errors="replace") for p in files])
    articles: list[Article] = []
    cursors = [0, 0]
    while len(articles) < limit:
        parts: list[str] = []
        while sum(len(p.encode()) for p in parts) < size:
            if mix == "alternate":
                which = len(articles) % 2
            elif mix == "mixed":
                which = (len(articles) + len(parts)) % 2
            else:
                which = ("ar", "en").index(mix)
            pool = pools[which]
            parts.append(pool[cursors[which] % len(pool)])
            cursors[which] += 1
        # cut at a word boundary so that every article is `size` bytes of UTF-8
        body = "\n\n".join(parts).encode()[:size].decode(errors="ignore").rsplit(" ", 1)[0]
        title, _, rest = body.strip().partition("\n")
        articles.append(Article(title=title, body=rest))
    return articles


def add_workload_options(parser: argparse.ArgumentParser) -> None:
    """The knobs of the articles and watchlists, shared with benchmarks/match_cli.py."""
    parser.add_argument(
        "--article-kb",
        type=float,
        default=ARTICLE_BYTES / 1000,
        metavar="KB",
        help="size of each article in KB of UTF-8 (default 5)",
    )
    parser.add_argument(
        "--mix",
        choices=MIXES,
        default="alternate",
        help="alternate Arabic and English articles (default), mix both in each, or one only",
    )
    parser.add_argument(
        "--words-from",
        type=int,
        default=1000,
        metavar="RANK",
        help="draw watchlist words past this frequency rank (higher: rarer words, fewer matches)",
    )


def vocabulary(
    corpus: Path, words_from: int = 1000
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Arabic and English words past the 1,000 most frequent (the names and topic words a watchlist
    would name, not "said" or "government"; `words_from` moves that rank), and two-word phrases
    of such words.

    They come from the corpus's articles *other than* those matched, so that how often a watchlist
    matches reflects how common its words are, not that it was made from the very same texts."""
    counts: Counter[str] = Counter()
    bigrams: Counter[str] = Counter()
    matched = {p for sub in ARTICLE_SOURCES for p in _article_files(corpus, sub)}
    for sub in ("articles/ar", "articles/en"):
        for path in sorted((corpus / sub).rglob("*.txt")):
            if path in matched:
                continue
            words = tokens(path.read_text(encoding="utf-8", errors="replace"))
            counts.update(words)
            bigrams.update(f"{x} {y}" for x, y in pairwise(words))
    ranked = [w for w, _ in counts.most_common() if len(w) > 3 and not w.isdigit()]
    mid = ranked[words_from : words_from + 39000]
    arabic = [w for w in mid if "\u0600" <= w[0] <= "\u06ff"]
    english = [w for w in mid if w.isascii()]
    # Phrases of two such words that occur together more than once ("computer graphics",
    # "الانتخابات النيابيه"), not any frequent pair ("said although", "and would").
    topical = set(mid)
    phrases = [
        p
        for p, c in bigrams.most_common()
        if c >= 2 and all(word in topical for word in p.split(" "))
    ]
    if len(phrases) < 1000:  # words so rare that few pairs recur: any pair of them will do
        phrases += [
            p
            for p, c in bigrams.most_common()
            if c == 1 and all(word in topical for word in p.split(" "))
        ]
    ar_phrases = [p for p in phrases if "\u0600" <= p[0] <= "\u06ff"]
    en_phrases = [p for p in phrases if p.isascii()]
    return arabic, english, ar_phrases, en_phrases


def generate(n: int, vocab: tuple[list[str], list[str], list[str], list[str]]) -> list[str]:
    rng = random.Random(n)
    arabic, english, ar_phrases, en_phrases = vocab
    queries = []
    for i in range(n):
        # every shape in both languages: the language alternates per round of the ten shapes
        words, phrases = (arabic, ar_phrases) if (i // 10) % 2 == 0 else (english, en_phrases)

        def w(words: list[str] = words) -> str:
            return rng.choice(words)

        def p(phrases: list[str] = phrases) -> str:
            return f'"{rng.choice(phrases)}"'

        shape = i % 10
        queries.append(
            [
                lambda: w(),
                lambda: f"{w()} AND {w()}",
                lambda: f"({w()} OR {w()}) AND {w()}",
                lambda: p(),
                lambda: f"{w()} NEAR/{rng.randint(3, 20)} {w()}",
                lambda: f"{w()} NOT {w()}",
                lambda: f"{w()[:5]}* AND {w()}",
                lambda: f"@{rng.choice(list(ENTITIES))} AND {w()}",
                lambda: f"title:{w()} OR {p()}",
                lambda: f"({w()} OR {p()}) NEAR/10 ({w()} OR {w()})",
            ][shape]()
        )
    return queries


# ---- the naive baseline: every watchlist, every article, one regex per term --------------------------

_PROCLITIC = "(?:[وف]?[بكل]?(?:ال)?)?"


def naive_compile(query: str) -> Callable[[str, str], bool]:
    def term_regex(text: str, prefix: bool = False) -> re.Pattern[str]:
        words = tokens(text)
        body = r"\W+".join(
            (_PROCLITIC if "\u0600" <= w[0] <= "\u06ff" else "") + re.escape(w) for w in words
        )
        tail = r"\w*" if prefix else r"(?!\w)"
        return re.compile(rf"(?<!\w){body}{tail}")

    def build(node: q.Node, field: str | None = None) -> Callable[[str, str], bool]:
        match node:
            case q.Term(text=text, prefix=prefix):
                rx = term_regex(text, prefix)
                return lambda t, b: bool(rx.search(t if field == "title" else t + "\n" + b))
            case q.Phrase(text=text):
                rx = term_regex(text)
                return lambda t, b: bool(rx.search(t if field == "title" else t + "\n" + b))
            case q.EntityRef(name=name):
                alts = [term_regex(a) for a in ENTITIES[name]]
                return lambda t, b: any(rx.search(t + "\n" + b) for rx in alts)
            case q.Field(name=name, child=child):
                return build(child, name)
            case q.Not(child=child):
                inner = build(child, field)
                return lambda t, b: not inner(t, b)
            case q.And(children=children):
                fs = [build(c, field) for c in children]
                return lambda t, b: all(f(t, b) for f in fs)
            case q.Or(children=children):
                fs = [build(c, field) for c in children]
                return lambda t, b: any(f(t, b) for f in fs)
            case q.Near(left=left, right=right):
                fl, fr = build(left, field), build(right, field)
                return lambda t, b: fl(t, b) and fr(t, b)
        raise AssertionError(node)

    return build(q.parse(query))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--articles", type=int, default=200)
    parser.add_argument("--baseline-articles", type=int, default=20)
    parser.add_argument("--passes", type=int, default=3, help="passes over the articles")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time articles by the wall clock (default) or by this thread's CPU time, which "
        "does not count the time spent waiting for a CPU that a neighbour holds",
    )
    add_workload_options(parser)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"corpus not found at {args.corpus} (use --corpus)", file=sys.stderr)
        return 2

    articles = load_articles(args.corpus, args.articles, round(args.article_kb * 1000), args.mix)
    vocab = vocabulary(args.corpus, args.words_from)
    gc.collect()  # what reading the corpus left behind, not to be collected while timing
    kb = statistics.mean(len((a.title + a.body).encode()) for a in articles) / 1000
    print(
        f"{len(articles)} articles of {kb:.1f} KB on average ({args.mix} Arabic and English, "
        f"from the corpus); watchlist words past rank {args.words_from}"
    )
    print(
        f"{'watchlists':>10} | {'compile s':>9} | {'median µs':>10} | {'p95 µs':>10} | "
        f"{'matches/article':>15} | {'naive compile s':>15} | {'naive median µs':>15} | {'speed-up':>8}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        queries = generate(size, vocab)
        rules = [WatchlistRule(f"w{i}", query) for i, query in enumerate(queries)]
        t0 = time.perf_counter()
        matcher = Matcher.compile(rules, ENTITIES)
        compile_s = time.perf_counter() - t0

        # A warm-up pass (the first touches of new memory cost more), then several passes; the
        # fastest counts, as with `timeit`: this machine is shared, and a slower pass measures
        # what else ran on it.
        for article in articles:
            matcher.match(article)
        clock = time.perf_counter if args.clock == "wall" else time.thread_time
        passes = []
        for _ in range(args.passes):
            matched, timings = 0, []
            for article in articles:
                t = clock()
                matched += len(matcher.match(article))
                timings.append((clock() - t) * 1e6)
            passes.append(timings)
        timings = min(passes, key=statistics.median)

        t0 = time.perf_counter()
        naive = [naive_compile(query) for query in queries]
        naive_compile_s = time.perf_counter() - t0
        naive_timings = []
        for article in articles[: args.baseline_articles]:
            t = clock()
            title, body = normalize(article.title), normalize(article.body)
            sum(1 for f in naive if f(title, body))
            naive_timings.append((clock() - t) * 1e6)

        median = statistics.median(timings)
        naive_median = statistics.median(naive_timings)
        print(
            f"{size:>10} | {compile_s:>9.2f} | {median:>10.0f} | {percentile(timings, 95):>10.0f} | "
            f"{matched / len(articles):>15.1f} | {naive_compile_s:>15.2f} | {naive_median:>15.0f} | "
            f"{naive_median / median:>7.0f}×"
        )
        del matcher, naive  # each size starts from the same heap, not the last size's
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
