"""Heap memory the process has freed, given back to the system (glibc's malloc; elsewhere a no-op).

A poll's store and parse steps run on worker threads, and glibc gives each thread that allocates
a heap (an arena) of its own. What a poll frees there (item texts, rows, SQLite's pages) stays in
that arena, scattered among what is still in use, and counts as resident until `malloc_trim`
hands the free pages back: with 1,000 feeds polled this was about a fifth of the daemon's resident
memory. So `monitor run` keeps the arenas to `ARENAS` and trims after every `TRIM_EVERY_POLLS`
polls that did work there (not the quiet ones, a 304 or an unchanged body: they free next to
nothing, and a trim takes about a millisecond of the event loop's thread). Python's own small
objects live in its own pools, which neither call touches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

__all__ = ["ARENAS", "TRIM_EVERY_POLLS", "limit_arenas", "trim"]

ARENAS = 2
TRIM_EVERY_POLLS = 50
_M_ARENA_MAX = -8  # mallopt's parameter, from glibc's malloc.h


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
    """At most `count` malloc arenas for the threads started from now on; False if not glibc."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, count))


def trim() -> bool:
    """Give the free pages of every arena back to the system; False if not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
