"""The quality benchmark's ceiling section: oracle operating points and in-period scores."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.quality_ceiling import (
    best_operating_point,
    ceiling_rows,
    ceiling_section,
    in_period_scores,
)

# 4 spam, 2 easy ham, 1 hard ham (all FPR limits are per group)
Y = np.array([1, 1, 0, 1, 1, 0, 0])
GROUPS = np.array(
    ["spam-2", "spam-2", "hard-ham-1", "spam-2", "spam-2", "easy-ham-2", "easy-ham-2"]
)
SCORES = np.array([0.99, 0.95, 0.90, 0.80, 0.60, 0.50, 0.10])


def test_the_oracle_keeps_both_fpr_limits_and_maximises_f1_within_them():
    free = best_operating_point(Y, SCORES, GROUPS, None, None)
    # no limit: 0.60 catches all 4 spam for the hard ham -> F1 = 8 / (8 + 1) = 0.889
    assert free["threshold"] == 0.60 and free["recall"] == 1.0
    assert free["f1"] == pytest.approx(8 / 9) and free["hard_ham_fpr"] == 1.0
    held = best_operating_point(Y, SCORES, GROUPS)
    # the hard ham (1 of 1 > 5%) must stay out: only thresholds above 0.90 -> 2 of 4 spam
    assert held["threshold"] == 0.95 and held["recall"] == 0.5
    assert held["f1"] == pytest.approx(4 / 6) and held["hard_ham_fpr"] == 0.0
    assert held["precision"] == 1.0 and held["easy_ham_fpr"] == 0.0
    # a looser hard-ham limit lets the best unconstrained point back in
    assert best_operating_point(Y, SCORES, GROUPS, 0.005, 1.0)["threshold"] == 0.60


def test_equal_scores_never_straddle_a_threshold():
    scores = np.array([0.9, 0.7, 0.7, 0.2])
    y = np.array([1, 1, 0, 0])
    groups = np.array(["spam-2", "spam-2", "hard-ham-1", "easy-ham-2"])
    point = best_operating_point(y, scores, groups)
    # the tied spam cannot be caught without the tied hard ham
    assert point["threshold"] == 0.9 and point["recall"] == 0.5


def test_no_threshold_within_the_limits_is_reported_as_none():
    y = np.array([0, 1, 1])
    groups = np.array(["hard-ham-1", "spam-2", "spam-2"])
    assert best_operating_point(y, np.array([0.99, 0.5, 0.4]), groups) is None
    section = "\n".join(
        ceiling_section(
            [ceiling_rows("m", y, np.array([0.99, 0.5, 0.4]), groups)],
            [ceiling_rows("m", y, np.array([0.1, 0.5, 0.4]), groups)],
            folds=3,
        )
    )
    assert "| m, trained on the training period | none catches spam within the limits" in section
    assert (
        "within both FPR targets: **no**; F1 >= 0.97 with no FPR limit: **no** (best 0.8000)"
        in section
    )
    assert "In-period, any threshold: F1 >= 0.97 within both FPR targets: **yes**" in section


def test_in_period_scores_are_out_of_fold_on_real_mail(real_sample):
    from spam_serving.featurize import FeaturizerConfig
    from spam_serving.parsing import parse_message

    sample = real_sample[::2]
    msgs = [parse_message(raw) for _, _, raw in sample]
    y = np.array([label for _, label, _ in sample])
    groups = np.array([group for group, _, _ in sample])
    texts = [m.subject + "\n" + m.body for m in msgs]
    config = {"eta": 0.3, "max_depth": 3}

    def scores() -> dict[str, np.ndarray]:
        return in_period_scores(
            msgs,
            texts,
            y,
            groups,
            FeaturizerConfig(),
            config,
            20,
            folds=3,
            baselines=("TF-IDF + LogReg",),
        )

    first, again = scores(), scores()
    assert set(first) == {"ours", "TF-IDF + LogReg"}
    from sklearn.metrics import roc_auc_score

    for name, s in first.items():
        assert s.shape == (len(y),) and np.all((s > 0) & (s < 1)), name  # every row scored
        assert roc_auc_score(y, s) > 0.9, name
        np.testing.assert_array_equal(s, again[name])  # folds and models are seeded
    # out of fold: the same model trained on every message (it has seen the row it scores)
    # fits them much better than the held-out scores do
    import xgboost as xgb
    from sklearn.metrics import log_loss

    from spam_assets.lib.tuning import xgb_params
    from spam_serving.featurize import Featurizer

    x = Featurizer(FeaturizerConfig()).fit(msgs, y).transform(msgs)
    booster = xgb.train(xgb_params(config, 2), xgb.DMatrix(x, label=y), num_boost_round=20)
    seen = booster.predict(xgb.DMatrix(x))
    assert log_loss(y, seen) < 0.7 * log_loss(y, first["ours"])
