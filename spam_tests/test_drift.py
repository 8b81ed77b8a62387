"""PSI / KS / chi-square: known distributions, edge cases, and agreement with Evidently 0.7."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from spam_assets.lib.drift import (
    RetrainThresholds,
    column_drift,
    dataset_drift,
    drifted_share,
    numeric_psi,
    psi_from_shares,
    retrain_reasons,
)

RNG = np.random.default_rng(7)


def test_psi_of_identical_samples_is_zero_and_grows_with_shift():
    ref = RNG.normal(0, 1, 20_000)
    assert numeric_psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    same = numeric_psi(ref, RNG.normal(0, 1, 20_000))
    small = numeric_psi(ref, RNG.normal(0.25, 1, 20_000))
    large = numeric_psi(ref, RNG.normal(1.0, 1, 20_000))
    assert same < 0.01 < small < 0.2 < large


def test_psi_formula_on_hand_computed_shares():
    ref, cur = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    expected = (0.5 - 0.25) * np.log(0.5 / 0.25) + (0.5 - 0.75) * np.log(0.5 / 0.75)
    assert psi_from_shares(ref, cur) == pytest.approx(expected)


def test_quantile_bins_keep_new_extremes():
    ref = RNG.uniform(0, 1, 5_000)
    cur = np.concatenate([RNG.uniform(0, 1, 4_000), np.full(1_000, 50.0)])
    assert numeric_psi(ref, cur) > 0.1


def test_ks_matches_scipy_and_detects_shift():
    ref, cur = RNG.normal(0, 1, 3_000), RNG.normal(0.3, 1, 3_000)
    result = column_drift("x", pd.Series(ref), pd.Series(cur))
    expected = stats.ks_2samp(ref, cur)
    assert result.kind == "numeric"
    assert result.ks_statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.p_value < 1e-6


def test_empty_and_all_nan_columns_are_not_drift():
    empty = column_drift("x", pd.Series(RNG.normal(size=100)), pd.Series([], dtype=float))
    nan = column_drift("y", pd.Series([np.nan] * 50), pd.Series(RNG.normal(size=50)))
    assert empty.kind == nan.kind == "empty"
    assert not empty.drifted and not nan.drifted
    assert "current" in empty.note and "reference" in nan.note
    assert drifted_share([empty, nan]) == 0.0


def test_nan_and_inf_are_dropped_not_counted():
    ref = pd.Series(np.r_[RNG.normal(size=1_000), [np.nan] * 100])
    cur = pd.Series(np.r_[RNG.normal(size=1_000), [np.inf, -np.inf, np.nan]])
    result = column_drift("x", ref, cur, categorical=False)
    assert result.n_reference == 1_000 and result.n_current == 1_000
    assert not result.drifted


def test_constant_columns():
    same = column_drift("c", pd.Series([1.0] * 100), pd.Series([1.0] * 80), categorical=False)
    moved = column_drift("c", pd.Series([1.0] * 100), pd.Series([3.0] * 80), categorical=False)
    assert same.kind == moved.kind == "constant"
    assert same.psi == 0.0 and not same.drifted
    assert moved.drifted


def test_categorical_psi_and_chi_square_with_unseen_category():
    ref = pd.Series(["com"] * 700 + ["org"] * 300)
    cur_same = pd.Series(["com"] * 690 + ["org"] * 310)
    cur_new = pd.Series(["com"] * 400 + ["org"] * 200 + ["ru"] * 400)
    same = column_drift("tld", ref, cur_same)
    new = column_drift("tld", ref, cur_new)
    assert same.kind == "categorical" and not same.drifted and same.p_value > 0.05
    assert new.drifted and new.p_value < 1e-6


def test_binary_numeric_column_is_treated_as_categorical():
    result = column_drift("flag", pd.Series([0, 1] * 500), pd.Series([1] * 900 + [0] * 100))
    assert result.kind == "categorical" and result.drifted


def test_dataset_drift_and_share():
    ref = pd.DataFrame({"a": RNG.normal(size=2_000), "b": RNG.normal(size=2_000)})
    cur = pd.DataFrame({"a": RNG.normal(size=2_000), "b": RNG.normal(2, 1, 2_000)})
    results = dataset_drift(ref, cur, ["a", "b", "missing"])
    assert [r.column for r in results] == ["a", "b"]
    assert drifted_share(results) == 0.5


def test_psi_and_ks_agree_with_evidently():
    """Evidently's PSI uses Sturges equal-width bins on the combined data and the same
    zero-fill; with that binning our number must equal theirs, and KS p-values must match."""
    from evidently import Report
    from evidently.metrics import ValueDrift

    ref = pd.DataFrame(
        {
            "x": RNG.lognormal(0, 1, 4_000),
            "y": RNG.normal(0, 1, 4_000),
            "tld": RNG.choice(["com", "org", "net"], 4_000, p=[0.6, 0.3, 0.1]),
        }
    )
    cur = pd.DataFrame(
        {
            "x": RNG.lognormal(0.3, 1.2, 3_000),
            "y": RNG.normal(0.05, 1, 3_000),
            "tld": RNG.choice(["com", "org", "net", "ru"], 3_000, p=[0.4, 0.3, 0.1, 0.2]),
        }
    )
    metrics = [ValueDrift(column=c, method="psi") for c in ("x", "y", "tld")] + [
        ValueDrift(column=c, method="ks") for c in ("x", "y")
    ]
    values = [m["value"] for m in Report(metrics).run(cur, ref).dict()["metrics"]]
    ours_psi = [column_drift(c, ref[c], cur[c], binning="sturges").psi for c in ("x", "y", "tld")]
    ours_ks = [column_drift(c, ref[c], cur[c]).p_value for c in ("x", "y")]
    np.testing.assert_allclose(ours_psi, values[:3], rtol=1e-9)
    np.testing.assert_allclose(ours_ks, values[3:], rtol=1e-9)
    # and the default (quantile) binning reaches the same verdict on each column
    for c, theirs in zip(("x", "y", "tld"), values[:3], strict=True):
        assert column_drift(c, ref[c], cur[c]).drifted == (theirs >= 0.2)


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        ({"n_predictions": 50, "score_psi": 3.0}, []),
        ({"n_predictions": 500, "score_psi": 0.05, "drifted_share": 0.1}, []),
        ({"n_predictions": 500, "score_psi": 0.25, "drifted_share": 0.1}, ["score PSI"]),
        ({"n_predictions": 500, "score_psi": 0.0, "drifted_share": 0.5}, ["drifted feature"]),
        (
            {"n_predictions": 500, "score_psi": 0.0, "feedback_accuracy": 0.8, "n_feedback": 60},
            ["feedback accuracy"],
        ),
        ({"n_predictions": 500, "feedback_accuracy": 0.5, "n_feedback": 10}, []),
        # the ham FP budget (0.1%, promise 2x): one false positive in 100 ham is not evidence,
        # five are (Wilson lower bound 2.2% > 0.2%)
        ({"n_predictions": 500, "n_ham_false_positives": 1, "n_feedback_ham": 100}, []),
        (
            {"n_predictions": 500, "n_ham_false_positives": 5, "n_feedback_ham": 100},
            ["feedback ham"],
        ),
    ],
)
def test_retrain_reasons(summary, expected):
    """Each threshold on its own; the account names every number either way."""
    reasons, account = retrain_reasons(summary, RetrainThresholds())
    assert [r.split(" ")[0] + " " + r.split(" ")[1] for r in reasons] == expected
    assert account


def test_wilson_lower_bound_of_the_ham_fpr():
    from spam_assets.lib.drift import ham_fpr_exceeded, wilson_lower

    assert wilson_lower(0, 100) == 0.0 and wilson_lower(3, 0) == 0.0
    assert wilson_lower(5, 100) == pytest.approx(0.0215, abs=5e-4)
    t = RetrainThresholds(ham_fpr_budget=0.01, ham_fpr_factor=2.0)
    assert not ham_fpr_exceeded(4, 100, t)  # 4% observed, lower bound 1.6% < 2%
    assert ham_fpr_exceeded(10, 100, t)  # 10%, lower bound 5.5%
