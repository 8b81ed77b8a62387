"""Scale: the generated corpus is varied and real in structure, and the search samples rows
without losing the labels' balance or the time order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.scale_corpus import Generator, write_tar
from spam_assets.lib.corpus_sources import iter_source
from spam_assets.lib.splits import assign_splits, deduplicate, parse_raw_table
from spam_assets.lib.training import tune_data


def _matrices(n_train: int, n_val: int) -> dict:
    rng = np.random.default_rng(1)

    def part(n: int) -> dict:
        y = (rng.random(n) < 0.3).astype(np.int8)
        x = np.column_stack([np.arange(n, dtype=np.float32), y.astype(np.float32)])
        return {"X": np.hstack([x, np.ones((n, 2), np.float32)]), "y": y}

    return {"train": part(n_train), "validation": part(n_val)}


def test_the_search_samples_training_rows_stratified_and_in_time_order():
    m = _matrices(20_000, 4_000)
    data = tune_data(m, n_base=2, max_rows=5_000, seed=3)
    assert data["sampled"] and data["n_train_all"] == 20_000
    assert len(data["y_train"]) == 5_000 and len(data["y_val"]) == 1_000
    assert data["X_train"].shape[1] == 2  # the stacking block is not searched over
    for x, y, full in ((data["X_train"], data["y_train"], m["train"]),
                       (data["X_val"], data["y_val"], m["validation"])):  # fmt: skip
        assert np.all(np.diff(x[:, 0]) > 0)  # rows keep their (time) order
        assert np.array_equal(x[:, 1], y)  # features and labels stay paired
        assert abs(y.mean() - full["y"].mean()) < 0.002  # the label share is kept
    again = tune_data(m, n_base=2, max_rows=5_000, seed=3)
    assert np.array_equal(again["X_train"], data["X_train"])  # same seed, same sample
    whole = tune_data(m, n_base=2, max_rows=50_000, seed=3)
    assert not whole["sampled"] and len(whole["y_train"]) == 20_000


def test_generated_corpus_is_varied_labelled_and_parses_like_mail(tmp_path: Path, shared_tgz):
    out = write_tar(Generator(shared_tgz, seed=0), 1_500, tmp_path / "gen.tar")
    msgs = list(iter_source(str(out), tmp_path))
    assert len(msgs) == 1_500
    raw = pd.DataFrame(
        {
            "message_id": [m.message_id for m in msgs],
            "group": [m.group for m in msgs],
            "label": [m.label for m in msgs],
            "sha256": [m.sha256 for m in msgs],
            "raw": [m.raw for m in msgs],
        }
    )
    parsed = parse_raw_table(raw)
    kept, dups = deduplicate(parsed)
    assert len(kept) >= 0.99 * len(parsed), dups  # varied enough that de-dup keeps them
    assert parsed["parse_error"].isna().all()
    assert parsed["received_at"].fillna(parsed["sent_at"]).notna().mean() > 0.99
    assert (parsed["n_parts"] > 1).sum() > 50 and parsed["is_html"].sum() > 50
    splits = assign_splits(kept, 0.2)
    assert set(splits["split"]) == {"train", "validation", "test"}
    assert set(kept.groupby("group")["label"].first()) == {0, 1}
    assert kept["sender_domain"].nunique() > 0.9 * len(kept)  # new senders
