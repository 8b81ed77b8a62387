"""Ray Tune search over XGBoost parameters, each trial a nested MLflow run.

Trials run on Ray workers (local Ray by default, a cluster when ``address`` is set) with one
thread each, so ``num_cpus`` trials run side by side. Trial runs are logged from the driver by
Ray's ``MLflowLoggerCallback`` with ``mlflow.parentRunId`` pointing at the Dagster run's MLflow
run: no concurrent writers on the SQLite backend, and the trials nest in the MLflow UI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spam_assets.lib.ray_xgboost import connected
from spam_assets.lib.tree_matrix import Rows, tree_matrix

# Ray >= 2.43 notices a driver started by `uv run` (as `make` does) and re-launches every
# worker through `uv run` with the working directory packaged; on an offline laptop that
# fails worker start-up. Workers here share the driver's venv, so turn the hook off. Ray
# reads this when it is first imported, hence module level, before any `import ray`.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

FIXED_PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": ["logloss", "aucpr"],
    "tree_method": "hist",
}


@dataclass
class TuneResult:
    best_config: dict
    best_iteration: int
    best_metrics: dict
    trials: list[dict]


def search_space(seed: int) -> dict:
    from ray import tune

    return {
        # Shallow, strongly regularised trees: the test period differs from the training one,
        # and deep trees latch on to period artifacts that validation cannot reveal.
        "eta": tune.loguniform(0.03, 0.3),
        "max_depth": tune.randint(2, 7),
        "min_child_weight": tune.loguniform(1.0, 10.0),
        "subsample": tune.uniform(0.6, 1.0),
        "colsample_bytree": tune.uniform(0.2, 0.8),
        "lambda": tune.loguniform(1.0, 30.0),
        "seed": seed,
    }


def xgb_params(config: dict, nthread: int) -> dict:
    return {**FIXED_PARAMS, **config, "nthread": nthread}


def train_booster(config: dict, data: dict, rounds: int, early_stopping: int | None, nthread: int):
    """Train on the train split, early-stopping on validation. Shared by trials and the refit."""
    import xgboost as xgb

    dtrain = tree_matrix(data["X_train"], data["y_train"])
    dval = tree_matrix(data["X_val"], data["y_val"], ref=dtrain)
    return xgb.train(
        xgb_params(config, nthread),
        dtrain,
        num_boost_round=rounds,
        evals=[(dval, "val")],
        early_stopping_rounds=early_stopping,
        verbose_eval=False,
    )


#: What a trial row shows in the asset metadata (Ray adds host, pid, paths... to every result).
TRIAL_COLUMNS = (
    "eta",
    "max_depth",
    "min_child_weight",
    "subsample",
    "colsample_bytree",
    "lambda",
    "val_aucpr",
    "val_logloss",
    "best_iteration",
    "time_total_s",
)


def trials_rows(trials: list[dict]) -> list[dict]:
    """The trials' parameters and validation results, best first (rounded to 4 places)."""
    import pandas as pd

    df = pd.DataFrame(trials)
    df = df[[c for c in TRIAL_COLUMNS if c in df.columns]]
    if "val_aucpr" in df.columns:
        df = df.sort_values("val_aucpr", ascending=False)
    return df.round(4).to_dict("records")


def trials_markdown(trials: list[dict]) -> str:
    """The trials as a markdown table (the MLflow run's artifact)."""
    import pandas as pd

    return pd.DataFrame(trials_rows(trials)).to_markdown(index=False)


def local_trees(params: dict, x: Rows, y: Rows, rounds: int):
    """``xgboost.train`` on (x, y) in this process: how tree models are fitted without a Ray
    cluster (``spam_assets.lib.ray_xgboost.ClusterTrees`` is the other way). ``x`` may be
    blocks of rows (``spam_assets.lib.tree_matrix``), never concatenated here."""
    import xgboost as xgb

    return xgb.train(params, tree_matrix(x, y), num_boost_round=rounds)


def fit_final(
    config: dict,
    data: dict,
    rounds: int,
    nthread: int,
    final: dict | None = None,
    fit_trees: Callable = local_trees,
) -> tuple:
    """The model to deploy, and out-of-sample validation scores to choose its threshold on.

    The Tune winner's configuration and early-stopped round count are refitted on the train
    split: its validation scores never saw validation rows, so the threshold for the target
    ham FPR (and the score-drift reference) comes from them. With ``final`` (``X``/``y``: train
    + validation under the deployed featurizer, see ``spam_assets.lib.final_fit``) the
    deployed model is trained once more, same parameters and rounds, on those rows; without
    it the train-only model is deployed."""

    from spam_assets.lib.onnx_export import native_scores

    selection = train_booster(config, data, rounds, None, nthread)
    val_scores = native_scores(selection, data["X_val"])
    if final is None:
        return selection, val_scores
    return fit_trees(xgb_params(config, nthread), final["X"], final["y"], rounds), val_scores


def _trial(config: dict, data: dict, max_rounds: int, early_stopping: int) -> None:
    import ray
    from ray import tune
    from sklearn.metrics import average_precision_score, log_loss

    booster = train_booster(config, data, max_rounds, early_stopping, nthread=1)
    import xgboost as xgb

    best = booster.best_iteration
    p = booster.predict(xgb.DMatrix(data["X_val"]), iteration_range=(0, best + 1))
    tune.report(
        {
            # which Ray node ran the trial (a cluster spreads them)
            "node_id": ray.get_runtime_context().get_node_id(),
            "val_aucpr": float(average_precision_score(data["y_val"], p)),
            "val_logloss": float(log_loss(data["y_val"], p, labels=[0, 1])),
            "best_iteration": int(best),
        }
    )


def run_search(
    data: dict,
    *,
    num_samples: int,
    num_cpus: int,
    address: str | None,
    max_rounds: int,
    early_stopping: int,
    seed: int,
    storage_dir: Path,
    run_name: str,
    mlflow_uri: str | None = None,
    experiment: str | None = None,
    parent_run_id: str | None = None,
) -> TuneResult:
    """Run the search and return the best configuration (by validation PR AUC).

    With ``mlflow_uri`` every trial is logged as a child of ``parent_run_id``; without it
    (benchmarks) nothing is tracked."""
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search import BasicVariantGenerator

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    with connected(address, num_cpus):
        trainable = tune.with_resources(
            tune.with_parameters(
                _trial, data=data, max_rounds=max_rounds, early_stopping=early_stopping
            ),
            {"cpu": 1},
        )
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(seed),
            tune_config=tune.TuneConfig(
                metric="val_aucpr",
                mode="max",
                num_samples=num_samples,
                # the limit goes on the generator itself: Tune ignores (with a warning)
                # TuneConfig.max_concurrent_trials when a BasicVariantGenerator is passed
                search_alg=BasicVariantGenerator(
                    random_state=seed, max_concurrent=max(1, num_cpus)
                ),
            ),
            run_config=tune.RunConfig(
                name=run_name,
                storage_path=str(storage_dir.resolve()),
                verbose=0,
                callbacks=[
                    MLflowLoggerCallback(
                        tracking_uri=mlflow_uri,
                        experiment_name=experiment,
                        tags={"mlflow.parentRunId": parent_run_id},
                        save_artifact=False,
                    )
                ]
                if mlflow_uri
                else [],
            ),
        )
        grid = tuner.fit()
        errors = [str(r.error) for r in grid if r.error]
        if len(errors) == len(grid):
            raise RuntimeError(f"every Tune trial failed; first error: {errors[0]}")
        best = grid.get_best_result(metric="val_aucpr", mode="max")
        trials = [
            {**{k: r.config[k] for k in r.config if k != "seed"}, **(r.metrics or {})}
            for r in grid
            if not r.error
        ]
        return TuneResult(
            best_config=dict(best.config),
            best_iteration=int(best.metrics["best_iteration"]),
            best_metrics={k: best.metrics[k] for k in ("val_aucpr", "val_logloss")},
            trials=trials,
        )
