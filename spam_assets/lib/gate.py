"""The quality gate of DESIGN.md section 4: floors that catch a broken model, plus the rule
that a challenger is never worse than the current champion on the same test data.

"Worse than the champion" is judged by default at the same false-positive cost: the
challenger's spam recall at the champion's held-out ham FPR (``compare="matched_fpr"``).
F1 at each model's own threshold (``compare="f1"``) mixes ranking quality with where each
threshold landed on its own validation slice; a retrain on fresher data moves both, and the
loop pay-off benchmark measured exactly that confusion (see README, "Loop pay-off")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateFloors:
    min_f1: float = 0.80
    max_easy_ham_fpr: float = 0.01
    max_f1_regression: float = 0.0
    compare: str = "matched_fpr"
    max_recall_regression: float = 0.0


def gate_failures(metrics: dict, champion: dict | None, floors: GateFloors) -> list[str]:
    """Human-readable reasons the challenger fails the gate (empty list: it passes)."""
    failures = []
    f1 = metrics.get("f1")
    if f1 is None or f1 < floors.min_f1:
        failures.append(f"F1 {f1} below floor {floors.min_f1}")
    easy = metrics.get("easy_ham_fpr")
    if easy is not None and easy > floors.max_easy_ham_fpr:
        failures.append(f"easy-ham FPR {easy:.4f} above ceiling {floors.max_easy_ham_fpr}")
    if champion is None:
        return failures
    version = champion.get("model_version")
    if floors.compare == "matched_fpr":
        matched = champion.get("matched")
        if matched is None or matched.get("challenger_recall") is None:
            failures.append(f"no matched-FPR comparison with champion v{version}")
            return failures
        mine, theirs = matched["challenger_recall"], matched["champion_recall"]
        if mine < theirs - floors.max_recall_regression:
            failures.append(
                f"spam recall {mine:.4f} at the champion's held-out ham FPR "
                f"{matched['ham_fpr']:.4f} worse than champion v{version} ({theirs:.4f}, "
                f"allowed regression {floors.max_recall_regression})"
            )
        return failures
    champ_f1 = champion.get("f1")
    if f1 is not None and champ_f1 is not None and f1 < champ_f1 - floors.max_f1_regression:
        failures.append(
            f"F1 {f1:.4f} worse than champion v{version} "
            f"({champ_f1:.4f}, allowed regression {floors.max_f1_regression})"
        )
    return failures
