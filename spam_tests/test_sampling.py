"""Bounded fits on a big corpus: the featurizers and the ensemble's cross-fit see a
label-stratified sample of at most ``SPAM_FIT_MAX_ROWS`` training-period messages, the
deployed trees every row; below the cap nothing changes."""

from __future__ import annotations

import numpy as np
import pytest

from spam_assets.lib.messages import messages_of
from spam_assets.lib.sampling import describe, sample_rows
from spam_assets.lib.split_store import table_of
from spam_assets.lib.training import TrainingPolicy, train
from spam_assets.lib.tree_matrix import n_rows
from spam_assets.lib.tuning import local_trees
from spam_serving.featurize import Featurizer, FeaturizerConfig
from spam_tests.helpers.corpus import real_splits

CONFIG = FeaturizerConfig(
    max_text_features=300, max_meta_features=60, min_df=2, stacked=True, char_features=20_000
)


def test_a_sample_keeps_each_label_share_and_the_time_order():
    y = (np.random.default_rng(0).random(10_000) < 0.3).astype(int)
    picked = sample_rows(y, 2_000, seed=7)
    assert abs(len(picked) - 2_000) <= 2 and np.all(np.diff(picked) > 0)
    assert abs(y[picked].mean() - y.mean()) < 0.002
    assert np.array_equal(picked, sample_rows(y, 2_000, seed=7))  # same seed, same rows
    assert sample_rows(y, 10_000, seed=7) == slice(None)
    assert describe(picked, 10_000, "messages", "SPAM_FIT_MAX_ROWS").startswith(f"{len(picked)} of")
    assert describe(slice(None), 10_000, "messages", "X") == "all 10000 messages"


@pytest.fixture(scope="module")
def inputs(real_sample):
    splits = real_splits(real_sample)
    train_rows = splits[splits["split"] == "train"]
    pipeline = Featurizer(CONFIG).fit(messages_of(train_rows), train_rows["label"].to_numpy())
    matrices = {
        str(s): {
            "X": pipeline.transform(messages_of(part)).astype(np.float32),
            "y": part["label"].to_numpy(),
            "message_id": part["message_id"].tolist(),
            "group": part["group"].to_numpy(),
        }
        for s, part in splits.groupby("split")
    }
    return pipeline, matrices, splits


@pytest.fixture(scope="module")
def table(inputs, tmp_path_factory):
    return table_of(inputs[2], tmp_path_factory.mktemp("splits"))


def _train(inputs, table, fit_max_rows: int | None, workers: int = 1):
    pipeline, matrices, _ = inputs
    seen: list[int] = []

    def counting_trees(params, x, y, rounds):
        seen.append(n_rows(x))
        return local_trees(params, x, y, rounds)

    policy = TrainingPolicy(
        refit_with_validation=True, target_ham_fpr=0.01, reject_ham_fpr=0.002,
        budget_confidence=0.9, ensemble_folds=3, stack_l2=1.0, balance_ham_groups=True,
        fit_max_rows=fit_max_rows, seed=0, featurize_workers=workers,
    )  # fmt: skip
    trained = train(
        feature_pipeline=pipeline, feature_matrices=matrices, dataset_splits=table,
        config={"eta": 0.3, "max_depth": 3, "seed": 0}, rounds=10, nthread=1, policy=policy,
        fit_trees=counting_trees,
    )  # fmt: skip
    return trained, seen


def test_the_cross_fit_scores_a_sample_and_the_trees_train_on_every_row(inputs, table):
    _, matrices, _ = inputs
    n_period = sum(len(matrices[s]["y"]) for s in ("train", "validation"))
    cap = n_period // 2
    sampled, seen = _train(inputs, table, cap)
    whole, seen_whole = _train(inputs, table, None)
    # the deployed trees: every period message, raw and as JSON fields, with or without a cap
    assert seen[0] == seen_whole[0] == 2 * n_period
    # the folds' trees: the sample's other folds only
    assert sum(seen[1:]) < 0.6 * sum(seen_whole[1:])
    for split in ("train", "validation"):
        assert len(sampled.oof_scores[split]) == len(matrices[split]["y"])
        assert np.isfinite(whole.oof_scores[split]).all()
    scored = np.concatenate([np.isfinite(sampled.oof_scores[s]) for s in ("train", "validation")])
    assert abs(int(scored.sum()) - cap) <= 2 and len(sampled.oof_fields) == n_period
    assert np.array_equal(np.isfinite(sampled.oof_fields), scored)
    assert f"of {n_period} train + validation messages" in sampled.selection
    assert sampled.bands["junk"]["n_ham"] < whole.bands["junk"]["n_ham"]  # chosen on the sample
    # the deployed featurizer was fitted on the sample: a vocabulary of its own
    assert sampled.featurizer.state_hash != whole.featurizer.state_hash


def test_featurizing_in_two_processes_trains_the_same_model(inputs, table, monkeypatch):
    """Worker processes change nothing the model learns (same trees, same out-of-fold
    scores), and the ensemble never fits the trees-only model's train-split refit: its
    thresholds come from the cross-fit."""
    from spam_assets.lib import training

    one, _ = _train(inputs, table, None)

    def no_refit(*args, **kwargs):
        raise AssertionError("the ensemble fitted the train-only selection model")

    monkeypatch.setattr(training, "fit_final", no_refit)
    two, _ = _train(inputs, table, None, workers=2)
    assert bytes(one.booster.save_raw("ubj")) == bytes(two.booster.save_raw("ubj"))
    for split in ("train", "validation"):
        np.testing.assert_array_equal(one.oof_scores[split], two.oof_scores[split])
    assert one.thresholds == two.thresholds and one.stack == two.stack
