"""The ensemble: its bounded second stage, time-blocked folds, one ONNX graph with parity, an
explainer whose attributions sum to the logit, and the action bands a bundle answers with."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from spam_assets.lib.ensemble import (
    Stack,
    bounded_logreg,
    bounds,
    cross_fit,
    ensemble_scores,
    fields_copy,
    group_weights,
    time_folds,
)
from spam_assets.lib.onnx_export import onnx_scores, parity, to_onnx
from spam_serving.explain import EnsembleExplainer, TreeExplainer
from spam_serving.featurize import STACK_COLUMNS, Featurizer, FeaturizerConfig
from spam_serving.model_bundle import ModelBundle, write_bundle
from spam_serving.parsing import parse_message
from spam_serving.signs import SIGNS, SPAM_SIGNS

CONFIG = FeaturizerConfig(
    max_text_features=300, max_meta_features=80, min_df=2, stacked=True, char_features=20_000
)


def test_bounded_logreg_matches_scikit_learn_when_free():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 3))
    y = (z @ [1.5, -2.0, 0.5] + rng.normal(size=400) > 0).astype(int)
    b, c = bounded_logreg(z, y, [(None, None)] * 3, l2=1.0)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(z, y)
    np.testing.assert_allclose(c, ref.coef_[0], atol=1e-3)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-3)
    # the second coefficient wants to be negative: a lower bound of 0 holds it there
    _, c_box = bounded_logreg(z, y, [(None, None), (0.0, None), (None, None)], l2=1.0)
    assert c_box[1] == pytest.approx(0.0, abs=1e-8)


def test_bounds_follow_the_sign_directions():
    box = bounds()
    assert len(box) == 1 + len(STACK_COLUMNS)
    assert box[0] == box[1] == (0.0, None)  # tree margin, char logit
    assert box[-1] == (0.0, 0.0)  # the form column selects a stage, it weighs nothing
    for name, (lo, hi) in zip(SIGNS, box[2:-1], strict=True):
        assert (lo, hi) == ((0.0, None) if name in SPAM_SIGNS else (None, 0.0))


def test_time_folds_are_contiguous_within_each_group():
    rng = np.random.default_rng(1)
    times = np.datetime64("2002-01-01") + rng.integers(0, 365, size=300).astype("timedelta64[D]")
    groups = np.where(rng.random(300) < 0.3, "spam-1", "easy-ham-1")
    fold = time_folds(times, groups, 5)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        order = idx[np.argsort(times[idx], kind="stable")]
        assert np.all(np.diff(fold[order]) >= 0)  # later rows never in an earlier fold
        sizes = np.bincount(fold[idx], minlength=5)
        assert sizes.max() - sizes.min() <= 1


def test_group_weights_balance_ham_sources():
    labels = np.array([0] * 90 + [0] * 10 + [1] * 50)
    groups = np.array(["easy-ham-1"] * 90 + ["hard-ham-1"] * 10 + ["spam-1"] * 50)
    w = group_weights(labels, groups, balance=True)
    assert w[labels == 1].tolist() == [1.0] * 50
    assert w[groups == "easy-ham-1"].sum() == pytest.approx(w[groups == "hard-ham-1"].sum())
    assert np.all(group_weights(labels, groups, balance=False) == 1.0)


@pytest.fixture(scope="module")
def stacked(real_sample):
    """A small real ensemble: the featurizer with its char model, trees on the base block,
    and a second stage with non-trivial weights on every block column."""
    msgs = [parse_message(raw) for _, _, raw in real_sample]
    y = np.array([label for _, label, _ in real_sample])
    f = Featurizer(CONFIG).fit(msgs, y)
    x = f.transform(msgs)
    n_base = f.n_base_features
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": 0},
        xgb.DMatrix(x[:, :n_base], label=y, missing=np.nan),
        num_boost_round=30,
    )
    w_block = np.linspace(-0.5, 0.8, len(STACK_COLUMNS))
    stack = Stack(-0.3, 0.7, w_block, fields=Stack(0.4, 1.2, w_block[::-1].copy()))
    return f, booster, stack, x, msgs


def test_ensemble_is_one_onnx_graph_with_parity(stacked):
    f, booster, stack, x, msgs = stacked
    n_base = f.n_base_features
    onnx_bytes = to_onnx(booster, f.n_features, stack, n_base)
    result = parity(booster, onnx_bytes, x, stack, n_base)
    assert result["rows"] == len(x) and result["max_abs_diff"] <= 1e-5
    # the stack matters: the same trees without it score differently
    trees_only = Stack(0.0, 1.0, np.zeros_like(stack.w_block))
    assert (
        np.abs(ensemble_scores(booster, trees_only, x, n_base) - onnx_scores(onnx_bytes, x)).max()
        > 1e-2
    )
    # a JSON-fields row: absent delivery features (NaN) flow through both the same way, and
    # its own stage scores it, in numpy and in the graph
    fields = f.transform([fields_copy(m) for m in msgs[:60]])
    assert np.isnan(fields).any() and (fields[:, -1] == 1.0).all() and (x[:, -1] == 0.0).all()
    assert parity(booster, onnx_bytes, fields, stack, n_base)["max_abs_diff"] <= 1e-5
    margin = booster.predict(xgb.DMatrix(fields[:, :n_base], missing=np.nan), output_margin=True)
    own = stack.fields._own_margin(margin, fields[:, n_base:])
    np.testing.assert_allclose(onnx_scores(onnx_bytes, fields), 1 / (1 + np.exp(-own)), atol=1e-5)


def test_ensemble_explainer_sums_to_the_logit(stacked, tmp_path):
    f, booster, stack, x, msgs = stacked
    n_base = f.n_base_features
    tree = TreeExplainer.from_xgboost_json(booster.save_raw("json"))
    explainer = EnsembleExplainer.from_stack(tree, n_base, stack)
    # both doors: raw rows and JSON-fields rows, each explained with its own stage's weights
    rows = np.vstack([x[:20], f.transform([fields_copy(m) for m in msgs[:20]])])
    contrib = explainer.contributions(rows)
    assert contrib.shape == (40, f.n_features)
    margin = booster.predict(xgb.DMatrix(rows[:, :n_base], missing=np.nan), output_margin=True)
    logit = stack.margin(margin, rows[:, n_base:])
    np.testing.assert_allclose(explainer.row_bias(rows) + contrib.sum(axis=1), logit, atol=1e-4)
    assert explainer.row_bias(rows[:20]).tolist() == [explainer.bias] * 20
    # saved in the bundle and loaded back as the ensemble's explainer
    write_bundle(
        tmp_path / "b",
        to_onnx(booster, f.n_features, stack, n_base),
        f,
        bytes(booster.save_raw("ubj")),
        {"model_version": "3", "threshold": 0.5, "stack": stack.to_dict(), "n_base": n_base},
        explainer=explainer,
    )
    bundle = ModelBundle.load(tmp_path / "b")
    assert isinstance(bundle.explainer, EnsembleExplainer)
    np.testing.assert_allclose(bundle.explainer.contributions(rows), contrib, atol=1e-9)
    both = [*msgs[:20], *(fields_copy(m) for m in msgs[:20])]
    np.testing.assert_allclose(bundle.predict_proba(both), 1 / (1 + np.exp(-logit)), atol=1e-5)
    names = {t["feature"] for row in explainer.top_features(rows, f.feature_names, 5) for t in row}
    assert "text:char_ngrams" in names


def test_stack_state_is_checked():
    stack = Stack(
        0.1, 1.0, np.zeros(len(STACK_COLUMNS)), Stack(0.2, 2.0, np.ones(len(STACK_COLUMNS)))
    )
    state = stack.to_dict()
    again = Stack.from_dict(state)
    assert again.w_trees == 1.0 and again.fields.w_trees == 2.0
    state["block"] = state["block"][:-1]
    with pytest.raises(ValueError, match="different stacking block"):
        Stack.from_dict(state)


def test_bundle_actions_bands(tmp_path, stacked):
    f, booster, stack, _, _ = stacked
    meta = {
        "model_version": "1",
        "threshold": 0.6,
        "thresholds": {"junk": 0.6, "reject": 0.9, "junk_fields": 0.5, "reject_fields": 0.8},
    }
    write_bundle(tmp_path / "b", to_onnx(booster, f.n_features, stack, f.n_base_features), f,
                 bytes(booster.save_raw("ubj")), meta)  # fmt: skip
    bundle = ModelBundle.load(tmp_path / "b")
    assert bundle.decide(0.95) == ("reject", 0.6)
    assert bundle.decide(0.7) == ("junk", 0.6)
    assert bundle.decide(0.59) == ("deliver", 0.6)
    assert bundle.decide(0.55, from_fields=True) == ("junk", 0.5)
    assert bundle.decide(0.85, from_fields=True) == ("reject", 0.5)
    # a bundle from before the bands: the label's threshold, no reject band
    old = {"model_version": "0", "threshold": 0.4}
    write_bundle(tmp_path / "o", to_onnx(booster, f.n_features, stack, f.n_base_features), f,
                 bytes(booster.save_raw("ubj")), old)  # fmt: skip
    legacy = ModelBundle.load(tmp_path / "o")
    assert legacy.decide(0.999) == ("junk", 0.4) and legacy.decide(0.1, True) == ("deliver", 0.4)


def test_cross_fit_scores_every_row_out_of_fold(real_sample):
    """Each row's out-of-fold score comes from models that never saw its block: they are
    less confident than the final stage's in-sample scores, and the weights obey the bounds."""
    msgs = [parse_message(raw) for _, _, raw in real_sample]
    y = np.array([label for _, label, _ in real_sample])
    groups = np.array([g for g, _, _ in real_sample])
    import pandas as pd

    stamps = pd.to_datetime([m.received_at or m.sent_at for m in msgs], utc=True)
    times = stamps.tz_convert(None).to_numpy(dtype="datetime64[ns]")

    def train_trees(x, labels):
        d = xgb.DMatrix(x, label=labels, missing=np.nan)
        params = {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": 0}
        return xgb.train(params, d, num_boost_round=30)

    fit = cross_fit(msgs, y, groups, times, CONFIG, train_trees, folds=3, l2=1.0,
                    balance_ham_groups=True)  # fmt: skip
    assert fit.oof_scores.shape == fit.oof_scores_fields.shape == (len(msgs),)
    assert set(np.unique(fit.fold)) == {0, 1, 2}
    w = np.concatenate([[fit.stack.w_trees], fit.stack.w_block])
    for v, (lo, hi) in zip(w, bounds(), strict=True):
        assert (lo is None or v >= lo - 1e-9) and (hi is None or v <= hi + 1e-9)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, fit.oof_scores) > 0.9
    assert roc_auc_score(y, fit.oof_scores_fields) > 0.85
    # in-sample (the final stage on its own training rows) is over-confident vs out-of-fold
    z = np.column_stack([fit.tree_margin, fit.block])
    in_sample = 1 / (
        1 + np.exp(-(fit.stack.intercept + z @ np.r_[fit.stack.w_trees, fit.stack.w_block]))
    )

    def log_loss(p):
        p = np.clip(p, 1e-9, 1 - 1e-9)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    assert log_loss(in_sample) <= log_loss(fit.oof_scores)
