"""The BentoML service: ``/predict``, ``/predict_batch``, async jobs, ``/feedback``.

Run it with ``bentoml serve spam_serving.service:SpamClassifier`` (``make serve``) or through
the ``local_deployment`` asset. It serves the bundle that the alias file maps to ``champion``
(``X-Environment: production``, the default) and ``challenger`` (``staging``); see
``predictor`` for what answers a request, ``live_models`` for batching and hot reload,
``gateway`` for auth and request limits, and ``inference_log`` for the prediction log that
monitoring reads.

This module is only the service's definition (routes, IO schemas, worker and traffic settings,
middleware), and imports nothing heavier: BentoML's arbiter imports it too, before it spawns
any worker, so whatever it imports is paid once more on every cold start. The model path
(numpy, pyarrow, ONNX Runtime, the Feast client) is imported when a worker constructs the
service.
"""

from __future__ import annotations

import os

# One worker is one core's worth of work, and its numerical libraries must not start thread
# pools of their own: OpenBLAS threads spin on the other core after every call, which with
# two workers took the other worker's core (measured: 2.8x the CPU per request). Set before
# a worker first imports numpy (the worker imports this module first); an operator's own
# values win.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from typing import TYPE_CHECKING, Any  # noqa: E402

import bentoml  # noqa: E402

from spam_serving import bentoml_patches  # noqa: E402
from spam_serving.gateway import GatewayMiddleware, load_api_keys  # noqa: E402
from spam_serving.schemas import BatchIn, FeedbackIn, MessageIn  # noqa: E402
from spam_serving.settings import get_settings  # noqa: E402

if TYPE_CHECKING:
    from spam_serving.predictor import Predictor

SETTINGS = get_settings()
# before BentoML binds its socket and builds the app
bentoml_patches.install(SETTINGS.trace_asgi_messages, SETTINGS.serve_reuse_port)


@bentoml.service(
    name="spam_classifier",
    workers=SETTINGS.serve_workers,
    traffic={"timeout": 30, "max_concurrency": 1024},
    logging={"access": {"enabled": SETTINGS.serve_access_log}},
)
class SpamClassifier:
    """Spam classifier over the ONNX bundle of the model each alias points to."""

    def __init__(self) -> None:
        from spam_serving.predictor import Predictor  # the model path: workers only

        self.predictor: Predictor = Predictor(SETTINGS)

    def __is_ready__(self) -> bool:
        """BentoML's readiness probe (``/readyz``): see :meth:`Predictor.ready`."""
        return self.predictor.ready()

    @bentoml.on_startup
    async def _start(self) -> None:
        await self.predictor.start()

    @bentoml.on_shutdown
    def _flush_logs(self) -> None:
        self.predictor.close()

    @bentoml.api(route="/predict", input_spec=MessageIn)
    async def predict(
        self, ctx: bentoml.Context, **message: Any
    ) -> dict:  # returns JSONResponse; the annotation is the docs' schema
        """One message (JSON fields, ``raw``/``raw_base64``, or a message/rfc822 body)."""
        return await self.predictor.predict(ctx, MessageIn.model_construct(**message))

    @bentoml.api(route="/predict_batch", input_spec=BatchIn)
    async def predict_batch(self, ctx: bentoml.Context, messages: list[MessageIn]) -> dict:
        """Up to ``predict_batch_limit`` messages, answered together."""
        return await self.predictor.predict_batch(ctx, messages)

    @bentoml.task(route="/predict_async")
    async def predict_async(self, ctx: bentoml.Context, messages: list[Any]) -> dict:
        """Large jobs: ``/predict_async/submit`` -> task id; ``/status`` and ``/get`` to poll.

        Each message is validated and scored on its own, so one bad message is reported in its
        result slot and the rest of the job still completes.
        """
        return await self.predictor.predict_async(ctx, messages)

    @bentoml.api(route="/feedback", input_spec=FeedbackIn)
    async def feedback(
        self, ctx: bentoml.Context, prediction_id: str, label: str, comment: str | None = None
    ) -> dict:
        """Record the true label of a prediction for monitoring and retraining."""
        return await self.predictor.feedback(ctx, prediction_id, label, comment)


SpamClassifier.add_asgi_middleware(
    GatewayMiddleware,
    api_keys=load_api_keys(
        SETTINGS.api_keys, SETTINGS.api_keys_file or SETTINGS.default_api_keys_file
    ),
    max_request_bytes=SETTINGS.max_request_bytes,
    max_async_request_bytes=SETTINGS.max_async_request_bytes,
    reconnect_every=SETTINGS.serve_reconnect_every,
)
