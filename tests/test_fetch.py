"""monitor.fetch against a real HTTP server on 127.0.0.1 (tests/httpserver.py); no HTTP mocks.

The server is on loopback, so tests that need it to answer use `allow_private=True` or an
`allowed_networks` entry for 127.0.0.1; the tests that prove refusal use the default policy and
assert that the server saw no request. Refusals of non-loopback addresses are tested on the pure
`check_url` / `GuardedResolver` only, so no test can ever send traffic off this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tracemalloc
import zlib
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from httpserver import ETAG, LAST_MODIFIED, SMALL_FEED, LoopbackServer
from virtualtime import VirtualTime

from monitor.config import parse_config
from monitor.errors import FetchError, UnsafeURLError
from monitor.fetch import (
    FetchPolicy,
    FetchResult,
    GuardedResolver,
    HostBusyError,
    HTTPStatusError,
    RetryLaterError,
    check_url,
    fetch,
    fetch_local,
    is_public_address,
    open_session,
    parse_retry_after,
)

T = TypeVar("T")
LOCAL = FetchPolicy(allow_private=True, timeout=10)
MB = 1024 * 1024


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def get(url: str, policy: FetchPolicy = LOCAL, **kwargs: Any) -> FetchResult:
    return run(fetch(url, policy=policy, **kwargs))


class StubResolver(AbstractResolver):
    """Answers from a table instead of DNS and records every lookup."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self._answers = {host: list(rounds) for host, rounds in answers.items()}
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        rounds = self._answers[host]
        addresses = rounds.pop(0) if len(rounds) > 1 else rounds[0]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


async def fetch_with_resolver(
    url: str, resolver: AbstractResolver, policy: FetchPolicy = LOCAL
) -> FetchResult:
    async with open_session(policy, resolver=resolver) as session:
        return await fetch(url, policy=policy, session=session)


# ---------------------------------------------------------------------------------------------
# URL and address rules (pure)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.org/feed.xml",
        "data:text/xml,<rss/>",
        "gopher://example.org/",
        "feed://example.org/rss",
        "javascript:alert(1)",
        "/etc/passwd",
        "etc/passwd",
        "example.org/feed",
    ],
)
def test_fault_34_only_http_and_https_are_allowed(url: str) -> None:
    with pytest.raises(UnsafeURLError, match="only http and https"):
        check_url(url, FetchPolicy())


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://user:pass@example.org/", "credentials"),
        ("http://user@example.org/", "credentials"),
        ("http://INTERNAL\\@example.org/", "backslash"),
        ("http://exa mple.org/", "whitespace"),
        ("http://example.org/\r\nX-Injected: 1", "whitespace"),
        ("http://example.org/" + "a" * 10_000, "longer than 2048"),
        ("http://example.org:25/", "port 25"),
        ("http://127.0.0.1:6379/", "not public"),
        ("http://[::1]:6379/", "not public"),
        ("http://%31%32%37.0.0.1/", "non-canonical IPv4"),
        ("http://exa%6Dple.org/", "invalid host"),
        ("http:///feed", "no host"),
    ],
)
def test_fault_35_ambiguous_or_dangerous_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURLError, match=reason):
        check_url(url, FetchPolicy())


# FAULTS 29 and 30: every form is refused before any connection is made.
NON_PUBLIC_URLS = [
    "http://127.0.0.1/",
    "http://127.8.9.10/",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://100.127.255.254/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[2002:7f00:1::]/",  # 6to4 wrapping 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 wrapping 10.0.0.1
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://192.0.2.1/",
]
ENCODED_IPV4_URLS = [
    "http://2130706433/",
    "http://127.1/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.0.0.1./",
    "http://017700000001/",
]


@pytest.mark.parametrize("url", NON_PUBLIC_URLS)
def test_fault_29_non_public_literal_addresses_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURLError, match="not public"):
        check_url(url, FetchPolicy())


@pytest.mark.parametrize("url", ENCODED_IPV4_URLS)
def test_fault_30_legacy_ipv4_forms_are_refused_even_when_private_is_allowed(url: str) -> None:
    with pytest.raises(UnsafeURLError, match="non-canonical IPv4"):
        check_url(url, FetchPolicy(allow_private=True))


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/feed.xml",
        "http://93.184.216.34/rss",
        "http://[2606:4700:4700::1111]/",
        "https://ümlaut.example/feed",
        "http://example.org:8080/feed?x=1",
    ],
)
def test_public_urls_pass(url: str) -> None:
    assert check_url(url, FetchPolicy()).scheme in ("http", "https")


def test_allow_private_and_allowed_networks_open_only_what_they_say() -> None:
    assert check_url("http://10.1.2.3/", FetchPolicy(allow_private=True)).host == "10.1.2.3"
    intranet = FetchPolicy(allowed_networks=("10.1.0.0/16",))
    assert check_url("http://10.1.2.3/", intranet).host == "10.1.2.3"
    with pytest.raises(UnsafeURLError):
        check_url("http://10.2.0.1/", intranet)
    with pytest.raises(UnsafeURLError):
        check_url("http://127.0.0.1/", intranet)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("fd12::1", False),
        ("fe80::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("ff02::1", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        FetchPolicy(timeout=0)
    with pytest.raises(ValueError):
        FetchPolicy(max_body=0)
    with pytest.raises(ValueError):
        FetchPolicy(proxy="socks5://127.0.0.1:1080")
    with pytest.raises(ValueError):
        FetchPolicy(allowed_networks=("not-a-network",))


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now) == 90.0
    earlier = format_datetime(now - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(earlier, now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after(None, now) is None


# ---------------------------------------------------------------------------------------------
# The resolver guard (pure: the stub answers, nothing connects)

PUBLIC_ADDRESS = "93.184.216.34"


def test_fault_31_resolver_refuses_a_name_with_any_private_address() -> None:
    stub = StubResolver({"mixed.test": [[PUBLIC_ADDRESS, "10.0.0.7"]]})
    guard = GuardedResolver(FetchPolicy(), stub)
    with pytest.raises(
        UnsafeURLError, match=r"mixed\.test resolves to non-public address 10\.0\.0\.7"
    ):
        run(guard.resolve("mixed.test", 80))


def test_fault_32_resolver_checks_every_answer_so_rebinding_is_caught() -> None:
    # First answer public, second private: the second lookup is refused on its own (FAULTS 32).
    stub = StubResolver({"rebind.test": [[PUBLIC_ADDRESS], ["127.0.0.1"]]})
    guard = GuardedResolver(FetchPolicy(), stub)

    async def lookups() -> list[str]:
        first = await guard.resolve("rebind.test", 80)
        with pytest.raises(UnsafeURLError):
            await guard.resolve("rebind.test", 80)
        return [answer["host"] for answer in first]

    assert run(lookups()) == [PUBLIC_ADDRESS]
    assert stub.calls == ["rebind.test", "rebind.test"]


def test_resolver_leaves_the_configured_proxy_alone() -> None:
    stub = StubResolver({"proxy.internal": [["10.0.0.3"]]})
    guard = GuardedResolver(FetchPolicy(), stub, trusted_hosts=frozenset({"proxy.internal"}))
    assert run(guard.resolve("proxy.internal", 3128))[0]["host"] == "10.0.0.3"


# ---------------------------------------------------------------------------------------------
# SSRF through fetch(): refused before any connection (loopback forms only)


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/etag",
        "http://[::1]:{port}/etag",
        "http://0.0.0.0:{port}/etag",
        "http://2130706433:{port}/etag",
        "http://127.1:{port}/etag",
        "http://0x7f.1:{port}/etag",
        "http://[::ffff:127.0.0.1]:{port}/etag",
        "http://localhost:{port}/etag",
    ],
)
def test_fault_29_fetch_refuses_loopback_before_connecting(
    http_server: LoopbackServer, template: str
) -> None:
    with pytest.raises(UnsafeURLError):
        get(template.format(port=http_server.port), FetchPolicy())
    assert http_server.requests == []


def test_fault_31_fetch_refuses_a_name_that_resolves_to_loopback(
    http_server: LoopbackServer,
) -> None:
    stub = StubResolver({"feeds.test": [["127.0.0.1"]]})
    url = f"http://feeds.test:{http_server.port}/etag"
    with pytest.raises(UnsafeURLError, match=r"feeds\.test resolves to non-public address"):
        run(fetch_with_resolver(url, stub, FetchPolicy()))
    assert stub.calls == ["feeds.test"]  # one lookup, the one the connection would have used
    assert http_server.requests == []


def test_fetch_connects_to_what_the_injected_resolver_answers(http_server: LoopbackServer) -> None:
    stub = StubResolver({"feeds.test": [["127.0.0.1"]]})
    result = run(fetch_with_resolver(f"http://feeds.test:{http_server.port}/etag", stub))
    assert result.body == SMALL_FEED
    assert stub.calls == ["feeds.test"]
    assert http_server.requests[0].headers["Host"] == f"feeds.test:{http_server.port}"


@pytest.mark.parametrize(
    "target",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "http://2130706433:{port}/etag",
        "http://127.0.0.2:{port}/etag",
        "http://[::1]:{port}/etag",
        "http://user:secret@127.0.0.1:{port}/etag",
    ],
)
def test_fault_33_every_redirect_hop_is_checked(http_server: LoopbackServer, target: str) -> None:
    # The server itself is reachable (127.0.0.1/32 allowed); where it redirects is not (FAULTS 33).
    policy = FetchPolicy(allowed_networks=("127.0.0.1/32",))
    location = target.format(port=http_server.port)
    url = http_server.url(f"/redirect-to?url={location}")
    with pytest.raises(UnsafeURLError, match="redirect refused") as refused:
        get(url, policy)
    assert refused.value.url.startswith(http_server.url("/redirect-to?"))  # the hop that redirected
    assert len(http_server.requests) == 1


def test_fault_36_environment_proxies_are_ignored(
    http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there (FAULTS 36)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert get(http_server.url("/etag")).status == 200


def test_a_session_must_come_from_open_session_with_the_same_rules(
    http_server: LoopbackServer,
) -> None:
    async def attempt() -> None:
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(ValueError, match="open_session"):
                await fetch(http_server.url("/etag"), policy=LOCAL, session=plain)
        async with open_session(FetchPolicy()) as strict:
            with pytest.raises(ValueError, match="open_session"):
                await fetch(http_server.url("/etag"), policy=LOCAL, session=strict)

    run(attempt())
    assert http_server.requests == []


# ---------------------------------------------------------------------------------------------
# Ordinary fetching, validators, redirects, statuses


def test_fetch_returns_body_and_validators(http_server: LoopbackServer) -> None:
    result = get(http_server.url("/etag"))
    assert (result.status, result.body) == (200, SMALL_FEED)
    assert (result.etag, result.last_modified) == (ETAG, LAST_MODIFIED)
    assert result.headers["Content-Type"] == "application/rss+xml"
    sent = http_server.requests[0].headers
    assert sent["User-Agent"] == LOCAL.user_agent
    assert sent["Accept-Encoding"] == "gzip, deflate"
    assert "If-None-Match" not in sent


def test_fault_22_conditional_get_gives_304_and_keeps_validators(
    http_server: LoopbackServer,
) -> None:
    result = get(http_server.url("/etag"), etag=ETAG, last_modified=LAST_MODIFIED)
    assert result.not_modified and result.body is None
    assert (result.etag, result.last_modified) == (ETAG, LAST_MODIFIED)
    sent = http_server.requests[0].headers
    assert (sent["If-None-Match"], sent["If-Modified-Since"]) == (ETAG, LAST_MODIFIED)


def test_304_without_validators_keeps_the_ones_sent(http_server: LoopbackServer) -> None:
    http_server.respond("/bare-304", status=304)
    result = get(http_server.url("/bare-304"), etag='"abc"', last_modified=LAST_MODIFIED)
    assert (result.status, result.etag, result.last_modified) == (304, '"abc"', LAST_MODIFIED)


def test_if_modified_since_alone(http_server: LoopbackServer) -> None:
    assert get(http_server.url("/etag"), last_modified=LAST_MODIFIED).status == 304


def test_up_to_five_redirects_are_followed(http_server: LoopbackServer) -> None:
    result = get(http_server.url("/redirect/5"))
    assert result.body == SMALL_FEED
    assert result.url == http_server.url("/redirect/0")
    assert result.permanent_redirect is None  # 302s: keep polling the original URL
    assert len(http_server.requests) == 6


def test_a_sixth_redirect_is_an_error(http_server: LoopbackServer) -> None:
    with pytest.raises(FetchError, match="more than 5 redirects"):
        get(http_server.url("/redirect/6"))
    assert len(http_server.requests) == 6


def test_fault_20_a_redirect_loop_is_an_error(http_server: LoopbackServer) -> None:
    with pytest.raises(FetchError, match="more than 2 redirects"):
        get(http_server.url("/loop"), FetchPolicy(allow_private=True, max_redirects=2))
    assert len(http_server.requests) == 3


def test_fault_21_permanent_redirects_report_the_new_url(http_server: LoopbackServer) -> None:
    result = get(http_server.url("/redirect-to?status=301&url=/etag"))
    assert result.permanent_redirect == http_server.url("/etag") == result.url


@pytest.mark.parametrize("status", [429, 503])
def test_retry_later_statuses_carry_retry_after_seconds(
    http_server: LoopbackServer, status: int
) -> None:
    with pytest.raises(RetryLaterError) as raised:
        get(http_server.url(f"/status/{status}?retry_after=120"))
    assert (raised.value.status, raised.value.retry_after) == (status, 120.0)


def test_fault_23_retry_after_as_http_date_is_measured_on_the_server_clock(
    http_server: LoopbackServer,
) -> None:
    server_now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    date = format_datetime(server_now, usegmt=True)
    retry = format_datetime(server_now + timedelta(seconds=90), usegmt=True)
    url = http_server.url("/status/429")
    with pytest.raises(RetryLaterError) as raised:
        run(_fetch_with_query(url, {"retry_after": retry, "date": date}))
    assert raised.value.retry_after == 90.0


async def _fetch_with_query(url: str, query: dict[str, str]) -> FetchResult:
    from yarl import URL

    return await fetch(str(URL(url).with_query(query)), policy=LOCAL)


def test_429_without_retry_after(http_server: LoopbackServer) -> None:
    with pytest.raises(RetryLaterError) as raised:
        get(http_server.url("/status/429"))
    assert raised.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 404, 410, 403])
def test_error_statuses_raise_with_the_status(http_server: LoopbackServer, status: int) -> None:
    with pytest.raises(HTTPStatusError) as raised:
        get(http_server.url(f"/status/{status}"))
    assert raised.value.status == status
    assert not isinstance(raised.value, RetryLaterError)
    assert f"HTTP {status}" in str(raised.value)


def test_connection_refused_is_a_fetch_error(http_server: LoopbackServer) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(FetchError, match="cannot connect") as raised:
        get(f"http://127.0.0.1:{port}/")
    assert isinstance(raised.value.__cause__, aiohttp.ClientError)


def test_fault_28_a_self_signed_certificate_is_an_error_not_a_downgrade(tmp_path: Path) -> None:
    # FAULTS 28: no silent fallback to an unverified connection.
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with LoopbackServer(ssl_context=context) as server:
        with pytest.raises(FetchError, match=r"TLS certificate not accepted"):
            get(server.url("/etag"))
        assert server.requests == []


# ---------------------------------------------------------------------------------------------
# Deadlines


def test_fault_19_a_slow_drip_is_cut_at_the_total_deadline(http_server: LoopbackServer) -> None:
    # A byte every 0.2 s never trips a per-read timeout; only a total deadline stops it. Without
    # one the 100 bytes would arrive after 20 s, and the fetch would succeed.
    with pytest.raises(FetchError, match="timed out after 1 s"):
        get(
            http_server.url("/drip?interval=0.2&count=100"),
            FetchPolicy(allow_private=True, timeout=1),
        )


def test_fault_18_headers_never_sent_is_cut_at_the_deadline(http_server: LoopbackServer) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)  # cancelled when the client hangs up; else answered, no error
        return web.Response()

    http_server.route("/stall", stall)
    with pytest.raises(FetchError, match=r"timed out after 0\.5 s"):
        get(http_server.url("/stall"), FetchPolicy(allow_private=True, timeout=0.5))


def test_fault_17_a_connect_that_hangs_is_cut_at_the_deadline() -> None:
    """A listening socket whose accept queue is full: the kernel drops further SYNs, so a connect
    hangs as it does towards a host that never answers. The fetch ends with the deadline, not
    with a refusal, and nothing else is waited for."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        try:
            for filler in fillers:  # fill the accept queue (never accepted)
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            with pytest.raises(FetchError, match=r"timed out after 0\.5 s") as raised:
                get(f"http://127.0.0.1:{port}/feed", FetchPolicy(allow_private=True, timeout=0.5))
            assert isinstance(raised.value.__cause__, TimeoutError)
        finally:
            for filler in fillers:
                filler.close()


# ---------------------------------------------------------------------------------------------
# Body limits and decompression


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 200 MB of zeros in about 200 KB of gzip, made here rather than stored (FAULTS 25)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MB)
    parts = [compressor.compress(block) for _ in range(200)]
    parts.append(compressor.flush())
    return b"".join(parts)


def test_fault_25_gzip_bomb_stops_at_the_cap_with_bounded_memory(
    http_server: LoopbackServer, gzip_bomb: bytes
) -> None:
    assert len(gzip_bomb) < 300_000
    http_server.respond("/bomb", body=gzip_bomb, headers={"Content-Encoding": "gzip"})
    policy = FetchPolicy(allow_private=True, max_body=10 * MB)
    tracemalloc.start()
    try:
        with pytest.raises(FetchError, match="limit when decompressed"):
            get(http_server.url("/bomb"), policy)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * MB, f"peak {peak / MB:.0f} MB while inflating a 200 MB bomb"


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate-zlib", "deflate-raw"])
def test_compressed_bodies_are_inflated(http_server: LoopbackServer, encoding: str) -> None:
    payload = SMALL_FEED * 50
    if encoding in ("gzip", "x-gzip"):
        body, header = gzip.compress(payload), encoding
    elif encoding == "deflate-zlib":
        body, header = zlib.compress(payload), "deflate"
    else:
        raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body, header = raw.compress(payload) + raw.flush(), "deflate"
    http_server.respond("/packed", body=body, headers={"Content-Encoding": header})
    assert get(http_server.url("/packed")).body == payload


def test_concatenated_gzip_members_are_all_read(http_server: LoopbackServer) -> None:
    body = gzip.compress(b"<rss>") + gzip.compress(b"</rss>")
    http_server.respond("/members", body=body, headers={"Content-Encoding": "gzip"})
    assert get(http_server.url("/members")).body == b"<rss></rss>"


def test_unknown_content_encoding_is_refused(http_server: LoopbackServer) -> None:
    http_server.respond("/br", body=b"\x1b\x00", headers={"Content-Encoding": "br"})
    with pytest.raises(FetchError, match="unsupported Content-Encoding"):
        get(http_server.url("/br"))


def test_corrupt_gzip_is_a_fetch_error(http_server: LoopbackServer) -> None:
    http_server.respond("/junk", body=b"\x1f\x8b not gzip", headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match="corrupt compressed body"):
        get(http_server.url("/junk"))


def test_fault_26_declared_length_over_the_cap_is_refused_before_reading(
    http_server: LoopbackServer,
) -> None:
    # The server sends 1 KB of a declared 20 MB, then waits: only the header can have decided
    # (reading on would have ended at the deadline, "timed out").
    with pytest.raises(FetchError, match="body of 20000000 bytes exceeds"):
        get(http_server.url("/lying-length?length=20000000"), FetchPolicy(allow_private=True))


def test_fault_26_undeclared_length_over_the_cap_is_stopped_while_streaming(
    http_server: LoopbackServer,
) -> None:
    policy = FetchPolicy(allow_private=True, max_body=MB)
    with pytest.raises(FetchError, match=f"exceeds the {MB}-byte limit"):
        get(http_server.url(f"/stream?size={MB + 1}"), policy)
    assert len(get(http_server.url(f"/stream?size={MB}"), policy).body or b"") == MB


# ---------------------------------------------------------------------------------------------
# Local files


def test_fetch_local_reads_relative_to_the_base_dir(tmp_path: Path) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "a.xml").write_bytes(SMALL_FEED)
    result = fetch_local("feeds/a.xml", tmp_path, 1000)
    assert (result.status, result.body) == (200, SMALL_FEED)
    assert result.url == str(tmp_path / "feeds" / "a.xml")
    assert result.last_modified is not None


def test_fetch_local_errors(tmp_path: Path) -> None:
    (tmp_path / "big.xml").write_bytes(b"x" * 101)
    with pytest.raises(FetchError, match="no such file"):
        fetch_local("missing.xml", tmp_path, 100)
    with pytest.raises(FetchError, match="exceed the 100-byte limit"):
        fetch_local("big.xml", tmp_path, 100)
    with pytest.raises(FetchError, match="directory"):
        fetch_local(".", tmp_path, 100)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fetch_local_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(FetchError, match="not a regular file"):
        fetch_local("pipe", tmp_path, 100)


# ---------------------------------------------------------------------------------------------
# Connection slots per host (virtual time: the server takes 15 s a request, nobody waits for real)

SLOW_SECONDS = 15.0


async def serve_slowly(requests: list[tuple[str, float]]) -> tuple[web.AppRunner, int]:
    """A server on this loop that answers each request after SLOW_SECONDS, recording when it
    arrived (loop time)."""

    async def slow(request: web.Request) -> web.Response:
        requests.append((request.path, asyncio.get_running_loop().time()))
        await asyncio.sleep(SLOW_SECONDS)
        return web.Response(body=SMALL_FEED, content_type="application/rss+xml")

    app = web.Application()
    app.router.add_get("/{name}", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def fetch_three(policy: FetchPolicy) -> tuple[list[Any], list[tuple[str, float]], float]:
    requests: list[tuple[str, float]] = []
    runner, port = await serve_slowly(requests)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with open_session(policy, limit_per_host=1) as session:
            results = await asyncio.gather(
                *(
                    fetch(f"http://127.0.0.1:{port}/feed{n}", policy=policy, session=session)
                    for n in range(3)
                ),
                return_exceptions=True,
            )
    finally:
        await runner.cleanup()
    return results, [(path, at - started) for path, at in requests], loop.time() - started


def test_fault_72_waiting_for_a_host_slot_is_not_part_of_the_deadline() -> None:
    """One connection to the host at a time, 15 s a request, a 20 s deadline: the second and third
    fetches wait 15 and 30 s for the connection, and are not timed out for it."""
    policy = FetchPolicy(allow_private=True, timeout=20)
    with VirtualTime(datetime(2026, 3, 1, tzinfo=UTC)) as clock:
        results, requests, took = clock.run(fetch_three(policy))
    assert [type(r).__name__ for r in results] == ["FetchResult"] * 3
    assert [round(at) for _, at in requests] == [0, 15, 30]  # one at a time
    assert round(took) == 45


def test_a_host_that_stays_busy_is_not_asked_and_says_so() -> None:
    policy = FetchPolicy(allow_private=True, timeout=20, slot_wait=20)
    with VirtualTime(datetime(2026, 3, 1, tzinfo=UTC)) as clock:
        results, requests, _ = clock.run(fetch_three(policy))
    first, second, third = results
    assert isinstance(first, FetchResult) and isinstance(second, FetchResult)
    assert isinstance(third, HostBusyError)
    assert (
        third.reason
        == "not sent: waited 20 s for a free connection to 127.0.0.1 (fetch.per_host: 1)"
    )
    assert sorted(path for path, _ in requests) == ["/feed0", "/feed1"]  # never reached the server


def test_the_policy_of_a_config_is_its_fetch_section_and_default_timeout() -> None:
    settings = parse_config(
        "defaults: {timeout: 7s}\n"
        "fetch: {max_body: 2048, user_agent: 'agent/3.0', allow_private: true,\n"
        "        allow_networks: ['10.1.0.0/16'], proxy: 'http://proxy.example:3128'}\n",
        "config.yaml",
        {},
    )
    policy = FetchPolicy.from_settings(settings)
    assert (policy.timeout, policy.max_body, policy.user_agent) == (7.0, 2048, "agent/3.0")
    assert policy.allow_private and policy.allowed_networks == ("10.1.0.0/16",)
    assert policy.proxy == "http://proxy.example:3128"


def test_a_url_allowed_once_is_refused_under_a_stricter_policy(http_server: LoopbackServer) -> None:
    """Checks of a URL fetched again and again are kept per policy: a loopback URL fetched with
    `allow_private` is still refused, before connecting, under a policy without it."""
    url = http_server.url("/etag")
    assert get(url).status == 200
    for _ in range(2):
        with pytest.raises(UnsafeURLError, match="is not public"):
            get(url, FetchPolicy())
    assert get(url).status == 200
    assert len(http_server.requests) == 2


def test_conditional_gets_of_one_host_reuse_one_connection(http_server: LoopbackServer) -> None:
    """Polls of one host's feeds go over one kept-alive TCP connection, not one each."""
    peers: list[int] = []

    async def not_modified(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return web.Response(status=304, headers={"ETag": ETAG})

    for n in range(3):
        http_server.route(f"/feed{n}", not_modified)

    async def poll_twenty() -> list[FetchResult]:
        async with open_session(LOCAL) as session:
            return [
                await fetch(
                    http_server.url(f"/feed{n % 3}"), policy=LOCAL, session=session, etag=ETAG
                )
                for n in range(20)
            ]

    assert all(result.not_modified for result in run(poll_twenty()))
    assert len(peers) == 20 and len(set(peers)) == 1
