"""An empty BentoML endpoint: the HTTP stack's floor for ``make bench-serving``.

Same BentoML version, worker count, traffic settings and fixes as ``SpamClassifier``
(``bentoml_patches``, ``gc.freeze()`` after start-up), same JSON request body, but no auth,
no model, no log and no metrics of ours: it answers a constant. What it reaches is the most
any BentoML service can do on this machine under the same load generator, so the report can
say which serving targets the model path leaves room for. Only the benchmark starts it
(``bentoml serve benchmarks.empty_bento:EmptyEndpoint``).
"""

from __future__ import annotations

import bentoml

from spam_serving import bentoml_patches, heap
from spam_serving.settings import get_settings

SETTINGS = get_settings()
bentoml_patches.install(SETTINGS.trace_asgi_messages, SETTINGS.serve_reuse_port)


@bentoml.service(
    name="empty_endpoint",
    workers=SETTINGS.serve_workers,
    traffic={"timeout": 30, "max_concurrency": 1024},
    logging={"access": {"enabled": False}},
)
class EmptyEndpoint:
    """``POST /predict`` with the classifier's JSON body (``raw``), answering a constant."""

    @bentoml.on_startup
    def _freeze(self) -> None:
        heap.freeze()

    @bentoml.api(route="/predict")
    async def predict(self, raw: str = "") -> dict:
        return {"label": "ham", "spam_probability": 0.0}
