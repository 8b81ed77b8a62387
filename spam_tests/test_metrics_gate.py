"""Evaluation protocol arithmetic and the quality gate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from spam_assets.lib.gate import GateFloors, gate_failures
from spam_assets.lib.metrics import (
    evaluate,
    markdown_table,
    matched_fpr_comparison,
    pr_curve_png,
    threshold_for_fpr,
)


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


def test_matched_fpr_comparison_gives_the_challenger_the_champions_false_positives():
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    # champion at 0.6: 2 of 10 ham through (FPR 0.2), 6 of 10 spam caught; 4 spam sit
    # below its other ham, so no threshold with 2 false positives catches more
    champion = np.r_[[0.1] * 8, 0.7, 0.8, [0.9] * 6, [0.05] * 4]
    # challenger: its 3rd-highest ham is 0.5, so just above it 2 ham pass; 8 spam are above
    challenger = np.r_[[0.2] * 7, 0.5, 0.55, 0.95, [0.99] * 8, [0.4] * 2]
    m = matched_fpr_comparison(y, champion, 0.6, challenger)
    assert (m["false_positives"], m["challenger_false_positives"]) == (2, 2)
    assert m["ham_fpr"] == pytest.approx(0.2)
    assert 0.5 < m["challenger_threshold"] < 0.55
    assert (m["champion_recall"], m["challenger_recall"]) == (0.6, 0.8)
    # paired on the spam rows: 2 caught only by the challenger, none only by the champion
    assert m["mcnemar_spam"] == {"b_only_correct": 2, "a_only_correct": 0, "p_value": 0.5}
    # ties never straddle: equal ham scores at the cut all stay below the threshold
    tied = matched_fpr_comparison(y, champion, 0.6, np.r_[[0.5] * 10, [0.6] * 10])
    assert tied["challenger_false_positives"] <= 2 and tied["challenger_recall"] == 1.0
    # the same comparison at fixed held-out ham FPRs: 10 ham, so 0.1%..2% all mean 0 ham
    assert set(m["at_ham_fpr"]) == {"0.1%", "0.5%", "1%", "2%"}
    assert m["at_ham_fpr"]["1%"] == {
        "false_positives": 0,
        "champion_recall": 0.6,  # spam at 0.9 > top ham 0.8
        "challenger_recall": 0.8,  # spam at 0.99 > top ham 0.95
        "mcnemar_p_value": 0.5,  # 2 discordant spam, both the challenger's
    }
    # symmetric: the champion is also moved to the lowest threshold within its budget, so a
    # model compared with itself ties even when its own threshold sits high between two ham
    loose = np.r_[[0.1] * 8, 0.7, 0.8, [0.9] * 6, [0.3] * 4]  # 4 spam between 0.1 and 0.6
    same = matched_fpr_comparison(y, loose, 0.6, loose)
    assert same["champion_recall"] == same["challenger_recall"] == 1.0
    assert same["champion_threshold"] == same["challenger_threshold"] < 0.3
    assert same["mcnemar_spam"]["p_value"] == 1.0
    # a champion with no false positives: the challenger gets none either
    strict = matched_fpr_comparison(y, champion, 0.85, challenger)
    assert strict["false_positives"] == 0 and strict["challenger_false_positives"] == 0
    assert strict["challenger_recall"] == 0.8 and strict["champion_recall"] == 0.6


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
    by_f1 = GateFloors(min_f1=0.9, max_easy_ham_fpr=0.01, compare="f1")
    champ = {"f1": 0.97, "model_version": "3"}
    assert "worse than champion v3" in gate_failures(good, champ, by_f1)[0]
    assert gate_failures(good, champ, GateFloors(max_f1_regression=0.05, compare="f1")) == []
    assert gate_failures(good, {"f1": 0.95, "model_version": "3"}, by_f1) == []


def test_gate_compares_with_the_champion_at_its_false_positive_rate():
    floors = GateFloors(min_f1=0.8)  # compare="matched_fpr" is the default
    good = {"f1": 0.85, "easy_ham_fpr": 0.0}
    matched = {"ham_fpr": 0.01, "champion_recall": 0.90, "challenger_recall": 0.93}
    # the loop pay-off case: lower F1 at its own (stricter) threshold, more spam at equal cost
    champ = {"f1": 0.87, "model_version": "1", "matched": matched}
    assert gate_failures(good, champ, floors) == []
    worse = {**champ, "matched": {**matched, "challenger_recall": 0.88}}
    (reason,) = gate_failures(good, worse, floors)
    assert "0.8800 at the champion's held-out ham FPR 0.0100" in reason and "v1 (0.9000" in reason
    assert gate_failures(good, worse, GateFloors(min_f1=0.8, max_recall_regression=0.03)) == []
    # a champion without the matched comparison cannot be passed silently
    assert "no matched-FPR comparison" in gate_failures(good, {"f1": 0.8}, floors)[0]
    # the floors still apply on top
    assert len(gate_failures({"f1": 0.7, "easy_ham_fpr": 0.02}, champ, floors)) == 2


def test_threshold_for_budget_holds_it_with_confidence():
    """A budget is only as good as the held-out ham behind it: 2,595 ham cannot certify 0.1%
    (zero false positives in 2,595 still allows 0.115% at 95%), 10,000 allow four."""
    from scipy.stats import beta

    from spam_assets.lib.metrics import allowed_false_positives, threshold_for_budget

    k, bound = allowed_false_positives(2595, 0.001, 0.95)
    assert k == 0 and bound == pytest.approx(1 - 0.05 ** (1 / 2595)) and bound > 0.001
    k, bound = allowed_false_positives(10_000, 0.001, 0.95)
    assert k == 4 and bound <= 0.001 < beta.ppf(0.95, 6, 10_000 - 5)
    assert allowed_false_positives(10_000, 0.001, 0.0) == (10, 0.001)  # the point estimate
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(10_000, dtype=int), np.ones(500, dtype=int)]
    scores = np.r_[rng.random(10_000) * 0.9, 0.5 + rng.random(500) * 0.5]
    band = threshold_for_budget(y, scores, 0.001, 0.95)
    assert band["certified"] and band["allowed_false_positives"] == 4
    assert int((scores[y == 0] >= band["threshold"]).sum()) == 4
    strict = threshold_for_budget(y[9_000:], scores[9_000:], 0.001, 0.95)
    assert not strict["certified"] and strict["allowed_false_positives"] == 0
    assert strict["threshold"] > scores[9_000:][y[9_000:] == 0].max()
