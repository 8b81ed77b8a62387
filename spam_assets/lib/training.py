"""What ``tuned_model`` computes after the Ray Tune search: the deployed model (final fit),
the ensemble's second stage, and the operating points, chosen without test labels.

Operating points: for the ensemble, the out-of-fold scores of the whole training period
(time-blocked folds, ``spam_assets.lib.ensemble``), so a budget is judged on ~2,600 ham
instead of the validation slice's ~500; for the tree model alone, the validation slice as
before. Each action's threshold holds its ham FP budget with a stated confidence (an upper
bound, not a point estimate: ``spam_assets.lib.metrics.allowed_false_positives``).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spam_assets.lib.ensemble import cross_fit, period_inputs
from spam_assets.lib.featurize_pool import FeaturizePool, frame_chunks
from spam_assets.lib.final_fit import (
    CHUNK_ROWS,
    FIT_SPLITS,
    deployed_features,
    final_rows,
    fit_labels,
    reputation_block,
)
from spam_assets.lib.mapped import release
from spam_assets.lib.metrics import FPR_POINTS, threshold_for_budget, threshold_for_fpr
from spam_assets.lib.sampling import describe, sample_rows, stratified
from spam_assets.lib.split_store import SplitTable
from spam_assets.lib.tuning import fit_final, local_trees, xgb_params
from spam_serving.featurize import Featurizer

#: The actions of the score bands, mildest first: ``deliver`` below ``junk``'s threshold.
ACTIONS = ("deliver", "junk", "reject")


def tune_data(
    feature_matrices: Mapping, n_base: int, max_rows: int | None = None, seed: int = 0
) -> dict:
    """Train/validation matrices of the tree model: the columns before the stacking block.

    With more than ``max_rows`` training rows, the search sees a label-stratified sample of
    ``max_rows`` of them and of validation in the same proportion: hyperparameters and the
    early-stopped round count settle long before a million rows, while the search's cost
    grows with every row of every trial. The final fit uses all rows (``train``)."""
    train, val = feature_matrices["train"], feature_matrices["validation"]
    n_train = len(train["y"])
    keep = 1.0 if max_rows is None or n_train <= max_rows else max_rows / n_train
    rng = np.random.default_rng(seed)
    i_train, i_val = stratified(train["y"], keep, rng), stratified(val["y"], keep, rng)
    return {
        "X_train": train["X"][i_train, :n_base],
        "y_train": train["y"][i_train],
        "X_val": val["X"][i_val, :n_base],
        "y_val": val["y"][i_val],
        "sampled": keep < 1.0,
        "n_train_all": n_train,
    }


@dataclass(frozen=True)
class TrainingPolicy:
    """The settings :func:`train` follows (``SPAM_*`` of the same names; their defaults live
    in ``SpamSettings`` only)."""

    refit_with_validation: bool
    target_ham_fpr: float
    reject_ham_fpr: float
    budget_confidence: float
    ensemble_folds: int
    stack_l2: float
    balance_ham_groups: bool
    #: most training-period messages the featurizers and the cross-fit are fitted on
    fit_max_rows: int | None = None
    seed: int = 0
    #: processes that featurize (``spam_assets.lib.featurize_pool``)
    featurize_workers: int = 1


@dataclass
class Trained:
    """The deployed model and how its operating points were chosen."""

    booster: object
    featurizer: Featurizer
    #: the deployed featurizer's rows per split (arrays, or files: ``FeatureMatrices``)
    matrices: Mapping | None
    stack: dict | None
    thresholds: dict[str, float]
    fpr_thresholds: dict[float, float]
    #: out-of-sample scores per training split (drift reference, threshold provenance)
    oof_scores: dict[str, np.ndarray]
    selection: str
    stack_report: dict = field(default_factory=dict)
    #: per action: budget, threshold, allowed false positives, bound, certified
    bands: dict = field(default_factory=dict)
    #: the ensemble's out-of-fold scores of the training period's JSON-fields copies
    oof_fields: np.ndarray | None = None


def train(
    *,
    feature_pipeline: Featurizer,
    feature_matrices: Mapping,
    dataset_splits: SplitTable,
    config: dict,
    rounds: int,
    nthread: int,
    policy: TrainingPolicy,
    fit_trees: Callable = local_trees,
    matrices_dir: Path | None = None,
) -> Trained:
    """Final fit of the trees (and featurizer), then for a stacked featurizer the time-
    blocked cross-fit of the ensemble; thresholds for every action and FPR point. With
    ``matrices_dir`` the deployed featurizer's matrices are written there as files
    (``Trained.matrices``: a ``FeatureMatrices``), otherwise kept in memory."""

    n_base = feature_pipeline.n_base_features
    stacked = feature_pipeline.config.stacked
    data = tune_data(feature_matrices, n_base)
    featurizer, matrices, final = feature_pipeline, None, None
    if policy.refit_with_validation:
        featurizer, matrices = deployed_features(
            feature_pipeline,
            feature_matrices,
            dataset_splits,
            policy.fit_max_rows,
            policy.seed,
            matrices_dir,
            policy.featurize_workers,
        )
        final = final_rows(matrices, feature_matrices)
        # the refitted featurizer has vocabularies (and so a base block) of its own
        final = {"X": [x[:, : featurizer.n_base_features] for x in final["X"]], "y": final["y"]}
    reputation = feature_pipeline.config.reputation
    period, n_period, picked = None, 0, slice(None)
    if stacked:
        # the cross-fit refits a featurizer per fold: on a big corpus, a sample of the period
        labels = fit_labels(feature_matrices)
        n_period = len(labels)
        picked = sample_rows(labels, policy.fit_max_rows, policy.seed)
        period = period_inputs(
            feature_matrices, dataset_splits, n_base, reputation, FIT_SPLITS, picked
        )
    with _scratch(matrices_dir) as scratch:
        if stacked:
            # the deployed trees see every training message in both forms, as the folds did
            fit_splits = FIT_SPLITS if policy.refit_with_validation else ("train",)
            fit_y = fit_labels(feature_matrices, fit_splits)
            rep = reputation_block(feature_matrices, fit_splits, n_base, reputation)
            frames = dataset_splits.frames(fit_splits, CHUNK_ROWS)
            block = fields_block(
                featurizer, frames, len(fit_y), rep, scratch, policy.featurize_workers
            )
            rows = final["X"] if final else [data["X_train"]]
            final = {"X": [*rows, block], "y": np.concatenate([fit_y, fit_y])}  # blocks
        if stacked:
            # the cross-fit's out-of-fold scores choose the thresholds: no train-only model
            # for validation scores (on a big corpus, a second fit on every training row)
            booster = fit_trees(xgb_params(config, nthread), final["X"], final["y"], rounds)
        else:
            booster, val_scores = fit_final(config, data, rounds, nthread, final, fit_trees)
    stack, report = None, {}
    if period is not None:

        def train_trees(x: np.ndarray, y: np.ndarray):
            return fit_trees(xgb_params(config, nthread), x, y, rounds)

        fit = cross_fit(
            period["messages"],
            period["labels"],
            period["groups"],
            period["times"],
            feature_pipeline.config,
            train_trees,
            folds=policy.ensemble_folds,
            l2=policy.stack_l2,
            balance_ham_groups=policy.balance_ham_groups,
            reputation=period["reputation"],
            workers=policy.featurize_workers,
        )
        stack = fit.stack.to_dict()
        y_sel, s_sel = period["labels"], fit.oof_scores
        sizes = [len(feature_matrices[s]["y"]) for s in FIT_SPLITS]
        oof = dict(
            zip(FIT_SPLITS, np.split(_spread(fit.oof_scores, picked, n_period),
                                     np.cumsum(sizes)[:-1]), strict=True)
        )  # fmt: skip
        oof_fields = _spread(fit.oof_scores_fields, picked, n_period)
        selection = f"out-of-fold, {policy.ensemble_folds} time-blocked folds of " + describe(
            picked, n_period, "train + validation messages", "SPAM_FIT_MAX_ROWS"
        )
        report = {"n_ham": int((y_sel == 0).sum()), "weights": stack}
    else:
        y_sel, s_sel = np.asarray(data["y_val"]), val_scores
        oof = {"validation": val_scores}
        selection = "validation slice (newest 20% of each training group)"
    budgets = {"junk": policy.target_ham_fpr, "reject": policy.reject_ham_fpr}
    bands = action_bands(y_sel, s_sel, budgets, policy.budget_confidence)
    if period is not None:  # the JSON door's own operating points, at the same budgets
        fields = action_bands(y_sel, fit.oof_scores_fields, budgets, policy.budget_confidence)
        bands.update({k + "_fields": v for k, v in fields.items()})
    thresholds = {k: v["threshold"] for k, v in bands.items()}
    fpr_thresholds = {f: threshold_for_fpr(y_sel, s_sel, f) for f in FPR_POINTS}
    return Trained(
        booster,
        featurizer,
        matrices,
        stack,
        thresholds,
        fpr_thresholds,
        oof,
        selection,
        report,
        bands,
        oof_fields if period is not None else None,
    )


def fields_block(
    featurizer: Featurizer,
    frames: Iterable[pd.DataFrame],
    n_rows: int,
    reputation: np.ndarray | None,
    scratch: Path | None = None,
    workers: int = 1,
) -> np.ndarray:
    """The base block of the rows' JSON-fields copies (what the deployed trees train on
    beside the raw rows), transformed a frame of split-table rows at a time in ``workers``
    processes; into a ``.npy`` under ``scratch`` when given (memory-mapped), else into
    memory."""
    shape = (n_rows, featurizer.n_base_features)
    out = (
        np.lib.format.open_memmap(scratch / "fields.npy", mode="w+", dtype=np.float32, shape=shape)
        if scratch is not None
        else np.empty(shape, np.float32)
    )
    start = 0
    with FeaturizePool(featurizer, workers) as pool:
        for rows in pool.map(frame_chunks(frames, reputation, fields=True)):
            stop = start + len(rows)
            if stop > n_rows:
                raise ValueError(f"more rows than a block of {n_rows}")
            out[start:stop] = rows[:, : shape[1]]
            release(out[start:stop])  # a scratch file's written pages leave the resident set
            start = stop
    if start != n_rows:
        raise ValueError(f"{start} rows for a block of {n_rows}")
    return out


@contextlib.contextmanager
def _scratch(matrices_dir: Path | None) -> Iterator[Path | None]:
    """A directory beside the deployed matrices for the final fit's temporary files (removed
    afterwards), or None: keep them in memory."""
    if matrices_dir is None:
        yield None
        return
    matrices_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".final-fit-", dir=matrices_dir) as tmp:
        yield Path(tmp)


def _spread(scores: np.ndarray, picked: np.ndarray | slice, n: int) -> np.ndarray:
    """Out-of-fold scores of the sampled rows at their places among ``n``; NaN elsewhere
    (rows the cross-fit did not score)."""
    out = np.full(n, np.nan)
    out[picked] = scores
    return out


def action_bands(
    y: np.ndarray, scores: np.ndarray, budgets: dict[str, float], confidence: float
) -> dict[str, dict]:
    """Per action (``junk``, ``reject``): its threshold for its ham FP budget held with
    ``confidence`` (``spam_assets.lib.metrics.threshold_for_budget``) and how it was certified.
    ``reject`` never sits below ``junk``: a stricter action needs at least the same score."""
    out = {
        name: {"budget": b, **threshold_for_budget(y, scores, b, confidence)}
        for name, b in budgets.items()
    }
    if "reject" in out and "junk" in out:
        out["reject"]["threshold"] = max(out["reject"]["threshold"], out["junk"]["threshold"])
    return out


def band_rows(bands: dict[str, dict]) -> list[dict]:
    """The action bands as rows for the asset page: what each threshold promises."""
    return [
        {
            "action": name,
            "ham_fp_budget": b["budget"],
            "threshold": b["threshold"],
            "held_out_ham_above": f"{b['allowed_false_positives']} of {b['n_ham']}",
            "fpr_upper_bound": b["fpr_upper_bound"],
            "certified": b["certified"],
        }
        for name, b in bands.items()
    ]
