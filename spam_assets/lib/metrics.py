"""The evaluation protocol of DESIGN.md section 4, with spam as the positive class.

Thresholds are always chosen on validation data and passed in; nothing here looks at test
labels to pick a deployed operating point. The one use of test labels for a threshold is
``matched_fpr_comparison``: it compares two models at the same held-out ham false-positive
rate, and that comparison threshold is never deployed.
"""

from __future__ import annotations

import base64
import io

import numpy as np

FPR_POINTS = (0.001, 0.01)
#: Held-out ham FPRs at which ``matched_fpr_comparison`` also reports both models' recall.
MATCHED_FPR_POINTS = (0.001, 0.005, 0.01, 0.02)


def threshold_for_fpr(y_true: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Lowest threshold whose ham false-positive rate on (validation) data is <= ``max_fpr``.

    Lowest means the most spam caught under the FPR budget. Ties: a threshold just above
    the largest allowed ham score, so equal scores never straddle the cut.
    """
    n_ham = int((np.asarray(y_true) == 0).sum())
    if n_ham == 0:
        return 0.5
    return threshold_for_false_positives(y_true, scores, int(np.floor(max_fpr * n_ham + 1e-9)))


def allowed_false_positives(n_ham: int, budget: float, confidence: float) -> tuple[int, float]:
    """The most held-out ham false positives ``k`` whose one-sided Clopper-Pearson upper bound
    on the ham FPR (at ``confidence``) stays within ``budget``, and that bound.

    A point estimate certifies nothing at the low-FP end: with 2,600 held-out ham a 0.1%
    budget "allows" 2 false positives, and the next period may see twice that. With the
    bound, ``k`` false positives are allowed only if the true rate is within budget with
    the stated confidence. When even ``k = 0`` cannot certify it (fewer than about
    ``3 / budget`` ham at 95%), the answer is ``k = 0`` with its bound above the budget: the
    threshold goes above every held-out ham, the most a sample that size can promise.
    ``confidence = 0`` gives the point estimate (``floor(budget * n_ham)``)."""
    from scipy.stats import beta

    if n_ham <= 0:
        return 0, 1.0
    if confidence <= 0:
        k = int(np.floor(budget * n_ham + 1e-9))
        return k, k / n_ham

    def upper(k: int) -> float:
        return 1.0 if k >= n_ham else float(beta.ppf(confidence, k + 1, n_ham - k))

    k = 0
    while k + 1 < n_ham and upper(k + 1) <= budget:
        k += 1
    return k, upper(k)


def threshold_for_budget(
    y_true: np.ndarray, scores: np.ndarray, budget: float, confidence: float
) -> dict:
    """The lowest threshold that keeps the ham FPR within ``budget`` with ``confidence``
    (:func:`allowed_false_positives`): threshold, allowed false positives, the bound, and
    whether the sample could certify the budget at all."""
    n_ham = int((np.asarray(y_true) == 0).sum())
    k, bound = allowed_false_positives(n_ham, budget, confidence)
    return {
        "threshold": threshold_for_false_positives(y_true, scores, k) if n_ham else 0.5,
        "allowed_false_positives": k,
        "n_ham": n_ham,
        "fpr_upper_bound": bound,
        "certified": bound <= budget,
    }


def threshold_for_false_positives(y_true: np.ndarray, scores: np.ndarray, allowed: int) -> float:
    """Lowest threshold that lets at most ``allowed`` ham messages score at or above it."""
    ham = np.sort(np.asarray(scores)[np.asarray(y_true) == 0])[::-1]
    cut = ham[allowed] if allowed < len(ham) else -np.inf
    return float(np.nextafter(np.float32(cut), np.float32(np.inf))) if np.isfinite(cut) else 0.0


def matched_fpr_comparison(
    y_true: np.ndarray,
    champion_scores: np.ndarray,
    champion_threshold: float,
    challenger_scores: np.ndarray,
) -> dict:
    """Spam recall of both models at the champion's held-out ham false-positive rate.

    Each model's own threshold comes from its own validation slice, and a retrain on fresher
    data also moves the threshold, so F1 at the two own thresholds mixes "which model ranks
    better" with "which threshold happened to land where". Here the budget is the number of
    held-out ham the champion lets through today; *both* models get the lowest threshold
    that stays within it (the champion's own threshold may sit anywhere between two ham
    scores, so leaving it there would favour the challenger), and they are compared on the
    spam they catch at that cost (paired, with McNemar on the spam rows). A point on the two
    ROC curves, in other words; the comparison thresholds are never deployed."""
    y = np.asarray(y_true).astype(int)
    a, b = np.asarray(champion_scores), np.asarray(challenger_scores)
    spam = y == 1
    false_positives = int(((a >= champion_threshold) & (y == 0)).sum())
    thr_a = threshold_for_false_positives(y, a, false_positives)
    thr_b = threshold_for_false_positives(y, b, false_positives)
    pred_a, pred_b = a >= thr_a, b >= thr_b
    n_ham = int((y == 0).sum())
    curve = {}
    for fpr in MATCHED_FPR_POINTS:
        k = int(np.floor(fpr * n_ham + 1e-9))
        caught_a, caught_b = _caught_within(y, a, k), _caught_within(y, b, k)
        curve[f"{fpr * 100:g}%"] = {
            "false_positives": k,
            "champion_recall": float(caught_a.mean()) if spam.any() else None,
            "challenger_recall": float(caught_b.mean()) if spam.any() else None,
            "mcnemar_p_value": mcnemar(np.ones_like(caught_a), caught_a, caught_b)["p_value"],
        }
    return {
        "ham_fpr": false_positives / n_ham if n_ham else None,
        "at_ham_fpr": curve,
        "false_positives": false_positives,
        "challenger_false_positives": int((pred_b & (y == 0)).sum()),
        "champion_threshold": thr_a,
        "challenger_threshold": thr_b,
        "champion_recall": float(pred_a[spam].mean()) if spam.any() else None,
        "challenger_recall": float(pred_b[spam].mean()) if spam.any() else None,
        "mcnemar_spam": mcnemar(y[spam], pred_a[spam].astype(int), pred_b[spam].astype(int)),
    }


def _caught_within(y: np.ndarray, scores: np.ndarray, false_positives: int) -> np.ndarray:
    """Per spam row, 1 if caught at the lowest threshold letting through at most
    ``false_positives`` ham."""
    threshold = threshold_for_false_positives(y, scores, false_positives)
    return (scores[y == 1] >= threshold).astype(int)


def mcnemar(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """Exact McNemar test on paired predictions: does B's error rate differ from A's?

    ``b_only_correct``/``a_only_correct`` are the discordant pairs; the p-value is the
    two-sided binomial test on them (exact, valid for small counts).
    """
    from scipy import stats

    y, a, b = (np.asarray(v).astype(int) for v in (y_true, pred_a, pred_b))
    a_ok, b_ok = a == y, b == y
    n01, n10 = int((~a_ok & b_ok).sum()), int((a_ok & ~b_ok).sum())
    p = float(stats.binomtest(n01, n01 + n10, 0.5).pvalue) if n01 + n10 else 1.0
    return {"b_only_correct": n01, "a_only_correct": n10, "p_value": p}


def _rate(mask: np.ndarray, pred: np.ndarray) -> float | None:
    return float(pred[mask].mean()) if mask.any() else None


def evaluate(
    y_true: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    fpr_thresholds: dict[float, float],
) -> dict:
    """Full metric table for one model on one labelled set."""
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y_true = np.asarray(y_true).astype(int)
    pred = (scores >= threshold).astype(int)
    both = len(set(y_true.tolist())) == 2
    tn, fp, fn, tp = confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    groups = np.asarray(groups).astype(str)
    out = {
        "n": len(y_true),
        "n_spam": int(y_true.sum()),
        "threshold": float(threshold),
        "precision": float(precision_score(y_true, pred, zero_division=0)),
        "recall": float(recall_score(y_true, pred, zero_division=0)),
        "f1": float(f1_score(y_true, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, scores)) if both else None,
        "pr_auc": float(average_precision_score(y_true, scores)) if both else None,
        "ham_fpr": _rate(y_true == 0, pred),
        "easy_ham_fpr": _rate(np.char.startswith(groups, "easy-ham"), pred),
        "hard_ham_fpr": _rate(np.char.startswith(groups, "hard-ham"), pred),
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }
    for fpr, thr in sorted(fpr_thresholds.items()):
        p = scores >= thr
        key = f"{fpr * 100:g}pct"
        out[f"recall_at_fpr_{key}"] = _rate(y_true == 1, p)
        out[f"test_fpr_at_fpr_{key}"] = _rate(y_true == 0, p)
    return out


METRIC_ROWS = (
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("f1", "F1"),
    ("roc_auc", "ROC AUC"),
    ("pr_auc", "PR AUC"),
    ("ham_fpr", "Ham FPR @ chosen threshold"),
    ("easy_ham_fpr", "Easy-ham FPR"),
    ("hard_ham_fpr", "Hard-ham FPR"),
    ("recall_at_fpr_0.1pct", "Spam recall @ val-chosen FPR 0.1%"),
    ("test_fpr_at_fpr_0.1pct", "  (test ham FPR there)"),
    ("recall_at_fpr_1pct", "Spam recall @ val-chosen FPR 1%"),
    ("test_fpr_at_fpr_1pct", "  (test ham FPR there)"),
)


def markdown_table(results: dict[str, dict]) -> str:
    """One column per model, one row per metric."""
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in METRIC_ROWS:
        cells = []
        for name in names:
            v = results[name].get(key)
            cells.append("n/a" if v is None else f"{v:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metric_rows(results: dict[str, dict]) -> list[dict]:
    """:func:`markdown_table`'s content as rows (one per metric, a column per model)."""
    return [
        {"metric": label.strip(), **{name: results[name].get(key) for name in results}}
        for key, label in METRIC_ROWS
    ]


def confusion_markdown(conf: dict) -> str:
    return (
        "| | predicted ham | predicted spam |\n|---|---|---|\n"
        f"| **ham** | {conf['tn']} | {conf['fp']} |\n"
        f"| **spam** | {conf['fn']} | {conf['tp']} |"
    )


def _png(fig) -> bytes:
    """A finished matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def pr_curve_png(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> bytes:
    """PR curve with the chosen operating point marked, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y_true, scores)
    pred = scores >= threshold
    op_p = float(y_true[pred].mean()) if pred.any() else 1.0
    op_r = float(pred[y_true == 1].mean()) if (y_true == 1).any() else 0.0
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=100)
    ax.plot(recall, precision, lw=1.5)
    ax.scatter([op_r], [op_p], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("recall (spam)")
    ax.set_ylabel("precision")
    ax.set_ylim(0.5, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _png(fig)


#: Ham FPRs the low-FPR curve is read at (the end of the curve a mail admin runs at).
LOW_FPR_POINTS = (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)


def low_fpr_curve(y_true: np.ndarray, scores: np.ndarray, points=LOW_FPR_POINTS) -> list[dict]:
    """Spam recall at the best threshold for each ham-FPR budget in ``points`` (the test
    labels pick it: a picture of the ranking's low end, not an operating point)."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    ham = np.sort(scores[y_true == 0])[::-1]
    spam = scores[y_true == 1]
    out = []
    for fpr in points:
        allowed = int(np.floor(fpr * len(ham) + 1e-9))
        cut = ham[allowed] if allowed < len(ham) else -np.inf
        out.append(
            {
                "ham_fpr": fpr,
                "ham_let_through": allowed,
                "recall": float((spam > cut).mean()) if len(spam) else 0.0,
            }
        )
    return out


def low_fpr_png(
    y_true: np.ndarray, scores: np.ndarray, threshold: float, max_fpr: float = 0.02
) -> bytes:
    """Spam recall against ham FPR up to ``max_fpr``, with the deployed point marked, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    y_true = np.asarray(y_true).astype(int)
    fpr, tpr, _ = roc_curve(y_true, scores)
    keep = fpr <= max_fpr
    pred = np.asarray(scores) >= threshold
    op_fpr = float(pred[y_true == 0].mean()) if (y_true == 0).any() else 0.0
    op_tpr = float(pred[y_true == 1].mean()) if (y_true == 1).any() else 0.0
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=100)
    ax.step(100 * fpr[keep], tpr[keep], where="post", lw=1.5)
    ax.scatter([100 * op_fpr], [op_tpr], color="red", zorder=3, label="deployed threshold")
    ax.set_xlabel("ham false-positive rate (%)")
    ax.set_ylabel("spam recall")
    ax.set_xlim(0, 100 * max_fpr)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
