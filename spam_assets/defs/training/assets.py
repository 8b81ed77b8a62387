"""Training stage: Ray Tune search -> refit -> MLflow registry (alias ``challenger``) ->
evaluation on the time-split test set (against the champion when there is one)."""

import contextlib
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np

from spam_assets.azure_target import k8s_op_tags
from spam_assets.defs.resources import FeastResource, MlflowRegistry, ModelPolicy, TuningResource
from spam_assets.defs.tables import table
from spam_assets.lib.champion import ChampionError, champion_metrics
from spam_assets.lib.ensemble import model_scores
from spam_assets.lib.final_fit import deployed_matrix
from spam_assets.lib.matrices import FeatureMatrices
from spam_assets.lib.metrics import (
    confusion_markdown,
    evaluate,
    low_fpr_curve,
    low_fpr_png,
    markdown_table,
    metric_rows,
    png_markdown,
    pr_curve_png,
)
from spam_assets.lib.onnx_export import booster_from_bytes
from spam_assets.lib.ray_xgboost import ClusterTrees, connected
from spam_assets.lib.split_store import SplitTable
from spam_assets.lib.splits import FEEDBACK_GROUP
from spam_assets.lib.training import band_rows, train, tune_data
from spam_assets.lib.tuned import TunedModel, log_training_run
from spam_assets.lib.tuning import local_trees, trials_rows


@dg.asset(
    group_name="training",
    kinds={"xgboost", "mlflow", "ray"},
    op_tags=k8s_op_tags("tuned_model"),
    # dagster-mlflow's resource is a legacy (non-Pythonic) resource, so every resource of this
    # asset is requested by key.
    required_resource_keys={"mlflow", "tuning", "policy", "registry", "storage"},
    description="The deployed model: Ray Tune search over XGBoost, then (by default) the "
    "ensemble of those trees, a char n-gram text model and rule-style signs, with its "
    "thresholds chosen on out-of-fold scores; registered in MLflow as challenger.",
)
def tuned_model(
    context: dg.AssetExecutionContext,
    feature_matrices: FeatureMatrices,
    feature_pipeline,
    dataset_splits: SplitTable,
) -> dg.Output[TunedModel]:
    """The Dagster run's MLflow run (dagster-mlflow) is the parent; each Tune trial is a
    nested child run. The trees are refitted with the best config and its early-stopped
    round count on train + validation with a featurizer refitted on both
    (``SPAM_REFIT_WITH_VALIDATION``, ``spam_assets.lib.final_fit``); the ensemble's second
    stage and every threshold come from a time-blocked cross-fit of the training period
    (``spam_assets.lib.training``). The deployed featurizer and matrices travel in this
    output."""
    import mlflow

    mlf = context.resources.mlflow
    tuning: TuningResource = context.resources.tuning
    policy: ModelPolicy = context.resources.policy
    registry: MlflowRegistry = context.resources.registry
    parent = mlflow.active_run()
    if parent is None:
        raise dg.Failure(description="tuned_model: dagster-mlflow did not start an MLflow run")
    parent_id = parent.info.run_id
    data = tune_data(
        feature_matrices, feature_pipeline.n_base_features, tuning.max_rows, tuning.seed
    )
    started = time.perf_counter()
    try:
        result = tuning.search(
            data,
            f"tune-{context.run.run_id[:8]}",
            mlflow_uri=registry.tracking_uri,
            experiment=registry.experiment,
            parent_run_id=parent_id,
        )
    except RuntimeError as exc:
        mlf.end_run(status="FAILED")
        raise dg.Failure(description=f"tuned_model: {exc}") from exc
    tune_s = time.perf_counter() - started

    rounds = result.best_iteration + 1
    fit_started = time.perf_counter()
    # on a Ray cluster the tree models train data-parallel there; otherwise in this process
    cluster = ClusterTrees(tuning.train_workers) if tuning.ray_address else None
    with connected(tuning.ray_address) if cluster else contextlib.nullcontext():
        trained = train(
            feature_pipeline=feature_pipeline,
            feature_matrices=feature_matrices,
            dataset_splits=dataset_splits,
            config=result.best_config,
            rounds=rounds,
            nthread=tuning.num_cpus,
            policy=policy.training_policy(),
            fit_trees=cluster or local_trees,
            matrices_dir=Path(context.resources.storage.data_dir) / "deployed_matrices",
        )
    fit_s = time.perf_counter() - fit_started
    booster, featurizer = trained.booster, trained.featurizer
    booster.set_param({"nthread": 1})
    threshold = trained.thresholds["junk"]
    version = log_training_run(
        mlf,
        registry.client(),
        registry.model_name,
        trained,
        params={**result.best_config, "num_boost_round": rounds},
        metrics={
            **{f"best_{k}": float(v) for k, v in result.best_metrics.items()},
            "tune_seconds": tune_s,
            "fit_seconds": fit_s,
            "n_trials": len(result.trials),
        },
        policy=policy.training_policy(),
        version_tags={
            "threshold": str(threshold),
            "featurizer_hash": featurizer.state_hash,
            "dagster_run_id": context.run.run_id,
        },
    )
    # dagster-mlflow leaves its run open (it unregisters MLflow's atexit end); this asset is
    # the last writer to it in the run, so close it here with a real status.
    mlf.end_run()

    return dg.Output(
        TunedModel(
            booster=bytes(booster.save_raw("ubj")),
            config=result.best_config,
            num_boost_round=rounds,
            threshold=threshold,
            thresholds=trained.thresholds,
            fpr_thresholds=trained.fpr_thresholds,
            oof_scores=trained.oof_scores,
            stack=trained.stack,
            n_base=featurizer.n_base_features,
            featurizer=featurizer,
            matrices=trained.matrices,  # files (FeatureMatrices), or None: not refitted
            model_name=registry.model_name,
            model_version=version,
            run_id=parent_id,
        ),
        metadata={
            "model_version": version,
            "mlflow_run_id": parent_id,
            "model_kind": "ensemble (trees + char n-grams + signs)" if trained.stack else "xgboost",
            "threshold": round(threshold, 4),
            "reject_threshold": round(trained.thresholds["reject"], 4),
            "thresholds_chosen_on": trained.selection,
            "action_bands": table(band_rows(trained.bands)),
            "num_boost_round": rounds,
            "fitted_on": "train + validation" if policy.refit_with_validation else "train",
            "featurizer_refitted": featurizer is not feature_pipeline,
            "fitted_on_rows": len(data["y_train"])
            + (len(data["y_val"]) if policy.refit_with_validation else 0),
            "n_trials": len(result.trials),
            "trial_nodes": len({t.get("node_id") for t in result.trials}),
            "trees_trained_on": (
                cluster.summary(str(tuning.ray_address)) if cluster else "this process"
            ),
            "searched_on_rows": len(data["y_train"]),
            "search_sample": (
                f"{len(data['y_train'])} of {data['n_train_all']} training rows "
                f"(SPAM_TUNE_MAX_ROWS); the final fit uses all"
                if data["sampled"]
                else "all training rows"
            ),
            "best_val_aucpr": round(float(result.best_metrics["val_aucpr"]), 4),
            "tune_seconds": round(tune_s, 1),
            "fit_seconds": round(fit_s, 1),
            "trials": table(trials_rows(result.trials)),
            **(
                {"stack_weights": dg.MetadataValue.json(trained.stack_report["weights"])}
                if trained.stack
                else {}
            ),
        },
    )


@dg.asset(
    group_name="training",
    kinds={"mlflow"},
    description="The deployed model on the test split: metric table, confusion matrix, PR "
    "curve and recall at low ham FPR, against the champion when there is one (logged to MLflow).",
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    tuned_model: TunedModel,
    feature_matrices: FeatureMatrices,
    dataset_splits: SplitTable,
    registry: MlflowRegistry,
    feast: FeastResource,
) -> dg.Output[dict]:
    test = feature_matrices["test"]
    booster = booster_from_bytes(tuned_model.booster)
    scores = model_scores(
        booster,
        tuned_model.stack,
        deployed_matrix(tuned_model, feature_matrices, "test"),
        tuned_model.n_base,
    )
    y = np.asarray(test["y"]).astype(int)
    metrics = evaluate(
        y,
        scores,
        np.asarray(test["group"]),
        tuned_model.threshold,
        tuned_model.fpr_thresholds,
    )
    try:
        champion = champion_metrics(
            registry.client(),
            registry.model_name,
            dataset_splits.iter_frames("test"),
            tuned_model.model_version,
            context.log.info,
            (scores, tuned_model.threshold),
            feast.store,
        )
    except ChampionError as exc:
        raise dg.Failure(description=f"model_evaluation: {exc}") from exc
    significance = champion["mcnemar"] if champion else None
    matched = champion.get("matched") if champion else None

    n_feedback = sum(
        g == FEEDBACK_GROUP
        for part in ("train", "validation")
        for g in feature_matrices[part]["group"]
    )
    client = registry.client()
    client.set_tag(tuned_model.run_id, "n_feedback_train", str(n_feedback))
    if significance:
        client.log_metric(tuned_model.run_id, "mcnemar_p_value", significance["p_value"])
    for key, value in metrics.items():
        if isinstance(value, int | float):
            client.log_metric(tuned_model.run_id, f"test_{key}", float(value))
    results = {f"v{tuned_model.model_version} (challenger)": metrics}
    if champion is not None:
        results[f"v{champion['model_version']} (champion)"] = champion
    png = pr_curve_png(y, scores, tuned_model.threshold)
    low_png = low_fpr_png(y, scores, tuned_model.threshold)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pr_curve.png").write_bytes(png)
        (Path(tmp) / "low_fpr_curve.png").write_bytes(low_png)
        (Path(tmp) / "metrics.md").write_text(markdown_table(results))
        client.log_artifacts(tuned_model.run_id, tmp, "evaluation")
    return dg.Output(
        {
            "model_version": tuned_model.model_version,
            "metrics": metrics,
            "champion": champion,
        },
        metadata={
            "model_version": tuned_model.model_version,
            **{
                k: round(metrics[k], 4)
                for k in ("f1", "recall", "easy_ham_fpr", "hard_ham_fpr", "pr_auc")
            },
            "recall_at_fpr_0.1pct": round(metrics["recall_at_fpr_0.1pct"], 4),
            "metrics": table(metric_rows(results)),
            "confusion_matrix": dg.MetadataValue.md(confusion_markdown(metrics["confusion"])),
            "recall_at_low_ham_fpr": table(low_fpr_curve(y, scores)),
            "low_fpr_curve": dg.MetadataValue.md(png_markdown(low_png, "recall vs ham FPR")),
            "pr_curve": dg.MetadataValue.md(png_markdown(png, "PR curve")),
            "champion_version": champion["model_version"] if champion else "none",
            "n_test": len(y),
            "n_feedback_train": n_feedback,
            **(
                {
                    "mcnemar_p_value": round(significance["p_value"], 6),
                    "only_challenger_correct": significance["b_only_correct"],
                    "only_champion_correct": significance["a_only_correct"],
                }
                if significance
                else {}
            ),
            **(
                {
                    "matched_ham_fpr": round(matched["ham_fpr"], 4),
                    "matched_champion_recall": round(matched["champion_recall"], 4),
                    "matched_challenger_recall": round(matched["challenger_recall"], 4),
                    "matched_mcnemar_p_value": round(matched["mcnemar_spam"]["p_value"], 6),
                    "recall_at_held_out_ham_fpr": dg.MetadataValue.json(matched["at_ham_fpr"]),
                }
                if matched
                else {}
            ),
        },
    )
