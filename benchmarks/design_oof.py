"""Design selection on the training period only: out-of-fold numbers of candidate designs.

``bench-quality`` reports test; choosing a design by it would fit the test split. This tool
runs the ensemble's time-blocked cross-fit (``spam_assets.lib.ensemble``) on train +
validation once, keeps every fold's first-stage outputs for both doors (raw mail and its
JSON-fields copy) together with candidate first-stage columns, and then scores second-stage
variants on those out-of-fold outputs: recall at the fixed ham-FPR points and at each
budget's deployed threshold (95% bound), per door, and the JSON door's gap. Nothing here
reads a test label.

    make bench-design                          # writes benchmarks/results/design-oof-<date>.md
    python -m benchmarks.design_oof --fresh    # recompute the cached cross-fit

Each candidate is compared with the deployed design on the same out-of-fold rows by a paired
bootstrap (messages resampled within each class, both designs' scores kept): a difference
whose 90% interval holds 0 is not evidence, whatever its median.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Sequence

import numpy as np

from benchmarks.common import machine, raw_table, split_table, write_report
from benchmarks.quality_points import FIXED_POINTS, best_recall
from benchmarks.word_bayes import WordBayes
from spam_assets.defs.resources import build_resources
from spam_assets.lib.ensemble import (
    bounds,
    fields_copy,
    group_weights,
    out_of_fold_stage,
    time_folds,
)
from spam_assets.lib.metrics import threshold_for_budget
from spam_assets.lib.tuning import local_trees, xgb_params
from spam_serving.char_ngrams import CharNgramModel
from spam_serving.featurize import STACK_COLUMNS, Featurizer
from spam_serving.parsing import from_record
from spam_serving.settings import get_settings

#: one tree configuration for every variant (the search's typical winner on this corpus)
TREE_CONFIG = {
    "eta": 0.1,
    "max_depth": 4,
    "min_child_weight": 3.0,
    "subsample": 0.8,
    "colsample_bytree": 0.5,
    "lambda": 5.0,
    "seed": 0,
}
TREE_ROUNDS = 200
BUDGETS = (0.001, 0.002, 0.005, 0.01)
BOOTSTRAP = 300

#: name -> (candidate columns beside the trees' margin and the signs, second-stage L2); the
#: first is the deployed design. ``char``: the char n-gram logit of the stacking block;
#: ``char_bal``: the same model fitted with ham groups balanced; ``nb``: :class:`WordBayes`.
DESIGNS: dict[str, tuple[tuple[str, ...], float]] = {
    "deployed (char, L2 1)": (("char",), 1.0),
    "char, L2 0.3": (("char",), 0.3),
    "char, L2 3": (("char",), 3.0),
    "char + token Bayes, L2 1": (("char", "nb"), 1.0),
    "char + token Bayes, L2 0.3": (("char", "nb"), 0.3),
    "balanced char, L2 1": (("char_bal",), 1.0),
    "balanced char, L2 0.3": (("char_bal",), 0.3),
    "balanced char + token Bayes, L2 1": (("char_bal", "nb"), 1.0),
}


def first_stage(folds: int) -> dict:
    """Per training-period row and door: out-of-fold tree margin, stacking block and the
    candidate columns, from models fitted on the other time blocks."""
    s = get_settings()
    policy = build_resources(s)["policy"]
    splits = split_table(raw_table())
    period = splits[splits["split"].isin(["train", "validation"])].reset_index(drop=True)
    msgs = [from_record(r) for r in period.to_dict("records")]
    from spam_assets.lib.splits import event_time

    times = event_time(period).dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    labels = period["label"].to_numpy().astype(int)
    groups = period["group"].astype(str).to_numpy()
    fold = time_folds(times, groups, folds)
    both = [*msgs, *(fields_copy(m) for m in msgs)]
    fold2, labels2 = np.concatenate([fold, fold]), np.concatenate([labels, labels])
    n2 = len(both)
    out = {
        "margin": np.zeros(n2),
        "block": np.zeros((n2, len(STACK_COLUMNS))),
        "nb": np.zeros(n2),
        "char_bal": np.zeros(n2),
    }
    config = policy.featurizer_config()
    for f in range(folds):
        t0 = time.perf_counter()
        fit_rows, held = np.flatnonzero(fold2 != f), np.flatnonzero(fold2 == f)
        fit_msgs = [msgs[i] for i in np.flatnonzero(fold != f)]
        y_fit = labels[fold != f]
        featurizer = Featurizer(config).fit(fit_msgs, y_fit)
        x_fit = featurizer.transform([both[i] for i in fit_rows])
        x_held = featurizer.transform([both[i] for i in held])
        n_base = featurizer.n_base_features
        booster = local_trees(
            xgb_params(TREE_CONFIG, 2), x_fit[:, :n_base], labels2[fit_rows], TREE_ROUNDS
        )
        out["margin"][held] = booster.inplace_predict(
            x_held[:, :n_base], missing=np.nan, predict_type="margin"
        )
        out["block"][held] = x_held[:, n_base:]
        nb = WordBayes.fit(fit_msgs, y_fit)
        out["nb"][held] = nb.logits([both[i] for i in held])
        w = group_weights(y_fit, groups[fold != f], True)
        char = CharNgramModel.fit(
            [featurizer.char_text(m) for m in fit_msgs],
            y_fit,
            max_features=config.char_features,
            min_df=config.min_df,
            sample_weight=w,
        )
        out["char_bal"][held] = char.logits([featurizer.char_text(both[i]) for i in held])
        print(f"fold {f}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    out.update(fold=fold, labels=labels, groups=groups)
    return out


def design_scores(d: dict, columns: Sequence[str], l2: float, door: slice) -> np.ndarray:
    """Out-of-fold second-stage scores of one design for one door's rows."""
    block = d["block"][door]
    named = {"char": block[:, 0], "nb": d["nb"][door], "char_bal": d["char_bal"][door]}
    z = np.column_stack([d["margin"][door], *(named[c] for c in columns), block[:, 1:-1]])
    box = [(0.0, None)] * (1 + len(columns)) + bounds()[2:-1]
    weight = group_weights(d["labels"], d["groups"], True)
    return out_of_fold_stage(z, d["labels"], d["fold"], box, l2, weight)


def fixed_recalls(y, s, groups) -> list[float]:
    return [best_recall(y, s, groups, e, h)["recall"] for e, h in FIXED_POINTS]


def budget_recalls(y, s) -> list[float]:
    """Spam recall at each budget's deployed threshold (95% bound on out-of-fold ham)."""
    out = []
    for b in BUDGETS:
        t = threshold_for_budget(y, s, b, 0.95)["threshold"]
        out.append(float((s[y == 1] >= t).mean()))
    return out


def paired_bootstrap(y, groups, s, base, seed: int = 0) -> np.ndarray:
    """(5th, 50th, 95th percentile) x fixed point of the recall difference ``s - base``."""
    rng = np.random.default_rng(seed)
    spam, ham = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    diffs = []
    for _ in range(BOOTSTRAP):
        b = np.concatenate([rng.choice(spam, len(spam)), rng.choice(ham, len(ham))])
        new, old = fixed_recalls(y[b], s[b], groups[b]), fixed_recalls(y[b], base[b], groups[b])
        diffs.append(np.subtract(new, old))
    return np.percentile(np.array(diffs), [5, 50, 95], axis=0)


def report(d: dict, seconds: float) -> str:
    y, groups = d["labels"], d["groups"]
    n = len(y)
    hard = int(((y == 0) & np.char.startswith(groups.astype(str), "hard-ham")).sum())
    points = " | ".join(f"({e:.2%}, {h:.1%})" for e, h in FIXED_POINTS)
    lines = [
        f"# Design selection on the training period ({dt.date.today().isoformat()})",
        "",
        f"Machine: {machine()}. Out-of-fold scores of the training period (train + validation,"
        f" {n} messages: {int(y.sum())} spam, {int((y == 0).sum()) - hard} easy ham, {hard}"
        f" hard ham), {len(np.unique(d['fold']))} time-blocked folds; trees of one fixed"
        f" configuration ({TREE_ROUNDS} rounds); first-stage cross-fit {seconds:.0f} s. No test"
        " label is read: these numbers choose designs, `bench-quality` reports test once.",
        "",
        "## Spam recall, out of fold",
        "",
        "Fixed points: best threshold within (easy-ham FPR, hard-ham FPR). Budgets: at the",
        "deployed rule's threshold (95% bound on out-of-fold ham).",
        "",
        f"| design | door | {points} | " + " | ".join(f"budget {b:.1%}" for b in BUDGETS) + " |",
        "|---|---|" + "---|" * (len(FIXED_POINTS) + len(BUDGETS)),
    ]
    scores = {}
    for name, (columns, l2) in DESIGNS.items():
        for door, part in (("raw", slice(0, n)), ("JSON", slice(n, 2 * n))):
            s = scores[name, door] = design_scores(d, columns, l2, part)
            cells = [*fixed_recalls(y, s, groups), *budget_recalls(y, s)]
            lines.append(f"| {name} | {door} | " + " | ".join(f"{v:.1%}" for v in cells) + " |")
    base_name = next(iter(DESIGNS))
    lines += [
        "",
        f"## Against the deployed design: paired bootstrap ({BOOTSTRAP} resamples)",
        "",
        "Median difference in recall points [90% interval] at each fixed point.",
        "",
        f"| design | door | {points} |",
        "|---|---|" + "---|" * len(FIXED_POINTS),
    ]
    for name in list(DESIGNS)[1:]:
        for door in ("raw", "JSON"):
            lo, mid, hi = paired_bootstrap(y, groups, scores[name, door], scores[base_name, door])
            cells = " | ".join(
                f"{100 * m:+.1f} [{100 * a:+.1f}, {100 * b:+.1f}]"
                for a, m, b in zip(lo, mid, hi, strict=True)
            )
            lines.append(f"| {name} | {door} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    cache = get_settings().data_dir / "design-oof.npz"
    started = time.perf_counter()
    if "--fresh" in sys.argv or not cache.exists():
        d = first_stage(get_settings().ensemble_folds)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, seconds=time.perf_counter() - started, **d)
    d = dict(np.load(cache, allow_pickle=True))
    write_report("design-oof", report(d, float(d["seconds"])))


if __name__ == "__main__":
    main()
