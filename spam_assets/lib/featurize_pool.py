"""Featurizing in several processes, a chunk of rows each, results in input order.

``Featurizer.transform`` is a Python loop over messages: one core. At a million messages the
chain featurizes every message up to three times (``feature_matrices``, the deployed
featurizer's matrices and the JSON-fields copies in ``tuned_model``), ~15 minutes each on one
core, so those steps hand chunks to ``workers`` processes (``SPAM_FEATURIZE_WORKERS``), as
parsing does with its parts. Each worker receives the fitted featurizer once (pool
initializer) and turns split-table rows (or already parsed messages) into feature rows; the
caller still reads and writes the chunks, so at most ``workers + 1`` chunks are in flight
and memory stays bounded by chunks, not by the corpus. The rows are the same, bit for bit,
as a single process computes (``spam_tests/test_featurize_pool.py``).

Processes are spawned, not forked: a Dagster step may hold threads (gRPC, Ray) that a fork
would copy mid-state.
"""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spam_assets.lib.ensemble import fields_copy
from spam_assets.lib.messages import messages_of
from spam_serving.featurize import Featurizer
from spam_serving.parsing import ParsedMessage

#: messages per task when a list of messages is featurized (:meth:`FeaturizePool.transform`)
CHUNK_ROWS = 2_000


@dataclass(frozen=True)
class Chunk:
    """Rows to featurize: split-table rows (a frame) or parsed messages, with their sender
    reputation block when the featurizer uses one; ``fields``: featurize the rows' JSON-fields
    copies (``spam_assets.lib.ensemble.fields_copy``) instead of the raw mail."""

    rows: pd.DataFrame | Sequence[ParsedMessage]
    reputation: np.ndarray | None = None
    fields: bool = False


def featurize(featurizer: Featurizer, chunk: Chunk) -> np.ndarray:
    """One chunk's feature rows (what every worker runs, and the one-process path)."""
    rows = chunk.rows
    messages = messages_of(rows) if isinstance(rows, pd.DataFrame) else list(rows)
    if chunk.fields:
        messages = [fields_copy(m) for m in messages]
    return featurizer.transform(messages, chunk.reputation)


def frame_chunks(
    frames: Iterable[pd.DataFrame], reputation: np.ndarray | None = None, fields: bool = False
) -> Iterator[Chunk]:
    """Frames of rows as chunks, each with its rows of ``reputation`` (the rows of all frames,
    one after another; a memory-mapped block is read a chunk at a time)."""
    start = 0
    for frame in frames:
        stop = start + len(frame)
        rep = None if reputation is None else np.array(reputation[start:stop])
        yield Chunk(frame, rep, fields)
        start = stop


class FeaturizePool:
    """``map(chunks)`` featurizes chunks with one fitted featurizer, in ``workers``
    processes (started on first use, stopped by :meth:`close` or the ``with`` block), or
    in this process when ``workers`` is 1."""

    def __init__(self, featurizer: Featurizer, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.featurizer = featurizer
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> FeaturizePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, chunks: Iterable[Chunk]) -> Iterator[np.ndarray]:
        """Feature rows per chunk, in the order of ``chunks``; ``chunks`` is consumed
        lazily, at most ``workers + 1`` ahead of the caller."""
        chunks = iter(chunks)
        first = list(itertools.islice(chunks, 2))
        if self.workers == 1 or len(first) < 2:  # one chunk is not worth starting processes
            for chunk in itertools.chain(first, chunks):
                yield featurize(self.featurizer, chunk)
            return
        pool = self._started()
        pending: deque[Future] = deque()
        try:
            for chunk in itertools.chain(first, chunks):
                pending.append(pool.submit(_work, chunk))
                if len(pending) > self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def transform(
        self,
        messages: Sequence[ParsedMessage],
        reputation: np.ndarray | None = None,
        chunk_rows: int = CHUNK_ROWS,
    ) -> np.ndarray:
        """``Featurizer.transform(messages, reputation)``, computed ``chunk_rows`` messages
        per task into one array."""
        out = np.empty((len(messages), self.featurizer.n_features), dtype=np.float32)
        starts = range(0, len(messages), chunk_rows)
        chunks = (
            Chunk(
                messages[i : i + chunk_rows],
                None if reputation is None else reputation[i : i + chunk_rows],
            )
            for i in starts
        )
        for i, rows in zip(starts, self.map(chunks), strict=True):
            out[i : i + len(rows)] = rows
        return out

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_install,
                initargs=(pickle.dumps(self.featurizer, protocol=pickle.HIGHEST_PROTOCOL),),
            )
        return self._pool


_FEATURIZER: Featurizer | None = None


def _install(state: bytes) -> None:
    global _FEATURIZER
    _FEATURIZER = pickle.loads(state)


def _work(chunk: Chunk) -> np.ndarray:
    if _FEATURIZER is None:
        raise RuntimeError("featurize worker started without a featurizer")
    return featurize(_FEATURIZER, chunk)
