"""The ensemble model: tuned XGBoost + char n-gram text model + signs, stacked linearly.

Why a stack, and why linear (README, quality; ``make bench-quality``): at the low-false-
positive end a mail admin runs at, the tree model alone ranks commercial newsletters like
spam, the char n-gram logistic regression ranks far better, and rule-style evidence of how
a message was made (``spam_serving.signs``) carries what neither text model sees. A linear
second stage over [tree margin, char logit, signs] keeps that evidence additive, as
SpamAssassin's scores are, and every weight bounded to the sign's designed direction:
measured on the time split, tree-based stackers and unconstrained weights learned period
artifacts of the training mail and lost the low-FP end.

Stacking needs honest first-stage outputs: the second stage is trained on out-of-fold
tree margins and char logits, from folds that are contiguous in time within each group
(:func:`time_folds`), so each training message is scored by models that never saw its weeks.
The same out-of-fold scores of the stacked model choose the thresholds: with folds in time
they carry part of the period shift a deployed model meets, where random folds let a 0.1%
budget through at 0.5% on the next period.

Two doors, two second stages: a message built from JSON fields has no delivery headers, so
the signs read off them are absent and the raw-mail stage's weights (learned where those
signs carry evidence) would under-score it. The trees see both forms (each training message
also as its JSON-fields copy, delivery features NaN), and the second stage is fitted once
per form (:class:`Stack` ``fields``), selected per row by the block's ``form:json_fields``
column, in numpy and in the ONNX graph alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from spam_serving.featurize import STACK_COLUMNS, Featurizer, FeaturizerConfig
from spam_serving.parsing import ParsedMessage, message_from_fields
from spam_serving.signs import SIGNS, SPAM_SIGNS


@dataclass(frozen=True)
class Stack:
    """The second stage: ``p = sigmoid(intercept + w_trees * margin + block @ w_block)``, where
    ``block`` is the featurizer's stacking block (:data:`STACK_COLUMNS`). With ``fields``, rows
    whose ``form:json_fields`` column is 1 are scored by that stage instead."""

    intercept: float
    w_trees: float
    w_block: np.ndarray
    fields: Stack | None = None

    def _own_margin(self, tree_margin: np.ndarray, block: np.ndarray) -> np.ndarray:
        return (
            self.intercept
            + self.w_trees * np.asarray(tree_margin, dtype=np.float64)
            + (np.asarray(block, dtype=np.float64) @ self.w_block)
        )

    def margin(self, tree_margin: np.ndarray, block: np.ndarray) -> np.ndarray:
        raw = self._own_margin(tree_margin, block)
        if self.fields is None:
            return raw
        is_fields = np.asarray(block)[:, -1] > 0.5
        return np.where(is_fields, self.fields._own_margin(tree_margin, block), raw)

    def to_dict(self) -> dict:
        out = {
            "intercept": self.intercept,
            "w_trees": self.w_trees,
            "w_block": [float(v) for v in self.w_block],
            "block": list(STACK_COLUMNS),
        }
        if self.fields is not None:
            out["fields"] = self.fields.to_dict()
        return out

    @classmethod
    def from_dict(cls, state: dict) -> Stack:
        if state["block"] != list(STACK_COLUMNS):
            raise ValueError("stack weights were saved for a different stacking block")
        fields = cls.from_dict(state["fields"]) if state.get("fields") else None
        return cls(
            float(state["intercept"]),
            float(state["w_trees"]),
            np.asarray(state["w_block"], dtype=np.float64),
            fields,
        )


def bounds() -> list[tuple[float | None, float | None]]:
    """Tree margin and char logit: >= 0; spam signs >= 0; ham signs <= 0; the form column
    only selects the stage (weight 0)."""
    spam = set(SPAM_SIGNS)
    signs = [(0.0, None) if s in spam else (None, 0.0) for s in SIGNS]
    return [(0.0, None), (0.0, None), *signs, (0.0, 0.0)]


def bounded_logreg(
    z: np.ndarray,
    y: np.ndarray,
    box: Sequence[tuple[float | None, float | None]],
    l2: float,
    weight: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Weighted L2 logistic regression with box constraints on the coefficients (the
    intercept is free), by L-BFGS-B: (intercept, coefficients). Deterministic."""
    from scipy.optimize import minimize

    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    w = w * (len(y) / w.sum())  # l2 means the same whatever the weights' scale

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        b, c = theta[0], theta[1:]
        m = b + z @ c
        p = 1.0 / (1.0 + np.exp(-m))
        value = float(np.sum(w * (np.logaddexp(0.0, m) - y * m)) + 0.5 * l2 * c @ c)
        g = w * (p - y)
        return value, np.concatenate([[g.sum()], z.T @ g + l2 * c])

    res = minimize(
        loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=[(None, None), *box]
    )
    if not res.success and not np.isfinite(res.fun):
        raise RuntimeError(f"stack fit failed: {res.message}")
    return float(res.x[0]), res.x[1:]


def group_weights(labels: np.ndarray, groups: np.ndarray, balance: bool) -> np.ndarray:
    """Row weights for the second stage: with ``balance`` every ham group (easy ham, hard
    ham, a user's ham source, labelled feedback) carries the same total weight as the
    largest, so a small source of legitimate bulk mail is not traded away for the rest.
    Spam rows weigh 1."""
    labels, groups = np.asarray(labels), np.asarray(groups).astype(str)
    w = np.ones(len(labels))
    if not balance:
        return w
    ham = labels == 0
    sizes = {g: int((ham & (groups == g)).sum()) for g in np.unique(groups[ham])}
    largest = max(sizes.values(), default=0)
    for g, n in sizes.items():
        w[ham & (groups == g)] = largest / n
    return w


def time_folds(times: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """Fold id per row: within each group, rows sorted by time (unknown times first, then
    input order) and cut into ``k`` contiguous blocks."""
    times = np.asarray(times).astype("datetime64[ns]")
    groups = np.asarray(groups).astype(str)
    fold = np.zeros(len(groups), dtype=np.int64)
    key = np.where(np.isnat(times), np.datetime64(0, "ns"), times)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        idx = idx[np.argsort(key[idx], kind="stable")]
        for f, part in enumerate(np.array_split(idx, k)):
            fold[part] = f
    return fold


def fields_copy(msg: ParsedMessage) -> ParsedMessage:
    """The message as a JSON caller sends it: subject, body and sender, no delivery headers
    (header dropout: the trees and the second stage train on both forms, so the JSON door
    is judged on what it has rather than on headers it cannot supply)."""
    return message_from_fields(subject=msg.subject, body=msg.body, sender=msg.sender)


@dataclass
class CrossFit:
    """Out-of-fold first-stage outputs for every training row (then for its JSON-fields
    copy), the second stage, and the out-of-fold ensemble scores of both forms."""

    fold: np.ndarray
    tree_margin: np.ndarray
    block: np.ndarray
    stack: Stack
    oof_scores: np.ndarray
    oof_scores_fields: np.ndarray


def tree_margin(booster, x: np.ndarray) -> np.ndarray:
    """The trees' margin, predicted in place (no ``DMatrix`` copy of ``x``)."""
    return booster.inplace_predict(x, missing=np.nan, predict_type="margin").astype(np.float64)


def cross_fit(
    messages: Sequence[ParsedMessage],
    labels: np.ndarray,
    groups: np.ndarray,
    times: np.ndarray,
    config: FeaturizerConfig,
    train_trees,
    *,
    folds: int,
    l2: float,
    balance_ham_groups: bool,
    reputation: np.ndarray | None = None,
    workers: int = 1,
) -> CrossFit:
    """Fit featurizer + trees on ``folds - 1`` time blocks and score the held-out one, for
    every block; then fit the second stage on the out-of-fold outputs, and score every row
    with a second stage that did not see its block either (``oof_scores``: what thresholds
    are chosen on). Every message is also seen as its JSON-fields copy (:func:`fields_copy`)
    with the same label and fold: the trees train on both forms; each form gets a second
    stage of its own (``oof_scores_fields`` for the copies).
    ``train_trees(x, y)`` returns a booster (the tuned configuration). Each fold's
    featurizer transforms in ``workers`` processes (``spam_assets.lib.featurize_pool``)."""
    from spam_assets.lib.featurize_pool import FeaturizePool

    labels = np.asarray(labels).astype(int)
    fold = time_folds(times, groups, folds)
    copies = [fields_copy(m) for m in messages]
    both = [*messages, *copies]
    fold2, labels2 = np.concatenate([fold, fold]), np.concatenate([labels, labels])
    rep2 = None if reputation is None else np.vstack([reputation, reputation])
    margin = np.zeros(len(both))
    block = np.zeros((len(both), len(STACK_COLUMNS)))
    for f in range(folds):
        fit_rows, held = np.flatnonzero(fold2 != f), np.flatnonzero(fold2 == f)
        if len(held) == 0:
            continue
        if len(set(labels[fold != f].tolist())) < 2:
            raise ValueError(f"fold {f}: the other folds hold one class only; too few messages")
        fit_msgs = [messages[i] for i in np.flatnonzero(fold != f)]
        featurizer = Featurizer(config).fit(fit_msgs, labels[fold != f])
        with FeaturizePool(featurizer, workers) as pool:
            x_fit, x_held = (
                pool.transform([both[i] for i in rows], None if rep2 is None else rep2[rows])
                for rows in (fit_rows, held)
            )
        n_base = featurizer.n_base_features
        booster = train_trees(x_fit[:, :n_base], labels2[fit_rows])
        margin[held] = tree_margin(booster, x_held[:, :n_base])
        block[held] = x_held[:, n_base:]
    n = len(messages)
    z = np.column_stack([margin, block])
    weight = group_weights(labels, groups, balance_ham_groups)
    box = bounds()
    stages, oof = [], []
    for form in (slice(0, n), slice(n, 2 * n)):  # raw mail, then its JSON-fields copies
        oof.append(out_of_fold_stage(z[form], labels, fold, box, l2, weight))
        stages.append(bounded_logreg(z[form], labels, box, l2, weight))
    (b_raw, c_raw), (b_f, c_f) = stages
    stack = Stack(b_raw, float(c_raw[0]), c_raw[1:], Stack(b_f, float(c_f[0]), c_f[1:]))
    return CrossFit(fold, margin[:n], block[:n], stack, oof[0], oof[1])


def out_of_fold_stage(
    z: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    box: Sequence[tuple[float | None, float | None]],
    l2: float,
    weight: np.ndarray,
) -> np.ndarray:
    """Scores of a bounded linear stage over ``z`` for every row, each from a stage fitted
    on the other folds (what thresholds and design comparisons are judged on)."""
    scores = np.zeros(len(y))
    for f in np.unique(fold):
        fit, held = fold != f, fold == f
        b, c = bounded_logreg(z[fit], y[fit], box, l2, weight[fit])
        scores[held] = 1.0 / (1.0 + np.exp(-(b + z[held] @ c)))
    return scores


def ensemble_scores(booster, stack: Stack, x: np.ndarray, n_base: int) -> np.ndarray:
    """Spam probability of the ensemble for featurized rows (what the ONNX graph computes)."""
    m = stack.margin(tree_margin(booster, x[:, :n_base]), x[:, n_base:])
    return 1.0 / (1.0 + np.exp(-m))


def period_inputs(
    feature_matrices: Mapping,
    dataset_splits,
    n_base: int,
    reputation: bool,
    splits: Sequence[str],
    picked: np.ndarray | slice = slice(None),
) -> dict:
    """The training period's rows (``splits``, in ``feature_matrices`` order; ``picked``
    positions of them, all by default) as :func:`cross_fit` reads them: messages, labels,
    groups, delivery times and, for a featurizer with sender reputation, its point-in-time
    block. ``dataset_splits`` is a ``SplitTable``: only the picked rows are read."""
    from spam_assets.lib.final_fit import fit_labels, reputation_block
    from spam_assets.lib.messages import messages_of
    from spam_assets.lib.splits import event_time

    rows = dataset_splits.take_across(tuple(splits), picked)
    ids = np.concatenate([np.asarray(feature_matrices[s]["message_id"]) for s in splits])
    if rows["message_id"].tolist() != ids[picked].tolist():
        raise ValueError("dataset_splits and feature_matrices disagree on the period's rows")
    times = event_time(rows).dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    rep = reputation_block(feature_matrices, tuple(splits), n_base, reputation)
    return {
        "messages": messages_of(rows),
        "labels": fit_labels(feature_matrices, tuple(splits))[picked],
        "groups": np.concatenate([np.asarray(feature_matrices[s]["group"]) for s in splits])[
            picked
        ],
        "times": times,
        "reputation": None if rep is None else rep[picked],
    }


def model_scores(booster, stack: dict | None, x: np.ndarray, n_base: int) -> np.ndarray:
    """Spam probability of a trained model (``stack``: the ensemble's second stage as saved,
    None for the tree model alone, which reads every column), scored a chunk of rows at a
    time (``spam_assets.lib.mapped``: a memory-mapped split is never resident whole)."""
    from spam_assets.lib.mapped import SCORE_CHUNK_ROWS, row_chunks
    from spam_assets.lib.onnx_export import native_scores

    stage = None if stack is None else Stack.from_dict(stack)
    parts = [
        native_scores(booster, chunk)
        if stage is None
        else ensemble_scores(booster, stage, chunk, n_base)
        for chunk in row_chunks(x, SCORE_CHUNK_ROWS)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)
