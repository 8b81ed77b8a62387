"""Blocking parity check: ONNX Runtime must reproduce the native model (XGBoost, and for the
ensemble its second stage in numpy) on the whole test split.

A sparse-vs-dense mismatch (absent entries read as MISSING by XGBoost, 0.0 by ONNX) or a
base_score mis-read would show here as a large difference, not as silent drift in production.
"""

import json
from pathlib import Path

import dagster as dg

from spam_assets.defs.export.assets import onnx_model
from spam_assets.lib.ensemble import Stack
from spam_assets.lib.final_fit import deployed_matrix
from spam_assets.lib.matrices import FeatureMatrices
from spam_assets.lib.onnx_export import booster_from_bytes, parity
from spam_assets.lib.tuned import TunedModel
from spam_serving.model_bundle import META_FILE, NATIVE_FILE, ONNX_FILE

MAX_ABS_DIFF = 1e-5


@dg.asset_check(
    asset=onnx_model,
    blocking=True,
    additional_ins={
        "feature_matrices": dg.AssetIn("feature_matrices"),
        "tuned_model": dg.AssetIn("tuned_model"),
    },
    description=f"ONNX vs the native model: max |diff| <= {MAX_ABS_DIFF:g} on the test split",
)
def onnx_parity(
    onnx_model: dict, feature_matrices: FeatureMatrices, tuned_model: TunedModel
) -> dg.AssetCheckResult:
    path = Path(onnx_model["bundle_path"])
    booster = booster_from_bytes((path / NATIVE_FILE).read_bytes())
    meta = json.loads((path / META_FILE).read_text())
    stack = Stack.from_dict(meta["stack"]) if meta.get("stack") else None
    x = deployed_matrix(tuned_model, feature_matrices, "test")
    result = parity(booster, (path / ONNX_FILE).read_bytes(), x, stack, meta.get("n_base", 0))
    return dg.AssetCheckResult(
        passed=result["max_abs_diff"] <= MAX_ABS_DIFF,
        metadata={
            **result,
            "tolerance": MAX_ABS_DIFF,
            "model_version": onnx_model["model_version"],
        },
    )
