"""Item identity and content hash (SPEC §5): which feed item is which, and which texts are the same.

Two keys, both pure functions of the item's fields (no clock, no I/O):

* `item_identity(guid, link, title, text)` — *which item* this is, so a re-poll finds it again:
    1. ``guid:<guid>`` — the feed's guid / Atom id, stripped of surrounding whitespace. It is
       opaque: not lower-cased, not parsed as a URL even when it looks like one.
    2. ``link:<clean_link(link)>`` — when there is no guid: the link without its fragment and
       tracking parameters (`clean_link`).
    3. ``content:<content_hash(title, text)>`` — when there is neither: the same title and text
       give the same key on every poll, so a re-poll creates no duplicate (FAULTS 12).
  The kind prefix keeps a guid that happens to equal some link from colliding with that link.
  The identity is unique per feed, not globally (two feeds may reuse a guid): the store keys items
  by (feed, identity). A guid that changes on every poll makes a new identity each time; the content
  hash then still finds the same story, so no alert repeats (FAULTS 13).
  Values longer than `MAX_IDENTITY_CHARS` are replaced by ``<kind>:sha256:<hex of the value>`` so
  that a hostile 10 MB guid cannot break a unique index (PostgreSQL's B-tree rows top out near
  2.7 kB).

* `content_hash(title, text)` — *what the item says*: ``v1:`` + hex SHA-256 of the normalised title
  and the normalised body. Items from different feeds with the same hash are one story.
  Only the title and the plain-text body count. Not the link, guid, feed, author, dates or HTML
  markup: the same article syndicated by two outlets differs exactly there, and a feed that
  re-renders its HTML or bumps a date has not changed its news.
  "Normalised" is `monitor.core.text.normalize` (SPEC §3: NFKC, case-fold, Arabic diacritics and
  tatweel removed, letter folding, zero-width and bidi marks removed), then every run of whitespace
  becomes one space and the ends are stripped. So whitespace, diacritics, presentation forms and
  letter case do not change the hash; any changed word, digit or punctuation mark does. (Stories
  that differ by more — another headline, a caption — are near-duplicates, found by `core.stories`.)
  Title and body are joined by a newline, which the whitespace rule has removed from both parts,
  so ("a b", "c") and ("a", "b c") hash differently.

Stored values depend on these functions. Changing what either one produces — the fields, the
normalisation, the tracking-parameter list, the separator — means bumping `HASH_VERSION`; the
version is part of every content hash (``v1:``), so old and new hashes never compare equal by
accident and a migration can recompute them. (A new `normalize` rule changes hashes too: the
tests pin known values to catch that.)

Idea from lemon24/reader's `_hash_utils.py` (a small, versioned, canonical hash) and miniflux's
guid → link → content fallback.
"""

from __future__ import annotations

import hashlib
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from monitor.core.text import normalize

__all__ = [
    "HASH_VERSION",
    "MAX_IDENTITY_CHARS",
    "TRACKING_PARAMETERS",
    "TRACKING_PREFIXES",
    "clean_link",
    "content_hash",
    "item_identity",
]

HASH_VERSION: Final = 1
_HASH_PREFIX: Final = f"v{HASH_VERSION}:"

MAX_IDENTITY_CHARS: Final = 512

# Click identifiers and campaign tags that never select content: the same article reached from a
# newsletter, Facebook or an ad carries a different value each time. Compared case-insensitively.
TRACKING_PREFIXES: Final = ("utm_",)  # Google Analytics campaign tags: utm_source, utm_medium …
TRACKING_PARAMETERS: Final = frozenset(
    {
        *("fbclid", "igshid"),  # Facebook, Instagram share
        *("gclid", "dclid", "gbraid", "wbraid"),  # Google Ads
        *("msclkid", "yclid"),  # Microsoft Ads, Yandex
        *("mc_cid", "mc_eid"),  # Mailchimp campaign and subscriber
    }
)
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def clean_link(url: str) -> str:
    """The link as an identity: fragment and tracking parameters gone, scheme and host lower-cased.

    Kept as they are: the path (case matters there), the other query parameters in their order and
    spelling (percent-encoding untouched), user info. A default port (:80 on http, :443 on https)
    is dropped. http and https stay different. A "#!" fragment is kept: on the sites that still use
    it, the hash-bang route *is* the article. Text that does not split as a URL is returned
    stripped, unchanged otherwise.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return url
    scheme = parts.scheme.lower()
    netloc = _clean_netloc(parts.netloc, scheme)
    query = "&".join(p for p in parts.query.split("&") if p and not _is_tracking(p))
    fragment = parts.fragment if parts.fragment.startswith("!") else ""
    return urlunsplit((scheme, netloc, parts.path, query, fragment))


def _clean_netloc(netloc: str, scheme: str) -> str:
    userinfo, at, hostport = netloc.rpartition("@")
    host, port = hostport, ""
    if hostport.startswith("["):  # IPv6 literal: [::1]:8080
        close = hostport.find("]")
        if close != -1 and hostport[close + 1 : close + 2] == ":":
            host, port = hostport[: close + 1], hostport[close + 2 :]
    elif ":" in hostport:
        host, _, port = hostport.rpartition(":")
    if port and port == _DEFAULT_PORTS.get(scheme):
        port = ""
    return f"{userinfo}{at}{host.lower()}{':' + port if port else ''}"


def _is_tracking(pair: str) -> bool:
    name = pair.split("=", 1)[0].lower()
    return name in TRACKING_PARAMETERS or name.startswith(TRACKING_PREFIXES)


def content_hash(title: str, text: str) -> str:
    """``v1:`` + hex SHA-256 of the normalised title and body (see the module docstring)."""
    canonical = f"{_canonical(title)}\n{_canonical(text)}"
    # surrogatepass: a lone surrogate from a broken feed (FAULTS 9) hashes instead of raising.
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return _HASH_PREFIX + digest


def _canonical(text: str) -> str:
    return " ".join(normalize(text).split())


def item_identity(guid: str | None, link: str | None, title: str, text: str) -> str:
    """``guid:…``, else ``link:…`` (cleaned), else ``content:v1:…`` (see the module docstring)."""
    if guid is not None and (stripped := guid.strip()):
        return _bounded("guid", stripped)
    if link is not None and (cleaned := clean_link(link)):
        return _bounded("link", cleaned)
    return "content:" + content_hash(title, text)


def _bounded(kind: str, value: str) -> str:
    if len(value) <= MAX_IDENTITY_CHARS:
        return f"{kind}:{value}"
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{kind}:sha256:{digest}"
