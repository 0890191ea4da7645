"""Near-duplicate stories (SPEC §5): the same wire story with another headline, caption or footer.

Exact copies already share a content hash (`core.dedup`). A near-copy differs in a few words, so it
is found by how much of its text it shares with a story seen recently:

* `fingerprint(body)` — a bottom-k MinHash: the `SIZE` smallest hashes of the body's shingles (runs
  of `SHINGLE` consecutive normalised tokens). The title does not count, since a copy's headline is
  often rewritten. A body of fewer than `MIN_SHINGLES` shingles has no fingerprint: two short texts
  (a one-line brief, a photo caption) can share most of their words and still be different news,
  so they join a story only by their exact hash.
* `similarity(a, b)` — the estimated Jaccard similarity of two bodies' shingle sets, from their
  fingerprints: of the `SIZE` smallest hashes of both together, the share found in both.
* `SAME_STORY` — the similarity from which two bodies are one story. A copy with another headline
  and a caption or footer added keeps most of its shingles (over 0.85), and so does an edited one
  (the corpus's two versions of one BBC story share 0.69); other articles, even on the same
  subject, share little (under 0.3 for every other pair of the corpus's BBC business articles).

The hashes are stable across processes and machines (CRC-32 of each token, mixed per shingle), so
fingerprints can be stored and compared by any replica. Changing how they are made means bumping
`VERSION`, which is stored with them.

Broder's MinHash ("On the resemblance and containment of documents", 1997), in its bottom-k form:
one hash function and the k smallest values estimate what k hash functions do (datasketch's
`MinHash`), at a k-th of the cost.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Sequence
from datetime import timedelta

from monitor.core.text import tokens

VERSION = 1
SIZE = 32  # hashes in a fingerprint
SHINGLE = 3  # tokens per shingle
MIN_SHINGLES = 20
SAME_STORY = 0.6
# How many of a fingerprint's smallest hashes are indexed to find candidate stories: a story at
# SAME_STORY shares one of them with all but (1 - 0.6) ** 8 < 0.1 % of its copies.
INDEXED = 8
# How long a story takes copies: a wire story is reprinted within days.
WINDOW = timedelta(days=3)
# Shingle hashes are below this prime (2**61 - 1), so they fit PostgreSQL's BIGINT.
_PRIME = (1 << 61) - 1
_MIX = (0x9E3779B97F4A7C15 % _PRIME, 0xC2B2AE3D27D4EB4F % _PRIME, 0x165667B19E3779F9 % _PRIME)


def fingerprint(body: str) -> tuple[int, ...]:
    """The body's fingerprint, smallest hash first; () for a body too short to have one."""
    words = tokens(body)
    if len(words) - SHINGLE + 1 < MIN_SHINGLES:
        return ()
    crc = [zlib.crc32(word.encode()) for word in words]
    a, b, c = _MIX
    shingles = {
        (x * a + y * b + z * c) % _PRIME for x, y, z in zip(crc, crc[1:], crc[2:], strict=False)
    }
    return tuple(heapq.nsmallest(SIZE, shingles))


def similarity(first: Sequence[int], second: Sequence[int]) -> float:
    """The estimated Jaccard similarity of the two bodies' shingles (0 when either has none)."""
    k = min(len(first), len(second))
    if not k:
        return 0.0
    both = set(first) & set(second)
    smallest = heapq.nsmallest(k, set(first) | set(second))
    return sum(1 for h in smallest if h in both) / k


def same_story(first: Sequence[int], second: Sequence[int]) -> bool:
    return similarity(first, second) >= SAME_STORY


def closest(fingerprint: Sequence[int], stories: Iterable[tuple[int, str | None]]) -> int | None:
    """Of the (story id, stored fingerprint) candidates, the story `fingerprint` is a copy of: the
    most similar at `SAME_STORY` or more (the lower id on a tie), else None."""
    best: tuple[float, int] | None = None
    for story_id, stored in stories:
        other = decode(stored)
        if not other:
            continue
        score = similarity(fingerprint, other)
        if score >= SAME_STORY and (best is None or (score, -story_id) > (best[0], -best[1])):
            best = (score, story_id)
    return best[1] if best else None


def encode(fingerprint: Sequence[int]) -> str:
    """The stored form: `v<VERSION>:` and the hashes, smallest first."""
    return f"v{VERSION}:" + " ".join(map(str, fingerprint))


def decode(stored: str | None) -> tuple[int, ...]:
    """The hashes of a stored fingerprint; () for none, or one made by another version."""
    prefix = f"v{VERSION}:"
    if not stored or not stored.startswith(prefix):
        return ()
    return tuple(map(int, stored[len(prefix) :].split()))
