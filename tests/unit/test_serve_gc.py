"""``radbridge run`` tunes the cyclic collector once the engine has started (issue 15)."""

from __future__ import annotations

import gc

from engine.cli.serve import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_what_start_up_made_and_sets_the_server_thresholds() -> None:
    before = gc.get_threshold()
    made_at_start_up = [[i] for i in range(1000)]  # tracked containers, alive across the call
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() >= len(made_at_start_up)
        # A frozen object is no longer among those a collection looks at.
        assert not any(o is made_at_start_up for o in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
