"""Frames for the drift report: the reference of the serving model, derived columns, and
Evidently's HTML rendering (on a bounded sample; our own numbers always use every row)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spam_assets.lib.files import write_atomic

#: training-period rows the reference is built from (score drift uses the rows whose scores
#: are out-of-sample, ``score_out_of_sample``: in-sample scores would look like drift)
REFERENCE_SPLITS = ("train", "validation")


def with_derived_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``sender_tld``: a low-cardinality categorical view of the sender domain."""
    domain = df.get("sender_domain", pd.Series("", index=df.index)).fillna("").astype(str)
    tld = domain.str.rsplit(".", n=1).str[-1].str.lower()
    return df.assign(sender_tld=tld.where(tld != "", "(none)"))


def reference_for(reference_dir: Path, window: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The reference of the version that served most of the window (score drift compares a
    model with itself); the newest reference when that version has none."""
    files = {p.stem.removeprefix("v"): p for p in Path(reference_dir).glob("v*.parquet")}
    if not files:
        raise FileNotFoundError(
            f"no drift reference in {reference_dir}; materialize drift_reference first"
        )
    served = window["model_version"].astype(str).value_counts()
    for version in served.index:
        if version in files:
            return version, pd.read_parquet(files[version])
    newest = max(files, key=lambda v: (len(v), v))
    return newest, pd.read_parquet(files[newest])


def evidently_html(
    reference: pd.DataFrame, current: pd.DataFrame, max_rows: int, path: str | Path
) -> str:
    """Evidently 0.7 ``DataDriftPreset`` report saved as HTML; returns its path."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    if len(current) > max_rows:
        current = current.sample(max_rows, random_state=0)
    if len(reference) > max_rows:
        reference = reference.sample(max_rows, random_state=0)
    snapshot = Report([DataDriftPreset()]).run(current, reference)
    return str(write_atomic(Path(path), lambda tmp: snapshot.save_html(str(tmp))))
