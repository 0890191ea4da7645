"""Heap memory the process has freed, given back to the system (glibc's malloc; elsewhere a no-op).

A poll's store and parse steps run on worker threads, and glibc gives each thread that allocates
a heap (an arena) of its own. What a poll frees there (item texts, rows, SQLite's pages) stays in
that arena, scattered among what is still in use, and counts as resident until `malloc_trim`
hands the free pages back: with 1,000 feeds polled this was about a fifth of the daemon's resident
memory. So `monitor run` keeps the arenas to `ARENAS` and trims after every `TRIM_EVERY_POLLS`
polls that did work there (not the quiet ones, a 304 or an unchanged body: they free next to
nothing, and a trim takes about a millisecond of the event loop's thread). Python's own small
objects live in its own pools, which neither call touches.

It also fixes malloc's mmap threshold at `MMAP_THRESHOLD`: a block that large grows the heap by a
mapping of its own, unmapped when freed. Left to itself, glibc raises that threshold (and the one
under which the free top of a heap is kept rather than handed back) each time a large mapped
block is freed, up to 32 MB: after the language model's tables were read, a poll's large
buffers stayed in the heaps. With 1,000 feeds and 10,000 watchlists, 297 → 252 MB resident once
every feed was polled.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

__all__ = ["ARENAS", "MMAP_THRESHOLD", "TRIM_EVERY_POLLS", "limit_arenas", "trim"]

ARENAS = 2
TRIM_EVERY_POLLS = 50
MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's default, kept fixed
_M_ARENA_MAX = -8  # mallopt's parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


@functools.cache
def _glibc() -> Any:
    """glibc, or None where malloc is another (musl, macOS): both calls are then no-ops."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):
        return None
    return libc


def limit_arenas(count: int = ARENAS) -> bool:
    """At most `count` malloc arenas for the threads started from now on, and the mmap threshold
    fixed at `MMAP_THRESHOLD`; False if not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, count)) and bool(
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    )


def trim() -> bool:
    """Give the free pages of every arena back to the system; False if not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
