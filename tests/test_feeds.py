"""monitor.feeds: the shared corpus's real feeds, hostile XML made here, and the text rules."""

from __future__ import annotations

import json
import re
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from httpserver import LoopbackServer, corpus_dir, require_corpus

from monitor.errors import FeedParseError
from monitor.feeds import (
    MAX_FIELD_CHARS,
    MAX_ITEMS,
    ParsedFeed,
    clean_text,
    html_to_text,
    normalise_language,
    parse_feed,
    safe_link,
    sniff_format,
)
from monitor.model import Article

FETCHED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FEED_URL = "https://news.example/feed"
CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")

# Documented in corpus/MANIFEST.md: real feeds whose items have no titles.
UNTITLED_FEEDS = {"feedreader-dotnet/Rss092FullSample.xml", "netnewswire/markdown2.rss"}
# Dave Winer's RSS-in-JSON, not a JSON Feed: refused as "not a feed".
NOT_JSON_FEED = {"rsparser/ScriptingNews.json"}


def parse(body: bytes | str, headers: dict[str, str] | None = None) -> ParsedFeed:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return parse_feed(data, url=FEED_URL, headers=headers, fetched_at=FETCHED_AT)


def rss(items: str, channel: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>T</title>'
        f"{channel}{items}</channel></rss>"
    )


def corpus_files(folder: str) -> list[str]:
    root = corpus_dir()
    if root is None:
        return []
    base = root / folder
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def assert_clean(article: Article) -> None:
    for text in (article.title, article.body, article.author or "", article.guid or ""):
        assert not CONTROL_CHARS.search(text)
    assert article.published is not None and article.published.utcoffset() == timedelta(0)
    assert article.link is None or article.link.startswith(("http://", "https://"))


# ---------------------------------------------------------------------------------------------
# The real corpus


REAL_FEEDS = corpus_files("feeds/real")


@pytest.mark.skipif(not REAL_FEEDS, reason="test corpus not found (set MONITOR_CORPUS)")
@pytest.mark.parametrize("name", REAL_FEEDS)
def test_every_real_feed_gives_items(name: str) -> None:
    body = (require_corpus() / "feeds" / "real" / name).read_bytes()
    if name in NOT_JSON_FEED:
        with pytest.raises(FeedParseError, match="not a feed"):
            parse(body)
        return
    feed = parse(body)
    assert feed.articles, feed.bozo_warning
    if name not in UNTITLED_FEEDS:
        assert any(article.title for article in feed.articles)
    for article in feed.articles:
        assert_clean(article)


def test_real_corpus_is_large_enough() -> None:
    require_corpus()
    assert len(REAL_FEEDS) > 300


@pytest.mark.parametrize("name", corpus_files("feeds/robustness/real-broken"))
def test_real_broken_feeds_fail_cleanly(name: str) -> None:
    body = (require_corpus() / "feeds" / "robustness" / "real-broken" / name).read_bytes()
    try:
        feed = parse(body)
    except FeedParseError as exc:
        assert str(exc).startswith("not a feed")
    else:
        assert feed.articles == []  # the Daily Mail channel without items


def test_arabic_script_feed_keeps_its_text_and_language() -> None:
    body = (require_corpus() / "feeds/real/miniflux/urdu_UTF8.xml").read_bytes()
    feed = parse(body)
    first = feed.articles[0]
    assert feed.language == first.language == "ur"
    assert first.title.startswith("امریکی عسکری امداد")
    assert first.published is not None and first.published < FETCHED_AT


def test_content_encoded_is_preferred_and_html_kept() -> None:
    feed = parse(
        rss(
            "<item><title>x</title><description>short teaser</description>"
            "<content:encoded><![CDATA[<p>Full <b>story</b></p><p>Second &amp; last</p>]]>"
            "</content:encoded></item>"
        ).replace(
            '<rss version="2.0">',
            '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">',
        )
    )
    article = feed.articles[0]
    assert article.body == "Full story\nSecond & last"
    assert article.html is not None and "<b>story</b>" in article.html


# ---------------------------------------------------------------------------------------------
# Hostile XML (FAULTS 1–4): made here, since the corpus has no entity bombs


def billion_laughs() -> str:
    entities = '<!ENTITY lol "lol">\n' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
        for i in range(1, 10)
    )
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n{entities}]>\n'
        + rss("<item><title>&lol9;</title></item>").split("\n", 1)[1]
    )


def quadratic_blowup() -> str:
    value = "a" * 50_000
    refs = "&big;" * 2_000
    return (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY big "{value}">]>'
        + rss(f"<item><title>x</title><description>{refs}</description></item>").split("\n", 1)[1]
    )


XXE = (
    '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    '<rss version="2.0"><channel><item><title>&xxe;</title></item></channel></rss>'
)
PARAMETER_DEFINES_GENERAL = (
    '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY % a "<!ENTITY b \'x\'>"> %a;]>'
    '<rss version="2.0"><channel><item><title>&b;</title></item></channel></rss>'
)
HOSTILE = {
    "billion-laughs": billion_laughs(),
    "quadratic-blowup": quadratic_blowup(),
    "xxe": XXE,
    "parameter-defines-general": PARAMETER_DEFINES_GENERAL,
    "outside-doctype": '<!ENTITY x "y"><rss version="2.0"><channel/></rss>',
    "after-comment": "<!-- c --><?pi x?>\n<!DOCTYPE rss [<!-- ] --> <!ENTITY x 'y'>]><rss/>",
}


ENCODINGS = ["utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]


def assert_refused_cheaply(document: str, encoding: str) -> None:
    """The declaration is refused before any expansion: little CPU time, memory of the order of
    the body (an expansion would take seconds and hundreds of MB)."""
    body = document.encode(encoding)
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(FeedParseError, match="entity declarations not allowed"):
            parse(body)
        cpu = time.process_time() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cpu < 1.0
    assert peak < 10 * len(body) + 1_000_000


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_fault_01_xxe_is_refused_and_no_file_is_read(encoding: str) -> None:
    assert_refused_cheaply(XXE, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_fault_02_billion_laughs_is_refused_with_little_cpu_and_memory(encoding: str) -> None:
    assert_refused_cheaply(billion_laughs(), encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_fault_03_quadratic_blowup_is_refused_with_little_cpu_and_memory(encoding: str) -> None:
    assert_refused_cheaply(quadratic_blowup(), encoding)


@pytest.mark.parametrize("name", ["parameter-defines-general", "outside-doctype", "after-comment"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_other_entity_declaration_is_refused_too(name: str, encoding: str) -> None:
    assert_refused_cheaply(HOSTILE[name], encoding)


def test_fault_04_external_dtds_and_stylesheets_are_never_fetched(
    http_server: LoopbackServer,
) -> None:
    dtd = http_server.url("/evil.dtd")
    body = (
        f'<?xml version="1.0"?><?xml-stylesheet href="{http_server.url("/style.xsl")}"?>'
        f'<!DOCTYPE rss SYSTEM "{dtd}" [<!ENTITY % ext SYSTEM "{dtd}"> %ext;]>'
        '<rss version="2.0"><channel><item><title>kept &ext2;</title></item></channel></rss>'
    )
    feed = parse(body)
    # The unknown reference is skipped or kept literally, never resolved (FAULTS 1).
    assert feed.articles[0].title in ("kept", "kept &ext2;")
    assert http_server.requests == []


def test_parameter_entities_only_are_cut_out_and_the_feed_read() -> None:
    # A real feed (weblabor.hu) declares the XHTML Latin-1 entity set this way.
    body = (require_corpus() / "feeds/real/chardet/utf-8/weblabor.hu.xml").read_bytes()
    feed = parse(body)
    assert len(feed.articles) == 15
    assert feed.bozo_warning is None
    assert feed.language == "hu"


def test_the_corpus_doctype_with_a_parameter_entity_is_a_clean_empty_feed() -> None:
    # The corpus holds no entity bomb; this is its one entity declaration in a crafted feed.
    path = "feeds/robustness/feedparser/wellformed/rdf/doctype_contains_entity_decl.xml"
    feed = parse((require_corpus() / path).read_bytes())
    assert (feed.articles, feed.bozo_warning) == ([], None)


def test_fault_34_a_body_naming_a_file_is_not_opened() -> None:
    # feedparser.parse(b"/etc/passwd") would read that file (FAULTS 34).
    with pytest.raises(FeedParseError, match="not a feed"):
        parse(b"/etc/passwd")


# ---------------------------------------------------------------------------------------------
# Damaged and non-feeds


def test_fault_05_truncated_xml_keeps_the_items_before_the_cut() -> None:
    body = (require_corpus() / "feeds/real/miniflux/urdu_UTF8.xml").read_bytes()
    whole = parse(body)
    third_item = [m.start() for m in re.finditer(rb"<item>", body)][2]
    cut = parse(body[: third_item + 40])
    assert len(cut.articles) >= 2
    assert [a.title for a in cut.articles[:2]] == [a.title for a in whole.articles[:2]]
    assert cut.bozo_warning is not None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b"  \n\t ", "empty body"),
        (b"<!DOCTYPE html><html><head><title>Log in</title></head><body>x</body></html>", "HTML"),
        (b'{"status": "ok"}', "not a JSON Feed"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ""),
        (b"just some words", ""),
        (b'<?xml version="1.0"?><rss version="2.0"><channel><title>&nbsp;</title>', ""),
    ],
)
def test_fault_06_things_that_are_not_feeds(body: bytes, reason: str) -> None:
    with pytest.raises(FeedParseError, match=f"not a feed.*{reason}"):
        parse(body)


def test_a_well_formed_empty_feed_is_no_news_not_an_error() -> None:
    feed = parse(rss(""))
    assert (feed.articles, feed.title, feed.bozo_warning) == ([], "T", None)


def test_fault_07_declared_utf8_with_latin1_bytes_is_decoded_with_a_warning() -> None:
    body = rss("<item><title>Caf\xe9 cr\xe8me</title></item>").encode("latin-1")
    feed = parse(body)
    assert feed.articles[0].title == "Café crème"
    assert feed.bozo_warning is not None and "CharacterEncodingOverride" in feed.bozo_warning


def test_fault_27_rss_sent_as_text_html_is_parsed_anyway_and_an_image_is_not_a_feed() -> None:
    feed = parse(rss("<item><title>x</title></item>"), headers={"Content-Type": "text/html"})
    assert [a.title for a in feed.articles] == ["x"]
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"
    with pytest.raises(FeedParseError, match="not a feed"):
        parse(png, headers={"Content-Type": "image/png"})


LYING_CHARSET = rss("<item><title>Café</title></item>")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_fault_08_a_utf16_body_declared_utf8_is_read_as_utf16(encoding: str) -> None:
    headers = {"Content-Type": "application/rss+xml; charset=utf-8"}
    feed = parse(LYING_CHARSET.encode(encoding), headers=headers)
    assert [a.title for a in feed.articles] == ["Café"]
    assert feed.bozo_warning is not None and "CharacterEncodingOverride" in feed.bozo_warning


@pytest.mark.parametrize("charset", ["iso-8859-1", "windows-1252"])
def test_fault_08_a_utf16_body_that_cannot_be_read_is_an_error_not_no_news(charset: str) -> None:
    # No byte order mark, a charset that fits no byte of it: the parser gives up with zero
    # entries, and that is "not a feed", never an empty feed that would look like no news.
    body = LYING_CHARSET.replace("utf-8", charset).encode("utf-16-le")
    with pytest.raises(FeedParseError, match="not a feed"):
        parse(body, headers={"Content-Type": f"application/rss+xml; charset={charset}"})


# ---------------------------------------------------------------------------------------------
# Text, links, dates, languages


def test_fault_09_nul_controls_and_lone_surrogates_are_stripped_from_titles() -> None:
    body = rss("<item><title>Bad\x00 ti\x07tle &#xD800;here</title></item>").encode()
    assert parse(body).articles[0].title == "Bad title here"


def test_fault_10_markup_in_titles_becomes_plain_text() -> None:
    feed = parse(
        rss(
            "<item><title>A &lt;b&gt;bold&lt;/b&gt; &amp;amp; X</title></item>"
            "<item><title><![CDATA[<script>alert(1)</script>Safe <i>title</i>]]></title></item>"
        )
    )
    assert [a.title for a in feed.articles] == ["A bold & X", "Safe title"]


def test_summaries_lose_scripts_and_handlers() -> None:
    feed = parse(
        rss(
            "<item><title>x</title><description>&lt;p onclick='x()'&gt;Hello&lt;/p&gt;"
            "&lt;script&gt;steal()&lt;/script&gt;&lt;p&gt;World&lt;/p&gt;</description></item>"
        )
    )
    article = feed.articles[0]
    assert article.body == "Hello\nWorld"
    assert article.html is not None and "script" not in article.html
    assert "onclick" not in article.html


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("javascript:alert(1)", None),
        ("data:text/html,<b>x</b>", None),
        ("file:///etc/passwd", None),
        ("vbscript:x", None),
        ("https://news.example/a", "https://news.example/a"),
        ("/relative/path", "https://news.example/relative/path"),
    ],
)
def test_fault_11_only_http_links_are_kept(link: str, expected: str | None) -> None:
    feed = parse(rss(f"<item><title>x</title><link>{link}</link></item>"))
    assert feed.articles[0].link == expected


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Tue, 10 Jun 2025 04:00:00 +0200", datetime(2025, 6, 10, 2, 0, tzinfo=UTC)),
        ("Tue, 10 Jun 2025 04:00:00 GMT", datetime(2025, 6, 10, 4, 0, tzinfo=UTC)),
        ("Sun, 01 Mar 2026 23:00:00 GMT", datetime(2026, 3, 1, 23, 0, tzinfo=UTC)),
        ("Fri, 01 Jan 2100 00:00:00 GMT", FETCHED_AT),  # far future
        ("Mon, 02 Mar 2026 13:00:00 GMT", FETCHED_AT),  # just over a day ahead
        ("Thu, 01 Jan 1970 00:00:00 GMT", FETCHED_AT),  # before 1990
        ("yesterday-ish", FETCHED_AT),
    ],
)
def test_fault_14_dates_are_utc_and_sane(date: str, expected: datetime) -> None:
    feed = parse(rss(f"<item><title>x</title><pubDate>{date}</pubDate></item>"))
    assert feed.articles[0].published == expected


def test_fault_14_missing_dates_are_the_fetch_time() -> None:
    assert parse(rss("<item><title>x</title></item>")).articles[0].published == FETCHED_AT


def test_languages_from_the_channel_and_xml_lang() -> None:
    feed = parse(rss("<item><title>x</title></item>", channel="<language>ar-eg</language>"))
    assert feed.language == feed.articles[0].language == "ar-EG"
    atom = (
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="fr"><title>t</title>'
        '<entry xml:lang="de"><title>x</title><id>urn:1</id><content>Text</content></entry>'
        "<entry><title>y</title><id>urn:2</id></entry></feed>"
    )
    assert [a.language for a in parse(atom).articles] == ["de", "fr"]
    english = parse(rss("<item><title>x</title></item>", channel="<language>english</language>"))
    assert english.articles[0].language is None


def test_ttl_guid_and_author() -> None:
    feed = parse(
        rss(
            '<item><title>x</title><guid isPermaLink="false">id-1</guid>'
            "<author>ann@example.org (Ann)</author></item>",
            channel="<ttl>30</ttl>",
        )
    )
    assert feed.ttl == 30
    assert feed.articles[0].guid == "id-1"
    assert feed.articles[0].author == "ann@example.org (Ann)"


def test_fault_15_items_are_capped_per_feed_keeping_the_first() -> None:
    items = "".join(f"<item><title>item {i}</title></item>" for i in range(MAX_ITEMS + 200))
    feed = parse(rss(items))
    assert (len(feed.articles), feed.dropped_items) == (MAX_ITEMS, 200)
    assert feed.articles[0].title == "item 0"


def test_fault_16_a_10_mb_text_node_is_truncated_in_bounded_cpu_time() -> None:
    small = rss(f"<item><title>x</title><description>{'y' * 100_000}</description></item>")
    started = time.process_time()
    parse(small)
    baseline = time.process_time() - started
    started = time.process_time()
    huge = parse(rss(f"<item><title>x</title><description>{'y' * 10_000_000}</description></item>"))
    cpu = time.process_time() - started
    assert len(huge.articles[0].body) == MAX_FIELD_CHARS
    # 100 times the text: linear work is 100 times the baseline; a quadratic step would be 10,000
    assert cpu < 300 * baseline + 2.0


def test_fault_16_100000_deep_nesting_takes_bounded_cpu_time() -> None:
    """Elements nested 100,000 deep, around the item or inside its text: each document takes a
    few seconds of CPU here (a step quadratic in the depth would take hours), and the result is a
    feed or a clean "not a feed"."""
    depth = 100_000
    nested = rss("<x>" * depth + "<item><title>x</title></item>" + "</x>" * depth)
    in_text = rss(f"<item><title>x</title><description>{'<b>' * depth}</description></item>")
    for document in (nested, in_text):
        started = time.process_time()
        try:
            feed = parse(document)
        except FeedParseError as exc:
            assert str(exc).startswith("not a feed")
        else:
            assert [a.title for a in feed.articles] == ["x"]
        assert time.process_time() - started < 30.0


def test_fetched_at_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_feed(rss("").encode(), fetched_at=datetime(2026, 1, 1))


# ---------------------------------------------------------------------------------------------
# JSON Feed


def json_feed(**fields: object) -> bytes:
    return json.dumps({"version": "https://jsonfeed.org/version/1.1", **fields}).encode()


def test_json_feed_items() -> None:
    feed = parse(
        json_feed(
            title="JF",
            home_page_url="https://jf.example/",
            language="en-gb",
            authors=[{"name": "Feed Author"}],
            items=[
                {
                    "id": 1,
                    "url": "/posts/1",
                    "title": "Hello &amp; welcome",
                    "content_html": "<p>Hi <b>there</b></p>",
                    "date_published": "2025-06-10T04:00:00+02:00",
                },
                {"id": "2", "content_text": "untitled", "url": "javascript:x()"},
                "not an item",
            ],
        )
    )
    first, second = feed.articles
    assert (feed.title, feed.language) == ("JF", "en-GB")
    assert (first.title, first.body, first.html) == (
        "Hello &amp; welcome",
        "Hi there",
        "<p>Hi <b>there</b></p>",
    )
    assert first.link == "https://jf.example/posts/1"
    assert first.published == datetime(2025, 6, 10, 2, 0, tzinfo=UTC)
    assert (first.guid, first.author, first.language) == ("1", "Feed Author", "en-GB")
    assert (second.title, second.body, second.link, second.published) == (
        "",
        "untitled",
        None,
        FETCHED_AT,
    )


def test_json_feeds_from_the_corpus() -> None:
    root = require_corpus() / "feeds"
    daring = parse((root / "real/rsparser/DaringFireball.json").read_bytes())
    assert len(daring.articles) > 5 and all(a.title for a in daring.articles)
    crafted = parse((root / "robustness/fastfeedparser/json_feed_sample.json").read_bytes())
    assert crafted.articles


def test_truncated_json_feed_keeps_complete_items() -> None:
    feed = parse((require_corpus() / "feeds/real/rsparser/allthis-partial.json").read_bytes())
    assert len(feed.articles) >= 1 and feed.articles[0].title
    assert feed.bozo_warning is not None


def test_json_feed_with_an_unknown_version_is_refused() -> None:
    with pytest.raises(FeedParseError, match="unknown JSON Feed version"):
        parse(json.dumps({"version": "2", "items": []}).encode())


def test_fault_16_deeply_nested_json_is_refused() -> None:
    with pytest.raises(FeedParseError, match="not a feed"):
        parse(b"[" * 100_000 + b"]" * 100_000)


# ---------------------------------------------------------------------------------------------
# Helpers


def test_html_to_text() -> None:
    assert html_to_text("<p>a<br>b</p><ul><li>c</li><li>d &amp; e</li></ul>") == "a\nb\nc\nd & e"
    assert html_to_text("<style>p{}</style><script>x()</script>  spaced   out  ") == "spaced out"
    assert html_to_text("<html><head><title>T</title></head><body>B</body></html>") == "B"


def test_clean_text() -> None:
    assert clean_text("a\r\nb\rc\x00d\x1be\tf\ud800") == "a\nb\ncde\tf"
    assert clean_text("x" * 10, limit=3) == "xxx"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("en-us", "en-US"), ("AR", "ar"), ("zh_hans_cn", "zh-Hans-CN"), ("english", None), ("", None)],
)
def test_normalise_language(tag: str, expected: str | None) -> None:
    assert normalise_language(tag) == expected


def test_safe_link() -> None:
    assert safe_link(" https://a.example/x ") == "https://a.example/x"
    assert safe_link("x", "https://a.example/dir/") == "https://a.example/dir/x"
    assert safe_link("JavaScript:alert(1)") is None
    assert safe_link("//evil.example/x") is None
    assert safe_link(None) is None


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b'<?xml version="1.0"?>\n<rss version="2.0"/>', "xml-feed"),
        (b"\xef\xbb\xbf  <feed xmlns='http://www.w3.org/2005/Atom'/>", "xml-feed"),
        ("<rdf:RDF xmlns:rdf='x'/>".encode("utf-16"), "xml-feed"),
        ("<rss/>".encode("utf-16-be"), "xml-feed"),
        (b"<!DOCTYPE html><html><body/></html>", "html"),
        (b"<?xml version='1.0'?><html xmlns='http://www.w3.org/1999/xhtml'/>", "html"),
        (b'{"version": "https://jsonfeed.org/version/1", "items": []}', "json-feed"),
        (b'{"a": 1}', "json"),
        (b"<?xml version='1.0'?><note/>", "xml"),
        (b"Plain words", "text"),
    ],
)
def test_sniff_format(body: bytes, kind: str) -> None:
    assert sniff_format(body) == kind


def test_corpus_lookup_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MONITOR_CORPUS", str(tmp_path))
    assert corpus_dir() == tmp_path
    monkeypatch.setenv("MONITOR_CORPUS", str(tmp_path / "missing"))
    assert corpus_dir() is None
