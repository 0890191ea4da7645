"""Language detection with the model that ships in the py3langid wheel, on real corpus texts."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import feedparser
import numpy as np
import pytest
from httpserver import require_corpus

from monitor import language
from monitor.core.text import is_cjk
from monitor.errors import FeedParseError
from monitor.feeds import parse_feed
from monitor.language import MIN_LETTERS, detect_language, primary_language


def corpus() -> Path:
    """The shared corpus, or skip the test (see tests/httpserver.py)."""
    return require_corpus()


def read(relative: str) -> str:
    return (corpus() / relative).read_text("utf-8")


def trec_text(relative: str) -> str:
    """Title and body of an ANT corpus document."""
    doc = read(relative)
    parts = re.findall(r"<(?:TITLE|TEXT)>(.*?)</(?:TITLE|TEXT)>", doc, re.DOTALL)
    return "\n".join(parts)


def feed_item_texts(relative: str) -> list[str]:
    parsed: Any = feedparser.parse((corpus() / relative).read_bytes())
    texts = []
    for entry in parsed.entries:
        summary = re.sub(r"<[^>]+>", " ", entry.get("summary", ""))
        texts.append(f"{entry.get('title', '')}\n{summary}")
    return texts


# (corpus file, expected language). The texts are read as a pipeline would see them.
ARTICLES = [
    ("seed/aawsat-wang-yi-russia.txt", "ar"),  # the reference article, Asharq Al-Awsat
    ("articles/ar/newspaper4k/arabic_article.txt", "ar"),  # CNN Arabic
    ("articles/en/bbc-fulltext/politics/003.txt", "en"),
    ("articles/en/bbc-fulltext/tech/004.txt", "en"),
    ("articles/zh/newspaper4k/chinese_article.txt", "zh"),
    ("articles/ja/newspaper4k/japanese_article.txt", "ja"),
    ("articles/ko/newspaper4k/korean_article.txt", "ko"),
    ("articles/ko/newspaper4k/yna_co_kr.txt", "en"),  # Yonhap's English service: not Korean
    ("articles/hi/newspaper4k/hindi_article.txt", "hi"),
    ("articles/th/newspaper4k/thai_article.txt", "th"),
]


@pytest.mark.parametrize(("relative", "expected"), ARTICLES, ids=[a[0] for a in ARTICLES])
def test_corpus_articles(relative: str, expected: str) -> None:
    assert detect_language(read(relative)) == expected


@pytest.mark.parametrize(
    "relative",
    [
        "articles/ar/ant-multisource/BBC/culture/BB-culture-107-20180410.txt",
        "articles/ar/ant-multisource/SkyNews/technology/SK-technology-119-20180228.txt",
        "articles/ar/ant-multisource/Alarabia/technology/AL-technology-72-20180228.txt",
        "articles/ar/ant-multisource/France24/internationalNews/"
        "FR-internationalNews-1036-20180502.txt",
    ],
)
def test_standard_arabic_news_is_ar_not_a_dialect(relative: str) -> None:
    """The model also knows Egyptian (arz) and Moroccan (ary) Arabic; news must come out as ar."""
    assert detect_language(trec_text(relative)) == "ar"


def test_urdu_items_of_bbc_urdu() -> None:
    texts = feed_item_texts("feeds/real/miniflux/urdu_UTF8.xml")
    assert len(texts) > 20
    assert {detect_language(t) for t in texts} == {"ur"}


def test_persian_is_not_taken_for_arabic() -> None:
    """The corpus has no Persian news; its one Persian text is an OSM diary entry (a volleyball
    association in Ardabil), next to an Arabic one in the same feed."""
    texts = feed_item_texts("feeds/real/feeder/openstreetmap.xml")
    persian = [t for t in texts if "والیبال" in t]
    arabic = [t for t in texts if "رمضان كريم" in t]
    assert persian and arabic
    assert detect_language(persian[0]) == "fa"
    assert detect_language(arabic[0]) == "ar"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "Taiwan red line",  # 13 letters
        "تايوان خط أحمر",  # 12 letters
        "2024-11-25 12:00 — 45 / 71 / 145",  # no letters
        "https://example.org/a?id=1",
        "台湾红线",  # 4 Han = weight 8
    ],
)
def test_too_short_or_letterless_text_gives_none(text: str) -> None:
    assert detect_language(text) is None


def test_short_real_headlines_are_detected_or_left_open() -> None:
    """A CJK headline of a dozen characters is enough (a Han character counts as two letters)."""
    assert detect_language("香港行政长官梁振英在各方压力下就其大宅的违章建筑问题") == "zh"
    assert MIN_LETTERS == 20


def test_long_text_reads_only_the_beginning() -> None:
    english = read("articles/en/bbc-fulltext/politics/003.txt")
    assert detect_language(english + "\n" + "كلمة عربية " * 10_000) == "en"


def test_loaded_once_and_safe_from_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve threads start at the same moment on an unloaded module: one model load, and every
    thread gets the answer a single thread gets."""
    loads = []
    original = language._model_arrays

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(language, "_model_arrays", counting)
    monkeypatch.setattr(language, "_model", None)
    samples = [
        "Plans to extend paid maternity leave beyond six months should be prominent",
        "يعتزم وزير الخارجية الصيني وانغ يي التوجه إلى روسيا في زيارة تستمر أربعة أيام",
        "梁振英在星期二的答问大会开始之际在其演说中道歉，但强调他在违章建筑问题上没有隐瞒的意图",
    ] * 4
    results: list[str | None] = [None] * len(samples)
    barrier = threading.Barrier(len(samples))

    def work(i: int) -> None:
        barrier.wait()
        results[i] = detect_language(samples[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(samples))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert results == ["en", "ar", "zh"] * 4


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("ar-SA", "ar"),
        ("ar", "ar"),
        ("EN-gb", "en"),
        ("zh_Hant_TW", "zh"),
        (" fa-IR ", "fa"),
        ("yue-HK", "yue"),
        (None, None),
        ("", None),
        ("x", None),
        ("english language", None),
        ("العربية", None),
        ("12-34", None),
    ],
)
def test_primary_language(tag: str | None, expected: str | None) -> None:
    assert primary_language(tag) == expected


# ---- the fast path gives the answers of the straightforward one -----------------------------------


@cache
def reference_identifier() -> Any:
    """py3langid's own identifier, untouched: its `rank` walks the DFA byte by byte."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def reference_detect_language(text: str) -> str | None:
    """`detect_language` as it was before it was made fast: the letter count walks every
    character in Python and py3langid's `rank` scores the text. The reference for the fast one."""
    sample = text[: language.MAX_CHARS]
    weight = 0
    for char in sample:
        if char.isalpha():
            weight += 2 if is_cjk(char) else 1
            if weight >= MIN_LETTERS:
                break
    if weight < MIN_LETTERS:
        return None
    totals: dict[str, float] = {}
    for label, probability in reference_identifier().rank(sample):
        code = language._MACROLANGUAGE.get(label, label)
        totals[code] = totals.get(code, 0.0) + float(probability)
    best = max(totals, key=totals.__getitem__)
    if best == "zxx" or totals[best] < language.MIN_CONFIDENCE:
        return None
    return best


@cache
def corpus_texts() -> tuple[str, ...]:
    """Every article of the corpus, and every item of its real feeds as the pipeline sees it
    (title and body, and the title alone: headlines are the texts nearest the bar)."""
    root = corpus()
    texts = [
        path.read_text("utf-8", errors="replace")
        for path in sorted((root / "articles").rglob("*"))
        if path.is_file() and path.suffix.lower() in (".txt", ".html")
    ]
    fetched = datetime(2026, 1, 1, tzinfo=UTC)
    for path in sorted((root / "feeds" / "real").rglob("*")):
        if not path.is_file():
            continue
        try:
            parsed = parse_feed(path.read_bytes(), fetched_at=fetched)
        except FeedParseError:
            continue
        for article in parsed.articles:
            texts += [f"{article.title}\n{article.body}", article.title]
    return tuple(texts)


def test_the_corpus_gets_the_answers_of_the_straightforward_detector() -> None:
    texts = corpus_texts()
    assert len(texts) > 5000
    answers = [detect_language(text) for text in texts]
    reference = [reference_detect_language(text) for text in texts]
    differ = [(t[:60], a, r) for t, a, r in zip(texts, answers, reference, strict=True) if a != r]
    assert differ == []
    assert {"ar", "en", "zh", "ja", "ko", "ru", "he", "el", "ur", None} <= set(answers)


def test_the_fast_ranking_is_py3langids_on_the_corpus() -> None:
    """Not only the answers: every label's probability, on every seventh text. The features are
    added up in another order, so float32 rounding differs in the last digits."""
    model = language._get_model()
    for text in corpus_texts()[::7]:
        sample = text[: language.MAX_CHARS]
        ours = dict(model.rank(sample))
        theirs = dict(reference_identifier().rank(sample))
        assert ours.keys() == theirs.keys()
        labels = sorted(theirs)
        np.testing.assert_allclose(
            [ours[k] for k in labels], [theirs[k] for k in labels], rtol=2e-4, atol=1e-6
        )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        "ab",
        "abcde",  # shorter than the DFA's memory
        "Ünïcödé",
        "\U0001f600 emoji \U0001f600",
        "ALL CAPITALS HEADLINE ABOUT TAIWAN",  # py3langid lower-cases an all-capitals text
        "e\u0301",  # NFC makes it one character
    ],
)
def test_short_and_odd_texts_rank_as_py3langid_ranks_them(text: str) -> None:
    ours = dict(language._get_model().rank(text))
    theirs = dict(reference_identifier().rank(text))
    labels = sorted(theirs)
    assert ours.keys() == theirs.keys()
    np.testing.assert_allclose(
        [ours[k] for k in labels], [theirs[k] for k in labels], rtol=2e-4, atol=1e-6
    )


def test_the_dfa_state_depends_only_on_the_last_bytes() -> None:
    """What the fast walk relies on: after any DFA_MEMORY bytes the n-gram DFA is in one state,
    whatever state it started from. Checked on the shipped model: starting from the set of every
    state, each byte maps a set of states to the set of their successors; after DFA_MEMORY bytes,
    every such set has one state left (and not after one byte fewer: the bound is tight)."""
    model = language._get_model()
    table = model.transitions.table().reshape(-1, 256)
    rows = model.rowbase >> 8
    sets = [np.arange(len(rows))]
    for step in range(1, language.DFA_MEMORY + 1):
        larger = {}
        for states in sets:
            successors = np.sort(table[rows[states]], axis=0)  # one column per byte
            spread = np.flatnonzero(successors[0] != successors[-1])
            for byte in spread:
                found = np.unique(successors[:, byte])
                larger[found.tobytes()] = found
        sets = list(larger.values())
        if step < language.DFA_MEMORY:
            assert sets, f"every state is settled after {step} bytes: lower DFA_MEMORY"
    assert sets == []


def test_random_bytes_walk_as_py3langid_walks_them() -> None:
    """Invalid UTF-8 and every byte value: the n-grams found are the library's, as often."""
    from py3langid.langid import visit_counts

    model = language._get_model()
    identifier = reference_identifier()
    rng = np.random.default_rng(15)
    for size in (1, 5, 6, 7, 100, 3000):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        features = model.output[model.states(data)]
        found, counts = np.unique(features[features >= 0], return_counts=True)
        expected = visit_counts(
            identifier.tk_nextmove, identifier._rowbase, identifier.tk_output, data
        )
        assert dict(zip(found.tolist(), counts.tolist(), strict=True)) == dict(expected or {})


def test_the_fast_path_does_a_fraction_of_the_work() -> None:
    """CPU time, not wall time: the fast detector against the straightforward one on the same
    texts, with a generous bound (it takes 0.6-0.66 of the time on texts over 500 characters,
    since the transition table is kept in 17 bits an entry; about half before)."""
    import time

    texts = [t for t in corpus_texts() if len(t) > 500][:300]
    reference_detect_language(texts[0])
    detect_language(texts[0])
    started = time.process_time()
    for text in texts:
        reference_detect_language(text)
    reference = time.process_time() - started
    started = time.process_time()
    for text in texts:
        detect_language(text)
    fast = time.process_time() - started
    assert fast < reference * 0.85


def test_the_model_is_read_as_py3langid_reads_it_without_copying_the_automaton() -> None:
    """The same arrays as `modelio.load_model`, but the transition table's row starts left as the
    file holds them rather than copied into stdlib arrays (a second 37 MB while loading), and the
    table itself in 17 bits an entry: every entry gives back the file's state number."""
    from py3langid import modelio
    from py3langid.langid import MODEL_DIR, MODEL_FILE

    ours = list(language._model_arrays(MODEL_DIR / MODEL_FILE))
    theirs = modelio.load_model(MODEL_DIR / MODEL_FILE)
    features = ours[0]  # sparse: its entries give back the file's table
    assert isinstance(features, language._SparseRows)
    dense = np.repeat(features.floor[None, :], len(features.starts) - 1, axis=0)
    rows = np.repeat(np.arange(len(features.starts) - 1), np.diff(features.starts))
    dense[rows, features.columns] += features.excess
    assert np.array_equal(dense.astype(np.asarray(theirs[0]).dtype), np.asarray(theirs[0]))
    ours[0] = theirs[0]
    transitions = ours[3]
    assert transitions.low.dtype == np.uint16
    assert transitions.low.nbytes + transitions.high.nbytes < np.asarray(theirs[3]).nbytes * 0.6
    reference = np.asarray(theirs[3])
    assert reference.max() >= 1 << 16  # the 17th bit is used, and given back
    assert np.array_equal(transitions.table(), reference)
    ours[3] = reference
    for mine, reference in zip(ours, theirs, strict=True):
        assert np.array_equal(np.asarray(mine), np.asarray(reference))
    assert isinstance(ours[4], np.ndarray)


def test_a_transition_table_is_read_a_chunk_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Across chunk boundaries and a last partial byte of high bits, entries come back whole."""
    import io

    monkeypatch.setattr(language, "_CHUNK", 16)
    rng = np.random.default_rng(3)
    table = rng.integers(0, 1 << 17, 16 * 5 + 3, dtype=np.uint32)
    buffer = io.BytesIO()
    np.save(buffer, table)
    buffer.seek(0)
    transitions = language._read_transitions(buffer)
    assert np.array_equal(transitions.table(), table)
    index = rng.integers(0, len(table), 50).astype(np.intp)
    assert np.array_equal(transitions.at(index), table[index])
    buffer = io.BytesIO()
    np.save(buffer, np.array([1 << 17], dtype=np.uint32))
    buffer.seek(0)
    with pytest.raises(ValueError, match="2\\*\\*17"):
        language._read_transitions(buffer)


def test_the_feature_table_is_kept_sparse_with_the_dense_tables_sums() -> None:
    """Most of the model's feature × label table is each label's floor (a feature unseen in its
    training text): kept as the other entries only, in about half the dense table's bytes (14
    of 28 MB), and any weighted sum of its rows is the dense table's."""
    from py3langid import modelio
    from py3langid.langid import MODEL_DIR, MODEL_FILE

    dense = np.asarray(modelio.load_model(MODEL_DIR / MODEL_FILE)[0])
    sparse = language._SparseRows.of_table(dense)
    kept = sum(a.nbytes for a in (sparse.excess, sparse.columns, sparse.starts, sparse.floor))
    assert kept < dense.nbytes * 0.6
    rng = np.random.default_rng(7)
    for size in (1, 17, 600):
        rows = np.unique(rng.integers(0, len(dense), size))
        weights = rng.random(len(rows), dtype=np.float32) * 3
        np.testing.assert_allclose(
            sparse.weighted_sum(rows, weights),
            weights.astype(np.float64) @ dense[rows].astype(np.float64),
            rtol=1e-5,
            atol=1e-3,
        )


def test_the_feature_table_is_read_a_block_of_rows_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model file's feature table is never held whole while it is made sparse: it is read
    in blocks (here 5 rows, across a last partial block), each pass anew, and the sparse table
    is the one made from the whole table in memory."""
    import io
    import zipfile

    monkeypatch.setattr(language._SparseRows, "_BLOCK", 5)
    rng = np.random.default_rng(5)
    table = rng.choice(np.array([-9.0, -9.0, -9.0, -2.5, -1.0], dtype=np.float16), (23, 7))
    member = io.BytesIO()
    np.save(member, table)
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w") as archive:
        archive.writestr("ptc.npy", member.getvalue())
    blocks: list[int] = []
    with zipfile.ZipFile(archive_bytes) as archive:

        def passes() -> Any:
            for block in language._row_blocks(archive, "ptc.npy"):
                blocks.append(len(block))
                yield block

        streamed = language._SparseRows(passes)
    whole = language._SparseRows.of_table(table)
    assert blocks == [5, 5, 5, 5, 3] * 3  # three passes, never more than a block at once
    for name in ("floor", "starts", "excess", "columns"):
        assert np.array_equal(getattr(streamed, name), getattr(whole, name))
