"""The garbage collector is held while watchlists are loaded and compiled, then restored."""

from __future__ import annotations

import gc
import weakref

from monitor.core.collector import (
    FREEZE_ABOVE,
    SERVICE_YOUNG_THRESHOLD,
    collect_less_often,
    collector_paused,
    freeze_survivors,
)


def test_the_collector_is_held_in_the_block_and_restored_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        gc.enable()


def test_a_large_build_is_frozen_and_a_small_one_is_not() -> None:
    gc.collect()
    before = gc.get_freeze_count()
    with collector_paused():
        small = [[i] for i in range(1_000)]
    assert gc.get_freeze_count() == before
    try:
        with collector_paused():
            large = [[i] for i in range(FREEZE_ABOVE + 1_000)]
        assert gc.get_freeze_count() >= before + FREEZE_ABOVE
    finally:
        gc.unfreeze()
    assert len(small) + len(large) > FREEZE_ABOVE


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_what_is_alive_at_the_start_is_frozen_and_garbage_is_collected_first() -> None:
    """`monitor run` freezes what it built to start, and not the garbage made meanwhile: a
    frozen cycle would never be freed."""
    gc.collect()
    before = gc.get_freeze_count()
    alive = [[i] for i in range(1_000)]
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    try:
        frozen = freeze_survivors()
        assert gone() is None  # collected, not frozen
        assert frozen == gc.get_freeze_count() >= before + len(alive)
        collections = gc.get_stats()[2]["collections"]
        gc.collect()
        assert gc.get_stats()[2]["collections"] == collections + 1
        assert gc.get_freeze_count() == frozen  # a full collection leaves them frozen
    finally:
        gc.unfreeze()


def test_the_service_collects_the_young_generation_less_often() -> None:
    """`monitor run`'s threshold: 5,000 objects kept alive make no young collection (with
    Python's 700, about seven); the older generations keep theirs."""
    default = gc.get_threshold()

    def young_collections(count: int) -> int:
        gc.collect()
        before = gc.get_stats()[0]["collections"]
        kept = [[i] for i in range(count)]
        made = gc.get_stats()[0]["collections"] - before
        del kept
        return made

    try:
        gc.set_threshold(700, *default[1:])
        assert young_collections(5_000) >= 5
        collect_less_often()
        assert gc.get_threshold() == (SERVICE_YOUNG_THRESHOLD, *default[1:])
        assert young_collections(5_000) == 0
    finally:
        gc.set_threshold(*default)
