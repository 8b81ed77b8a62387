"""The model path behind the service's endpoints: routing a request to an alias's model,
parsing, featurizing, scoring, explanations, the inference log and feedback.

``service.SpamClassifier`` is BentoML's face of it and constructs one :class:`Predictor` per
worker. It lives in its own module because BentoML's arbiter imports the service module too,
only to read the service's definition: what this module imports (numpy, pyarrow, the model
bundle, Feast's client, ...) would otherwise add ~0.3 s of CPU to every cold start before any
worker is even spawned (measured with ``-X importtime``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import bentoml
import numpy as np
from pydantic import ValidationError
from starlette.responses import JSONResponse

from spam_serving import heap, metrics
from spam_serving.batch_helpers import BatchHelpers
from spam_serving.batch_work import ModelKey, explain, featurize_chunk
from spam_serving.feature_store import OnlineReputation
from spam_serving.featurize import NUMERIC_FEATURES
from spam_serving.gateway import CANARY_ENV, ENVIRONMENTS
from spam_serving.inference_log import (
    ERROR_LABEL,
    FEEDBACK,
    PREDICTIONS,
    ParquetLogWriter,
    logged_message,
)
from spam_serving.live_models import LiveModel, ModelRouter, Overloaded
from spam_serving.log_store import log_store
from spam_serving.parsing import ParsedMessage
from spam_serving.schemas import MessageIn
from spam_serving.settings import SpamSettings

logger = logging.getLogger(__name__)
ASYNC_CHUNK = 100
#: The featurizer's structural block (its first columns): what drift monitoring reads.
LOG_NUMERIC_COLUMNS = tuple("num_" + n for n in NUMERIC_FEATURES)
N_NUMERIC = len(NUMERIC_FEATURES)


def _draw(ctx: bentoml.Context) -> float:
    """Where a request falls in [0, 1) for the canary split. With ``X-Routing-Key`` (a
    mailbox or tenant id) the same key always lands on the same side, so one user sees one
    model and a replay splits the same way twice; without it, a fresh random draw."""
    key = ctx.request.headers.get("x-routing-key")
    if not key:
        return random.random()
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _json(ctx: bentoml.Context, body: dict, status: int = 200) -> JSONResponse:
    """Our own JSON response: BentoML would otherwise rebuild the output type's JSON schema
    on every response (measured: ~16% of a worker's CPU under load). The status also goes
    through ``ctx`` because BentoML applies ``ctx.response.status_code`` last."""
    ctx.response.status_code = status
    return JSONResponse(body, status_code=status)


def _fail(ctx: bentoml.Context, status: int, reason: str) -> JSONResponse:
    return _json(ctx, {"error": reason}, status)


class Predictor:
    """One worker's models (per alias, hot-reloaded), log writers and reputation client, and
    the answers to ``/predict``, ``/predict_batch``, async jobs and ``/feedback``."""

    def __init__(self, settings: SpamSettings) -> None:
        s = self.settings = settings
        self.router = ModelRouter(
            alias_file=s.alias_file,
            fallback_tag=s.serve_model_tag,
            max_latency_ms=s.batch_max_latency_ms,
            max_batch_size=s.batch_max_size,
            poll_interval_s=s.model_poll_interval_s,
            batching=s.adaptive_batching,
            after_retire=self._refreeze_heap if s.gc_freeze else None,
        )
        self.router.refresh()
        store = log_store(s)  # the local directory, or Blob (SPAM_LOG_BLOB_CONTAINER)
        self.logs = {
            stream: ParquetLogWriter(
                s.inference_log_dir,
                stream,
                flush_rows=s.log_flush_rows,
                flush_s=s.log_flush_s,
                max_queue=s.log_queue_size,
                on_drop=metrics.LOG_DROPPED.labels(stream).inc,
                store=store,
            )
            for stream in (PREDICTIONS, FEEDBACK)
        }
        self.reputation = OnlineReputation(s)
        self.helpers = BatchHelpers(s.batch_helpers, s.batch_split_min)
        self._helpers_task: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._warmer: asyncio.Task | None = None
        self._freezer: asyncio.Task | None = None

    def ready(self) -> bool:
        """Ready only when both aliases have a loaded model (and, for a model that uses sender
        reputation, the feature store warm-up has finished, answering or not)."""
        return self.router.ready and self._reputation_settled()

    async def start(self) -> None:
        """Background tasks on the worker's event loop (BentoML's on-startup hook)."""
        if self.settings.gc_freeze:
            self._freezer = asyncio.get_running_loop().create_task(self._freeze_heap())
        self._watcher = asyncio.get_running_loop().create_task(self.router.watch())
        if self._needs_reputation():  # Feast loads off the loop; readiness waits for it
            self._warmer = asyncio.get_running_loop().create_task(self.reputation.warm_up())
        # the batch helpers start with the first batch large enough to split
        self._helpers_task = asyncio.get_running_loop().create_task(
            self.helpers.keep_up(self._served_models)
        )

    async def _freeze_heap(self, budget_s: float = 60.0) -> None:
        """Freeze the start-up heap (see ``heap``) once the log writers' warm-up (it imports
        pandas) and, for a model with reputation features, the Feast warm-up are done, so
        what they import is frozen too."""
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline and not (
            all(w.warmed_up.is_set() for w in self.logs.values()) and self._reputation_settled()
        ):
            await asyncio.sleep(0.05)
        metrics.GC_FROZEN.set(heap.freeze())

    def _refreeze_heap(self) -> None:
        """A hot reload retired a model that was frozen with the heap: thaw, collect it,
        freeze again (one full collection per model swap)."""
        metrics.GC_FROZEN.set(heap.refreeze())

    def _needs_reputation(self) -> bool:
        return any(m.bundle.featurizer.config.reputation for m in self.router.models.values())

    def _reputation_settled(self) -> bool:
        """The feature store warm-up has finished (answering or not), or no model needs it."""
        return self.reputation.started or not self._needs_reputation()

    def close(self) -> None:
        """Stop the batch helpers, flush the log writers (BentoML's on-shutdown hook)."""
        self.helpers.close()
        for writer in self.logs.values():
            writer.close()

    def _served_models(self) -> list[ModelKey]:
        return list(dict.fromkeys(m.key for m in self.router.models.values()))

    # ------------------------------------------------------------------ endpoints
    async def predict(self, ctx: bentoml.Context, msg: MessageIn) -> JSONResponse:
        """One message, scored on the event loop (cheaper than a thread hop for one)."""
        return await self._answer(ctx, [msg], "predict", lambda env, live, results: results[0])

    async def predict_batch(self, ctx: bentoml.Context, messages: list[MessageIn]) -> JSONResponse:
        """Up to ``predict_batch_limit`` messages, parsed and featurized off the event loop."""
        limit = self.settings.predict_batch_limit
        if len(messages) > limit:
            return _fail(ctx, 422, f"{len(messages)} messages; at most {limit} per /predict_batch")
        return await self._answer(
            ctx,
            messages,
            "predict_batch",
            lambda env, live, results: {
                "model_version": live.version,
                "environment": env,
                "predictions": results,
            },
        )

    async def predict_async(self, ctx: bentoml.Context, messages: list[Any]) -> JSONResponse:
        """Each message is validated and scored on its own, so one bad message is reported in
        its result slot and the rest of the job still completes."""
        limit = self.settings.async_batch_limit
        if len(messages) > limit:
            return _fail(ctx, 422, f"{len(messages)} messages; at most {limit} per async job")
        env, live = self._route(ctx)
        if live is None:
            return self._not_ready(ctx)
        results: list[dict] = []
        for start in range(0, len(messages), ASYNC_CHUNK):
            chunk = messages[start : start + ASYNC_CHUNK]
            valid: list[tuple[int, MessageIn]] = []
            for i, item in enumerate(chunk, start=start):
                try:
                    valid.append((i, MessageIn.model_validate(item)))
                except ValidationError as exc:
                    reason = "; ".join(
                        f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}"
                        for e in exc.errors(include_input=False, include_url=False)
                    )
                    results.append({"index": i, "error": reason})
            if not valid:
                continue
            while True:
                try:
                    scored = await self._predict(
                        live, env, [m for _, m in valid], "predict_async", inline=False
                    )
                    break
                except Overloaded:  # a background job waits instead of failing
                    await asyncio.sleep(0.05)
            results.extend({"index": i, **r} for (i, _), r in zip(valid, scored, strict=True))
        results.sort(key=lambda r: r["index"])
        failed = sum("error" in r for r in results)
        return _json(
            ctx,
            {
                "model_version": live.version,
                "environment": env,
                "n_messages": len(messages),
                "n_failed": failed,
                "results": results,
            },
        )

    async def feedback(
        self, ctx: bentoml.Context, prediction_id: str, label: str, comment: str | None
    ) -> JSONResponse:
        """Queue the label for the feedback log; 503 (retry) rather than lose it silently."""
        env = ctx.request.state.environment
        record = {
            "ts": datetime.now(UTC),
            "prediction_id": prediction_id,
            "label": label,
            "comment": comment,
            "environment": env,
        }
        if not self.logs[FEEDBACK].append(record):
            metrics.LOG_DROPPED.labels(FEEDBACK).inc()
            return _fail(ctx, 503, "feedback queue full; retry later")
        metrics.FEEDBACK.labels(label).inc()
        return _json(ctx, {"status": "recorded", "prediction_id": prediction_id, "label": label})

    # ------------------------------------------------------------------ internals
    async def _answer(
        self,
        ctx: bentoml.Context,
        messages: list[MessageIn],
        endpoint: str,
        body: Callable[[str, LiveModel, list[dict]], dict],
    ) -> JSONResponse:
        """Route, score and answer; 503 when no model is loaded or the queue is over budget.
        One message is scored on the event loop (cheapest); batches off it."""
        env, live = self._route(ctx)
        if live is None:
            return self._not_ready(ctx)
        inline = len(messages) == 1
        try:
            results = await self._predict(live, env, messages, endpoint, inline)
        except Overloaded as exc:
            return _fail(ctx, 503, str(exc))
        except Exception:
            if env != CANARY_ENV:
                raise
            if self.settings.serve_track == "canary":
                # a canary pod holds only the challenger: no champion to fall back to. The
                # failure is logged so the judge counts it, and the request fails.
                self._log_failures(env, live, messages, endpoint)
                raise
            # a failing canary must not fail the request: the champion answers, and the
            # fallback is logged so the canary controller sees the challenger's error rate
            logger.exception("canary model v%s failed; champion answers", live.version)
            metrics.ERRORS.labels("canary_failure").inc()
            failed, env, live = live.version, "production", self.router.models["champion"]
            try:
                results = await self._predict(live, env, messages, endpoint, inline, failed)
            except Overloaded as exc:
                return _fail(ctx, 503, str(exc))
        return _json(ctx, body(env, live, results))

    def _route(self, ctx: bentoml.Context) -> tuple[str, LiveModel | None]:
        """Environment -> alias -> model; a ``canary_fraction`` of production requests goes
        to the challenger when it differs from the champion (sticky per ``X-Routing-Key``)."""
        env = ctx.request.state.environment
        live = self.router.models.get(ENVIRONMENTS[env])
        if env == "production" and self.settings.serve_track == "canary":
            return CANARY_ENV, live
        fraction = self.router.canary_fraction
        if fraction is None:
            fraction = self.settings.canary_fraction
        if env == "production" and fraction > 0 and _draw(ctx) < fraction:
            challenger = self.router.models.get("challenger")
            if challenger is not None and live is not None and challenger.entry != live.entry:
                return CANARY_ENV, challenger
        return env, live

    def _not_ready(self, ctx: bentoml.Context) -> JSONResponse:
        reason = "model not loaded yet"
        if self.router.last_error:
            reason += f" ({self.router.last_error})"
        return _fail(ctx, 503, reason)

    async def _predict(
        self,
        live: LiveModel,
        env: str,
        messages: list[MessageIn],
        endpoint: str,
        inline: bool,
        fallback_from: str | None = None,
    ) -> list[dict]:
        start = time.perf_counter()
        parsed, x, tops, degraded = await self._featurize(live, messages, inline)
        scores = await live.score(x)
        latency = time.perf_counter() - start
        now = datetime.now(UTC)
        results = []
        labels: Counter[str] = Counter()
        for i, (msg, score) in enumerate(zip(parsed, scores, strict=True)):
            action, threshold = live.bundle.decide(float(score), msg.from_fields)
            label = "ham" if action == "deliver" else "spam"
            pid = uuid.uuid4().hex
            result = {
                "prediction_id": pid,
                "label": label,
                "action": action,
                "spam_probability": float(score),
                "threshold": threshold,
                "model_version": live.version,
                "environment": env,
                "top_features": tops[i],
            }
            if msg.parse_error:
                result["parse_warning"] = msg.parse_error
            if degraded:
                result["degraded"] = True
                result["degraded_reason"] = (
                    f"sender reputation unavailable ({degraded}); message-only features used"
                )
            results.append(result)
            labels[label] += 1
            metrics.SPAM_PROBABILITY.labels(live.version).observe(float(score))
            self._log(
                now,
                pid,
                endpoint,
                env,
                live,
                msg,
                x[i],
                float(score),
                label,
                threshold,
                latency,
                fallback_from,
                degraded,
            )
        for label, n in labels.items():
            metrics.PREDICTIONS.labels(label, live.version, env).inc(n)
        metrics.LATENCY.labels(endpoint, live.version).observe(latency)
        return results

    def _log(
        self,
        now: datetime,
        pid: str,
        endpoint: str,
        env: str,
        live: LiveModel,
        msg: ParsedMessage,
        row: np.ndarray,
        score: float,
        label: str,
        threshold: float,
        latency: float,
        fallback_from: str | None,
        degraded: str | None,
    ) -> None:
        record = {
            "ts": now,
            "prediction_id": pid,
            "endpoint": endpoint,
            "environment": env,
            "model_version": live.version,
            "score": score,
            "label": label,
            "threshold": threshold,
            "latency_ms": latency * 1000.0,
            "parse_error": msg.parse_error,
            "sender_domain": msg.sender_domain,
            "fallback_from": fallback_from,
            "degraded": degraded,
            **dict(zip(LOG_NUMERIC_COLUMNS, row[:N_NUMERIC].tolist(), strict=True)),
        }
        if self.settings.log_messages:
            record["message"] = logged_message(msg)
        if not self.logs[PREDICTIONS].append(record):
            metrics.LOG_DROPPED.labels(PREDICTIONS).inc()

    def _log_failures(
        self, env: str, live: LiveModel, messages: list[MessageIn], endpoint: str
    ) -> None:
        """One ``error`` row per message the model failed (``fallback_from`` = its version):
        how a canary pod's errors reach the judge, which reads only the log."""
        metrics.ERRORS.labels("canary_failure").inc()
        now = datetime.now(UTC)
        for _ in messages:
            record = {
                "ts": now,
                "prediction_id": uuid.uuid4().hex,
                "endpoint": endpoint,
                "environment": env,
                "model_version": live.version,
                "label": ERROR_LABEL,
                "fallback_from": live.version,
            }
            if not self.logs[PREDICTIONS].append(record):
                metrics.LOG_DROPPED.labels(PREDICTIONS).inc()

    async def _featurize(
        self, live: LiveModel, messages: list[MessageIn], inline: bool
    ) -> tuple[list[ParsedMessage], np.ndarray, list[list[dict]], str | None]:
        """Parse, featurize and explain (off the event loop unless ``inline``, and split with
        the batch helpers when the batch is large enough); a model trained with sender
        reputation gets it in one online-store round trip for the whole batch, or the
        unknown-sender values and the reason when the store is slow or down."""
        model, top_k = live.chunk_model, self.settings.explain_top_k
        # a model with sender reputation is featurized and explained after the lookup, below
        local = None if model.featurizer.config.reputation else model
        if inline:
            parsed, x, tops = featurize_chunk(local, messages, top_k)
        elif self.helpers.wants(len(messages)):
            parsed, x, tops = await self.helpers.run(
                live.key, model, messages, local is not None, top_k
            )
        else:
            parsed, x, tops = await anyio.to_thread.run_sync(
                featurize_chunk, local, messages, top_k
            )
        if local is not None:
            return parsed, x, tops, None
        reputation, degraded = await self.reputation.lookup(parsed)
        if degraded:
            metrics.DEGRADED.labels(degraded).inc(len(parsed))

        def finish() -> tuple[np.ndarray, list[list[dict]]]:
            x = model.featurizer.transform(parsed, reputation)
            return x, explain(model, messages, x, top_k)

        x, tops = finish() if inline else await anyio.to_thread.run_sync(finish)
        return parsed, x, tops, degraded
