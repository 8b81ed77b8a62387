"""The drift report of one window: the reference of the serving model, derived columns, our
PSI/KS numbers on every row, the retrain verdict, and Evidently's HTML rendering (on a
bounded sample). Plain Python: the ``drift_report`` asset only wires and shapes metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spam_assets.lib.drift import (
    ColumnDrift,
    RetrainThresholds,
    column_drift,
    dataset_drift,
    drifted_share,
    retrain_reasons,
)
from spam_assets.lib.files import write_atomic
from spam_assets.lib.monitoring import NUMERIC_COLUMNS

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


@dataclass(frozen=True)
class DriftOutcome:
    """One window's drift verdict and where its reports are."""

    model_version: str
    score: ColumnDrift
    features: list[ColumnDrift]
    drifted_share: float
    reasons: list[str]
    account: str
    predicted_spam_share: float
    reference_spam_share: float
    html_path: str
    json_path: str

    def table(self) -> pd.DataFrame:
        """Score and feature drift, most drifted first."""
        rows = [f.to_dict() for f in [self.score, *self.features]]
        return pd.DataFrame(rows).sort_values("psi", ascending=False)


def build_drift_report(
    window: pd.DataFrame,
    reference_dir: Path,
    summary: dict,
    thresholds: RetrainThresholds,
    *,
    feature_psi: float,
    score_psi: float,
    html_max_rows: int,
    report_stem: Path,
) -> DriftOutcome:
    """PSI + KS per numeric feature, PSI + chi-square per categorical one, score drift of the
    serving model against its own out-of-sample reference scores; the retrain reasons from
    ``summary`` (window counts and feedback metrics) plus those; the Evidently HTML and a JSON
    of every number at ``report_stem`` + ``.html``/``.json``."""
    version, ref = reference_for(reference_dir, window)
    # every environment's rows: inputs drift regardless of which model answered
    current = with_derived_columns(window)
    reference = with_derived_columns(ref)
    columns = [*NUMERIC_COLUMNS, "sender_tld"]
    features = dataset_drift(reference, current, columns, feature_psi, categorical={"sender_tld"})
    served = current[current["model_version"].astype(str) == version]
    score_ref = reference[
        reference["score_out_of_sample"]
        if "score_out_of_sample" in reference
        else reference["split"] == "validation"  # a reference written before the column
    ]
    score = column_drift("score", score_ref["score"], served["score"], score_psi)
    share = drifted_share(features)
    full = {**summary, "score_psi": score.psi, "drifted_share": share}
    reasons, account = retrain_reasons(full, thresholds)
    html = evidently_html(
        reference[[*columns, "score"]],
        current[[*columns, "score"]],
        html_max_rows,
        f"{report_stem}.html",
    )
    outcome = DriftOutcome(
        model_version=version,
        score=score,
        features=features,
        drifted_share=share,
        reasons=reasons,
        account=account,
        predicted_spam_share=float((current["label"] == "spam").mean()),
        reference_spam_share=float((score_ref["true_label"] == "spam").mean()),
        html_path=html,
        json_path=f"{report_stem}.json",
    )
    record = {**full, "reasons": reasons, "columns": outcome.table().to_dict("records")}
    write_atomic(
        Path(outcome.json_path), lambda tmp: Path(tmp).write_text(json.dumps(record, default=str))
    )
    return outcome
