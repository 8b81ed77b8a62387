"""Helper processes that take part of a large batch while the worker does the rest.

Why: parsing, featurizing and explaining is mostly pure Python (~0.6-1 ms per message here)
and the GIL keeps a worker on one core, so a 100-message ``/predict_batch`` at low load took
~100 ms on one worker while the machine's other core idled. Each worker keeps
``batch_helpers`` processes; a batch of at least ``batch_split_min`` messages is cut into
``helpers + 1`` contiguous chunks, the helpers take the first ones and the worker the last,
in parallel (``batch_work.featurize_chunk``); the ONNX call stays in the worker. Helpers run
the same code on the same featurizer and explainer state (read from the bundle, hashes
checked), so every row and explanation is identical to the worker's own (a test holds it).

Helpers start with the first batch large enough to split (that batch and the ones during the
start-up, ~1 s of CPU, run in the worker), so a worker that only ever answers ``/predict``
pays for no helper, and their start-up never competes with a worker's own; they come from a
forkserver (nothing is forked from a threaded worker, and a helper imports only
``batch_work``'s model path, not BentoML). They never fail
a request: a chunk whose helper died or raised is redone in the worker, and the pool is
rebuilt in the background. Under full load the split buys nothing (every core is busy) and
costs the pickling (~1 ms per 50 messages); where CPUs are scarce, ``SPAM_BATCH_HELPERS=0``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING

import anyio
import numpy as np

from spam_serving import metrics
from spam_serving.batch_work import (
    Chunk,
    ChunkModel,
    ModelKey,
    featurize_chunk,
    helper_chunk,
    helper_warm_up,
    init_helper,
)

if TYPE_CHECKING:
    from spam_serving.schemas import MessageIn

logger = logging.getLogger(__name__)
RESTART_AFTER_S = 5.0
"""Pause before a broken pool is rebuilt (a helper crash loop must not eat the CPU)."""
START_TIMEOUT_S = 120.0


class BatchHelpers:
    """A worker's helper processes, and the split of a batch between them and the worker."""

    def __init__(self, helpers: int, split_min: int) -> None:
        self.helpers = max(helpers, 0)
        self.split_min = max(split_min, self.helpers + 1)
        self._pool: ProcessPoolExecutor | None = None
        self._requested = asyncio.Event()
        self._broken = asyncio.Event()
        self._closed = False

    def pids(self) -> list[int]:
        """The helper processes' pids (tests and memory accounting read them)."""
        pool = self._pool
        # the executor keeps its processes by pid (private, stable since Python 3.2)
        return sorted(pool._processes or {}) if pool is not None else []

    def wants(self, n_messages: int) -> bool:
        """Whether a batch of this size is split: helpers up and the batch large enough. The
        first batch large enough asks :meth:`keep_up` to start them."""
        if n_messages < self.split_min or self.helpers == 0:
            return False
        self._requested.set()
        return self._pool is not None

    def _start(self, keys: list[ModelKey]) -> ProcessPoolExecutor:
        """Start the pool and wait until every helper has loaded the served models
        (blocking: runs off the event loop)."""
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["spam_serving.batch_work", "spam_serving.schemas"])
        pool = ProcessPoolExecutor(
            self.helpers, mp_context=context, initializer=init_helper, initargs=(os.getpid(),)
        )
        try:
            warm = [pool.submit(helper_warm_up, keys) for _ in range(self.helpers)]
            for fut in warm:
                fut.result(timeout=START_TIMEOUT_S)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return pool

    async def keep_up(self, keys: Callable[[], list[ModelKey]]) -> None:
        """Start the helpers when the first batch asks for them, and rebuild them whenever
        they break; ``keys()`` names the models served at that moment."""
        if self.helpers == 0:
            return
        await self._requested.wait()
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                pool = await loop.run_in_executor(None, self._start, keys())
            except Exception as exc:
                logger.warning("batch helpers did not start (%r); batches stay in-process", exc)
                metrics.ERRORS.labels("batch_helper").inc()
                await asyncio.sleep(RESTART_AFTER_S)
                continue
            if self._closed:
                pool.shutdown(wait=False, cancel_futures=True)
                return
            self._broken.clear()
            self._pool = pool
            metrics.BATCH_HELPERS_UP.set(self.helpers)
            await self._broken.wait()
            metrics.BATCH_HELPERS_UP.set(0)
            await asyncio.sleep(RESTART_AFTER_S)

    def _retire(self, pool: ProcessPoolExecutor | None) -> None:
        if pool is not None and self._pool is pool:
            self._pool = None
            self._broken.set()
            pool.shutdown(wait=False, cancel_futures=True)

    async def run(
        self,
        key: ModelKey,
        model: ChunkModel,
        messages: Sequence[MessageIn],
        transform: bool,
        top_k: int,
    ) -> Chunk:
        """:func:`batch_work.featurize_chunk` over ``messages`` (with ``model`` if
        ``transform``), split between the helpers and this worker; the result is in message
        order, exactly as if done in one piece."""
        pool = self._pool
        parts = np.array_split(np.arange(len(messages)), self.helpers + 1)
        chunks = [[messages[i] for i in part] for part in parts]
        futures: list[Future | None] = []
        for chunk in chunks[:-1]:
            try:
                futures.append(pool.submit(helper_chunk, key, chunk, transform, top_k))
            except Exception:  # broken or retired since wants() said yes
                futures.append(None)
        local = model if transform else None
        mine = await anyio.to_thread.run_sync(featurize_chunk, local, chunks[-1], top_k)
        results: list[Chunk] = []
        for fut, chunk in zip(futures, chunks, strict=False):
            try:
                if fut is None:
                    raise RuntimeError("helper pool unavailable")
                results.append(await asyncio.wrap_future(fut))
                metrics.BATCH_HELPER_MESSAGES.inc(len(chunk))
            except Exception as exc:
                logger.warning("batch helper failed (%r); its chunk is redone in-process", exc)
                metrics.ERRORS.labels("batch_helper").inc()
                self._retire(pool)
                results.append(await anyio.to_thread.run_sync(featurize_chunk, local, chunk, top_k))
        results.append(mine)
        parsed = [m for part, _, _ in results for m in part]
        if not transform:
            return parsed, None, None
        x = np.concatenate([x for _, x, _ in results], axis=0)
        return parsed, x, [top for _, _, tops in results for top in tops]

    def close(self) -> None:
        """Stop the helpers (the worker's on-shutdown hook) without waiting for them."""
        self._closed = True
        pool, self._pool = self._pool, None
        self._requested.set()
        self._broken.set()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
