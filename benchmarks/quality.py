"""``make bench-quality``: our model against the filters a mail admin would run instead, at
the low-false-positive end, on the same test messages of the time split, in one run.

Models (``benchmarks.quality_points`` says how each is compared):

* **ours**: the deployed model kind (``SPAM_ENSEMBLE``, default on), trained by exactly the
  code ``tuned_model`` runs (``spam_assets.lib.training``: Ray Tune over XGBoost, the time-
  blocked cross-fit, the final fit, the operating points), its threshold chosen on
  out-of-fold training-period scores;
* **ours, trees only**: the previous model kind (XGBoost alone, threshold from validation);
* **peers** (``benchmarks.peers``): SpamAssassin and rspamd from Debian's packages, stock
  rules, and with their Bayes trained on the training period;
* the TF-IDF baselines of ``benchmarks.quality_baselines`` (validation-chosen thresholds);
* ours with the Feast sender-reputation block, which decides ``SPAM_REPUTATION_FEATURES``.

Then: whether the configured FP budget holds on test (within 2x) for several budgets, and
the JSON door (the same test messages sent as subject/body/sender) at its own thresholds.
Test labels never choose anything deployed; the fixed-budget table uses them for a ranking
comparison (the same rule for every model). :data:`DESIGNS_TRIED` counts the designs whose
test numbers anyone looked at while building the model, so a reader can discount for it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import machine, raw_table, split_table, write_report
from benchmarks.peers import run_peers
from benchmarks.quality_baselines import BASELINES, fit_baseline
from benchmarks.quality_points import (
    FIXED_POINTS,
    at_threshold,
    best_recall,
    best_within_point,
    rate_cell,
)
from spam_assets.defs.resources import build_resources
from spam_assets.lib.ensemble import fields_copy, model_scores
from spam_assets.lib.final_fit import FIT_SPLITS
from spam_assets.lib.metrics import threshold_for_budget, threshold_for_fpr
from spam_assets.lib.reputation import historical_reputation, reputation_tables
from spam_assets.lib.split_store import table_of
from spam_assets.lib.training import train, tune_data
from spam_serving.feature_repo.repo import feast_objects, offline_path
from spam_serving.feature_store import feature_store
from spam_serving.featurize import Featurizer
from spam_serving.parsing import from_record
from spam_serving.settings import get_settings

#: The ham FPR budgets whose test FPR the report checks (the configured one is added).
BUDGETS = (0.0005, 0.001, 0.002, 0.005, 0.01)
#: Deployed-point target of DESIGN.md section 4: test easy-ham and hard-ham FPR limits.
MAX_EASY_HAM_FPR, MAX_HARD_HAM_FPR = 0.005, 0.05
#: How much more spam than the best peer ours must catch at the same or lower FPRs.
MARGIN = 0.03
#: Designs whose *test* numbers were looked at while the ensemble was built: 33 exploratory
#: stacks that used SpamAssassin's own rule hits or scores as features (never deployable;
#: they showed that rule-style evidence plus a char n-gram model can win, and that tree
#: stackers and unconstrained weights lose the low-FP end), then 6 deployable ones: the sign
#: stack with random folds, with time-blocked folds, its library version, its first full
#: pipeline run, the same with one shared second stage for both doors and point-estimate
#: thresholds (2026-12-07), and the deployed one: a second stage per door and thresholds
#: held with 95% confidence. A header-token text model was tried and rejected on training-
#: period out-of-fold scores alone (it lowered them), never on test.
DESIGNS_TRIED = {"exploratory (SpamAssassin's hits as features)": 33, "deployable": 6}


BANDS_HEAD = (
    "| action | ham FP budget | threshold | out-of-fold ham allowed above it | "
    "95% upper bound | certified |\n|---|---|---|---|---|---|"
)
BUDGET_HEAD = (
    "| budget | bound rule: OOF ham allowed | test ham FPR | within 2x | "
    "point estimate: OOF ham allowed | test ham FPR | within 2x |\n|---|---|---|---|---|---|---|"
)
DOOR_HEAD = (
    "| budget | raw mail: spam recall | its easy, hard FPs | JSON fields: spam recall | "
    "its easy, hard FPs | gap, points |\n|---|---|---|---|---|---|"
)


def reputation_store(splits: pd.DataFrame, home: Path):
    """A Feast store (file offline + registry) over the split's labelled rows, in ``home``."""
    s = get_settings().model_copy(update={"home": home, "feast_online_store": "sqlite"})
    offline = s.feast_dir / "offline"
    offline.mkdir(parents=True)
    for view, table in reputation_tables(splits).items():
        table.to_parquet(offline_path(offline, view), index=False)
    store = feature_store(s)
    store.apply(feast_objects(offline))
    return store


def train_ours(splits: pd.DataFrame, ensemble: bool, reputation: dict | None = None) -> dict:
    """Our model trained as the assets train it; its test scores (raw and as JSON fields),
    thresholds, out-of-fold scores and timing."""
    resources = build_resources(get_settings().model_copy(update={"ensemble": ensemble}))
    policy = resources["policy"]
    parts = {k: splits[splits["split"] == k] for k in ("train", "validation", "test")}
    msgs = {k: [from_record(r) for r in v.to_dict("records")] for k, v in parts.items()}
    config = replace(policy.featurizer_config(), reputation=reputation is not None)
    started = time.perf_counter()
    pipeline = Featurizer(config).fit(msgs["train"], parts["train"]["label"].to_numpy())
    matrices = {
        k: {
            "X": pipeline.transform(msgs[k], reputation[k] if reputation else None),
            "y": v["label"].to_numpy(dtype=np.int8),
            "message_id": v["message_id"].tolist(),
            "group": v["group"].tolist(),
        }
        for k, v in parts.items()
    }
    tuning = resources["tuning"]
    result = tuning.search(tune_data(matrices, pipeline.n_base_features), "bench-quality")
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        trained = train(
            feature_pipeline=pipeline,
            feature_matrices=matrices,
            dataset_splits=table_of(splits, Path(tmp)),  # what dataset_splits passes
            config=result.best_config,
            rounds=result.best_iteration + 1,
            nthread=tuning.num_cpus,
            policy=policy.training_policy(),
        )
    seconds = time.perf_counter() - started
    featurizer = trained.featurizer
    x_test = trained.matrices["test"] if trained.matrices else matrices["test"]["X"]
    n_base = featurizer.n_base_features

    def scores(x: np.ndarray) -> np.ndarray:
        return model_scores(trained.booster, trained.stack, x, n_base)

    out = {
        "test": scores(x_test),
        "thresholds": trained.thresholds,
        "bands": trained.bands,
        "oof": trained.oof_scores,
        "oof_fields": trained.oof_fields,
        "oof_labels": {k: np.asarray(matrices[k]["y"]) for k in trained.oof_scores},
        "selection": trained.selection,
        "seconds": seconds,
        "trials": len(result.trials),
        "n_features": featurizer.n_features,
    }
    if trained.stack and reputation is None:
        copies = [fields_copy(m) for m in msgs["test"]]
        out["test_fields"] = scores(featurizer.transform(copies))
        out["stack"] = trained.stack
    return out


def baselines(parts: dict, target_fpr: float) -> dict[str, dict]:
    """Test scores and validation-chosen threshold of every TF-IDF baseline."""
    text = {k: (v["subject"] + "\n" + v["body"]).tolist() for k, v in parts.items()}
    out = {}
    for name in BASELINES:
        score = fit_baseline(name, text["train"], parts["train"]["label"].to_numpy())
        y_val = parts["validation"]["label"].to_numpy()
        out[name] = {
            "test": score(text["test"]),
            "threshold": threshold_for_fpr(y_val, score(text["validation"]), target_fpr),
        }
    return out


def _fixed_rows(models: dict, y, groups) -> tuple[list[str], dict]:
    rows, recalls = [], {}
    for name, m in models.items():
        cells, recalls[name] = [], []
        for easy, hard in FIXED_POINTS:
            best = best_recall(y, m["test"], groups, easy, hard)
            recalls[name].append(best["recall"])
            cells.append(rate_cell(best["tp"], best["n_spam"]))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows, recalls


def _own_row(name: str, rule: str, p: dict) -> str:
    return (
        f"| {name} | {rule} | {rate_cell(p['tp'], p['n_spam'])} | "
        f"{rate_cell(p['fp_easy'], p['n_easy'])} | {rate_cell(p['fp_hard'], p['n_hard'])} | "
        f"{p['ham_fpr']:.2%} | {p['f1']:.4f} |"
    )


def budget_rows(ours: dict, y, budgets: list[float], confidence: float) -> tuple[list[str], dict]:
    """Per budget: the threshold from out-of-fold training-period ham, held with
    ``confidence`` (the deployed rule) and as a point estimate (the rule it replaced); the
    share of test ham at or above each. Returns the rows and the deployed rule's ratios."""
    y_oof = np.concatenate([ours["oof_labels"][k] for k in FIT_SPLITS if k in ours["oof"]])
    s_oof = np.concatenate([ours["oof"][k] for k in FIT_SPLITS if k in ours["oof"]])
    ham = np.asarray(y) == 0
    n_ham = int(ham.sum())
    rows, holds = [], {}
    for budget in budgets:
        cells = []
        for conf in (confidence, 0.0):
            band = threshold_for_budget(y_oof, s_oof, budget, conf)
            fp = int((ours["test"][ham] >= band["threshold"]).sum())
            rate = fp / max(n_ham, 1)
            within = rate <= 2 * budget if budget else fp == 0
            if conf:
                holds[budget] = within
            cells.append(
                f"{band['allowed_false_positives']} of {band['n_ham']} | "
                f"{rate_cell(fp, n_ham)} ({rate / budget if budget else float('nan'):.1f}x) | "
                f"{'yes' if within else '**NO**'}"
            )
        mark = " (configured)" if budget == get_settings().target_ham_fpr else ""
        rows.append(f"| {budget:.2%}{mark} | " + " | ".join(cells) + " |")
    return rows, holds


def door_rows(ours: dict, y, groups, budgets: list[float], confidence: float) -> tuple[list, dict]:
    """The JSON door against raw mail at the same budgets, each with its own thresholds
    (out-of-fold, the deployed rule); the gap in spam recall, in points."""
    y_oof = np.concatenate([ours["oof_labels"][k] for k in FIT_SPLITS if k in ours["oof"]])
    s_oof = np.concatenate([ours["oof"][k] for k in FIT_SPLITS if k in ours["oof"]])
    scored = np.isfinite(s_oof)  # beyond SPAM_FIT_MAX_ROWS the cross-fit scores a sample
    y_oof, s_oof, s_oof_fields = y_oof[scored], s_oof[scored], ours["oof_fields"][scored]
    rows, gaps = [], {}
    for budget in budgets:
        cells = []
        recalls = []
        for scores_oof, scores_test in (
            (s_oof, ours["test"]),
            (s_oof_fields, ours["test_fields"]),
        ):
            thr = threshold_for_budget(y_oof, scores_oof, budget, confidence)["threshold"]
            p = at_threshold(y, scores_test, groups, thr)
            recalls.append(p["recall"])
            cells.append(f"{rate_cell(p['tp'], p['n_spam'])} | {p['fp_easy']}, {p['fp_hard']}")
        gaps[budget] = recalls[0] - recalls[1]
        rows.append(f"| {budget:.2%} | " + " | ".join(cells) + f" | {gaps[budget] * 100:+.1f} |")
    return rows, gaps


def _yes(flag: bool) -> str:
    return "yes" if flag else "**NO**"


def main() -> None:
    s = get_settings()
    raw = raw_table()
    splits = split_table(raw)
    parts = {k: splits[splits["split"] == k] for k in ("train", "validation", "test")}
    test = parts["test"]
    y, groups = test["label"].to_numpy(), test["group"].to_numpy()
    counts = {k: (len(v), int(v["label"].sum())) for k, v in parts.items()}

    # peers first: the slowest part and the one that depends on outside packages
    raw_by_id = raw.set_index("message_id")["raw"]
    period = splits[splits["split"].isin(FIT_SPLITS)]
    peer_runs, absent = run_peers(
        raw_by_id.loc[test["message_id"]].tolist(),
        list(zip(raw_by_id.loc[period["message_id"]], period["label"], strict=True)),
    )
    ours = train_ours(splits, ensemble=True)
    trees = train_ours(splits, ensemble=False)
    msgs = {k: [from_record(r) for r in v.to_dict("records")] for k, v in parts.items()}
    with tempfile.TemporaryDirectory() as tmp:
        store = reputation_store(splits, Path(tmp))
        rep = {k: historical_reputation(store, v) for k, v in msgs.items()}
    with_rep = train_ours(splits, ensemble=True, reputation=rep)
    base = baselines(parts, s.target_ham_fpr)
    write_report(
        "quality", report(s, counts, y, groups, ours, trees, with_rep, base, peer_runs, absent)
    )


def report(s, counts, y, groups, ours, trees, with_rep, base, peer_runs, absent) -> str:
    name_ours, name_trees = "**ours** (ensemble)", "ours, trees only (previous model kind)"
    models = {name_ours: ours, name_trees: trees}
    for run in peer_runs:
        models[run.name] = {"test": run.scores}
    for name, b in base.items():
        models[name] = {"test": b["test"]}
    fixed, recalls = _fixed_rows(models, y, groups)

    junk = ours["thresholds"]["junk"]
    own = {
        name_ours: ("out-of-fold budget, 95% bound", at_threshold(y, ours["test"], groups, junk)),
        name_trees: (
            "validation budget, 95% bound",
            at_threshold(y, trees["test"], groups, trees["thresholds"]["junk"]),
        ),
    }
    for run in peer_runs:
        label, lowest = run.actions[-1]
        own[run.name] = (
            f"stock: {label} at {lowest:g}",
            at_threshold(y, run.scores, groups, lowest),
        )
    for name, b in base.items():
        own[name] = ("validation budget", at_threshold(y, b["test"], groups, b["threshold"]))
    own_rows = [_own_row(name, rule, p) for name, (rule, p) in own.items()]

    point = own[name_ours][1]
    within = point["easy_ham_fpr"] <= MAX_EASY_HAM_FPR and point["hard_ham_fpr"] <= MAX_HARD_HAM_FPR
    peer_at = {r.name: best_within_point(y, r.scores, groups, point) for r in peer_runs}
    best_peer = max(peer_at, key=lambda n: peer_at[n]["recall"]) if peer_at else None
    margin = point["recall"] - peer_at[best_peer]["recall"] if best_peer else None
    ranks = [
        all(recalls[name_ours][i] >= recalls[r.name][i] for r in peer_runs)
        for i in range(len(FIXED_POINTS))
    ]
    budgets = sorted(set(BUDGETS) | {s.target_ham_fpr})
    budget_table, holds = budget_rows(ours, y, budgets, s.budget_confidence)
    door_table, gaps = door_rows(ours, y, groups, budgets, s.budget_confidence)
    fields_fixed = [best_recall(y, ours["test_fields"], groups, e, h) for e, h in FIXED_POINTS]
    rep_point = at_threshold(y, with_rep["test"], groups, with_rep["thresholds"]["junk"])
    keep_rep = rep_point["recall"] > point["recall"] and (
        rep_point["easy_ham_fpr"] <= point["easy_ham_fpr"]
        and rep_point["hard_ham_fpr"] <= point["hard_ham_fpr"]
    )
    peer_speed = "\n".join(
        f"| {r.name} | {len(y) / r.seconds:.1f} msg/s | {r.learn_seconds:.0f} s | {r.note} |"
        for r in peer_runs
    )
    missing = "\n".join(f"- **{name} missing**: {why}" for name, why in absent.items())
    points_head = " | ".join(f"({e:.2%}, {h:.1%})" for e, h in FIXED_POINTS)
    points_list = ", ".join(f"({e:.2%}, {h:.1%})" for e, h in FIXED_POINTS)
    verdict_peer = (
        f"{best_peer}: {peer_at[best_peer]['recall']:.1%} -> margin "
        f"**{margin * 100:+.1f} points** (needed: >= {MARGIN * 100:.0f})"
        if best_peer
        else "no peer ran"
    )
    peers_at_point = "; ".join(f"{n} {p['recall']:.1%}" for n, p in peer_at.items())
    designs = ", ".join(f"{v} {k}" for k, v in DESIGNS_TRIED.items())
    n_hard = int(pd.Series(groups).str.startswith("hard").sum())
    n_easy = int((y == 0).sum()) - n_hard
    configured = s.target_ham_fpr
    targets = [
        ("deployed point within easy-ham FPR <= 0.5% and hard-ham FPR <= 5%", within),
        (
            f"deployed point catches >= {MARGIN * 100:.0f} points more spam than the best peer "
            "at the same or lower FPRs",
            margin is not None and margin >= MARGIN,
        ),
        ("at or above every peer at each fixed budget", all(ranks)),
        (f"configured budget {configured:.2%} held on test within 2x", holds[configured]),
        (
            f"JSON door within 2 points of raw mail at the configured budget "
            f"({gaps[configured] * 100:+.1f})",
            gaps[configured] <= 0.02,
        ),
    ]
    bands = "\n".join(
        f"| {name} | {b['budget']:.2%} | {b['threshold']:.4f} | "
        f"{b['allowed_false_positives']} of {b['n_ham']} | {b['fpr_upper_bound']:.3%} | "
        f"{'yes' if b['certified'] else 'no'} |"
        for name, b in ours["bands"].items()
    )
    return f"""# Quality benchmark ({time.strftime("%Y-%m-%d")})

Machine: {machine()}. Time split (DESIGN.md section 4): train/validation = -1 groups + older
half of hard-ham-1, test = -2 groups + newer half of hard-ham-1, after de-duplication.
Rows (n, spam): train {counts["train"]}, validation {counts["validation"]}, test {counts["test"]}.
Test ham: {n_easy} easy, {n_hard} hard. Every model sees the same test messages; peers get the
exact raw bytes. Designs whose test numbers were looked at while the model was built:
{designs} (`DESIGNS_TRIED`).
{missing}

## Targets (issue #21)

| target | met |
|---|---|
{chr(10).join(f"| {t} | {_yes(ok)} |" for t, ok in targets)}

## Spam recall at fixed ham-FPR budgets (easy, hard), best test threshold per model

A ranking comparison (test labels pick each model's threshold, the same rule for all; nothing
here is deployed). Cells: recall [95% Wilson interval].

| model | {points_head} |
|---|{"---|" * len(FIXED_POINTS)}
{chr(10).join(fixed)}

Ours at or above every peer at each budget: {", ".join(_yes(r) for r in ranks)}.

## Each model at its own deployed threshold

Ours: the lowest threshold whose 95% upper bound on the training period's out-of-fold ham
FPR stays within {s.target_ham_fpr:.1%} ({ours["selection"]}); the trees-only model: the same
rule on the validation slice; the baselines: the point estimate on validation; peers: their
stock configuration.

| model | threshold rule | spam recall | easy-ham FPR | hard-ham FPR | ham FPR | F1 |
|---|---|---|---|---|---|---|
{chr(10).join(own_rows)}

- Ours within easy-ham FPR <= {MAX_EASY_HAM_FPR:.1%} and hard-ham FPR <= {MAX_HARD_HAM_FPR:.0%}:
  **{"yes" if within else "NO"}** ({point["fp_easy"]} easy, {point["fp_hard"]} hard false
  positives).
- Best peer at the same or lower easy- and hard-ham false positives than ours
  ({point["fp_easy"]}, {point["fp_hard"]}), any threshold: {verdict_peer}. {peers_at_point}.

The deployed model's action bands (`tuned_model` metadata; the response's `action`):

{BANDS_HEAD}
{bands}

## The FP budget on test

For each budget, the threshold on the training period's out-of-fold scores, with the deployed
rule (the budget held with {s.budget_confidence:.0%} confidence: a Clopper-Pearson bound) and
with the point estimate it replaced; the share of *test* ham at or above it. The promise:
within 2x of the budget. A budget that out-of-fold ham cannot certify puts the threshold
above every one of them.

{BUDGET_HEAD}
{chr(10).join(budget_table)}

## The JSON door

The same test messages sent as `subject`/`body`/`sender` (no delivery headers; the second stage
for that door), each door at its own thresholds for the same budget (the deployed rule on the
training period's out-of-fold scores of each form).

{DOOR_HEAD}
{chr(10).join(door_table)}

Recall at the fixed budgets {points_list}: raw {", ".join(f"{r:.1%}" for r in recalls[name_ours])};
JSON fields {", ".join(f"{b['recall']:.1%}" for b in fields_fixed)}.

## Sender reputation (Feast, point-in-time join; test labels never feed it)

With the `rep:*` block: recall {rep_point["recall"]:.1%}, easy-ham FPR
{rep_point["easy_ham_fpr"]:.2%}, hard-ham FPR {rep_point["hard_ham_fpr"]:.2%} at its own
threshold, vs {point["recall"]:.1%} / {point["easy_ham_fpr"]:.2%} / {point["hard_ham_fpr"]:.2%}
without. Rule (more spam, no more false positives in either group):
**{"keep it on" if keep_rep else "keep it off"}** (`SPAM_REPUTATION_FEATURES`).

## Cost

Ours: {ours["seconds"]:.0f} s to train, search included ({ours["trials"]} Ray Tune trials;
{ours["n_features"]} columns); trees only: {trees["seconds"]:.0f} s.

| peer | scoring speed (3 clients, 2 daemon children) | Bayes learning | note |
|---|---|---|---|
{peer_speed}
"""


if __name__ == "__main__":
    main()
