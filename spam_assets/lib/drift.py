"""Distribution drift between a reference (training) sample and live traffic: PSI, two-sample
KS and chi-square per column, and the share of drifted columns.

Why our own numbers beside Evidently's report: Evidently (0.7) draws the HTML a human reads,
but it picks a different test per sample size (Wasserstein / Jensen-Shannon above 1,000 rows)
and costs seconds per column on a million rows. The retrain sensor needs one stable, cheap
rule that does not change with traffic volume: PSI >= threshold. KS and chi-square are
reported beside it (with a million rows every p-value is ~0, so they inform, not decide).

Binning: ``quantile`` (default) uses deciles of the reference, the usual credit-risk PSI and
robust to heavy tails (URL counts); ``sturges`` reproduces Evidently's equal-width bins on the
combined data so the two can be cross-checked exactly. Columns with <= 20 distinct reference
values are treated as categorical (value counts), as Evidently does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

CATEGORICAL_MAX_VALUES = 20
N_QUANTILE_BINS = 10


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # "numeric" | "categorical" | "empty" | "constant"
    psi: float
    ks_statistic: float | None
    p_value: float | None  # KS for numeric, chi-square for categorical
    drifted: bool
    n_reference: int
    n_current: int
    reference_mean: float | None = None
    current_mean: float | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _fill_zeros(p: np.ndarray) -> np.ndarray:
    """Empty bins get a tiny share so log(p/q) stays finite (Evidently's rule, kept identical
    so the cross-check compares the same formula)."""
    p = p.astype(float).copy()
    nonzero = p[p != 0]
    if len(nonzero) == 0:
        return p
    fill = nonzero.min() / 10**6 if nonzero.min() <= 0.0001 else 0.0001
    p[p == 0] = fill
    return p


def psi_from_shares(ref: np.ndarray, cur: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    ref, cur = _fill_zeros(np.asarray(ref)), _fill_zeros(np.asarray(cur))
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def _clean(values: pd.Series | np.ndarray) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return arr[np.isfinite(arr)]


def numeric_psi(ref: np.ndarray, cur: np.ndarray, binning: str = "quantile") -> float:
    """PSI of two numeric samples (NaN/inf dropped before; both must be non-empty)."""
    if binning == "sturges":
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        ref_counts = np.histogram(ref, edges)[0]
        cur_counts = np.histogram(cur, edges)[0]
    elif binning == "quantile":
        inner = np.unique(np.quantile(ref, np.linspace(0, 1, N_QUANTILE_BINS + 1)[1:-1]))
        # right-closed bins over the reference quantiles; values past either end fall in the
        # outer bins, so new extremes in live traffic still count
        ref_counts = np.bincount(np.searchsorted(inner, ref, side="left"), minlength=len(inner) + 1)
        cur_counts = np.bincount(np.searchsorted(inner, cur, side="left"), minlength=len(inner) + 1)
    else:
        raise ValueError(f"unknown binning {binning!r} (quantile | sturges)")
    return psi_from_shares(ref_counts / len(ref), cur_counts / len(cur))


def categorical_shares(ref: pd.Series, cur: pd.Series) -> tuple[list, np.ndarray, np.ndarray]:
    """Categories of either sample and the counts of each in both (NaN dropped)."""
    ref_counts, cur_counts = ref.dropna().value_counts(), cur.dropna().value_counts()
    keys = sorted(set(ref_counts.index) | set(cur_counts.index), key=str)
    return (
        keys,
        ref_counts.reindex(keys, fill_value=0).to_numpy(dtype=float),
        cur_counts.reindex(keys, fill_value=0).to_numpy(dtype=float),
    )


def column_drift(
    name: str,
    ref: pd.Series,
    cur: pd.Series,
    psi_threshold: float = 0.2,
    categorical: bool | None = None,
    binning: str = "quantile",
) -> ColumnDrift:
    """Drift of one column. ``categorical=None`` decides by the reference's distinct values."""
    ref, cur = pd.Series(ref), pd.Series(cur)
    is_object = ref.dtype == object or isinstance(ref.dtype, pd.CategoricalDtype)
    if categorical is None:
        categorical = is_object or ref.nunique(dropna=True) <= CATEGORICAL_MAX_VALUES
    if categorical:
        ref_c, cur_c = ref.dropna(), cur.dropna()
        if len(ref_c) == 0 or len(cur_c) == 0:
            return _empty(name, len(ref_c), len(cur_c))
        _, r, c = categorical_shares(ref_c, cur_c)
        psi = psi_from_shares(r / r.sum(), c / c.sum())
        # chi-square of current counts against reference shares scaled to the current total
        # (Evidently's form); categories unseen in the reference get the PSI fill share
        expected = _fill_zeros(r / r.sum()) * c.sum()
        expected *= c.sum() / expected.sum()
        p = float(stats.chisquare(c, expected).pvalue) if len(c) > 1 else 1.0
        return ColumnDrift(
            name, "categorical", psi, None, p, psi >= psi_threshold, len(ref_c), len(cur_c)
        )
    r, c = _clean(ref), _clean(cur)
    if len(r) == 0 or len(c) == 0:
        return _empty(name, len(r), len(c))
    ks = stats.ks_2samp(r, c)
    kind, note = "numeric", ""
    if np.ptp(r) == 0 and np.ptp(c) == 0:
        kind, note = "constant", "constant in both samples"
        psi = 0.0 if r[0] == c[0] else psi_from_shares(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    else:
        psi = numeric_psi(r, c, binning)
    return ColumnDrift(
        name,
        kind,
        psi,
        float(ks.statistic),
        float(ks.pvalue),
        psi >= psi_threshold,
        len(r),
        len(c),
        float(r.mean()),
        float(c.mean()),
        note,
    )


def _empty(name: str, n_ref: int, n_cur: int) -> ColumnDrift:
    side = "reference" if n_ref == 0 else "current"
    return ColumnDrift(
        name, "empty", 0.0, None, None, False, n_ref, n_cur, note=f"no values in {side} sample"
    )


def dataset_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    psi_threshold: float = 0.2,
    categorical: set[str] = frozenset(),
) -> list[ColumnDrift]:
    """Per-column drift for every column present in both frames."""
    return [
        column_drift(
            col, reference[col], current[col], psi_threshold, True if col in categorical else None
        )
        for col in columns
        if col in reference.columns and col in current.columns
    ]


def drifted_share(results: list[ColumnDrift]) -> float:
    """Share of drifted columns among those that could be tested (empty ones excluded)."""
    tested = [r for r in results if r.kind != "empty"]
    return sum(r.drifted for r in tested) / len(tested) if tested else 0.0


@dataclass(frozen=True)
class RetrainThresholds:
    """When a drift report asks for a retrain (DESIGN.md section 2 defaults)."""

    score_psi: float = 0.2
    drift_share: float = 0.3
    accuracy_floor: float = 0.9
    min_feedback: int = 50
    min_predictions: int = 200
    #: the served model's ham FP budget (``SPAM_TARGET_HAM_FPR``) and how far live ham may
    #: exceed it: the promise is "within 2x" (DESIGN.md section 4)
    ham_fpr_budget: float = 0.001
    ham_fpr_factor: float = 2.0


def wilson_lower(k: int, n: int, z: float = 1.96) -> float:
    """Lower end of the 95% Wilson interval of ``k / n`` (0 for no trials)."""
    if n <= 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, (centre - half) / (1 + z * z / n)))


def ham_fpr_exceeded(fp: int, n_ham: int, t: RetrainThresholds) -> bool:
    """Live ham is junked beyond the promise with 95% confidence: the Wilson lower bound of
    the feedback ham FPR above ``factor x budget``. A point estimate would fire on one
    unlucky label at a 0.1% budget; the bound needs evidence (at 0.1%, e.g. 3 of 100 ham)."""
    return n_ham > 0 and wilson_lower(fp, n_ham) > t.ham_fpr_factor * t.ham_fpr_budget


def retrain_reasons(summary: dict, t: RetrainThresholds) -> tuple[list[str], str]:
    """Reasons to retrain from a drift report's headline numbers, and a one-line account of
    the numbers either way (the sensor's SkipReason). Used by the report and the sensor, so
    the two never disagree."""
    n = int(summary.get("n_predictions") or 0)
    if n < t.min_predictions:
        return [], f"only {n} predictions in the window (need {t.min_predictions})"
    reasons = []
    score_psi = summary.get("score_psi")
    share = summary.get("drifted_share")
    acc, n_fb = summary.get("feedback_accuracy"), int(summary.get("n_feedback") or 0)
    if score_psi is not None and score_psi >= t.score_psi:
        reasons.append(f"score PSI {score_psi:.3f} >= {t.score_psi}")
    if share is not None and share > t.drift_share:
        reasons.append(f"drifted feature share {share:.2f} > {t.drift_share}")
    if acc is not None and acc >= 0 and n_fb >= t.min_feedback and acc < t.accuracy_floor:
        reasons.append(f"feedback accuracy {acc:.3f} < {t.accuracy_floor} on {n_fb} labels")
    fp, n_ham = (
        int(summary.get("n_ham_false_positives") or 0),
        int(summary.get("n_feedback_ham") or 0),
    )
    if ham_fpr_exceeded(fp, n_ham, t):
        reasons.append(
            f"feedback ham FPR {fp}/{n_ham} = {fp / n_ham:.2%} (95% lower bound "
            f"{wilson_lower(fp, n_ham):.2%}) > {t.ham_fpr_factor:g}x the "
            f"{t.ham_fpr_budget:.2%} budget"
        )
    acc_text = (
        f"feedback accuracy {acc:.3f} on {n_fb} labels"
        if acc is not None and acc >= 0
        else f"{n_fb} feedback labels"
    )
    account = (
        f"score PSI {score_psi if score_psi is not None else float('nan'):.3f} "
        f"(threshold {t.score_psi}), drifted share {share or 0:.2f} (threshold {t.drift_share}), "
        f"{acc_text} (floor {t.accuracy_floor}, min {t.min_feedback} labels), "
        f"feedback ham FPR {fp}/{n_ham} (budget {t.ham_fpr_budget:.2%} x {t.ham_fpr_factor:g})"
    )
    return reasons, account
