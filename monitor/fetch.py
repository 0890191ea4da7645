"""Fetch one feed or page over HTTP(S), or read a local file: bytes + validators, or a FetchError.

Guarantees (SPEC §9, FAULTS 17–36):

* Only ``http``/``https`` URLs without credentials, at most 2,048 characters. Nothing else is opened
  by `fetch`; a local file is read only by `fetch_local`, which the caller chooses on purpose.
* No connection to a loopback, private, link-local, shared (CGNAT), multicast or reserved address
  unless the policy allows it. Literal IPs are checked before the request; names by the resolver
  that the connector itself uses, so the address checked is the address connected to, and a second,
  different DNS answer (rebinding) is checked on its own.
* Redirects are followed here, at most ``max_redirects``, each hop checked like the first URL.
* One total deadline per fetch: connect, headers, every redirect and the whole body. Waiting for one
  of the host's `per_host` connection slots is not part of it (a fetch that never reached its
  server has not timed out); that wait has its own bound, `FetchPolicy.slot_wait` (`HostBusyError`).
* The body cap applies to decompressed bytes, with memory bounded by the cap (a gzip bomb stops).

Not done here: parsing, retries, deciding when to poll again. The result (or the error) carries the
status and ``retry_after`` for the caller to decide.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import re
import socket
import stat
import weakref
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from monitor.errors import FetchError, UnsafeURLError

if TYPE_CHECKING:
    from monitor.config import Settings

__all__ = [
    "DEFAULT_USER_AGENT",
    "MAX_URL_LENGTH",
    "FetchPolicy",
    "FetchResult",
    "GuardedResolver",
    "HTTPStatusError",
    "HostBusyError",
    "RetryLaterError",
    "check_url",
    "fetch",
    "fetch_local",
    "is_public_address",
    "open_session",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "news-monitor/1.0 (+https://example.org/about-this-bot)"
MAX_URL_LENGTH = 2048
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9, "
    "text/xml;q=0.9, text/html;q=0.8, */*;q=0.5"
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CHUNK_SIZE = 64 * 1024
_ALLOWED_SCHEMES = frozenset({"http", "https"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PERMANENT_REDIRECT_STATUSES = frozenset({301, 308})
_RETRY_LATER_STATUSES = frozenset({429, 503})
# Whitespace, controls and backslashes are read differently by different URL parsers
# (`http://INTERNAL\@PUBLIC/`, FAULTS 35), so a URL holding any of them is refused, not "fixed".
_AMBIGUOUS_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")
# Ports that browsers refuse because other protocols listen there (WHATWG Fetch, "bad port").
_BAD_PORTS = frozenset({
    1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102,
    103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465,
    512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993,
    995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668,
    6669, 6679, 6697, 10080,
})  # fmt: skip
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
# What a refused address's message tells the operator to do: the config settings that allow it.
ALLOW_HINT = (
    "set allow_private: true on the feed (or fetch.allow_private), or add its range to "
    "fetch.allow_networks"
)


# ---------------------------------------------------------------------------------------------
# Policy, result, errors


@dataclass(frozen=True)
class FetchPolicy:
    """How one fetch may behave. The defaults are SPEC §2's `fetch:` section.

    `allowed_networks` lists CIDR ranges reachable even with `allow_private` off: one intranet range
    instead of every private address. `slot_wait` bounds the wait for a free connection to a busy
    host, which `timeout` does not count.
    """

    timeout: float = 20.0
    max_body: int = 10 * 1024 * 1024
    user_agent: str = DEFAULT_USER_AGENT
    allow_private: bool = False
    max_redirects: int = 5
    proxy: str | None = None
    allowed_networks: tuple[str, ...] = ()
    slot_wait: float = 60.0
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout!r}")
        if not self.slot_wait > 0:
            raise ValueError(f"slot_wait must be positive, not {self.slot_wait!r}")
        if self.max_body <= 0:
            raise ValueError(f"max_body must be positive, not {self.max_body!r}")
        if self.max_redirects < 0:
            raise ValueError(f"max_redirects must not be negative, not {self.max_redirects!r}")
        if self.proxy is not None and URL(self.proxy).scheme not in _ALLOWED_SCHEMES:
            raise ValueError(f"proxy must be an http:// or https:// URL, not {self.proxy!r}")
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)
        object.__setattr__(self, "_networks", networks)

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        """The policy of the config's `fetch:` section and `defaults.timeout`, as the service
        fetches feeds and `monitor match` fetches URLs."""
        return cls(
            timeout=settings.defaults.timeout.total_seconds(),
            max_body=settings.fetch.max_body,
            user_agent=settings.fetch.user_agent,
            allow_private=settings.fetch.allow_private,
            allowed_networks=settings.fetch.allow_networks,
            proxy=settings.fetch.proxy,
        )

    def allows_address(self, address: IPAddress) -> bool:
        """Whether a connection to `address` is permitted under this policy."""
        if self.allow_private or is_public_address(address):
            return True
        plain = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
        return any(a in n for n in self._networks for a in (address, plain) if a is not None)


@dataclass(frozen=True)
class FetchResult:
    """What a fetch produced. `body` is None on 304 Not Modified; validators are kept across a 304.

    `url` is where the body came from after redirects. `permanent_redirect` is that URL when every
    redirect on the way was permanent (301/308): the URL the caller may store instead (FAULTS 21).
    """

    url: str
    status: int
    body: bytes | None
    headers: Mapping[str, str]
    etag: str | None = None
    last_modified: str | None = None
    retry_after: float | None = None
    permanent_redirect: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == HTTPStatus.NOT_MODIFIED


class HTTPStatusError(FetchError):
    """The server answered with an error status (or a redirect without a target)."""

    def __init__(self, url: str, status: int, retry_after: float | None = None) -> None:
        self.status = status
        self.retry_after = retry_after
        try:
            phrase = f" {HTTPStatus(status).phrase}"
        except ValueError:
            phrase = ""
        later = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        super().__init__(url, f"HTTP {status}{phrase}{later}")


class HostBusyError(FetchError):
    """Not fetched: every connection slot to the host stayed busy for `FetchPolicy.slot_wait`.
    Nothing was sent to the server; the feed is not broken, only queued behind others."""


class RetryLaterError(HTTPStatusError):
    """429 Too Many Requests or 503 Service Unavailable: the feed is not broken, ask again later.

    `retry_after` is the server's Retry-After in seconds, or None when it gave none (FAULTS 23).
    """


# ---------------------------------------------------------------------------------------------
# Addresses and URLs


def is_public_address(address: IPAddress) -> bool:
    """True for a globally routable unicast address; False for loopback, private, link-local, CGNAT,
    unspecified, multicast, reserved and documentation ranges, also when wrapped in IPv6
    (`::ffff:127.0.0.1`, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_url(url: str, policy: FetchPolicy) -> URL:
    """Parse `url` and refuse it unless it may be fetched under `policy` (FAULTS 29–35).

    Refused: schemes other than http/https, credentials, more than 2,048 characters, whitespace or
    backslashes, ports other protocols use, legacy numeric IPv4 forms (`2130706433`, `127.1`,
    `0x7f.1`), and literal addresses the policy does not allow. Host names are checked later, by
    the resolver, on the addresses actually connected to.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURLError(url[:80] + "…", f"URL longer than {MAX_URL_LENGTH} characters")
    if _AMBIGUOUS_URL_CHARS.search(url):
        raise UnsafeURLError(url, "URL contains whitespace, a control character or a backslash")
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise UnsafeURLError(url, f"not a valid URL ({exc})") from exc
    scheme = parsed.scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        shown = f"scheme {scheme!r}" if scheme else "a URL without a scheme"
        raise UnsafeURLError(url, f"{shown} is not allowed; only http and https")
    if parsed.user is not None or parsed.password is not None:
        raise UnsafeURLError(url, "credentials in the URL are not allowed")
    host = parsed.raw_host
    if not host:
        raise UnsafeURLError(url, "URL has no host")
    if parsed.explicit_port is not None and parsed.explicit_port in _BAD_PORTS:
        raise UnsafeURLError(url, f"port {parsed.explicit_port} is reserved for other protocols")
    address = _literal_address(url, host)
    if address is not None and not policy.allows_address(address):
        raise UnsafeURLError(url, f"address {address} is not public; {ALLOW_HINT}")
    return parsed


@functools.lru_cache(maxsize=4096)
def _checked_url(url: str, policy: FetchPolicy) -> URL:
    """`check_url` of a URL fetched again and again (every poll of a feed): a pure function of
    the URL and the policy, so only its refusals are worked out anew (they are not cached)."""
    return check_url(url, policy)


def _literal_address(url: str, host: str) -> IPAddress | None:
    """The IP address a URL host names literally, None for a host name; refuses ambiguous forms."""
    if ":" in host:  # yarl keeps IPv6 literals without brackets
        try:
            return ipaddress.IPv6Address(host.replace("%25", "%"))
        except ValueError as exc:
            raise UnsafeURLError(url, "invalid IPv6 address") from exc
    last_label = host.removesuffix(".").rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.fullmatch(last_label):
        if host.endswith(".") or not _CANONICAL_IPV4.fullmatch(host):
            raise UnsafeURLError(url, f"non-canonical IPv4 address {host!r}")
        return ipaddress.IPv4Address(host)
    if not _HOSTNAME.fullmatch(host):
        raise UnsafeURLError(url, f"invalid host name {host!r}")
    return None


class _RefusedAddress(UnsafeURLError):
    """Raised by the resolver, which knows the host but not the URL; `fetch` re-raises it as an
    UnsafeURLError naming the URL."""


class GuardedResolver(AbstractResolver):
    """A resolver that refuses a host name if ANY address it resolves to is not allowed (FAULTS 31).

    The connector connects only to addresses returned from here, so every answer it uses is checked,
    including a rebinding second answer (FAULTS 32). `inner` does the lookup (aiohttp's threaded
    resolver by default); inject a stub to simulate DNS in tests. Host names in `trusted_hosts`
    (the configured proxy) are not checked.
    """

    def __init__(
        self,
        policy: FetchPolicy,
        inner: AbstractResolver | None = None,
        trusted_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self._policy = policy
        self._inner = inner
        self._trusted_hosts = frozenset(h.lower().rstrip(".") for h in trusted_hosts)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = aiohttp.ThreadedResolver()
        answers = await self._inner.resolve(host, port, family)
        if host.lower().rstrip(".") in self._trusted_hosts:
            return answers
        for answer in answers:
            address = ipaddress.ip_address(answer["host"])
            if not self._policy.allows_address(address):
                raise _RefusedAddress(
                    host, f"host {host} resolves to non-public address {address}; {ALLOW_HINT}"
                )
        return answers

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


# ---------------------------------------------------------------------------------------------
# Sessions


class _HostSlots:
    """At most `per_host` requests at once to one (scheme, host, port), in arrival order.

    Kept here rather than by aiohttp's connector (`limit_per_host`), because the connector waits
    for a slot inside the request, and so inside the fetch's deadline (FAULTS 72)."""

    def __init__(self, per_host: int) -> None:
        if per_host < 1:
            raise ValueError(f"per_host must be at least 1, not {per_host!r}")
        self.per_host = per_host
        self._hosts: dict[tuple[str, str, int | None], tuple[asyncio.Semaphore, list[int]]] = {}

    def slot(self, url: URL, wait: float) -> _HostSlot:
        """Hold one of the host's slots (`async with`); HostBusyError after `wait` seconds
        without one."""
        return _HostSlot(self, url, wait)


class _HostSlot:
    """One use of a host's slot. A class rather than a generator-based context manager: it is
    entered for every request, and a free slot is taken without arming a timeout."""

    __slots__ = ("_hosts", "_key", "_semaphore", "_url", "_users", "_wait")

    def __init__(self, hosts: _HostSlots, url: URL, wait: float) -> None:
        self._hosts = hosts
        self._url = url
        self._wait = wait
        self._key = (url.scheme, (url.raw_host or "").lower(), url.port)

    async def __aenter__(self) -> None:
        hosts = self._hosts
        entry = hosts._hosts.get(self._key)
        if entry is None:
            entry = hosts._hosts[self._key] = (asyncio.Semaphore(hosts.per_host), [0])
        self._semaphore, self._users = entry
        self._users[0] += 1
        try:
            if self._semaphore.locked():  # others hold or wait for every slot: queue behind them
                async with asyncio.timeout(self._wait):
                    await self._semaphore.acquire()
            else:
                await self._semaphore.acquire()  # free: returns at once, nothing to time out
        except TimeoutError:
            self._leave()
            raise HostBusyError(
                str(self._url),
                f"not sent: waited {self._wait:g} s for a free connection to "
                f"{self._url.raw_host} (fetch.per_host: {self._hosts.per_host})",
            ) from None
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._semaphore.release()
        self._leave()

    def _leave(self) -> None:
        self._users[0] -= 1
        if not self._users[0]:  # nobody holds or waits: forget the host
            del self._hosts._hosts[self._key]


class _Deadline:
    """The fetch's total deadline, stopped while the fetch waits for a connection slot."""

    def __init__(self, timeout: asyncio.Timeout, seconds: float) -> None:
        self._timeout = timeout
        self._left = seconds
        self._since: float | None = None

    def run(self) -> None:
        self._since = asyncio.get_running_loop().time()
        self._timeout.reschedule(self._since + self._left)

    def pause(self) -> None:
        if self._since is not None:
            self._left -= asyncio.get_running_loop().time() - self._since
            self._since = None
        self._timeout.reschedule(None)


@dataclass(frozen=True)
class _SessionGuard:
    rules: tuple[object, ...]
    resolver: GuardedResolver
    slots: _HostSlots


# Which address rules each session's connector enforces; `fetch` refuses a session built otherwise.
_SESSION_GUARDS: weakref.WeakKeyDictionary[aiohttp.ClientSession, _SessionGuard] = (
    weakref.WeakKeyDictionary()
)


def _address_rules(policy: FetchPolicy) -> tuple[object, ...]:
    return (policy.allow_private, policy.allowed_networks, policy.proxy)


def open_session(
    policy: FetchPolicy,
    *,
    resolver: AbstractResolver | None = None,
    limit_per_host: int = 2,
) -> aiohttp.ClientSession:
    """An HTTP session for `fetch` calls with `policy` (or any policy with the same address rules).

    Call inside a running event loop and close it (`async with open_session(...) as session:`).
    Environment proxy variables are ignored (FAULTS 36), cookies are not kept, and responses are not
    decompressed by aiohttp: `fetch` inflates them itself under the body cap. `fetch` lets at most
    `limit_per_host` requests of this session talk to one host at once.
    """
    trusted = frozenset({URL(policy.proxy).host or ""}) if policy.proxy else frozenset[str]()
    guard = GuardedResolver(policy, resolver, trusted)
    slots = _HostSlots(limit_per_host)
    # No limits in the connector: `fetch` takes a host slot before the request, outside its deadline.
    connector = aiohttp.TCPConnector(resolver=guard, use_dns_cache=False, limit=0, limit_per_host=0)
    session = aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),  # `fetch` sets one deadline for everything
        headers={
            "User-Agent": policy.user_agent,
            "Accept": ACCEPT,
            "Accept-Encoding": "gzip, deflate",
        },
    )
    _SESSION_GUARDS[session] = _SessionGuard(_address_rules(policy), guard, slots)
    return session


# ---------------------------------------------------------------------------------------------
# Fetching


async def fetch(
    url: str,
    *,
    policy: FetchPolicy,
    session: aiohttp.ClientSession | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
) -> FetchResult:
    """GET `url` under `policy`, conditionally when validators are given.

    Returns the result for 2xx and 304. Raises UnsafeURLError for a refused URL or address (at any
    redirect hop, before connecting), RetryLaterError for 429/503, HTTPStatusError for other error
    statuses, HostBusyError when no connection to the host came free in time, and FetchError for
    timeouts, oversized bodies, too many redirects and network errors. The deadline
    (`policy.timeout`) runs only while a request is under way, not while waiting for a slot.
    `session` must come from `open_session` with the same address rules; without one, a session is
    opened and closed for this fetch.
    """
    start = _checked_url(url, policy)
    if session is None:
        async with open_session(policy) as own_session:
            return await fetch(
                url, policy=policy, session=own_session, etag=etag, last_modified=last_modified
            )
    guard = _SESSION_GUARDS.get(session)
    if guard is None or guard.rules != _address_rules(policy):
        raise ValueError("session not opened by open_session() with this policy's address rules")
    try:
        async with asyncio.timeout(None) as timeout:
            deadline = _Deadline(timeout, policy.timeout)
            return await _follow_redirects(
                session, guard, start, policy, etag, last_modified, deadline
            )
    except _RefusedAddress as exc:
        raise UnsafeURLError(url, exc.reason) from exc
    except FetchError:
        raise
    except TimeoutError as exc:
        raise FetchError(url, f"timed out after {policy.timeout:g} s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        refusal = _find_refusal(exc)
        if refusal is not None:
            raise UnsafeURLError(url, refusal.reason) from exc
        raise FetchError(url, _describe(exc)) from exc


async def _follow_redirects(
    session: aiohttp.ClientSession,
    guard: _SessionGuard,
    url: URL,
    policy: FetchPolicy,
    etag: str | None,
    last_modified: str | None,
    deadline: _Deadline,
) -> FetchResult:
    headers: dict[str, str] = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    redirects = 0
    all_permanent = True
    while True:
        permanent = str(url) if redirects and all_permanent else None
        deadline.pause()
        async with guard.slots.slot(url, policy.slot_wait):
            deadline.run()
            outcome = await _one_hop(
                session, guard, url, policy, headers, etag, last_modified, permanent
            )
        if isinstance(outcome, FetchResult):
            return outcome
        status, location = outcome
        if redirects >= policy.max_redirects:
            raise FetchError(str(url), f"more than {policy.max_redirects} redirects")
        target = _redirect_target(url, location)
        try:
            url = check_url(str(target), policy)
        except UnsafeURLError as exc:
            # Named as the hop that redirected: the refused target is never a result
            # a caller could store (FAULTS 33).
            raise UnsafeURLError(str(url), f"redirect refused: {exc}") from exc
        redirects += 1
        all_permanent = all_permanent and status in _PERMANENT_REDIRECT_STATUSES
        log.debug("fetch.redirect status=%d to=%s", status, url)


async def _one_hop(
    session: aiohttp.ClientSession,
    guard: _SessionGuard,
    url: URL,
    policy: FetchPolicy,
    headers: Mapping[str, str],
    etag: str | None,
    last_modified: str | None,
    permanent: str | None,
) -> FetchResult | tuple[int, str]:
    """One request, holding a host slot: its result, or (status, Location) of a redirect."""
    host = url.raw_host or ""
    if policy.proxy is not None and _literal_address(str(url), host) is None:
        # Through a proxy the proxy resolves the name, so check it here first (best effort: a
        # proxy that must not reach internal hosts has to enforce that itself).
        await guard.resolver.resolve(host, url.port or 0, socket.AF_UNSPEC)
    async with session.get(
        url, headers=headers, allow_redirects=False, proxy=policy.proxy
    ) as response:
        location = response.headers.get("Location")
        if response.status in _REDIRECT_STATUSES and location:
            return response.status, location
        return await _finish(response, url, policy, etag, last_modified, permanent)


def _redirect_target(current: URL, location: str) -> URL:
    try:
        return current.join(URL(location))
    except ValueError as exc:
        raise FetchError(str(current), f"invalid redirect target {location[:200]!r}") from exc


async def _finish(
    response: aiohttp.ClientResponse,
    url: URL,
    policy: FetchPolicy,
    etag: str | None,
    last_modified: str | None,
    permanent_redirect: str | None,
) -> FetchResult:
    status = response.status
    retry_after_header = response.headers.get("Retry-After")
    retry_after = (
        parse_retry_after(retry_after_header, _server_now(response))
        if retry_after_header is not None
        else None
    )
    if status in _RETRY_LATER_STATUSES:
        raise RetryLaterError(str(url), status, retry_after)
    if status == HTTPStatus.NOT_MODIFIED:
        # A 304 may omit the validators; the ones we sent still describe what we have (FAULTS 22).
        return FetchResult(
            url=str(url),
            status=status,
            body=None,
            headers=response.headers,
            etag=response.headers.get("ETag", etag),
            last_modified=response.headers.get("Last-Modified", last_modified),
            retry_after=retry_after,
            permanent_redirect=permanent_redirect,
        )
    if not 200 <= status < 300:  # also a 3xx without a Location, and 1xx
        raise HTTPStatusError(str(url), status)
    body = await _read_body(response, str(url), policy.max_body)
    return FetchResult(
        url=str(url),
        status=status,
        body=body,
        headers=response.headers,
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
        retry_after=retry_after,
        permanent_redirect=permanent_redirect,
    )


def _server_now(response: aiohttp.ClientResponse) -> datetime:
    """The server's clock when it sent the response (its Date header), else ours: an HTTP-date
    Retry-After is relative to the server's clock (RFC 9110 §10.2.3)."""
    date = response.headers.get("Date")
    if date:
        try:
            sent = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            pass
        else:
            return sent if sent.tzinfo is not None else sent.replace(tzinfo=UTC)
    return datetime.now(UTC)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None if absent or
    unreadable. A date in the past gives 0."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,12}", value):
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


async def _read_body(response: aiohttp.ClientResponse, url: str, max_body: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > max_body:
        # Also for a compressed body: it would inflate to at least about its own size.
        raise FetchError(url, f"body of {declared} bytes exceeds the {max_body}-byte limit")
    decoder = _BoundedDecoder(response.headers.get("Content-Encoding", ""), max_body, url)
    received = 0
    async for chunk in response.content.iter_chunked(_CHUNK_SIZE):
        received += len(chunk)
        if received > max_body:
            raise FetchError(url, f"body exceeds the {max_body}-byte limit")
        decoder.feed(chunk)
    return decoder.finish()


class _BoundedDecoder:
    """Inflates gzip/deflate into at most `limit` bytes and raises as soon as the output would pass
    it, so memory stays near the limit whatever the compression ratio (FAULTS 25: a decoder that
    inflates whole chunks overshot to 67 MB before a 15 MB check fired)."""

    def __init__(self, content_encoding: str, limit: int, url: str) -> None:
        self._limit = limit
        self._url = url
        self._parts: list[bytes] = []
        self._size = 0
        self._inflater: zlib._Decompress | None = None
        encoding = content_encoding.strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise FetchError(url, f"unsupported Content-Encoding {content_encoding!r}")
        self._encoding = "gzip" if encoding == "x-gzip" else encoding or "identity"

    def feed(self, data: bytes) -> None:
        if self._encoding == "identity":
            self._append(data)
            return
        try:
            while data:
                if self._inflater is None:
                    self._inflater = zlib.decompressobj(self._window_bits(data))
                inflater = self._inflater
                # max_length keeps memory bounded: never inflate more than the room left + 1.
                self._append(inflater.decompress(data, self._limit - self._size + 1))
                data = inflater.unconsumed_tail
                if inflater.eof:
                    # Another gzip member may follow (concatenated gzip is valid); the zero
                    # padding some servers append is not one.
                    data = inflater.unused_data.lstrip(b"\0")
                    self._inflater = None
        except zlib.error as exc:
            raise FetchError(self._url, f"corrupt compressed body ({exc})") from exc

    def _window_bits(self, data: bytes) -> int:
        if self._encoding == "gzip":
            return 16 + zlib.MAX_WBITS
        # "deflate" is sent both zlib-wrapped (as RFC 9110 says) and raw; the header tells which.
        zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS

    def _append(self, data: bytes) -> None:
        if not data:
            return
        self._size += len(data)
        if self._size > self._limit:
            raise FetchError(
                self._url, f"body exceeds the {self._limit}-byte limit when decompressed"
            )
        self._parts.append(data)

    def finish(self) -> bytes:
        """The whole decoded body. A compressed stream cut short keeps what was decoded: the feed
        parser keeps the items before the cut (FAULTS 5)."""
        if self._inflater is not None:
            try:
                # All input is consumed, so what is left is at most part of one block: small.
                self._append(self._inflater.flush())
            except zlib.error as exc:
                raise FetchError(self._url, f"corrupt compressed body ({exc})") from exc
        return b"".join(self._parts)


def _find_refusal(exc: BaseException) -> _RefusedAddress | None:
    """The resolver's refusal if aiohttp wrapped it in one of its own errors."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _RefusedAddress):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not accepted ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error ({exc})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"body ended early or is malformed ({exc})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Local files


def fetch_local(
    path: str | os.PathLike[str], base_dir: str | os.PathLike[str], max_body: int
) -> FetchResult:
    """Read a local feed or text file, `path` relative to `base_dir` (or absolute), at most
    `max_body` bytes. Only regular files are read: a FIFO or device would block or never end."""
    full = Path(base_dir, path)
    name = str(path)
    try:
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise FetchError(name, "no such file") from exc
    except IsADirectoryError as exc:
        raise FetchError(name, "is a directory, not a file") from exc
    except PermissionError as exc:
        raise FetchError(name, "permission denied") from exc
    except OSError as exc:
        raise FetchError(name, exc.strerror or str(exc)) from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FetchError(name, "is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise FetchError(name, "not a regular file")
        if info.st_size > max_body:
            raise FetchError(name, f"{info.st_size} bytes exceed the {max_body}-byte limit")
        handle = open(fd, "rb", closefd=True)  # noqa: SIM115 - closed by the `with` below
    except BaseException:
        os.close(fd)
        raise
    with handle:
        try:
            data = handle.read(max_body + 1)
        except OSError as exc:
            raise FetchError(name, exc.strerror or str(exc)) from exc
    if len(data) > max_body:
        raise FetchError(name, f"file exceeds the {max_body}-byte limit")
    return FetchResult(
        url=str(full),
        status=200,
        body=data,
        headers=CIMultiDictProxy(CIMultiDict()),
        last_modified=formatdate(info.st_mtime, usegmt=True),
    )
