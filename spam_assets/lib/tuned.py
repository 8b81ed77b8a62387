"""What ``tuned_model`` hands downstream, and how it is recorded in MLflow.

A typed value instead of a dict of 16 keys: ``onnx_model``, ``model_evaluation``,
``drift_reference`` and the ONNX parity check read fields a type checker knows, and the MLflow
record of a training run (parameters, metrics, featurizer, second stage, the registered
model and its ``challenger`` alias) is written in one place.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spam_assets.lib.matrices import FeatureMatrices
from spam_assets.lib.training import Trained, TrainingPolicy
from spam_serving.featurize import Featurizer

CHALLENGER = "challenger"
PIP_REQUIREMENTS = ["xgboost>=3.0", "numpy"]


@dataclass
class TunedModel:
    """The deployed model (trees, optional second stage), its featurizer and operating
    points, and where it is registered."""

    #: the trees, XGBoost's own UBJSON format
    booster: bytes
    config: dict
    num_boost_round: int
    #: the ``junk`` threshold (the deployed label's)
    threshold: float
    #: per action band (``junk``, ``reject``)
    thresholds: dict[str, float]
    #: threshold per ham FPR budget, chosen on held-out scores
    fpr_thresholds: dict[float, float]
    #: out-of-sample scores per training split: the score-drift reference
    oof_scores: dict[str, np.ndarray]
    #: the ensemble's second stage (``None``: the trees alone)
    stack: dict | None
    n_base: int
    #: the deployed featurizer (refitted on train + validation when the policy says so)
    featurizer: Featurizer
    #: the splits as ``featurizer`` sees them (files), when it is not ``feature_pipeline``
    matrices: FeatureMatrices | None
    model_name: str
    model_version: str
    run_id: str

    @property
    def featurizer_hash(self) -> str:
        return self.featurizer.state_hash

    @property
    def n_features(self) -> int:
        return self.featurizer.n_features


def log_training_run(
    mlf: Any,
    client: Any,
    model_name: str,
    trained: Trained,
    params: dict[str, Any],
    metrics: dict[str, float],
    policy: TrainingPolicy,
    version_tags: dict[str, str],
) -> str:
    """Record a finished training in the active MLflow run (``mlf``: the ``mlflow`` module or
    dagster-mlflow's wrapper of it), register the trees as a new version of ``model_name``
    and point ``challenger`` at it, tagged with ``version_tags``; returns the version."""
    import mlflow.xgboost

    booster, featurizer = trained.booster, trained.featurizer
    mlf.log_params(
        {
            **params,
            "n_features": featurizer.n_features,
            "target_ham_fpr": policy.target_ham_fpr,
            "reject_ham_fpr": policy.reject_ham_fpr,
            "refit_with_validation": policy.refit_with_validation,
            "model_kind": "ensemble" if trained.stack else "xgboost",
        }
    )
    mlf.log_metrics(
        {
            **metrics,
            "threshold": trained.thresholds["junk"],
            "reject_threshold": trained.thresholds["reject"],
        }
    )
    mlf.set_tags({"featurizer_hash": featurizer.state_hash})
    with tempfile.TemporaryDirectory() as tmp:
        fz = Path(tmp) / "featurizer.json"
        fz.write_text(featurizer.to_json())
        mlf.log_artifact(str(fz))
        if trained.stack:
            (Path(tmp) / "stack.json").write_text(json.dumps(trained.stack, indent=2))
            mlf.log_artifact(str(Path(tmp) / "stack.json"))
    info = mlflow.xgboost.log_model(
        booster,
        name="model",
        registered_model_name=model_name,
        pip_requirements=PIP_REQUIREMENTS,
        model_format="ubj",
    )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    for key, value in version_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return version
