"""The garbage collector is held while watchlists are loaded and compiled, then restored."""

from __future__ import annotations

import gc

from monitor.core.collector import FREEZE_ABOVE, collector_paused


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
