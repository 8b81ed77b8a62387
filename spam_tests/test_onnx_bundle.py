"""ONNX parity on real features, and the bundle's integrity checks."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from spam_assets.lib.onnx_export import (
    booster_from_bytes,
    native_scores,
    onnx_scores,
    parity,
    to_onnx,
)
from spam_serving.featurize import FeaturizerConfig
from spam_serving.model_bundle import ONNX_FILE, ModelBundle, write_bundle
from spam_tests.helpers.serving import train_small


@pytest.fixture(scope="module")
def trained(real_sample):
    config = FeaturizerConfig(max_text_features=300, max_meta_features=80, min_df=2)
    return train_small(real_sample, config, max_depth=6, rounds=60)


def test_onnx_matches_native_on_real_features(trained):
    f, booster, x, _ = trained
    onnx_bytes = to_onnx(booster, f.n_features)
    result = parity(booster, onnx_bytes, x)
    assert result["rows"] == len(x)
    assert result["max_abs_diff"] <= 1e-5
    # compared a chunk of rows at a time: every row, the same answer (ONNX Runtime's float
    # sums may round differently with the batch size, far below the tolerance)
    chunked = parity(booster, onnx_bytes, x, chunk_rows=7)
    assert chunked["rows"] == len(x) and chunked["max_abs_diff"] <= 1e-5
    np.testing.assert_allclose(
        onnx_scores(onnx_bytes, x, chunk_rows=7), onnx_scores(onnx_bytes, x), atol=1e-6
    )
    # the representation matters: a sparse-as-missing matrix is a different model input
    x_missing = np.where(x == 0, np.nan, x)
    assert np.abs(native_scores(booster, x_missing) - native_scores(booster, x)).max() > 1e-3


def test_bundle_roundtrip_and_corruption(trained, tmp_path):
    f, booster, x, msgs = trained
    raw = bytes(booster.save_raw("ubj"))
    onnx_bytes = to_onnx(booster_from_bytes(raw), f.n_features)
    meta = write_bundle(
        tmp_path / "b", onnx_bytes, f, raw, {"model_version": "7", "threshold": 0.5}
    )
    bundle = ModelBundle.load(tmp_path / "b")
    assert bundle.version == "7" and bundle.threshold == 0.5
    np.testing.assert_allclose(
        bundle.predict_proba(msgs[:40]), native_scores(booster, x[:40]), atol=1e-5
    )
    assert meta["n_features"] == f.n_features
    (tmp_path / "b" / ONNX_FILE).write_bytes(onnx_bytes[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="sha256 does not match"):
        ModelBundle.load(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="no model bundle"):
        ModelBundle.load(tmp_path / "nothing")


def test_explainer_matches_xgboost_approx_contribs(trained, tmp_path):
    """Our numpy Saabas attributions equal XGBoost's own and sum to the ONNX margin."""

    from spam_serving.explain import TreeExplainer

    f, booster, x, msgs = trained
    explainer = TreeExplainer.from_xgboost_json(booster.save_raw("json"))
    rows = x[:25]
    ours = explainer.contributions(rows)
    ref = booster.predict(xgb.DMatrix(rows), pred_contribs=True, approx_contribs=True)
    np.testing.assert_allclose(ours, ref[:, :-1], atol=1e-5)
    np.testing.assert_allclose(explainer.bias, ref[0, -1], atol=1e-5)
    # one row at a time (the /predict path) gives the same numbers as the batch
    np.testing.assert_array_equal(explainer.contributions(rows[3:4]), ours[3:4])

    raw = bytes(booster.save_raw("ubj"))
    write_bundle(
        tmp_path / "b",
        to_onnx(booster_from_bytes(raw), f.n_features),
        f,
        raw,
        {"model_version": "1", "threshold": 0.5},
        explainer=explainer,
    )
    bundle = ModelBundle.load(tmp_path / "b")
    p = bundle.predict_proba(msgs[:25])
    margin = np.log(p / (1 - p))
    # ONNX scores in float32: margins near +-8 carry ~1e-4 absolute error
    np.testing.assert_allclose(
        bundle.explainer.bias + ours.sum(axis=1), margin, rtol=1e-4, atol=1e-4
    )
    top = bundle.explainer.top_features(rows[:1], f.feature_names, 3)[0]
    assert len(top) == 3
    assert abs(top[0]["contribution"]) >= abs(top[1]["contribution"]) >= abs(top[2]["contribution"])
    assert top[0]["feature"] in f.feature_names


def test_explainer_follows_default_directions_for_missing_values(trained):
    """Served features are dense, but the explainer must still follow XGBoost on NaN: a model
    trained with missing values learns a default direction per split, left or right."""
    from spam_serving.explain import TreeExplainer

    _, booster, x, _ = trained
    y = (native_scores(booster, x) >= 0.5).astype(int)
    holes = x.copy()
    holes[np.random.default_rng(0).random(holes.shape) < 0.3] = np.nan
    model = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1},
        xgb.DMatrix(holes, label=y),
        num_boost_round=15,
    )
    explainer = TreeExplainer.from_xgboost_json(model.save_raw("json"))
    splits = explainer.left != np.arange(explainer.left.shape[1])
    assert explainer.default_left[splits].any() and not explainer.default_left[splits].all()
    rows = holes[:40]
    ref = model.predict(xgb.DMatrix(rows), pred_contribs=True, approx_contribs=True)
    np.testing.assert_allclose(explainer.contributions(rows), ref[:, :-1], atol=1e-5)
