"""gc.freeze() and hot reload: a model retired by an alias move must still be freed.

A served model is a reference cycle (its batching dispatcher calls back into it), and the
collector never looks at frozen objects, so without the re-freeze every model swap would
leak the old model for the life of the worker.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from spam_serving import heap, live_models
from spam_serving.live_models import ModelRouter
from spam_serving.model_store import write_aliases
from spam_tests.helpers.serving import train_bundle


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, real_sample):
    root = tmp_path_factory.mktemp("heap_bundles")
    return {
        v: {
            "bundle_path": str(train_bundle(real_sample, root / f"v{v}", v, rounds=5)),
            "model_version": v,
        }
        for v in ("1", "2")
    }


def _swap_and_retire(tmp_path, bundles, after_retire) -> tuple[bool, str]:
    """Serve v1, freeze the heap, move both aliases to v2, let v1 retire: (v1 freed?, served)."""
    alias_file = tmp_path / "aliases.json"
    write_aliases(alias_file, {"champion": bundles["1"], "challenger": bundles["1"]})

    async def main() -> tuple[bool, str]:
        router = ModelRouter(
            alias_file, None, 10, 128, poll_interval_s=0.02, after_retire=after_retire
        )
        router.refresh()
        old = weakref.ref(router.models["champion"])
        heap.freeze()
        write_aliases(alias_file, {"champion": bundles["2"], "challenger": bundles["2"]})
        watcher = asyncio.get_running_loop().create_task(router.watch())
        for _ in range(200):  # the swap, then the retirement timer, then after_retire
            await asyncio.sleep(0.02)
            if router.models["champion"].version == "2" and not router._retiring:
                break
        await asyncio.sleep(0.05)
        watcher.cancel()
        served = router.models["champion"].version
        router.models["champion"].close()
        return old() is None, served

    try:
        return asyncio.run(main())
    finally:
        gc.unfreeze()


def test_a_retired_model_is_freed_after_the_refreeze(tmp_path, bundles, monkeypatch):
    monkeypatch.setattr(live_models, "RETIRE_AFTER_S", 0.05)
    freed, served = _swap_and_retire(tmp_path, bundles, heap.refreeze)
    assert served == "2" and freed


def test_without_the_refreeze_the_frozen_model_would_leak(tmp_path, bundles, monkeypatch):
    """Why the service re-freezes: closing and dropping the model is not enough."""
    monkeypatch.setattr(live_models, "RETIRE_AFTER_S", 0.05)
    freed, served = _swap_and_retire(tmp_path, bundles, None)
    assert served == "2" and not freed


def test_refreeze_keeps_the_live_heap_frozen():
    try:
        first = heap.freeze()
        # other threads of this process may free a frozen object meanwhile: near, not equal
        assert first > 10_000 and gc.get_freeze_count() > 0.99 * first
        again = heap.refreeze()
        assert again > 0.9 * first and gc.get_freeze_count() > 0.99 * again
    finally:
        gc.unfreeze()
