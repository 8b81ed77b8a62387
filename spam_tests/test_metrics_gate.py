"""Evaluation protocol arithmetic and the quality gate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from spam_assets.lib.gate import GateFloors, gate_failures
from spam_assets.lib.metrics import evaluate, markdown_table, pr_curve_png, threshold_for_fpr


def test_threshold_respects_fpr_budget():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(1000, int), np.ones(300, int)]
    s = np.r_[rng.beta(2, 8, 1000), rng.beta(8, 2, 300)]
    for fpr in (0.001, 0.01, 0.05):
        thr = threshold_for_fpr(y, s, fpr)
        assert ((s >= thr) & (y == 0)).sum() <= int(fpr * 1000)
        # lowest such threshold: one notch lower would exceed the budget
        ham = np.sort(s[y == 0])[::-1]
        assert ((s >= ham[int(fpr * 1000)]) & (y == 0)).sum() > int(fpr * 1000)


def test_evaluate_matches_sklearn_and_groups():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.6, 0.2, 0.3, 0.9, 0.4, 0.8, 0.7])
    groups = np.array(["easy-ham-2", "hard-ham-1", "easy-ham-2", "hard-ham-1"] + ["spam-2"] * 4)
    m = evaluate(y, s, groups, 0.5, {0.001: 0.95, 0.01: 0.65})
    pred = (s >= 0.5).astype(int)
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["easy_ham_fpr"] == 0.0 and m["hard_ham_fpr"] == 0.5
    assert m["recall_at_fpr_0.1pct"] == 0.0 and m["recall_at_fpr_1pct"] == 0.75
    assert m["confusion"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 3}
    table = markdown_table({"a": m})
    assert "| F1 | 0.7500 |" in table
    assert pr_curve_png(y, s, 0.5)[:4] == b"\x89PNG"


def test_gate_floors_and_champion():
    floors = GateFloors(min_f1=0.9, max_easy_ham_fpr=0.01)
    good = {"f1": 0.95, "easy_ham_fpr": 0.004}
    assert gate_failures(good, None, floors) == []
    assert "below floor" in gate_failures({**good, "f1": 0.85}, None, floors)[0]
    assert "easy-ham FPR" in gate_failures({**good, "easy_ham_fpr": 0.02}, None, floors)[0]
    champ = {"f1": 0.97, "model_version": "3"}
    assert "worse than champion v3" in gate_failures(good, champ, floors)[0]
    assert gate_failures(good, champ, GateFloors(max_f1_regression=0.05)) == []
    assert gate_failures(good, {"f1": 0.95, "model_version": "3"}, floors) == []
