"""Pausing Python's cyclic garbage collector while building many objects that all live on.

Loading and compiling 10,000 watchlists makes about a million objects. None of them is garbage, but
each burst of allocations makes the collector scan the growing heap again: 40–60 % of the time.
Reference counting still frees whatever is dropped meanwhile.

After a large build the objects are moved to the collector's permanent generation (`gc.freeze`),
as pre-forking servers do: otherwise the collector would scan the million objects a few more times
as they age, in the middle of the work that follows (matching articles, polling feeds), and every
full collection of a long-running service would scan them again. Smaller builds (tests, a short
config) leave the collector as it would have been.

`monitor run` freezes whatever is left once it has started (`freeze_survivors`): the libraries it
imported, its config, matcher and engine. Left in the oldest generation, they were all scanned
again by each full collection: in benchmarks/poll.py's process (100 watchlists, about 140,000
objects) one came about every thousand polls of 304s and took 65–95 µs of CPU a poll of that
round; frozen, 1–3 µs.

It also lets the young generation grow ten times larger before it is collected (`collect_less_often`):
with Python's 700 net allocations, the polls in flight (50 at once) crossed that about every 16
polls of 304s, and the young and middle collections took 30–50 µs of CPU a poll; at 7,000 there
were none in 1,000 polls (the polls' objects are freed by reference counting before the count gets
there). What waits for a young collection is cyclic garbage only, at most some thousands of objects.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Objects made in the block above which they are frozen (10,000 watchlists make about a million).
FREEZE_ABOVE = 100_000
# Net allocations between two young collections in `monitor run` (Python's default: 700).
SERVICE_YOUNG_THRESHOLD = 7_000


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector for the block; turn it back on if it was on."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            if gc.get_count()[0] > FREEZE_ABOVE:
                gc.freeze()
            gc.enable()


def freeze_survivors() -> int:
    """Collect the garbage there is now, then move every object still alive to the permanent
    generation, which collections no longer scan; the number frozen. Reference counting still
    frees a frozen object when its last reference goes (only a frozen cycle stays)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def collect_less_often() -> None:
    """Collect the young generation after `SERVICE_YOUNG_THRESHOLD` net allocations rather than
    Python's 700; the older generations' thresholds stay."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(SERVICE_YOUNG_THRESHOLD, middle, old)
