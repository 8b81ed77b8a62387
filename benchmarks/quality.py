"""``make bench-quality``: the DESIGN.md section 4 table on the time split for the tuned
model (same featurizer + Ray Tune search + refit as the assets) against the TF-IDF baselines
of ``benchmarks.quality_baselines`` (logistic regression on words and on character n-grams,
Multinomial NB, and XGBoost, the serving benchmark's baseline pipeline: what our parser and
features add over plain TF-IDF for the same learner) trained in the same run on the same
split, plus the tuned model with the Feast sender reputation block (point-in-time join, test
labels never used), which decides whether ``SPAM_REPUTATION_FEATURES`` should be on (see
:func:`reputation_helps`).

Every operating point is chosen on the validation slice (newest part of train), never on test.
The ceiling section at the end (``benchmarks.quality_ceiling``) is the one place test labels
choose thresholds: it bounds what any threshold, or training inside the test period, could
reach, to tell a threshold problem from a ranking problem; nothing there is deployed.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from benchmarks.common import machine, raw_table, split_table, write_report
from benchmarks.quality_baselines import BASELINES, fit_baseline
from benchmarks.quality_ceiling import (
    MAX_EASY_HAM_FPR,
    MAX_HARD_HAM_FPR,
    TARGET_F1,
    ceiling_rows,
    ceiling_section,
    in_period_scores,
)
from spam_assets.defs.resources import build_resources
from spam_assets.lib.final_fit import final_fit_inputs
from spam_assets.lib.metrics import FPR_POINTS, evaluate, markdown_table, threshold_for_fpr
from spam_assets.lib.onnx_export import native_scores
from spam_assets.lib.reputation import historical_reputation, reputation_tables
from spam_assets.lib.tuning import fit_final
from spam_serving.feature_repo.repo import feast_objects, offline_path
from spam_serving.feature_store import feature_store
from spam_serving.featurize import Featurizer
from spam_serving.parsing import from_record
from spam_serving.settings import get_settings

#: Folds of the in-period cross-validation in the ceiling section.
CEILING_FOLDS = 5
TARGETS = (
    ("f1", ">=", TARGET_F1),
    ("easy_ham_fpr", "<=", MAX_EASY_HAM_FPR),
    ("hard_ham_fpr", "<=", MAX_HARD_HAM_FPR),
    ("recall_at_fpr_0.1pct", ">=", 0.90),
)


def _evaluate_scores(y_val, s_val, test, s_test, target_fpr) -> dict:
    thr = threshold_for_fpr(y_val, s_val, target_fpr)
    fprs = {f: threshold_for_fpr(y_val, s_val, f) for f in FPR_POINTS}
    return evaluate(test["label"].to_numpy(), s_test, test["group"].to_numpy(), thr, fprs)


def baselines(parts: dict, target_fpr: float) -> tuple[dict, dict, dict]:
    """Metrics, training times and test scores of the TF-IDF baselines
    (``benchmarks.quality_baselines``), trained on the train split."""
    text = {k: (v["subject"] + "\n" + v["body"]).tolist() for k, v in parts.items()}
    results, times, scores = {}, {}, {}
    for name in BASELINES:
        start = time.perf_counter()
        score = fit_baseline(name, text["train"], parts["train"]["label"].to_numpy())
        times[name] = time.perf_counter() - start
        s_val, s_test = score(text["validation"]), score(text["test"])
        results[name] = _evaluate_scores(
            parts["validation"]["label"].to_numpy(), s_val, parts["test"], s_test, target_fpr
        )
        scores[name] = s_test
    return results, times, scores


def reputation_store(splits, home: Path):
    """A Feast store (file offline + registry) over the split's labelled rows, in ``home``."""
    s = get_settings().model_copy(update={"home": home, "feast_online_store": "sqlite"})
    offline = s.feast_dir / "offline"
    offline.mkdir(parents=True)
    for view, table in reputation_tables(splits).items():
        table.to_parquet(offline_path(offline, view), index=False)
    store = feature_store(s)
    store.apply(feast_objects(offline))
    return store


def reputation_helps(with_rep: dict, without: dict) -> bool:
    """Keep the block only if it raises F1 without raising easy-ham FPR (the gate's floors)."""
    return with_rep["f1"] > without["f1"] and with_rep["easy_ham_fpr"] <= without["easy_ham_fpr"]


def tuned(
    parts: dict, msgs: dict, target_fpr: float, reputation: dict | None = None
) -> tuple[dict, float, dict]:
    """``reputation``: the point-in-time ``rep:*`` rows per split (None: without the block)."""
    resources = build_resources()
    start = time.perf_counter()
    config = replace(resources["policy"].featurizer_config(), reputation=reputation is not None)
    featurizer = Featurizer(config)
    featurizer.fit(msgs["train"], parts["train"]["label"].to_numpy())
    x = {k: featurizer.transform(v, reputation[k] if reputation else None) for k, v in msgs.items()}
    data = {
        "X_train": x["train"],
        "y_train": parts["train"]["label"].to_numpy(),
        "X_val": x["validation"],
        "y_val": parts["validation"]["label"].to_numpy(),
    }
    result = resources["tuning"].search(data, "bench-quality")
    x_test, final = x["test"], None
    if resources["policy"].refit_with_validation:  # as tuned_model does (final_fit)
        matrices = {
            k: {"X": x[k], "y": v["label"].to_numpy(), "message_id": v["message_id"].tolist()}
            for k, v in parts.items()
        }
        _, deployed, final = final_fit_inputs(featurizer, matrices, pd.concat(parts.values()))
        x_test = deployed["test"]
    booster, val_scores = fit_final(result.best_config, data, result.best_iteration + 1, 2, final)
    elapsed = time.perf_counter() - start
    test_scores = native_scores(booster, x_test)
    metrics = _evaluate_scores(data["y_val"], val_scores, parts["test"], test_scores, target_fpr)
    info = {
        "featurizer_config": config,
        "test_scores": test_scores,
        "n_features": featurizer.n_features,
        "trials": len(result.trials),
        "config": result.best_config,
        "rounds": result.best_iteration + 1,
    }
    return metrics, elapsed, info


def ceiling_report(parts: dict, test_msgs: list, info: dict, base_scores: dict) -> str:
    """The oracle section (``benchmarks.quality_ceiling``): the tuned model's and the
    baselines' test scores, and in-period cross-validation with the tuned configuration."""
    test = parts["test"]
    y, groups = test["label"].to_numpy(), test["group"].to_numpy()
    cross = [ceiling_rows("tuned XGBoost (ours)", y, info["test_scores"], groups)]
    cross += [ceiling_rows(name, y, scores, groups) for name, scores in base_scores.items()]
    in_period = in_period_scores(
        test_msgs,
        (test["subject"] + "\n" + test["body"]).tolist(),
        y,
        groups,
        info["featurizer_config"],
        info["config"],
        info["rounds"],
        folds=CEILING_FOLDS,
    )
    inside = [ceiling_rows(name, y, scores, groups) for name, scores in in_period.items()]
    return "\n".join(ceiling_section(cross, inside, CEILING_FOLDS))


def main() -> None:
    s = get_settings()
    splits = split_table(raw_table())
    parts = {k: splits[splits["split"] == k] for k in ("train", "validation", "test")}
    counts = {k: (len(v), int(v["label"].sum())) for k, v in parts.items()}
    msgs = {k: [from_record(r) for r in v.to_dict("records")] for k, v in parts.items()}
    ours, ours_s, info = tuned(parts, msgs, s.target_ham_fpr)
    with tempfile.TemporaryDirectory() as tmp:
        store = reputation_store(splits, Path(tmp))
        reputation = {k: historical_reputation(store, v) for k, v in msgs.items()}
    known = {k: float((r[:, 0] > 0).mean()) for k, r in reputation.items()}
    rep, rep_s, rep_info = tuned(parts, msgs, s.target_ham_fpr, reputation)
    base, base_s, base_scores = baselines(parts, s.target_ham_fpr)
    ceiling = ceiling_report(parts, msgs["test"], info, base_scores)
    rep_name = "tuned XGBoost + reputation"
    table = markdown_table({"tuned XGBoost (ours)": ours, rep_name: rep, **base})
    times = "\n".join(
        f"| {name} | {sec:.1f} s |"
        for name, sec in {"tuned XGBoost (ours)": ours_s, rep_name: rep_s, **base_s}.items()
    )
    keep = reputation_helps(rep, ours)

    def met(value: float, op: str, goal: float) -> str:
        return "met" if (value >= goal if op == ">=" else value <= goal) else "NOT met"

    verdict = "\n".join(
        f"| {key} | {op} {goal} | {ours[key]:.4f} | {met(ours[key], op, goal)} |"
        for key, op, goal in TARGETS
    )
    best_name = max(base, key=lambda name: base[name]["f1"])
    best_base = base[best_name]
    report = f"""# Quality benchmark ({time.strftime("%Y-%m-%d")})

Machine: {machine()}. Time split (DESIGN.md section 4): train/validation = -1 groups + older
half of hard-ham-1, test = -2 groups + newer half of hard-ham-1, after de-duplication.
Rows (n, spam): train {counts["train"]}, validation {counts["validation"]}, test {counts["test"]}.
Decision threshold per model chosen on validation for ham FPR <= {s.target_ham_fpr:.1%};
the FPR-point thresholds are chosen on validation too and the *test* FPR there is shown.

{table}

Training wall time (featurize + fit; ours includes {info["trials"]} Ray Tune trials and the refit):

| model | wall time |
|---|---|
{times}

Tuned model: {info["n_features"]} features, {info["rounds"]} boosting rounds,
config {info["config"]}.
F1 ratio ours / best baseline ({best_name}): {ours["f1"] / best_base["f1"]:.3f}.

Sender reputation (Feast, point-in-time join; the test split's labels never feed it): share of
messages whose sender domain has labelled history: train {known["train"]:.1%}, validation
{known["validation"]:.1%}, test {known["test"]:.1%}. With reputation: {rep_info["n_features"]}
features, {rep_info["rounds"]} rounds. F1 {rep["f1"]:.4f} vs {ours["f1"]:.4f} (ratio
{rep["f1"] / ours["f1"]:.3f}), easy-ham FPR {rep["easy_ham_fpr"]:.4f} vs
{ours["easy_ham_fpr"]:.4f}, hard-ham FPR {rep["hard_ham_fpr"]:.4f} vs {ours["hard_ham_fpr"]:.4f}.
Rule (F1 up and easy-ham FPR not up): **{"keep it on" if keep else "keep it off"}**
(`SPAM_REPUTATION_FEATURES`, default off).

Targets for the tuned model:

| metric | target | ours | |
|---|---|---|---|
{verdict}

{ceiling}
"""
    write_report("quality", report)


if __name__ == "__main__":
    main()
