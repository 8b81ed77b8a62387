"""Ray drivers for the cluster tests, each run as its own process (as a Dagster step is):
Ray caches a process's authentication mode and token at its first ``ray.init``, so a pytest
process that already ran a local Ray cannot join a cluster with another token.

``python -m spam_tests.helpers.ray_driver <case> <address> <work dir>`` prints one JSON line.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np


@functools.cache
def _features() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Real messages as the featurizer's rows: train on even, hold out odd."""
    from spam_serving.featurize import FeaturizerConfig
    from spam_serving.parsing import parse_message
    from spam_tests.helpers.corpus import read_mirror, stratified
    from spam_tests.helpers.serving import train_small

    sample = [
        (group, int("spam" in group), raw)
        for group, messages in sorted(read_mirror().items())
        for _, raw in stratified(messages, 120)
    ]
    config = FeaturizerConfig(max_text_features=400, max_meta_features=80, min_df=2)
    train, held = sample[::2], sample[1::2]
    f, _, x_train, _ = train_small(train, config, max_depth=3, rounds=5)
    x_held = f.transform([parse_message(raw) for _, _, raw in held])
    return (
        x_train,
        np.array([label for _, label, _ in train]),
        x_held,
        np.array([label for _, label, _ in held]),
    )


def tune(address: str, work: Path) -> dict:
    from spam_assets.lib.tuning import run_search

    x, y, x_val, y_val = _features()
    result = run_search(
        {"X_train": x, "y_train": y, "X_val": x_val, "y_val": y_val},
        num_samples=4,
        num_cpus=2,
        address=address,
        max_rounds=40,
        early_stopping=10,
        seed=0,
        storage_dir=work / "tune",
        run_name="cluster",
    )
    return {
        "trials": len(result.trials),
        "nodes": sorted({t["node_id"] for t in result.trials}),
        "best_val_aucpr": result.best_metrics["val_aucpr"],
    }


def trees(address: str, work: Path) -> dict:
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    from spam_assets.lib.ray_xgboost import ClusterTrees, connected
    from spam_assets.lib.tuning import local_trees, xgb_params

    x, y, x_held, y_held = _features()
    params = xgb_params({"eta": 0.2, "max_depth": 4}, nthread=1)
    fitter = ClusterTrees(num_workers=2)
    with connected(address):
        booster = fitter(params, x, y, 40)
    local = local_trees(params, x, y, 40)

    def auc(b) -> float:
        return float(roc_auc_score(y_held, b.predict(xgb.DMatrix(x_held, missing=np.nan))))

    (fit,) = fitter.fits
    return {
        "rows": len(y),
        "workers": fit.workers,
        "nodes": sorted(fit.nodes),
        "summary": fitter.summary(address),
        "auc": auc(booster),
        "local_auc": auc(local),
    }


def parse(address: str, work: Path) -> dict:
    from spam_assets.lib.parsed_store import update_parts
    from spam_assets.lib.raw_store import RawPart, read_manifest

    manifest = read_manifest(work / "raw")
    parts = [RawPart(**p) for s in manifest["sources"] for p in s["parts"]]
    parsed, _, nodes = update_parts(work / "raw", parts, work / "ray", 1, address)
    return {"parsed": parsed, "nodes": sorted(nodes)}


def rate(address: str, work: Path) -> dict:
    """Throughput on the cluster: the raw parts under ``work/raw`` parsed as Ray tasks, and
    data-parallel trees on ``work/x.npy`` / ``work/y.npy`` with one worker per node."""
    import time

    import ray

    from spam_assets.lib.parsed_store import update_parts
    from spam_assets.lib.raw_store import RawPart, read_manifest
    from spam_assets.lib.ray_xgboost import ClusterTrees, connected
    from spam_assets.lib.tuning import xgb_params

    manifest = read_manifest(work / "raw")
    parts = [RawPart(**p) for s in manifest["sources"] for p in s["parts"]]
    x, y = np.load(work / "x.npy"), np.load(work / "y.npy")
    with connected(address):
        nodes = sum(n["Alive"] for n in ray.nodes())
        started = time.perf_counter()
        update_parts(work / "raw", parts, work / f"parsed-{nodes}", 1, address)
        parse_s = time.perf_counter() - started
        fitter = ClusterTrees(num_workers=nodes)
        started = time.perf_counter()
        fitter(xgb_params({"eta": 0.1, "max_depth": 6}, nthread=1), x, y, 100)
        train_s = time.perf_counter() - started
    return {
        "nodes": nodes,
        "messages": sum(p.n_messages for p in parts),
        "parse_s": parse_s,
        "rows": len(y),
        "train_s": train_s,
        "train_nodes": len(fitter.fits[0].nodes),
    }


def everything(address: str, work: Path) -> dict:
    """The cluster test's three cases in one driver: one connection, one set of features."""
    return {case: CASES[case](address, work) for case in ("parse", "tune", "trees")}


CASES = {"tune": tune, "trees": trees, "parse": parse, "rate": rate, "all": everything}


def main() -> None:
    case, address, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    print(json.dumps(CASES[case](address, work)))


if __name__ == "__main__":
    main()
