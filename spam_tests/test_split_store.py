"""The split table as per-split files written a parsed part at a time: the rows, columns and
types the in-memory frame had (what ``groupby("split")`` gave every reader), feedback rows
replacing corpus copies, and readers that take columns, batches or sampled rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.scale_corpus import Generator, write_tar
from spam_assets.lib.parsed_store import deduplicated, update_parts
from spam_assets.lib.raw_store import land
from spam_assets.lib.split_store import plan_splits, write_splits
from spam_assets.lib.splits import SPLITS, assign_splits, merge_feedback


def _corpus(tmp_path: Path, shared_tgz: Path, chunk_rows: int):
    source = write_tar(Generator(shared_tgz, seed=11), 900, tmp_path / "g.tar")
    home = tmp_path / f"home-{chunk_rows}"
    landing = land([str(source)], home / "raw", home / "cache", 60, chunk_rows)
    update_parts(home / "raw", landing.parts, home / "parsed", 1)
    return deduplicated(home / "parsed", landing.parts)[0]


def _feedback(corpus) -> pd.DataFrame:
    """Labelled live traffic as ``labelled_examples`` shapes it (records through JSON): two
    copies of corpus content (they replace those rows) and one new message."""
    rows = corpus.read().iloc[[3, 40, 41]]
    records = []
    for i, rec in enumerate(json.loads(rows.to_json(orient="records", date_format="iso"))):
        rec.update(
            message_id=f"feedback/p{i}",
            group="feedback",
            label=1 - rec["label"],
            prediction_id=f"p{i}",
            served_model_version="1",
            predicted_at="2026-12-01T10:00:00Z",
            feedback_ts="2026-12-01T11:00:00Z",
        )
        records.append(rec)
    records[2]["content_hash"] = "new-content"
    return pd.DataFrame.from_records(records)


def _before(corpus, feedback, tmp_path: Path) -> pd.DataFrame:
    """What ``dataset_splits`` was: one frame, through Parquet once (the IO manager)."""
    merged, _ = merge_feedback(corpus.read(), feedback)
    assign_splits(merged, 0.2).to_parquet(tmp_path / "before.parquet", index=False)
    return pd.read_parquet(tmp_path / "before.parquet")


@pytest.mark.parametrize("feedback", [False, True])
def test_one_part_gives_the_frame_of_before_split_by_split(tmp_path, shared_tgz, feedback):
    corpus = _corpus(tmp_path, shared_tgz, 10_000)
    fb = _feedback(corpus) if feedback else pd.DataFrame()
    before = _before(corpus, fb, tmp_path)
    plan = plan_splits(corpus, fb, 0.2)
    table = write_splits(tmp_path / "splits", corpus, plan)
    for split in SPLITS:
        expected = before[before["split"] == split].reset_index(drop=True)
        got = table.read(splits=(split,))
        pd.testing.assert_frame_equal(got[expected.columns], expected)
        assert table.counts[split] == len(expected)
    if feedback:
        rows = table.read(["message_id", "prediction_id", "group"])
        assert rows["prediction_id"].notna().sum() == 3 and (rows["group"] == "feedback").sum() == 3
        assert plan.provenance["corpus_rows_replaced"] == 2  # the two copies left the corpus


def test_parts_give_the_same_rows_and_readers_take_what_they_need(tmp_path, shared_tgz):
    corpus = _corpus(tmp_path, shared_tgz, 250)
    assert len(corpus.parts) == 4
    before = _before(corpus, pd.DataFrame(), tmp_path)
    table = write_splits(tmp_path / "splits", corpus, plan_splits(corpus, pd.DataFrame(), 0.2))
    for split in SPLITS:
        expected = before[before["split"] == split].sort_values("message_id", ignore_index=True)
        got = table.read(splits=(split,)).sort_values("message_id", ignore_index=True)
        pd.testing.assert_frame_equal(got[expected.columns], expected)
    train = table.read(splits=("train",))
    batches = list(table.iter_frames("train", ["message_id", "label"], batch_rows=64))
    assert max(len(b) for b in batches) <= 64
    pd.testing.assert_frame_equal(
        pd.concat(batches, ignore_index=True), train[["message_id", "label"]]
    )
    picked = np.array([0, 5, 63, 64, 200, len(train) - 1])
    pd.testing.assert_frame_equal(
        table.take("train", picked), train.iloc[picked].reset_index(drop=True)
    )
    for _ in range(4):  # older materializations are pruned
        write_splits(tmp_path / "splits", corpus, plan_splits(corpus, pd.DataFrame(), 0.2))
    assert len([p for p in (tmp_path / "splits").iterdir()]) == 3
