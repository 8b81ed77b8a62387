"""The blocking quality gate: in the same run it stops ``onnx_model`` (and everything after)
when the challenger is below the floors or worse than the champion."""

import dagster as dg

from spam_assets.defs.resources import ModelPolicy
from spam_assets.defs.training.assets import model_evaluation
from spam_assets.lib.gate import GateFloors, gate_failures


@dg.asset_check(
    asset=model_evaluation,
    blocking=True,
    description="F1 and easy-ham FPR floors (DESIGN.md section 4); never worse than the "
    "champion at its held-out ham FPR",
)
def quality_gate(model_evaluation: dict, policy: ModelPolicy) -> dg.AssetCheckResult:
    floors = GateFloors(
        min_f1=policy.gate_min_f1,
        max_easy_ham_fpr=policy.gate_max_easy_ham_fpr,
        max_f1_regression=policy.gate_max_f1_regression,
        compare=policy.gate_compare,
        max_recall_regression=policy.gate_max_recall_regression,
    )
    metrics, champion = model_evaluation["metrics"], model_evaluation["champion"]
    failures = gate_failures(metrics, champion, floors)
    return dg.AssetCheckResult(
        passed=not failures,
        description="; ".join(failures) if failures else "challenger passes the gate",
        metadata={
            "model_version": model_evaluation["model_version"],
            "f1": metrics["f1"],
            "easy_ham_fpr": metrics["easy_ham_fpr"],
            "min_f1": floors.min_f1,
            "max_easy_ham_fpr": floors.max_easy_ham_fpr,
            "champion_f1": champion["f1"] if champion else "none",
            "compare": floors.compare,
            **_matched_metadata(champion),
            "failures": "; ".join(failures) or "none",
        },
    )


def _matched_metadata(champion: dict | None) -> dict:
    matched = (champion or {}).get("matched")
    if not matched:
        return {}
    return {
        "matched_ham_fpr": matched["ham_fpr"],
        "matched_challenger_recall": matched["challenger_recall"],
        "matched_champion_recall": matched["champion_recall"],
    }
