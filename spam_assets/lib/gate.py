"""The quality gate of DESIGN.md section 4: floors that catch a broken model, plus the rule
that a challenger is never worse than the current champion on the same test data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateFloors:
    min_f1: float = 0.90
    max_easy_ham_fpr: float = 0.01
    max_f1_regression: float = 0.0


def gate_failures(metrics: dict, champion: dict | None, floors: GateFloors) -> list[str]:
    """Human-readable reasons the challenger fails the gate (empty list: it passes)."""
    failures = []
    f1 = metrics.get("f1")
    if f1 is None or f1 < floors.min_f1:
        failures.append(f"F1 {f1} below floor {floors.min_f1}")
    easy = metrics.get("easy_ham_fpr")
    if easy is not None and easy > floors.max_easy_ham_fpr:
        failures.append(f"easy-ham FPR {easy:.4f} above ceiling {floors.max_easy_ham_fpr}")
    if champion is not None and f1 is not None:
        champ_f1 = champion.get("f1")
        if champ_f1 is not None and f1 < champ_f1 - floors.max_f1_regression:
            failures.append(
                f"F1 {f1:.4f} worse than champion v{champion.get('model_version')} "
                f"({champ_f1:.4f}, allowed regression {floors.max_f1_regression})"
            )
    return failures
