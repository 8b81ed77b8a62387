"""The canary rollout decision: advance, promote, hold or roll back a challenger.

Pure functions over per-version statistics taken from the inference log since the canary
started, so the rule is unit-testable and the asset that applies it stays thin.
Rolled back when the challenger is worse than the champion beyond a margin on any of:
error rate (requests the champion had to answer because the challenger failed), p95 latency
(ratio), or accuracy on feedback labels. Held while either side has too few requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spam_assets.lib.monitoring import feedback_metrics
from spam_serving.gateway import CANARY_ENV


@dataclass(frozen=True)
class CanaryPolicy:
    stages: tuple[float, ...] = (0.1, 0.5, 1.0)
    min_requests: int = 200
    min_feedback: int = 30
    max_error_rate_increase: float = 0.01
    max_latency_ratio: float = 1.5
    max_accuracy_drop: float = 0.02


@dataclass(frozen=True)
class CanaryDecision:
    action: str  # "hold" | "advance" | "promote" | "rollback"
    reason: str
    next_fraction: float


def version_stats(log: pd.DataFrame, champion: str, challenger: str) -> dict[str, dict]:
    """Requests, error rate, p95 latency and feedback accuracy per side of the canary.

    ``log`` holds production rows since the canary started (``environment``, ``model_version``,
    ``latency_ms``, ``label``, ``fallback_from``, ``true_label``)."""
    fallback = log.get("fallback_from", pd.Series(index=log.index, dtype=object))
    failed = log[fallback.astype(str) == str(challenger)]
    champ = log[(log["environment"] == "production") & (fallback.isna() | (fallback == ""))]
    champ = champ[champ["model_version"].astype(str) == str(champion)]
    chall = log[
        (log["environment"] == CANARY_ENV) & (log["model_version"].astype(str) == challenger)
    ]
    out = {}
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
            "accuracy": fb["accuracy"],
        }
    return out


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
    if lat_c is not None and lat_p and lat_c > lat_p * policy.max_latency_ratio:
        return CanaryDecision(
            "rollback",
            f"p95 latency {lat_c:.1f} ms vs champion {lat_p:.1f} ms "
            f"(allowed x{policy.max_latency_ratio})",
            0.0,
        )
    if chall["n_feedback"] < policy.min_feedback or champ["n_feedback"] < policy.min_feedback:
        return CanaryDecision(
            "hold",
            f"too little feedback: challenger {chall['n_feedback']}, champion "
            f"{champ['n_feedback']} (need {policy.min_feedback} each)",
            fraction,
        )
    if chall["accuracy"] < champ["accuracy"] - policy.max_accuracy_drop:
        return CanaryDecision(
            "rollback",
            f"feedback accuracy {chall['accuracy']:.3f} vs champion {champ['accuracy']:.3f} "
            f"(allowed -{policy.max_accuracy_drop})",
            0.0,
        )
    later = [s for s in policy.stages if s > fraction + 1e-9]
    if not later or later[0] >= 1.0:
        return CanaryDecision("promote", f"healthy at {fraction:.0%} of production", 1.0)
    return CanaryDecision(
        "advance", f"healthy at {fraction:.0%}; next stage {later[0]:.0%}", later[0]
    )
