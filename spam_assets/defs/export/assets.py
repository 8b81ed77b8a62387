"""Export stage: the model (XGBoost, or the ensemble around it) -> one ONNX graph, written
as a bundle with the featurizer it needs."""

import dagster as dg

from spam_assets.azure_target import k8s_op_tags
from spam_assets.defs.resources import MlflowRegistry, StorageResource
from spam_assets.lib.ensemble import Stack
from spam_assets.lib.onnx_export import booster_from_bytes, to_onnx
from spam_assets.lib.tuned import TunedModel
from spam_serving.explain import EnsembleExplainer, TreeExplainer
from spam_serving.featurize import Featurizer
from spam_serving.model_bundle import write_bundle


@dg.asset(
    group_name="export",
    kinds={"onnx"},
    op_tags=k8s_op_tags("onnx_model"),
    description="The model as one ONNX graph + featurizer state + action thresholds + "
    "explainer, versioned together as a bundle (what the service loads).",
)
def onnx_model(
    context: dg.AssetExecutionContext,
    tuned_model: TunedModel,
    feature_pipeline: Featurizer,
    model_evaluation: dict,
    storage: StorageResource,
    registry: MlflowRegistry,
) -> dg.Output[dict]:
    """Depends on ``model_evaluation`` so the blocking quality gate stops the export.

    The bundle is logged as the ``bundle/`` artifact of the registered version's run, which is
    how the champion comparison and the service find it again by alias.
    """
    # the featurizer the model was trained with travels with it (refitted on train +
    # validation, spam_assets.lib.final_fit); a tuned_model without one used feature_pipeline
    featurizer: Featurizer = tuned_model.featurizer or feature_pipeline
    if featurizer.state_hash != tuned_model.featurizer_hash:
        raise dg.Failure(
            description="onnx_model: feature_pipeline changed since tuned_model was trained "
            f"({featurizer.state_hash[:12]} != {tuned_model.featurizer_hash[:12]}); "
            "re-materialize tuned_model"
        )
    booster = booster_from_bytes(tuned_model.booster)
    stack = Stack.from_dict(tuned_model.stack) if tuned_model.stack else None
    n_base = featurizer.n_base_features
    onnx_bytes = to_onnx(booster, featurizer.n_features, stack, n_base)
    explainer = TreeExplainer.from_xgboost_json(booster.save_raw("json"))
    if stack is not None:
        explainer = EnsembleExplainer.from_stack(explainer, n_base, stack)
    version = tuned_model.model_version
    path = storage.bundle_dir(tuned_model.model_name, version)
    meta = write_bundle(
        path,
        onnx_bytes,
        featurizer,
        tuned_model.booster,
        {
            "model_name": tuned_model.model_name,
            "model_version": version,
            "mlflow_run_id": tuned_model.run_id,
            "threshold": tuned_model.threshold,
            "thresholds": tuned_model.thresholds,
            "fpr_thresholds": {str(k): v for k, v in tuned_model.fpr_thresholds.items()},
            "stack": tuned_model.stack,
            "n_base": n_base,
            "test_metrics": {
                k: v for k, v in model_evaluation["metrics"].items() if not isinstance(v, dict)
            },
        },
        explainer=explainer,
    )
    client = registry.client()
    client.log_artifacts(tuned_model.run_id, str(path), "bundle")
    client.set_model_version_tag(registry.model_name, version, "onnx_sha256", meta["onnx_sha256"])
    client.set_model_version_tag(registry.model_name, version, "bundle_path", str(path))
    context.log.info(f"bundle v{version} written to {path}")
    return dg.Output(
        {**meta, "bundle_path": str(path)},
        metadata={
            "model_version": version,
            "bundle_path": dg.MetadataValue.path(str(path)),
            "onnx_bytes": len(onnx_bytes),
            "onnx_sha256": meta["onnx_sha256"],
            "featurizer_hash": meta["featurizer_hash"],
        },
    )
