"""A model bundle: ONNX model + featurizer state + threshold, versioned together.

The ``onnx_model`` asset writes it (and logs it to the MLflow run of the registered version);
the service and the champion comparison load it. Keeping the featurizer inside the bundle is
what guarantees a model is always served with the vocabulary it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spam_serving.explain import TreeExplainer
from spam_serving.featurize import Featurizer
from spam_serving.parsing import ParsedMessage

ONNX_FILE = "model.onnx"
FEATURIZER_FILE = "featurizer.json"
NATIVE_FILE = "model.ubj"
EXPLAINER_FILE = "explainer.npz"
META_FILE = "bundle.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ModelBundle:
    """Loaded bundle ready to score messages with ONNX Runtime (single-threaded sessions)."""

    path: Path
    meta: dict
    featurizer: Featurizer
    session: object
    explainer: TreeExplainer | None = None

    @property
    def version(self) -> str:
        return str(self.meta["model_version"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    def actions(self, from_fields: bool = False) -> tuple[tuple[str, float], ...]:
        """(action, lowest score that takes it), strictest first: ``reject``, then ``junk``
        (the label's threshold); every other score is ``deliver``. A message built from JSON
        fields has its own thresholds at the same budgets (``junk_fields``), when the model
        has them. A bundle written before the bands had only the label's threshold."""
        bands = self.meta.get("thresholds") or {}
        suffix = "_fields" if from_fields and "junk_fields" in bands else ""
        junk = float(bands.get("junk" + suffix, self.threshold))
        reject = float(bands.get("reject" + suffix, float("inf")))
        return (("reject", max(reject, junk)), ("junk", junk))

    def decide(self, score: float, from_fields: bool = False) -> tuple[str, float]:
        """(action, the ``junk`` threshold the label is judged at) for one score."""
        bands = self.actions(from_fields)
        for name, lowest in bands:
            if score >= lowest:
                return name, bands[1][1]
        return "deliver", bands[1][1]

    @classmethod
    def load(cls, path: str | Path, intra_op_threads: int = 1) -> ModelBundle:
        """Load and verify: the ONNX file must match the hash recorded when it was written."""
        import onnxruntime as ort

        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"no model bundle at {path} ({META_FILE} missing)")
        meta = json.loads(meta_file.read_text())
        onnx_path = path / ONNX_FILE
        if sha256_file(onnx_path) != meta["onnx_sha256"]:
            raise ValueError(f"{onnx_path}: sha256 does not match {META_FILE}; bundle corrupt")
        featurizer = Featurizer.from_json((path / FEATURIZER_FILE).read_text())
        if featurizer.state_hash != meta["featurizer_hash"]:
            raise ValueError(f"{path / FEATURIZER_FILE}: featurizer hash mismatch; bundle corrupt")
        explainer = None
        if "explainer_sha256" in meta:
            explainer_path = path / EXPLAINER_FILE
            if sha256_file(explainer_path) != meta["explainer_sha256"]:
                raise ValueError(f"{explainer_path}: sha256 does not match {META_FILE}")
            explainer = TreeExplainer.load(explainer_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        return cls(
            path=path, meta=meta, featurizer=featurizer, session=session, explainer=explainer
        )

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Spam probability for already-featurized rows."""
        input_name = self.session.get_inputs()[0].name
        outputs = self.session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(outputs[1], dtype=np.float64)[:, 1]

    def predict_proba(
        self, messages: Sequence[ParsedMessage], reputation: np.ndarray | None = None
    ) -> np.ndarray:
        """Spam probability; ``reputation`` rows are required iff the featurizer uses them."""
        return self.predict_matrix(self.featurizer.transform(messages, reputation))


def write_bundle(
    path: Path,
    onnx_bytes: bytes,
    featurizer: Featurizer,
    native_model: bytes,
    meta: dict,
    explainer: TreeExplainer | None = None,
) -> dict:
    """Write a bundle atomically enough for a single writer: files first, metadata last.

    ``explainer`` (built from the same booster) lets the service explain predictions without
    importing xgboost; bundles written without one still serve, with no explanations.
    """
    path.mkdir(parents=True, exist_ok=True)
    (path / ONNX_FILE).write_bytes(onnx_bytes)
    (path / FEATURIZER_FILE).write_text(featurizer.to_json())
    (path / NATIVE_FILE).write_bytes(native_model)
    extra = {}
    if explainer is not None:
        explainer.save(path / EXPLAINER_FILE)
        extra["explainer_sha256"] = sha256_file(path / EXPLAINER_FILE)
    full = {
        **meta,
        **extra,
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "featurizer_hash": featurizer.state_hash,
        "n_features": featurizer.n_features,
    }
    tmp = path / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(full, indent=2, sort_keys=True))
    tmp.replace(path / META_FILE)
    return full
