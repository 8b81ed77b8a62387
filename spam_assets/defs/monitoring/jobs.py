"""Jobs of the loop. The retrain job is the training chain itself (same assets, no second
copy of the training code), starting at ``labelled_feedback`` so live labels join the data,
and deploying the result as a canary instead of replacing the champion outright."""

import dagster as dg

#: Assets that are not part of a (re)training run: per-hour monitoring and the canary judge.
NOT_TRAINING = dg.AssetSelection.assets("inference_log", "drift_report", "canary_rollout")

monitoring_job = dg.define_asset_job(
    "spam_monitoring",
    selection=dg.AssetSelection.assets("inference_log", "drift_report"),
    description="One hour of the prediction log, then the drift report of the window ending there.",
)

retrain_job = dg.define_asset_job(
    "spam_retrain",
    selection=dg.AssetSelection.assets("labelled_feedback", "dataset_splits").downstream()
    - NOT_TRAINING,
    config={
        "ops": {
            "local_deployment": {"config": {"strategy": "canary"}},
            "aks_deployment": {"config": {"strategy": "canary"}},
        }
    },
    description="labelled feedback + corpus -> splits -> ... -> gate -> ONNX -> canary deployment",
)

canary_job = dg.define_asset_job(
    "spam_canary",
    selection=dg.AssetSelection.assets("canary_rollout"),
    description="Judge the running canary: hold, advance, promote or roll back.",
)
