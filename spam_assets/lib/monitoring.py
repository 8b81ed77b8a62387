"""Reading the service's prediction/feedback logs for monitoring and retraining.

The service writes ``predictions`` and ``feedback`` as hourly Parquet parts (see
``spam_serving.inference_log``). Feedback arrives late: a label for a prediction made at 10:00
may come at 15:00, so feedback is always joined from every feedback hour between the
prediction's hour and now, never only from the same hour.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spam_assets.lib.files import write_atomic
from spam_serving.featurize import NUMERIC_FEATURES
from spam_serving.inference_log import ERROR_LABEL, FEEDBACK, PREDICTIONS, read_log
from spam_serving.log_store import LogStore
from spam_serving.parsing import FIELD_NAMES

NUMERIC_COLUMNS = tuple("num_" + n for n in NUMERIC_FEATURES)
#: Columns a consolidated inference-log partition keeps (``message`` only for retraining).
PARTITION_COLUMNS = (
    "ts",
    "prediction_id",
    "endpoint",
    "environment",
    "model_version",
    "score",
    "label",
    "threshold",
    "latency_ms",
    "parse_error",
    "sender_domain",
    "fallback_from",
    "degraded",
    *NUMERIC_COLUMNS,
)

LogLocation = Path | LogStore
"""The inference log: its local directory, or a store (Blob on AKS)."""


def hour_floor(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Every UTC hour from ``start``'s hour to ``end``'s hour, inclusive."""
    h, last, out = hour_floor(start), hour_floor(end), []
    while h <= last:
        out.append(h)
        h += timedelta(hours=1)
    return out


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas() if table.num_columns else pd.DataFrame()


def read_predictions(
    root: LogLocation,
    hours: Iterable[datetime],
    with_messages: bool = False,
    prediction_ids: Collection[str] | None = None,
    problems: list[str] | None = None,
    failures: bool = False,
) -> pd.DataFrame:
    """Prediction rows of the given hours (empty frame with the known columns when none),
    only ``prediction_ids`` when given. The logged messages are read only ``with_messages``
    (retraining). Unreadable log files are skipped and named in ``problems``. Rows of
    requests a canary pod's model failed (label ``error``, no score) are only for the canary
    judge (``failures``); drift and feedback never see them."""
    wanted = [*PARTITION_COLUMNS, *(["message"] if with_messages else [])]
    table = read_log(
        root,
        PREDICTIONS,
        list(hours),
        columns=wanted,
        prediction_ids=prediction_ids,
        problems=problems,
    )
    df = _frame(table)
    if not failures and len(df) and "label" in df.columns:
        df = df[df["label"] != ERROR_LABEL]
    if df.empty:
        return pd.DataFrame(columns=wanted)
    return df[[c for c in wanted if c in df.columns]]


def read_feedback(
    root: LogLocation,
    since: datetime,
    until: datetime | None = None,
    problems: list[str] | None = None,
) -> pd.DataFrame:
    """Latest feedback label per prediction id, from ``since``'s hour up to ``until`` (now).

    A prediction corrected twice keeps the most recent label (users fix mistakes)."""
    hours = hours_between(since, until or datetime.now(UTC))
    df = _frame(read_log(root, FEEDBACK, hours, problems=problems))
    if df.empty:
        return pd.DataFrame(columns=["prediction_id", "true_label", "feedback_ts"])
    df = df.sort_values("ts").drop_duplicates("prediction_id", keep="last")
    return df.rename(columns={"label": "true_label", "ts": "feedback_ts"})[
        ["prediction_id", "true_label", "feedback_ts"]
    ]


def join_feedback(predictions: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Predictions with ``true_label`` (None when no feedback yet)."""
    if predictions.empty:
        return predictions.assign(true_label=pd.Series(dtype=object))
    return predictions.merge(feedback, on="prediction_id", how="left")


def feedback_metrics(df: pd.DataFrame) -> dict:
    """Accuracy, F1 (spam positive) and ham FPR of the served labels on labelled rows."""
    labelled = df[df["true_label"].notna()] if "true_label" in df else df.iloc[:0]
    n = len(labelled)
    if n == 0:
        return {
            "n_feedback": 0,
            "n_correct": 0,
            "accuracy": None,
            "f1": None,
            "ham_fpr": None,
            "n_feedback_ham": 0,
            "n_ham_false_positives": 0,
        }
    y = (labelled["true_label"] == "spam").to_numpy()
    p = (labelled["label"] == "spam").to_numpy()
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    n_ham = int((~y).sum())
    return {
        "n_feedback": n,
        "n_correct": int((y == p).sum()),
        "accuracy": float((y == p).mean()),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        "ham_fpr": fp / n_ham if n_ham else None,
        "n_feedback_ham": n_ham,
        "n_ham_false_positives": fp,
    }


def consolidate_partition(
    root: LogLocation, hour: datetime, out_path: Path, problems: list[str] | None = None
) -> dict:
    """Write one hour of predictions (+ feedback known so far) as one Parquet file.

    Returns counts for the asset metadata. An hour with no traffic writes an empty file with
    the schema, so "no traffic" and "never materialized" stay distinguishable.
    """
    preds = read_predictions(root, [hour], problems=problems)
    joined = join_feedback(preds, read_feedback(root, hour, problems=problems))
    write_atomic(out_path, lambda tmp: joined.to_parquet(tmp, index=False))
    by_version = joined.groupby("model_version").size().to_dict() if len(joined) else {}
    return {
        "n_predictions": len(joined),
        "n_feedback": int(joined["true_label"].notna().sum()) if len(joined) else 0,
        "n_spam_predicted": int((joined["label"] == "spam").sum()) if len(joined) else 0,
        "mean_score": float(joined["score"].mean()) if len(joined) else None,
        "p99_latency_ms": float(joined["latency_ms"].quantile(0.99)) if len(joined) else None,
        "by_model_version": {str(k): int(v) for k, v in by_version.items()},
    }


def load_window(
    root: LogLocation,
    partitions_dir: Path,
    hours: list[datetime],
    problems: list[str] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Predictions of the window's hours with feedback joined fresh (late labels count).

    Consolidated partitions are used when present; hours never consolidated are read from
    the raw log directly. Returns the frame and how many hours came from the raw log.
    """
    parts, raw_hours = [], []
    for h in hours:
        path = partition_path(partitions_dir, h)
        if path.exists():
            parts.append(pq.read_table(path).to_pandas())
        else:
            raw_hours.append(h)
    if raw_hours:
        parts.append(read_predictions(root, raw_hours, problems=problems))
    parts = [p.drop(columns=["true_label", "feedback_ts"], errors="ignore") for p in parts]
    parts = [p for p in parts if len(p)]
    preds = pd.concat(parts, ignore_index=True) if parts else read_predictions(root, [])
    return join_feedback(preds, read_feedback(root, hours[0], problems=problems)), len(raw_hours)


def partition_path(partitions_dir: Path, hour: datetime) -> Path:
    return Path(partitions_dir) / f"{hour:%Y-%m-%d-%H}.parquet"


def labelled_examples(
    root: LogLocation, since: datetime, problems: list[str] | None = None
) -> pd.DataFrame:
    """Messages with a feedback label, as rows shaped like ``parsed_messages``.

    Provenance columns: ``prediction_id``, ``served_model_version``, ``predicted_at``,
    ``feedback_ts``. Duplicate content keeps the newest feedback (the latest truth).
    """
    hours = hours_between(since, datetime.now(UTC))
    feedback = read_feedback(root, since, problems=problems)
    columns = [
        "message_id",
        "group",
        "label",
        "sha256",
        *FIELD_NAMES,
        "prediction_id",
        "served_model_version",
        "predicted_at",
        "feedback_ts",
    ]
    if feedback.empty:
        return pd.DataFrame(columns=columns)
    # only labelled predictions' messages are read: a day of traffic logs gigabytes of them
    preds = read_predictions(
        root,
        hours,
        with_messages=True,
        prediction_ids=set(feedback["prediction_id"]),
        problems=problems,
    )
    if preds.empty or "message" not in preds.columns:
        return pd.DataFrame(columns=columns)
    joined = join_feedback(preds, feedback)
    joined = joined[joined["true_label"].notna() & joined["message"].notna()]
    if joined.empty:
        return pd.DataFrame(columns=columns)
    records = []
    for row in joined.itertuples(index=False):
        rec = json.loads(row.message)
        rec.update(
            message_id=f"feedback/{row.prediction_id}",
            group="feedback",
            label=int(row.true_label == "spam"),
            sha256=rec.get("content_hash", ""),
            prediction_id=row.prediction_id,
            served_model_version=str(row.model_version),
            predicted_at=row.ts,
            feedback_ts=row.feedback_ts,
        )
        records.append(rec)
    df = pd.DataFrame.from_records(records).reindex(columns=columns)
    for col in ("sent_at", "received_at"):
        df[col] = pd.to_datetime(df[col], utc=True, errors="coerce")
    df = df.sort_values("feedback_ts").drop_duplicates("content_hash", keep="last")
    # ordered by content, not by message_id (a random prediction id): the row order reaches
    # XGBoost, whose row subsampling follows it, so the same labelled traffic must give the
    # same order for a retrain to be reproducible
    return df.sort_values("content_hash").reset_index(drop=True)
