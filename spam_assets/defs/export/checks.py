"""Blocking parity check: ONNX Runtime must reproduce native XGBoost on the whole test split.

A sparse-vs-dense mismatch (absent entries read as MISSING by XGBoost, 0.0 by ONNX) or a
base_score mis-read would show here as a large difference, not as silent drift in production.
"""

from pathlib import Path

import dagster as dg

from spam_assets.defs.export.assets import onnx_model
from spam_assets.lib.final_fit import deployed_matrix
from spam_assets.lib.onnx_export import booster_from_bytes, parity
from spam_serving.model_bundle import NATIVE_FILE, ONNX_FILE

MAX_ABS_DIFF = 1e-5


@dg.asset_check(
    asset=onnx_model,
    blocking=True,
    additional_ins={
        "feature_matrices": dg.AssetIn("feature_matrices"),
        "tuned_model": dg.AssetIn("tuned_model"),
    },
    description=f"ONNX vs native XGBoost max |diff| <= {MAX_ABS_DIFF:g} on the test split",
)
def onnx_parity(onnx_model: dict, feature_matrices: dict, tuned_model: dict) -> dg.AssetCheckResult:
    path = Path(onnx_model["bundle_path"])
    booster = booster_from_bytes((path / NATIVE_FILE).read_bytes())
    x = deployed_matrix(tuned_model, feature_matrices, "test")
    result = parity(booster, (path / ONNX_FILE).read_bytes(), x)
    return dg.AssetCheckResult(
        passed=result["max_abs_diff"] <= MAX_ABS_DIFF,
        metadata={
            **result,
            "tolerance": MAX_ABS_DIFF,
            "model_version": onnx_model["model_version"],
        },
    )
