"""Language detection with the model that ships in the py3langid wheel, on real corpus texts."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import feedparser
import pytest
from httpserver import require_corpus

from monitor import language
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
    from py3langid.langid import LanguageIdentifier

    loads = []
    original = LanguageIdentifier.from_model_file

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(LanguageIdentifier, "from_model_file", counting)
    monkeypatch.setattr(language, "_identifier", None)
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
