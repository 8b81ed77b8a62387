"""``gc.freeze()`` for the serving workers, and the thaw that model swaps need.

Why: a worker's start-up heap (BentoML, numpy, pandas from the log writer's warm-up, the
models: ~160k container objects) never becomes garbage, yet every full collection walked it,
~100 ms each under load, a stall for every request in flight (see README, *Garbage
collection*). Frozen objects are skipped by the collector; refcounting still frees them. But
a frozen object in a reference cycle is never freed, and a served model is one (its batching
dispatcher calls back into it), so when a hot reload retires a model the heap is thawed,
collected and frozen again: one full collection per model swap.
"""

from __future__ import annotations

import gc


def freeze() -> int:
    """Collect what is garbage now, then freeze the rest; the number of frozen objects."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def refreeze() -> int:
    """Thaw, collect (a retired model's cycles go here) and freeze again."""
    gc.unfreeze()
    return freeze()
