"""The final fit: the deployed model and the featurizer also learn the validation slice (the
newest data), while the threshold and the score-drift reference come from out-of-sample
scores."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from spam_assets.lib import final_fit
from spam_assets.lib.final_fit import deployed_features, final_rows
from spam_assets.lib.messages import messages_of
from spam_assets.lib.onnx_export import native_scores
from spam_assets.lib.split_store import table_of
from spam_assets.lib.tree_matrix import concatenated
from spam_assets.lib.tuning import fit_final, train_booster, trials_markdown
from spam_serving.featurize import Featurizer, FeaturizerConfig
from spam_serving.parsing import message_from_fields
from spam_serving.reputation import REPUTATION_FEATURES

CONFIG = {"eta": 0.3, "max_depth": 3, "seed": 7}
ROUNDS = 30


@pytest.fixture(scope="module")
def shifted() -> dict:
    """Train: the label follows feature 0 and feature 1 is always 0. Validation (the newer
    period): feature 1 is a perfect spam marker that train never shows."""
    rng = np.random.default_rng(0)
    x_train = np.zeros((400, 3), dtype=np.float32)
    x_train[:, 0] = rng.normal(size=400)
    y_train = (x_train[:, 0] > 0).astype(int)
    x_val = np.zeros((200, 3), dtype=np.float32)
    y_val = rng.integers(0, 2, size=200)
    x_val[:, 0] = rng.normal(size=200)
    x_val[:, 1] = y_val
    return {"X_train": x_train, "y_train": y_train, "X_val": x_val, "y_val": y_val}


def _both(data: dict) -> dict:
    return {
        "X": np.vstack([data["X_train"], data["X_val"]]),
        "y": np.concatenate([data["y_train"], data["y_val"]]),
    }


def test_without_validation_the_selection_model_is_deployed(shifted):
    final, val_scores = fit_final(CONFIG, shifted, ROUNDS, 1)
    reference = train_booster(CONFIG, shifted, ROUNDS, None, 1)
    np.testing.assert_array_equal(val_scores, native_scores(reference, shifted["X_val"]))
    np.testing.assert_array_equal(
        native_scores(final, shifted["X_val"]), native_scores(reference, shifted["X_val"])
    )


def test_the_final_model_learns_what_only_validation_shows(shifted):
    final, val_scores = fit_final(CONFIG, shifted, ROUNDS, 1, _both(shifted))
    selection = train_booster(CONFIG, shifted, ROUNDS, None, 1)
    # the returned validation scores are the out-of-sample ones (threshold, drift reference)
    np.testing.assert_array_equal(val_scores, native_scores(selection, shifted["X_val"]))
    # a message that only the newer period's marker calls spam
    probe = np.array([[-1.0, 1.0, 0.0]], dtype=np.float32)
    assert native_scores(selection, probe)[0] < 0.2
    assert native_scores(final, probe)[0] > 0.5
    # same parameters and round count
    assert final.num_boosted_rounds() == selection.num_boosted_rounds() == ROUNDS


def _splits(rows: list[tuple[str, int, str]]) -> pd.DataFrame:
    records = []
    for i, (split, label, body) in enumerate(rows):
        rec = message_from_fields(subject=f"note {i}", body=body, sender=f"a{i}@x.org").to_record()
        rec.update(message_id=f"m{i}", group="g", label=label, sha256=str(i), split=split)
        records.append(rec)
    return pd.DataFrame.from_records(records)


def test_deployed_featurizer_learns_validation_words_never_test_ones(tmp_path, monkeypatch):
    """A word only validation spam uses enters the deployed vocabulary (not the selection
    one); a test-only word enters neither; reputation columns are carried over as they are.
    Written as files (what ``tuned_model`` does), chunk by chunk, the rows are the same and
    only paths would go through a pickle."""
    rows = [("train", i % 2, f"agenda budget {'offer' if i % 2 else 'lunch'}") for i in range(8)]
    rows += [("validation", 1, "zorblax prize zorblax") for _ in range(3)]
    rows += [("validation", 0, "meeting minutes lunch") for _ in range(3)]
    rows += [("test", 1, "quuxwing deal quuxwing") for _ in range(3)]
    splits = _splits(rows)
    config = FeaturizerConfig(min_df=2, reputation=True)
    train = splits[splits["split"] == "train"]
    selection = Featurizer(config).fit(messages_of(train), train["label"].to_numpy())
    rng = np.random.default_rng(1)
    matrices = {}
    for split, part in splits.groupby("split"):
        rep = rng.random((len(part), len(REPUTATION_FEATURES)), dtype=np.float32)
        matrices[split] = {
            "X": selection.transform(messages_of(part), rep),
            "y": part["label"].to_numpy(),
            "message_id": part["message_id"].tolist(),
            "group": part["group"].tolist(),
        }
    table = table_of(splits, tmp_path / "splits")  # what dataset_splits passes
    deployed, x = deployed_features(selection, matrices, table)
    assert "w:zorblax" not in selection.text_vocab and "w:zorblax" in deployed.text_vocab
    assert "w:quuxwing" not in deployed.text_vocab
    assert deployed.config == selection.config
    for split in ("train", "validation", "test"):
        assert x[split].shape == (len(matrices[split]["y"]), deployed.n_features)
        n_rep = len(REPUTATION_FEATURES)
        np.testing.assert_array_equal(x[split][:, -n_rep:], matrices[split]["X"][:, -n_rep:])
    final = final_rows(x, matrices)
    np.testing.assert_array_equal(
        concatenated(final["X"]), np.vstack([x["train"], x["validation"]])
    )
    np.testing.assert_array_equal(
        final["y"], np.concatenate([matrices["train"]["y"], matrices["validation"]["y"]])
    )
    monkeypatch.setattr(final_fit, "CHUNK_ROWS", 2)  # several chunks per split
    _, files = deployed_features(selection, matrices, table, out_dir=tmp_path / "m")
    final_files = final_rows(files, matrices)
    assert len(pickle.dumps(files)) < 2_000
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(files[split]["X"], x[split])
        assert files[split]["message_id"] == matrices[split]["message_id"]
        assert np.array_equal(files[split]["y"], matrices[split]["y"])
    np.testing.assert_array_equal(concatenated(final_files["X"]), concatenated(final["X"]))
    spam_val = x["validation"][matrices["validation"]["y"] == 1]
    assert (spam_val[:, deployed.feature_names.index("w:zorblax")] > 0).all()
    # rows out of step with feature_matrices are refused, not silently mislabelled
    shuffled = {**matrices, "test": {**matrices["test"], "message_id": ["x", "y", "z"]}}
    with pytest.raises(ValueError, match="test"):
        deployed_features(selection, shuffled, table)


def test_trials_table_keeps_parameters_and_results_best_first():
    trials = [
        {"eta": 0.1, "max_depth": 3, "val_aucpr": 0.91, "pid": 11, "hostname": "vm", "config": {}},
        {"eta": 0.2, "max_depth": 4, "val_aucpr": 0.97, "pid": 12, "hostname": "vm", "config": {}},
    ]
    table = trials_markdown(trials)
    header = table.splitlines()[0]
    assert "eta" in header and "val_aucpr" in header
    assert "pid" not in header and "hostname" not in header and "config" not in header
    assert table.index("0.97") < table.index("0.91")


def test_the_json_fields_block_is_the_same_chunked_in_memory_or_on_disk(tmp_path, real_sample):
    """The deployed trees' second block (every message as JSON fields) is built a chunk at a
    time, into a scratch file on a big corpus: the rows a whole transform gives."""
    from spam_assets.lib.ensemble import fields_copy
    from spam_assets.lib.training import fields_block
    from spam_serving.featurize import Featurizer, FeaturizerConfig
    from spam_tests.helpers.corpus import real_splits

    rows = real_splits(real_sample[::4])
    msgs = messages_of(rows)
    config = FeaturizerConfig(max_text_features=200, max_meta_features=40, min_df=2,
                              stacked=True, char_features=5_000)  # fmt: skip
    f = Featurizer(config).fit(msgs, rows["label"].to_numpy())
    whole = f.transform([fields_copy(m) for m in msgs])[:, : f.n_base_features]

    def frames():
        return (rows.iloc[start : start + 40] for start in range(0, len(rows), 40))

    in_memory = fields_block(f, frames(), len(rows), None)
    on_disk = fields_block(f, frames(), len(rows), None, scratch=tmp_path)
    np.testing.assert_array_equal(in_memory, whole)
    np.testing.assert_array_equal(on_disk, whole)
    assert isinstance(on_disk, np.memmap) and (tmp_path / "fields.npy").exists()
    with pytest.raises(ValueError, match="rows for a block"):  # frames and size disagree
        fields_block(f, frames(), len(rows) + 1, None)
