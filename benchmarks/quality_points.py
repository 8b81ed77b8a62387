"""Operating points at the low-false-positive end, where a mail admin runs a filter.

Two views of every model, on the same test messages (spam is the positive class; ham
false-positive rates are kept per ham group, easy and hard, since a filter that junks 25% of
commercial newsletters is not deployable however rarely it touches personal mail):

* **fixed budgets** (:data:`FIXED_POINTS`): the most spam a model catches at *any* test
  threshold holding easy-ham and hard-ham FPR within a budget. Test labels choose these
  thresholds, the same rule for every model: a ranking comparison, never deployed.
* **own point**: the model at the threshold it would be deployed with (ours: chosen on
  out-of-fold training-period scores; a peer: its stock ``required_score``/action).

Counts are small (124 hard ham in the test split: one message is 0.8 points), so every rate
carries its 95% Wilson interval.
"""

from __future__ import annotations

import math

import numpy as np

#: (easy-ham FPR, hard-ham FPR) budgets of the ranking table. The last is SpamAssassin's
#: stock rules' own point on this split, (17/1389, 12/124).
FIXED_POINTS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.001, 0.01),
    (0.005, 0.05),
    (0.0122, 0.097),
)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of the proportion ``k / n``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def masks(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spam, easy ham, hard ham) row masks."""
    y = np.asarray(y).astype(int)
    groups = np.asarray(groups).astype(str)
    hard = (y == 0) & np.char.startswith(groups, "hard-ham")
    return y == 1, (y == 0) & ~hard, hard


def operating_points(y: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict:
    """Confusion counts at every distinct threshold (predict spam when score >= threshold).

    One sort and cumulative sums, so ties never straddle a threshold."""
    spam, easy, hard = masks(y, groups)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    last = np.r_[s[1:] != s[:-1], True]  # the end of each run of equal scores
    return {
        "threshold": s[last],
        "tp": np.cumsum(spam[order])[last],
        "fp_easy": np.cumsum(easy[order])[last],
        "fp_hard": np.cumsum(hard[order])[last],
        "n_spam": int(spam.sum()),
        "n_easy": int(easy.sum()),
        "n_hard": int(hard.sum()),
    }


def best_recall(
    y: np.ndarray, scores: np.ndarray, groups: np.ndarray, max_easy: float, max_hard: float
) -> dict:
    """The most spam caught at any threshold within both ham budgets (0 when none is)."""
    p = operating_points(y, scores, groups)
    ok = (p["fp_easy"] <= math.floor(max_easy * p["n_easy"] + 1e-9)) & (
        p["fp_hard"] <= math.floor(max_hard * p["n_hard"] + 1e-9)
    )
    if not ok.any():
        return {"recall": 0.0, "tp": 0, "n_spam": p["n_spam"], "threshold": float("inf")}
    i = int(np.flatnonzero(ok)[-1])  # thresholds descend: the last one within budget
    return {
        "recall": float(p["tp"][i] / max(p["n_spam"], 1)),
        "tp": int(p["tp"][i]),
        "n_spam": p["n_spam"],
        "threshold": float(p["threshold"][i]),
    }


def at_threshold(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float) -> dict:
    """Counts, rates and F1 with spam predicted at ``score >= threshold``."""
    spam, easy, hard = masks(y, groups)
    pred = np.asarray(scores) >= threshold
    tp, fp = int((pred & spam).sum()), int((pred & ~spam).sum())
    fn = int((~pred & spam).sum())
    fp_easy, fp_hard = int((pred & easy).sum()), int((pred & hard).sum())
    return {
        "threshold": float(threshold),
        "tp": tp,
        "n_spam": int(spam.sum()),
        "fp_easy": fp_easy,
        "n_easy": int(easy.sum()),
        "fp_hard": fp_hard,
        "n_hard": int(hard.sum()),
        "recall": tp / max(int(spam.sum()), 1),
        "easy_ham_fpr": fp_easy / max(int(easy.sum()), 1),
        "hard_ham_fpr": fp_hard / max(int(hard.sum()), 1),
        "ham_fpr": fp / max(int((~spam).sum()), 1),
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
    }


def rate_cell(k: int, n: int) -> str:
    """``12.3% [9.1, 16.0]``: the rate and its 95% Wilson interval, in percent."""
    lo, hi = wilson(k, n)
    return f"{100 * k / max(n, 1):.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def best_within_point(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, point: dict) -> dict:
    """A peer's most spam caught at the same or lower easy- and hard-ham false positives
    than ``point`` (an :func:`at_threshold` result of our model)."""
    return best_recall(
        y,
        scores,
        groups,
        point["fp_easy"] / max(point["n_easy"], 1),
        point["fp_hard"] / max(point["n_hard"], 1),
    )
