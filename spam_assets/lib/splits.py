"""Parsing the raw store into a table, de-duplication, and the time-based split protocol.

Protocol (DESIGN.md section 4): groups ending in ``-1`` are the older period (train),
``-2`` the newer (test). ``hard-ham-1`` and any group without a period suffix is halved by
delivery time: older half to train, newer half to test. Validation is the newest
``validation_fraction`` of every training group, so threshold choice and early stopping see the
most recent data (the spam share drifts from ~15% to ~44% between periods).

Retraining adds labelled live traffic as the ``feedback`` group: it is training data only, and
a corpus message with the same content is replaced by it (the feedback label is the newer
truth; a test copy leaves the test set, so nothing trained on is ever scored as held out).
"""

from __future__ import annotations

import pandas as pd

from spam_serving.parsing import FIELD_NAMES, parse_message

SPLITS = ("train", "validation", "test")
#: Labelled live traffic (``labelled_feedback``): always training data, newest slice validation.
FEEDBACK_GROUP = "feedback"


def parse_raw_table(raw: pd.DataFrame) -> pd.DataFrame:
    """Parse every raw message; one row each, never raising (errors land in ``parse_error``)."""
    records = []
    for row in raw.itertuples(index=False):
        parsed = parse_message(row.raw).to_record()
        parsed.update(
            message_id=row.message_id, group=row.group, label=int(row.label), sha256=row.sha256
        )
        records.append(parsed)
    columns = ["message_id", "group", "label", "sha256", *FIELD_NAMES]
    df = pd.DataFrame.from_records(records, columns=columns)
    for col in ("sent_at", "received_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    return df


def event_time(df: pd.DataFrame) -> pd.Series:
    """Delivery time, falling back to the Date header: the clock the split runs on."""
    return df["received_at"].fillna(df["sent_at"])


def deduplicate(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop exact (raw sha256) then near-exact (content hash) copies, keeping the earliest.

    Returns the kept rows and counts for asset metadata, including how many duplicate groups
    carried conflicting labels (kept: the earliest copy's label).
    """
    ordered = df.assign(_t=event_time(df)).sort_values(["_t", "message_id"], na_position="last")
    exact = ordered.duplicated("sha256", keep="first")
    after_exact = ordered[~exact]
    near = after_exact.duplicated("content_hash", keep="first")
    conflicts = int((after_exact.groupby("content_hash")["label"].nunique() > 1).sum())
    kept = after_exact[~near].drop(columns="_t").sort_values("message_id").reset_index(drop=True)
    return kept, {
        "exact_duplicates": int(exact.sum()),
        "near_duplicates": int(near.sum()),
        "label_conflicts": conflicts,
    }


def merge_feedback(parsed: pd.DataFrame, feedback: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Corpus rows plus labelled feedback rows; corpus copies of feedback content dropped."""
    if feedback is None or feedback.empty:
        return parsed, {"feedback_rows": 0, "corpus_rows_replaced": 0}
    fb = feedback.drop_duplicates("content_hash", keep="last")
    replaced = parsed["content_hash"].isin(set(fb["content_hash"]))
    merged = pd.concat([parsed[~replaced], fb], ignore_index=True)
    for col in ("sent_at", "received_at"):
        merged[col] = pd.to_datetime(merged[col], utc=True)
    return merged, {
        "feedback_rows": len(fb),
        "feedback_spam": int(fb["label"].sum()),
        "corpus_rows_replaced": int(replaced.sum()),
        "replaced_by_group": {
            str(k): int(v) for k, v in parsed[replaced].groupby("group").size().items()
        },
    }


def assign_splits(df: pd.DataFrame, validation_fraction: float) -> pd.DataFrame:
    """Add a ``split`` column per the protocol above. Deterministic for the same input."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    out = df.copy()
    out["_t"] = event_time(out)
    split = pd.Series("train", index=out.index, dtype=object)
    for group, idx in out.groupby("group").groups.items():
        part = out.loc[idx].sort_values(["_t", "message_id"], na_position="first")
        if group.endswith("-2"):
            split[part.index] = "test"
            continue
        if group != FEEDBACK_GROUP and (not group.endswith("-1") or group.startswith("hard-ham")):
            half = len(part) // 2
            split[part.index[half:]] = "test"
            part = part.iloc[:half]
        n_val = round(len(part) * validation_fraction)
        if n_val:
            split[part.index[len(part) - n_val :]] = "validation"
    out["split"] = split
    return out.drop(columns="_t")


def leaking_hashes(df: pd.DataFrame, column: str = "content_hash") -> list[str]:
    """Values of ``column`` that occur in more than one split (must be empty)."""
    per_hash = df.groupby(column)["split"].nunique()
    return sorted(per_hash[per_hash > 1].index.tolist())
