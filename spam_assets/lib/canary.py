"""The canary rollout decision: advance, promote, hold or roll back a challenger.

Pure functions over per-version statistics taken from the inference log since the canary
started, so the rule is unit-testable and the asset that applies it stays thin.
Rolled back when the challenger is worse than the champion beyond a margin on any of:
error rate (requests the champion had to answer because the challenger failed), p95 latency
(ratio), or accuracy on feedback labels. Held while either side has too few requests.

Errors are what users feel, so any excess beyond the margin pulls the canary at once.
Latency and feedback accuracy are estimates from a stage's sample (a few dozen to a few
hundred requests per side, different requests on each side), so a raw gap there is often
noise. Both follow the rule canary analysers such as Kayenta use, "fail only on a significant
regression": latency rolls back when the p95 ratio exceeds its margin, the p95 gap is more
than ``min_latency_increase_ms`` (1.6 ms on a 3 ms p95 is a ratio, not a user problem) and a
one-sided Mann-Whitney U test says the challenger's latencies are higher (p < ``alpha``);
accuracy rolls back when the gap exceeds its margin and a one-sided Fisher exact test on the
right/wrong counts says the challenger is wrong more often (p < ``alpha``). The p-values are
reported in the decision's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from scipy import stats as sps

from spam_assets.lib.monitoring import feedback_metrics
from spam_serving.gateway import CANARY_ENV


@dataclass(frozen=True)
class CanaryPolicy:
    stages: tuple[float, ...] = (0.1, 0.5, 1.0)
    min_requests: int = 200
    min_feedback: int = 30
    max_error_rate_increase: float = 0.01
    max_latency_ratio: float = 1.5
    min_latency_increase_ms: float = 5.0
    max_accuracy_drop: float = 0.02
    alpha: float = 0.05


@dataclass(frozen=True)
class RunningCanary:
    """A canary being judged, wherever it runs (the local alias file, an AKS release)."""

    champion: str
    challenger: str
    fraction: float
    started_at: datetime
    stage_started_at: datetime


@dataclass(frozen=True)
class CanaryDecision:
    action: str  # "hold" | "advance" | "promote" | "rollback"
    reason: str
    next_fraction: float


def version_stats(log: pd.DataFrame, champion: str, challenger: str) -> dict[str, dict]:
    """Requests, error rate, p95 latency and feedback accuracy per side of the canary.

    ``log`` holds production rows since the canary started (``environment``, ``model_version``,
    ``latency_ms``, ``label``, ``fallback_from``, ``true_label``). A challenger error is a
    row with ``fallback_from`` = its version: the local gateway's champion answered for it
    (logged under ``production``), or an AKS canary pod failed it (an ``error`` row)."""
    fallback = log.get("fallback_from", pd.Series(index=log.index, dtype=object))
    failed = log[fallback.astype(str) == str(challenger)]
    champ = log[(log["environment"] == "production") & (fallback.isna() | (fallback == ""))]
    champ = champ[champ["model_version"].astype(str) == str(champion)]
    chall = log[
        (log["environment"] == CANARY_ENV)
        & (log["model_version"].astype(str) == challenger)
        & (fallback.isna() | (fallback == ""))
    ]
    out: dict[str, dict] = {}
    for name, rows, errors in (("champion", champ, 0), ("challenger", chall, len(failed))):
        n = len(rows) + errors
        fb = feedback_metrics(rows)
        out[name] = {
            "version": champion if name == "champion" else challenger,
            "requests": n,
            "errors": errors,
            "error_rate": errors / n if n else 0.0,
            "p95_latency_ms": float(np.percentile(rows["latency_ms"], 95)) if len(rows) else None,
            "n_feedback": fb["n_feedback"],
            "n_correct": fb["n_correct"],
            "accuracy": fb["accuracy"],
        }
    out["challenger"]["latency_slower_p"] = latency_slower_p(
        chall["latency_ms"].to_numpy(float), champ["latency_ms"].to_numpy(float)
    )
    return out


def latency_slower_p(challenger_ms: np.ndarray, champion_ms: np.ndarray) -> float | None:
    """One-sided Mann-Whitney U p-value for "the challenger's latencies are higher"; None
    without samples on both sides. Rank-based, so a few slow outliers cannot carry it alone."""
    if len(challenger_ms) == 0 or len(champion_ms) == 0:
        return None
    return float(sps.mannwhitneyu(challenger_ms, champion_ms, alternative="greater").pvalue)


def accuracy_worse_p(challenger: dict, champion: dict) -> float:
    """One-sided Fisher exact p-value for "the challenger is wrong more often than the
    champion" from the two sides' feedback counts (unpaired: each message went to one side).
    Exact, so it stays valid at the few dozen labels a canary stage collects."""
    table = [
        [challenger["n_feedback"] - challenger["n_correct"], challenger["n_correct"]],
        [champion["n_feedback"] - champion["n_correct"], champion["n_correct"]],
    ]
    return float(sps.fisher_exact(table, alternative="greater").pvalue)


def decide(stats: dict[str, dict], fraction: float, policy: CanaryPolicy) -> CanaryDecision:
    """What to do with a canary serving ``fraction`` of production, given ``version_stats``."""
    champ, chall = stats["champion"], stats["challenger"]
    if chall["error_rate"] > champ["error_rate"] + policy.max_error_rate_increase:
        return CanaryDecision(
            "rollback",
            f"error rate {chall['error_rate']:.3f} vs champion {champ['error_rate']:.3f} "
            f"(allowed +{policy.max_error_rate_increase})",
            0.0,
        )
    if chall["requests"] < policy.min_requests or champ["requests"] < policy.min_requests:
        return CanaryDecision(
            "hold",
            f"too few requests: challenger {chall['requests']}, champion {champ['requests']} "
            f"(need {policy.min_requests} each)",
            fraction,
        )
    lat_c, lat_p = chall["p95_latency_ms"], champ["p95_latency_ms"]
    slower_p = chall.get("latency_slower_p")
    latency = ""
    if lat_c is not None and lat_p and lat_c > lat_p * policy.max_latency_ratio:
        latency = (
            f"p95 latency {lat_c:.1f} ms vs champion {lat_p:.1f} ms (allowed "
            f"x{policy.max_latency_ratio} and +{policy.min_latency_increase_ms:g} ms; "
            f"Mann-Whitney p={slower_p if slower_p is not None else float('nan'):.3g})"
        )
        material = lat_c - lat_p > policy.min_latency_increase_ms
        if material and slower_p is not None and slower_p < policy.alpha:
            return CanaryDecision("rollback", f"{latency}: slower, significant", 0.0)
        latency = f"; {latency}: not material or not significant"
    if chall["n_feedback"] < policy.min_feedback or champ["n_feedback"] < policy.min_feedback:
        return CanaryDecision(
            "hold",
            f"too little feedback: challenger {chall['n_feedback']}, champion "
            f"{champ['n_feedback']} (need {policy.min_feedback} each)",
            fraction,
        )
    p_worse = accuracy_worse_p(chall, champ)
    accuracy = (
        f"feedback accuracy {chall['accuracy']:.3f} vs champion {champ['accuracy']:.3f} "
        f"(n {chall['n_feedback']} vs {champ['n_feedback']}; Fisher p={p_worse:.3g})"
    )
    if chall["accuracy"] < champ["accuracy"] - policy.max_accuracy_drop:
        if p_worse < policy.alpha:
            return CanaryDecision(
                "rollback",
                f"{accuracy}: worse beyond -{policy.max_accuracy_drop}, significant at "
                f"alpha {policy.alpha}",
                0.0,
            )
        accuracy += f": gap beyond -{policy.max_accuracy_drop} but not significant"
    accuracy += latency
    later = [s for s in policy.stages if s > fraction + 1e-9]
    if not later or later[0] >= 1.0:
        return CanaryDecision("promote", f"healthy at {fraction:.0%}; {accuracy}", 1.0)
    return CanaryDecision(
        "advance", f"healthy at {fraction:.0%}; next stage {later[0]:.0%}; {accuracy}", later[0]
    )
