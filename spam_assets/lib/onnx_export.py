"""XGBoost -> ONNX with onnxmltools, and the parity measurement the blocking check uses.

Pitfalls handled: the booster must carry no custom feature names (onnxmltools wants
``f0..fN``); XGBoost 3 stores ``base_score`` in a form onnxmltools < 1.15 mis-reads (pinned
>= 1.15); the binary classifier's second output is probabilities ``[N, 2]``.
"""

from __future__ import annotations

import numpy as np


def booster_from_bytes(raw: bytes, nthread: int = 1):
    """Load a UBJSON booster; ``nthread=1`` because single-row predict on 2 cores with OpenMP
    spinning costs 10-30x."""
    import xgboost as xgb

    booster = xgb.Booster(params={"nthread": nthread})
    booster.load_model(bytearray(raw))
    return booster


def to_onnx(booster, n_features: int) -> bytes:
    from onnxmltools.convert import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster.feature_names = None
    booster.feature_types = None
    model = convert_xgboost(booster, initial_types=[("input", FloatTensorType([None, n_features]))])
    return model.SerializeToString()


def native_scores(booster, x: np.ndarray) -> np.ndarray:
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(x, missing=np.nan)).astype(np.float64)


def onnx_scores(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})
    return np.asarray(out[1], dtype=np.float64)[:, 1]


def parity(booster, onnx_bytes: bytes, x: np.ndarray) -> dict:
    """Max/mean absolute difference between native XGBoost and ONNX Runtime on ``x``."""
    diff = np.abs(native_scores(booster, x) - onnx_scores(onnx_bytes, x))
    return {
        "rows": len(x),
        "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
        "mean_abs_diff": float(diff.mean()) if len(diff) else 0.0,
    }
