"""Tree models train on a ``QuantileDMatrix`` read chunk by chunk from blocks of rows: the
model must be the one a ``DMatrix`` of the concatenated rows gives (what training did before),
byte for byte, with NaN (absent) and 0.0 (a value) kept apart."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from spam_assets.lib.ensemble import tree_margin
from spam_assets.lib.onnx_export import native_scores
from spam_assets.lib.tree_matrix import n_rows, tree_matrix
from spam_assets.lib.tuning import local_trees, train_booster, xgb_params

PARAMS = xgb_params(
    {"eta": 0.2, "max_depth": 4, "subsample": 0.8, "colsample_bytree": 0.6, "seed": 3}, 1
)


def _rows(n: int = 2_400, d: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.where(rng.random((n, d)) < 0.7, 0.0, rng.random((n, d))).astype(np.float32)
    x[rng.random((n, d)) < 0.05] = np.nan  # absent, not zero
    y = ((np.nan_to_num(x[:, 0]) + np.isnan(x[:, 1]) + rng.normal(0, 0.3, n)) > 0.6).astype(int)
    return x, y


def _dmatrix_model(x: np.ndarray, y: np.ndarray, rounds: int = 15) -> bytes:
    return bytes(xgb.train(PARAMS, xgb.DMatrix(x, label=y, missing=np.nan), rounds).save_raw())


def test_blocks_in_chunks_train_the_model_the_concatenated_dmatrix_trains(tmp_path):
    x, y = _rows()
    expected = _dmatrix_model(x[:, :30], y)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")  # read-only, as feature_matrices
    blocks = [mapped[:1_000, :30], x[1_000:1_700, :30], x[1_700:, :30]]  # strided views
    assert n_rows(blocks) == len(y)
    for labels in (y, [y[:1_000], y[1_000:1_700], y[1_700:]]):
        booster = local_trees(PARAMS, blocks, labels, 15)
        assert bytes(booster.save_raw()) == expected
    assert bytes(xgb.train(PARAMS, tree_matrix(x[:, :30], y, chunk_rows=97), 15).save_raw()) == (
        expected
    )


def test_early_stopping_on_validation_is_unchanged():
    x, y = _rows(3_000)
    data = {"X_train": x[:2_200], "y_train": y[:2_200], "X_val": x[2_200:], "y_val": y[2_200:]}
    params = {k: v for k, v in PARAMS.items() if k != "nthread"}
    booster = train_booster(params, data, 200, 8, 1)
    before = {}
    reference = xgb.train(
        PARAMS,
        xgb.DMatrix(data["X_train"], label=data["y_train"], missing=np.nan),
        200,
        evals=[(xgb.DMatrix(data["X_val"], label=data["y_val"], missing=np.nan), "val")],
        early_stopping_rounds=8,
        verbose_eval=False,
        evals_result=before,
    )
    assert booster.best_iteration == reference.best_iteration
    assert bytes(booster.save_raw()) == bytes(reference.save_raw())


def test_in_place_predictions_equal_dmatrix_predictions():
    x, y = _rows()
    booster = local_trees(PARAMS, x, y, 10)
    view = x[:, :]
    dm = xgb.DMatrix(view, missing=np.nan)
    np.testing.assert_array_equal(native_scores(booster, view), booster.predict(dm))
    np.testing.assert_array_equal(
        tree_margin(booster, view), booster.predict(dm, output_margin=True)
    )


def test_labels_that_do_not_match_the_rows_are_refused():
    x, y = _rows(100)
    with pytest.raises(ValueError, match="do not match"):
        tree_matrix([x[:50], x[50:]], [y[:40], y[40:]])
