"""Time split protocol, de-duplication and the leakage rule, on real messages."""

from __future__ import annotations

import pandas as pd
import pytest

from spam_assets.lib.splits import assign_splits, deduplicate, leaking_hashes, parse_raw_table


def _raw_table(items: list[tuple[str, int, bytes]]) -> pd.DataFrame:
    import hashlib

    return pd.DataFrame(
        {
            "message_id": [f"{g}/{i:05d}" for i, (g, _, _) in enumerate(items)],
            "group": [g for g, _, _ in items],
            "label": [lab for _, lab, _ in items],
            "sha256": [hashlib.sha256(r).hexdigest() for _, _, r in items],
            "raw": [r for _, _, r in items],
        }
    )


@pytest.fixture(scope="module")
def parsed(real_sample) -> pd.DataFrame:
    return parse_raw_table(_raw_table(real_sample))


def test_duplicates_removed_and_counted(real_sample):
    group, label, raw = real_sample[0]
    spaced = raw.replace(b"\n\n", b"\n\n   \n", 1)  # whitespace-only change in the body
    items = [*real_sample[:20], (group, label, raw), ("easy-ham-2", label, spaced)]
    kept, counts = deduplicate(parse_raw_table(_raw_table(items)))
    assert counts["exact_duplicates"] == 1
    assert counts["near_duplicates"] >= 1
    assert len(kept) == 20 - (counts["near_duplicates"] - 1)
    assert kept["content_hash"].is_unique and kept["sha256"].is_unique


def test_time_split_protocol(parsed):
    kept, _ = deduplicate(parsed)
    df = assign_splits(kept, 0.2)
    by = df.groupby("group")["split"].value_counts().unstack(fill_value=0)
    assert set(by.loc["easy-ham-2"][by.loc["easy-ham-2"] > 0].index) == {"test"}
    assert set(by.loc["spam-2"][by.loc["spam-2"] > 0].index) == {"test"}
    assert by.loc["easy-ham-1"].get("test", 0) == 0
    assert by.loc["hard-ham-1"]["test"] == pytest.approx(by.loc["hard-ham-1"].sum() / 2, abs=1)
    # validation is the newest slice of each training group
    t = df["received_at"].fillna(df["sent_at"])
    for group in ("easy-ham-1", "spam-1"):
        g = df[df["group"] == group]
        tg = t[g.index]
        assert tg[g["split"] == "validation"].min() >= tg[g["split"] == "train"].max()
        assert abs((g["split"] == "validation").mean() - 0.2) < 0.02
    # deterministic
    pd.testing.assert_frame_equal(df, assign_splits(kept, 0.2))


def test_no_leakage_after_dedup_and_detection_works(parsed):
    kept, _ = deduplicate(parsed)
    df = assign_splits(kept, 0.2)
    assert leaking_hashes(df) == []
    leaky = df.copy()
    train_row = leaky.index[leaky["split"] == "train"][0]
    test_row = leaky.index[leaky["split"] == "test"][0]
    leaky.loc[test_row, "content_hash"] = leaky.loc[train_row, "content_hash"]
    assert leaking_hashes(leaky) == [leaky.loc[train_row, "content_hash"]]


def test_bad_validation_fraction(parsed):
    with pytest.raises(ValueError, match="validation_fraction"):
        assign_splits(parsed, 1.5)
