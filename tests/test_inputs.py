"""monitor.inputs: what `monitor match FILE|URL|-` reads, from the corpus and a loopback server."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from httpserver import SMALL_FEED, LoopbackServer, require_corpus

from monitor.fetch import FetchPolicy
from monitor.inputs import InputResult, is_url, read_input, read_inputs

POLICY = FetchPolicy()
LOCAL = FetchPolicy(allow_private=True, timeout=10)
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def read(
    *specs: str,
    stdin: bytes = b"",
    policy: FetchPolicy = POLICY,
    base_dir: Path | None = None,
) -> list[InputResult]:
    return list(
        read_inputs(list(specs), policy=policy, stdin=io.BytesIO(stdin), base_dir=base_dir, now=NOW)
    )


def read_one(
    spec: str, *, stdin: bytes = b"", policy: FetchPolicy = POLICY, base_dir: Path | None = None
) -> InputResult:
    (result,) = read(spec, stdin=stdin, policy=policy, base_dir=base_dir)
    return result


# ---------------------------------------------------------------------------------------------
# Text files


def test_txt_first_line_is_the_title_and_the_rest_the_body() -> None:
    seed = require_corpus() / "seed" / "aawsat-wang-yi-russia.txt"
    result = read_one(str(seed))
    assert result.ok and result.name == str(seed)
    (article,) = result.articles
    assert article.title == (
        "بعد لقائه مستشار الأمن القومي الأميركي... وزير الخارجية الصيني يتوجه إلى روسيا"
    )
    assert "«أول خط أحمر" in article.body  # "the first red line"
    assert not article.body.startswith("\n")
    assert article.source is None


def test_txt_skips_leading_blank_lines_and_a_bom(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes("\ufeff\n\n  Title line  \n\nBody one\nBody two\n".encode())
    (article,) = read_one("a.txt", base_dir=tmp_path).articles
    assert (article.title, article.body) == ("Title line", "Body one\nBody two")


def test_txt_that_is_not_utf8_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "arabic.txt").write_bytes("الصين وروسيا".encode("cp1256"))
    result = read_one("arabic.txt", base_dir=tmp_path)
    assert result.articles == [] and result.error is not None
    assert result.error.name == "arabic.txt"
    assert "not valid UTF-8" in str(result.error) and "iconv" in str(result.error)


def test_the_corpus_file_with_a_pound_byte_is_refused() -> None:
    path = require_corpus() / "articles/en/bbc-fulltext/sport/199.txt"
    result = read_one(str(path))
    assert result.error is not None and "byte 0xA3" in result.error.reason


def test_an_empty_text_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"\n \n")
    result = read_one("empty.txt", base_dir=tmp_path)
    assert result.error is not None and "empty" in result.error.reason


def test_a_missing_file_does_not_stop_the_others(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("Title\nBody", encoding="utf-8")
    missing, ok = read("nope.txt", "ok.txt", base_dir=tmp_path)
    assert missing.name == "nope.txt" and missing.error is not None
    assert missing.error.reason == "no such file"
    assert str(missing.error) == "nope.txt: no such file"
    assert ok.ok and ok.articles[0].title == "Title"


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    result = read_one(str(tmp_path))
    assert result.error is not None and "directory" in result.error.reason


def test_files_over_the_size_cap_are_refused(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_bytes(b"x" * 2000)
    result = read_one("big.txt", base_dir=tmp_path, policy=FetchPolicy(max_body=1000))
    assert result.error is not None and "limit" in result.error.reason


# ---------------------------------------------------------------------------------------------
# HTML


def test_arabic_html_page_gives_its_title_main_text_and_language() -> None:
    folder = require_corpus() / "articles" / "ar" / "newspaper4k"
    expected = json.loads((folder / "arabic_article.metadata.json").read_text("utf-8"))
    first_sentence = (folder / "arabic_article.txt").read_text("utf-8").split("\n")[0][:60]
    (article,) = read_one(str(folder / "arabic_article.html")).articles
    assert article.title == expected["title"]
    assert article.language == "ar"
    assert first_sentence in article.body
    assert "<" not in article.body


def test_html_without_main_text_falls_back_to_title_and_all_text(tmp_path: Path) -> None:
    (tmp_path / "tiny.htm").write_text(
        "<html lang='fr'><head><title>Le titre</title><style>p{}</style></head>"
        "<body><p>Un.</p></body></html>",
        encoding="utf-8",
    )
    (article,) = read_one("tiny.htm", base_dir=tmp_path).articles
    assert (article.title, article.body, article.language) == ("Le titre", "Un.", "fr")


def test_legacy_encoded_html_is_decoded_from_its_meta_charset(tmp_path: Path) -> None:
    page = (
        "<html><head><meta charset='windows-1256'><title>الصين</title></head>"
        "<body><p>وزير الخارجية الصيني يتوجه إلى روسيا</p></body></html>"
    )
    (tmp_path / "legacy.html").write_bytes(page.encode("cp1256"))
    (article,) = read_one("legacy.html", base_dir=tmp_path).articles
    assert article.title == "الصين"
    assert "روسيا" in article.body


# ---------------------------------------------------------------------------------------------
# Feeds


def test_a_feed_file_gives_one_article_per_item() -> None:
    path = require_corpus() / "feeds/real/miniflux/urdu_UTF8.xml"
    result = read_one(str(path))
    assert len(result.articles) > 5
    assert all(a.title and a.language == "ur" for a in result.articles)


def test_a_json_feed_file() -> None:
    result = read_one(str(require_corpus() / "feeds/real/rsparser/DaringFireball.json"))
    assert result.ok and len(result.articles) > 5


def test_a_feed_file_that_is_not_a_feed_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "page.xml").write_bytes(b"<!DOCTYPE html><html><body>Login</body></html>")
    result = read_one("page.xml", base_dir=tmp_path)
    assert result.error is not None and result.error.reason.startswith("not a feed")


def test_an_unknown_extension_is_recognised_by_content(tmp_path: Path) -> None:
    (tmp_path / "download").write_bytes(SMALL_FEED)
    (tmp_path / "notes.md").write_text("Heading\ntext", encoding="utf-8")
    feed, notes = read("download", "notes.md", base_dir=tmp_path)
    assert [a.title for a in feed.articles] == ["First item"]
    assert [a.title for a in notes.articles] == ["Heading"]


# ---------------------------------------------------------------------------------------------
# stdin


@pytest.mark.parametrize(
    ("data", "titles"),
    [
        (SMALL_FEED, ["First item"]),
        (b"<html><head><title>Page</title></head><body><p>Text</p></body></html>", ["Page"]),
        ("\ufeffعنوان\nنص".encode(), ["عنوان"]),
    ],
)
def test_stdin_is_sniffed(data: bytes, titles: list[str]) -> None:
    result = read_one("-", stdin=data)
    assert result.name == "-"
    assert [a.title for a in result.articles] == titles


def test_stdin_over_the_cap_is_refused() -> None:
    result = read_one("-", stdin=b"x" * 101, policy=FetchPolicy(max_body=100))
    assert result.error is not None and "more than 100 bytes" in result.error.reason


# ---------------------------------------------------------------------------------------------
# URLs (loopback server, so the policy allows private addresses)


def test_a_feed_url(http_server: LoopbackServer) -> None:
    require_corpus()
    url = http_server.url("/corpus/feeds/real/miniflux/urdu_UTF8.xml")
    result = read_one(url, policy=LOCAL)
    assert result.name == url and len(result.articles) > 5


def test_an_html_url(http_server: LoopbackServer) -> None:
    require_corpus()
    url = http_server.url("/corpus/articles/ar/newspaper4k/arabic_article.html")
    (article,) = read_one(url, policy=LOCAL).articles
    assert article.language == "ar" and article.link == url


def test_url_errors_become_input_errors(http_server: LoopbackServer) -> None:
    (not_found,) = read(http_server.url("/status/404"), policy=LOCAL)
    assert not_found.error is not None and "HTTP 404" in not_found.error.reason
    refused, bad_scheme = read(http_server.url("/etag"), "file:///etc/passwd", policy=POLICY)
    assert refused.error is not None and "not public" in refused.error.reason
    assert bad_scheme.error is not None and "only http and https" in bad_scheme.error.reason
    assert len(http_server.requests) == 1  # only the 404: loopback is refused by default


def test_read_input_works_inside_a_running_loop(http_server: LoopbackServer) -> None:
    async def inside() -> InputResult:
        return await read_input(http_server.url("/etag"), policy=LOCAL, stdin=io.BytesIO(), now=NOW)

    assert asyncio.run(inside()).articles[0].title == "First item"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("https://example.org/feed", True),
        ("file:///etc/passwd", True),
        ("data:text/plain,x", True),
        ("notes.txt", False),
        ("dir/notes:v2.txt", False),
        ("-", False),
        ("/abs/path.xml", False),
    ],
)
def test_is_url(spec: str, expected: bool) -> None:
    assert is_url(spec) is expected


def test_the_service_loads_trafilatura_only_to_read_a_page() -> None:
    """A service whose feeds fetch no pages does not hold trafilatura and lxml (about 12 MB)."""
    import subprocess
    import sys

    code = (
        "import sys; import monitor.cli.run, monitor.daemon.run, monitor.pipeline; "
        "print('trafilatura' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
