"""The baseline a user would otherwise write: FastAPI + uvicorn + a pickled scikit-learn model.

``SPAM_BASELINE_MODE=sklearn`` (the reference designs' approach): stdlib ``email`` parsing
(``policy.default``), a pickled ``Pipeline(TfidfVectorizer, XGBClassifier)`` and
``predict_proba``. ``SPAM_BASELINE_MODE=ours``: the same FastAPI app calling our parser,
featurizer and ONNX bundle, which separates the HTTP stack's cost from the model path's.
``SPAM_BASELINE_MODE=empty``: the same endpoint answering a constant (FastAPI's own floor).
Only the benchmark starts it (``uvicorn benchmarks.baseline_app:app --workers N``).
"""

from __future__ import annotations

import os
import pickle

from fastapi import FastAPI
from pydantic import BaseModel

from benchmarks.baseline_text import message_text

MODE = os.environ.get("SPAM_BASELINE_MODE", "sklearn")
app = FastAPI()


class Message(BaseModel):
    raw: str


if MODE == "sklearn":
    with open(os.environ["SPAM_BASELINE_MODEL"], "rb") as f:
        PIPELINE = pickle.load(f)

    @app.post("/predict")
    def predict(message: Message) -> dict:
        proba = float(PIPELINE.predict_proba([message_text(message.raw)])[0, 1])
        return {"label": "spam" if proba >= 0.5 else "ham", "spam_probability": proba}

elif MODE == "empty":

    @app.post("/predict")
    def predict(message: Message) -> dict:
        return {"label": "ham", "spam_probability": 0.0}

else:
    from spam_serving.model_bundle import ModelBundle
    from spam_serving.parsing import parse_message

    BUNDLE = ModelBundle.load(os.environ["SPAM_BASELINE_BUNDLE"])

    @app.post("/predict")
    def predict(message: Message) -> dict:
        parsed = parse_message(message.raw.encode("utf-8", "surrogateescape"))
        proba = float(BUNDLE.predict_proba([parsed])[0])
        label = "spam" if proba >= BUNDLE.threshold else "ham"
        return {"label": label, "spam_probability": proba, "model_version": BUNDLE.version}
