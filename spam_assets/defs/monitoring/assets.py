"""Monitoring stage: the prediction log as hourly partitions, the training reference, drift
reports, and the labelled live traffic that retraining adds to the corpus."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from spam_assets.defs.monitoring.partitions import HOURLY
from spam_assets.defs.resources import MonitoringResource
from spam_assets.lib.drift import wilson_lower
from spam_assets.lib.drift_report import REFERENCE_SPLITS, build_drift_report
from spam_assets.lib.files import write_atomic
from spam_assets.lib.final_fit import deployed_matrix
from spam_assets.lib.matrices import FeatureMatrices
from spam_assets.lib.monitoring import (
    NUMERIC_COLUMNS,
    consolidate_partition,
    feedback_metrics,
    hours_between,
    labelled_examples,
    load_window,
    partition_path,
)
from spam_assets.lib.split_store import SplitTable
from spam_assets.lib.tuned import TunedModel
from spam_serving.featurize import NUMERIC_FEATURES
from spam_serving.model_bundle import ModelBundle
from spam_serving.settings import get_settings


def skipped_files(context: dg.AssetExecutionContext, problems: list[str]) -> dict:
    """Log files a read skipped (corrupt, or cut outside the writer), as a named warning in
    the run log and in the metadata; one bad file never fails a monitoring run."""
    for problem in problems:
        context.log.warning(f"inference log: skipped unreadable file {problem}")
    if not problems:
        return {"skipped_log_files": 0}
    return {
        "skipped_log_files": len(problems),
        "skipped_log_files_detail": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems)),
    }


def _hour(context: dg.AssetExecutionContext) -> datetime:
    return context.partition_time_window.start.astimezone(UTC)


@dg.asset(
    group_name="monitoring",
    partitions_def=HOURLY,
    kinds={"parquet"},
    description="One hour of the service's predictions, with the feedback labels known so far.",
)
def inference_log(
    context: dg.AssetExecutionContext, monitoring: MonitoringResource
) -> dg.MaterializeResult:
    """Consolidates the hour's many small log parts into one file. Re-materializing an old
    hour picks up feedback that arrived since (late labels); drift reports join feedback
    fresh anyway, so they never depend on when this ran."""
    hour = _hour(context)
    path = partition_path(monitoring.partitions_dir, hour)
    problems: list[str] = []
    counts = consolidate_partition(monitoring.log_root, hour, path, problems)
    n = counts["n_predictions"]
    context.log.info(f"{hour:%Y-%m-%d %H}:00 UTC: {n} predictions, {counts['n_feedback']} labels")
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in counts.items() if v is not None and k != "by_model_version"},
            "by_model_version": dg.MetadataValue.json(counts["by_model_version"]),
            "status": "no traffic in this hour" if n == 0 else "ok",
            "path": dg.MetadataValue.path(str(path)),
            **skipped_files(context, problems),
        }
    )


@dg.asset(
    group_name="monitoring",
    kinds={"parquet"},
    description="Training-period features and model scores: what drift is measured against.",
)
def drift_reference(
    context: dg.AssetExecutionContext,
    dataset_splits: SplitTable,
    feature_matrices: FeatureMatrices,
    tuned_model: TunedModel,
    onnx_model: dict,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    """Per model version, because score drift must compare a model with itself: the file for
    v<N> holds the training rows' structural features and v<N>'s scores. The rows come from
    ``feature_matrices`` and the deployed model's own matrices (``tuned_model``), so nothing
    is parsed or featurized again. The scores, which score drift compares live scores with,
    are ``tuned_model``'s out-of-sample ones wherever it has them (the ensemble: every
    training-period row, from its time-blocked cross-fit; the trees alone: the validation
    slice; on a corpus beyond ``SPAM_FIT_MAX_ROWS``, the cross-fit's sample): the deployed
    model was fitted on those rows, and its own scores there would be over-confident, so live
    traffic would look drifted."""
    bundle = ModelBundle.load(onnx_model["bundle_path"])
    domains = dataset_splits.read(["message_id", "sender_domain"]).set_index("message_id")
    domains = domains["sender_domain"].fillna("")
    parts = []
    for split in REFERENCE_SPLITS:
        m = feature_matrices[split]
        part = pd.DataFrame(m["X"][:, : len(NUMERIC_FEATURES)], columns=list(NUMERIC_COLUMNS))
        oos = tuned_model.oof_scores.get(split)
        part["score_out_of_sample"] = oos is not None
        if oos is None:
            oos = bundle.predict_matrix(deployed_matrix(tuned_model, feature_matrices, split))
        part["score"] = np.asarray(oos)
        part["split"] = split
        part["true_label"] = np.where(np.asarray(m["y"]) == 1, "spam", "ham")
        part["sender_domain"] = domains.loc[m["message_id"]].to_numpy()
        # a cross-fit on a sample (SPAM_FIT_MAX_ROWS) scored only its rows: they are the
        # reference, never in-sample scores of the rest
        parts.append(part[np.isfinite(part["score"].to_numpy())])
    ref = pd.concat(parts, ignore_index=True)
    version = str(onnx_model["model_version"])
    path = write_atomic(
        monitoring.reference_dir / f"v{version}.parquet",
        lambda tmp: ref.to_parquet(tmp, index=False),
    )
    context.log.info(f"drift reference for v{version}: {len(ref)} rows")
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "rows": len(ref),
            "spam_share": float((ref["true_label"] == "spam").mean()),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    group_name="monitoring",
    partitions_def=HOURLY,
    deps=[
        dg.AssetDep(
            inference_log,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-(get_settings().drift_window_hours - 1)
            ),
        ),
        drift_reference,
    ],
    kinds={"evidently"},
    description="Drift of the 24 h window ending at this hour against the training reference: "
    "PSI/KS per feature, score drift, feedback accuracy and ham FPR vs the budget.",
)
def drift_report(
    context: dg.AssetExecutionContext, monitoring: MonitoringResource
) -> dg.MaterializeResult:
    """The window's drift (``spam_assets.lib.drift_report``) and feedback accuracy/F1/ham FPR.
    The headline numbers are metadata (plotted over partitions in the UI) and are what the
    retrain sensor reads; Evidently renders the HTML a human opens."""
    end = _hour(context)
    hours = hours_between(end - timedelta(hours=monitoring.window_hours - 1), end)
    problems: list[str] = []
    window, raw_hours = load_window(monitoring.log_root, monitoring.partitions_dir, hours, problems)
    window_text = f"{hours[0]:%Y-%m-%d %H}:00 .. {end:%Y-%m-%d %H}:59 UTC"
    fb = feedback_metrics(window)
    base = {
        "window": window_text,
        "n_predictions": len(window),
        "n_feedback": fb["n_feedback"],
        "n_feedback_ham": fb["n_feedback_ham"],
        "n_ham_false_positives": fb["n_ham_false_positives"],
        "ham_fpr_budget": monitoring.target_ham_fpr,
        "hours_read_from_raw_log": raw_hours,
        **skipped_files(context, problems),
    }
    if len(window) < monitoring.min_predictions:
        context.log.info(f"{len(window)} predictions in {window_text}: no drift verdict")
        return dg.MaterializeResult(
            metadata={
                **base,
                "status": f"insufficient traffic (< {monitoring.min_predictions} predictions)",
                "retrain_recommended": False,
            }
        )
    stem = "drift-" + context.partition_key.replace(":", "")
    report = build_drift_report(
        window,
        monitoring.reference_dir,
        {**base, "feedback_accuracy": fb["accuracy"]},
        monitoring.thresholds(),
        feature_psi=monitoring.feature_psi,
        score_psi=monitoring.score_psi,
        html_max_rows=monitoring.html_max_rows,
        report_stem=Path(monitoring.reports_dir) / stem,
    )
    top = report.table().head(10)[["column", "kind", "psi", "ks_statistic", "p_value", "drifted"]]
    metadata = {
        **base,
        "status": "ok",
        "model_version": report.model_version,
        "score_psi": round(report.score.psi, 6),
        "score_ks": round(report.score.ks_statistic or 0.0, 6),
        "drifted_share": round(report.drifted_share, 4),
        "n_drifted_features": sum(f.drifted for f in report.features),
        "max_feature_psi": round(max(f.psi for f in report.features), 6),
        "predicted_spam_share": report.predicted_spam_share,
        "reference_spam_share": report.reference_spam_share,
        "retrain_recommended": bool(report.reasons),
        "reasons": "; ".join(report.reasons) or f"none: {report.account}",
        "top_drifted": dg.MetadataValue.md(top.round(4).to_markdown(index=False)),
        "evidently_report": dg.MetadataValue.path(report.html_path),
        "report_url": dg.MetadataValue.url(f"file://{report.html_path}"),
        "report_json": dg.MetadataValue.path(report.json_path),
    }
    for key in ("accuracy", "f1", "ham_fpr"):
        if fb[key] is not None:
            metadata[f"feedback_{key}"] = round(fb[key], 6)
    if fb["n_feedback_ham"]:
        lower = wilson_lower(fb["n_ham_false_positives"], fb["n_feedback_ham"])
        metadata["feedback_ham_fpr_lower_bound"] = round(lower, 6)
    context.log.info(f"drift {window_text}: {metadata['reasons']}")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="monitoring",
    kinds={"parquet"},
    description="Live messages with a /feedback label: added to training by the retrain job.",
)
def labelled_feedback(
    context: dg.AssetExecutionContext, monitoring: MonitoringResource
) -> dg.Output[pd.DataFrame]:
    """Messages the service logged (``SPAM_LOG_MESSAGES``) whose true label came back, from
    the last ``feedback_lookback_hours``; provenance per row (prediction id, the version
    that served it, when the label arrived)."""
    since = datetime.now(UTC) - timedelta(hours=monitoring.feedback_lookback_hours)
    problems: list[str] = []
    df = labelled_examples(monitoring.log_root, since, problems)
    versions = df["served_model_version"].value_counts().to_dict() if len(df) else {}
    context.log.info(f"{len(df)} labelled live messages since {since:%Y-%m-%d %H:%M} UTC")
    return dg.Output(
        df,
        metadata={
            "rows": len(df),
            "spam": int(df["label"].sum()) if len(df) else 0,
            "since": since.isoformat(timespec="minutes"),
            "served_by_version": dg.MetadataValue.json(
                {str(k): int(v) for k, v in versions.items()}
            ),
            "newest_feedback": str(df["feedback_ts"].max()) if len(df) else "none",
            **skipped_files(context, problems),
        },
    )
