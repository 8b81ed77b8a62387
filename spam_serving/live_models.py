"""The models a worker serves, per alias, with adaptive batching and hot reload.

Adaptive batching: every model call goes through BentoML's own ``CorkDispatcher`` (the
dispatcher behind ``@bentoml.api(batchable=True)``), so concurrent single-message requests in
a worker are scored in one ONNX call under load, with BentoML's latency-aware cork/release.
It is applied to the featurized rows rather than to an HTTP endpoint because batchable APIs
take one list argument, and we want ``/predict`` to accept one message, raw or JSON.

Hot reload: a poller re-reads the alias file; when an alias names a new model, the bundle is
loaded off the event loop and the reference is swapped. Requests hold the ``LiveModel`` they
started with (featurizer, dispatcher and ONNX session together), so in-flight requests finish
on the old model and none is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher

from spam_serving import metrics
from spam_serving.batch_work import ChunkModel, ModelKey
from spam_serving.model_bundle import ModelBundle
from spam_serving.model_store import bundle_dir_for, read_aliases, read_canary

logger = logging.getLogger(__name__)

ALIASES = ("champion", "challenger")
RETIRE_AFTER_S = 120.0


class Overloaded(RuntimeError):
    """The batching queue could not meet its latency budget (answered as 503)."""


def _overloaded() -> np.ndarray:
    raise Overloaded("model queue over its latency budget; retry with backoff")


@dataclass
class LiveModel:
    """One loaded bundle plus everything needed to score with it."""

    bundle: ModelBundle
    entry: dict
    max_latency_ms: int
    max_batch_size: int
    batching: bool = True
    chunk_model: ChunkModel = field(init=False)
    #: how a batch helper finds this model (see ``batch_work.ModelKey``)
    key: ModelKey = field(init=False)
    _score: object = field(init=False, repr=False)
    _dispatcher: CorkDispatcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        bundle = self.bundle
        self.chunk_model = ChunkModel(
            bundle.featurizer, bundle.explainer, bundle.featurizer.feature_names
        )
        self.key = (
            str(bundle.path),
            bundle.meta["featurizer_hash"],
            bundle.meta.get("explainer_sha256"),
        )
        self._dispatcher = dispatcher = CorkDispatcher(
            max_latency_in_ms=self.max_latency_ms,
            max_batch_size=self.max_batch_size,
            fallback=_overloaded,
            get_batch_size=lambda x: x.shape[0],
        )
        self._score = dispatcher(self._score_batches)

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    async def _score_batches(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        sizes = [b.shape[0] for b in batches]
        scores = self.bundle.predict_matrix(np.concatenate(batches, axis=0))
        return np.split(scores, np.cumsum(sizes)[:-1])

    async def score(self, x: np.ndarray) -> np.ndarray:
        """Spam probability per row, batched with other requests of this worker."""
        if not self.batching:
            return self.bundle.predict_matrix(x)
        return await self._score(x)

    def close(self) -> None:
        """Stop the batching loop (called well after the model was swapped out)."""
        self._dispatcher.shutdown()


class ModelRouter:
    """Alias -> LiveModel for one worker; polls the alias file for moves."""

    def __init__(
        self,
        alias_file: Path,
        fallback_tag: str | None,
        max_latency_ms: int,
        max_batch_size: int,
        poll_interval_s: float = 1.0,
        batching: bool = True,
        after_retire: Callable[[], object] | None = None,
    ) -> None:
        self.alias_file = Path(alias_file)
        self.fallback_tag = fallback_tag
        self.max_latency_ms = max_latency_ms
        self.max_batch_size = max_batch_size
        self.batching = batching
        self.poll_interval_s = poll_interval_s
        self.models: dict[str, LiveModel] = {}
        self.last_error: str | None = None
        self._signature: tuple | None = None
        self.retired: list[LiveModel] = []
        self._retiring: list[LiveModel] = []
        #: called after a retired model is closed and dropped (the service re-freezes the heap)
        self.after_retire = after_retire
        #: share of production traffic for the challenger, from the alias file (None: unset)
        self.canary_fraction: float | None = None

    @property
    def ready(self) -> bool:
        return all(alias in self.models for alias in ALIASES)

    def get(self, alias: str) -> LiveModel:
        return self.models[alias]

    def _entries(self) -> dict[str, dict]:
        entries = read_aliases(self.alias_file)
        if not entries and self.fallback_tag:
            entries = {a: {"model_tag": self.fallback_tag} for a in ALIASES}
        if "champion" in entries and "challenger" not in entries:
            entries["challenger"] = entries["champion"]
        return entries

    def _file_signature(self) -> tuple | None:
        try:
            st = self.alias_file.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> list[str]:
        """Load models whose alias entry changed; returns the aliases swapped (blocking)."""
        self._signature = self._file_signature()
        fraction = read_canary(self.alias_file).get("fraction")
        self.canary_fraction = float(fraction) if isinstance(fraction, int | float) else None
        swapped = []
        loaded: dict[str, LiveModel] = {}
        for alias, entry in self._entries().items():
            if alias not in ALIASES:
                continue
            current = self.models.get(alias)
            if current is not None and current.entry == entry:
                continue
            same = next((m for m in loaded.values() if m.entry == entry), None)
            try:
                live = same or LiveModel(
                    ModelBundle.load(bundle_dir_for(entry)),
                    entry,
                    self.max_latency_ms,
                    self.max_batch_size,
                    self.batching,
                )
            except Exception as exc:  # keep serving the old model; surface the reason
                self.last_error = f"{alias}: {entry}: {exc}"
                logger.exception("could not load model for alias %s", alias)
                metrics.MODEL_RELOADS.labels(alias, "failed").inc()
                continue
            loaded[alias] = live
            self.models[alias] = live
            if current is not None and current not in self.models.values():
                self.retired.append(current)
            swapped.append(alias)
            metrics.MODEL_RELOADS.labels(alias, "loaded").inc()
            logger.info("alias %s now serves model version %s", alias, live.version)
        if swapped:
            self.last_error = None
        return swapped

    async def watch(self) -> None:
        """Poll forever (a background task of the worker's event loop)."""
        while True:
            await asyncio.sleep(self.poll_interval_s)
            if self._file_signature() != self._signature:
                try:
                    await asyncio.to_thread(self.refresh)
                except Exception:
                    logger.exception("alias refresh failed")
                loop = asyncio.get_running_loop()
                while self.retired:  # well past the request timeout: nothing is queued there
                    self._retiring.append(self.retired.pop())
                    loop.call_later(RETIRE_AFTER_S, self._retire_oldest)

    def _retire_oldest(self) -> None:
        """Close the oldest retired model and drop it: no reference stays here or in the
        timer, so ``after_retire`` can collect it."""
        self._retiring.pop(0).close()
        if self.after_retire is not None:
            self.after_retire()
