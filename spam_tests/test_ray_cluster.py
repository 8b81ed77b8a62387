"""A real two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``,
separate processes): corpus parts parse as Ray tasks on both nodes, the Tune search spreads
its trials over both nodes, and the deployed trees train data-parallel there (Ray Train's
XGBoostTrainer), each node holding part of the rows, to the quality of a local fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from benchmarks.scale_corpus import Generator, write_tar
from spam_assets.lib.parsed_store import deduplicated, update_parts
from spam_assets.lib.raw_store import land
from spam_assets.lib.ray_xgboost import ClusterTrees, connected
from spam_assets.lib.tuning import local_trees, run_search, xgb_params
from spam_serving.featurize import FeaturizerConfig
from spam_serving.parsing import parse_message
from spam_tests.helpers.ray_cluster import ray_cluster
from spam_tests.helpers.serving import train_small

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp, ray_cluster(tmp_path_factory.mktemp("ray")) as c:
        for key, value in c.env.items():
            mp.setenv(key, value)  # the drivers below authenticate like any other
        yield c


@pytest.fixture(scope="module")
def features(real_sample):
    """Real messages as the featurizer's rows: train on even, hold out odd."""
    config = FeaturizerConfig(max_text_features=400, max_meta_features=80, min_df=2)
    train, held = real_sample[::2], real_sample[1::2]
    f, _, x_train, _ = train_small(train, config, max_depth=3, rounds=5)
    x_held = f.transform([parse_message(raw) for _, _, raw in held])
    y_train = np.array([label for _, label, _ in train])
    y_held = np.array([label for _, label, _ in held])
    return x_train, y_train, x_held, y_held


def test_tune_trials_run_on_both_nodes(cluster, features, tmp_path):
    x, y, x_val, y_val = features
    data = {"X_train": x, "y_train": y, "X_val": x_val, "y_val": y_val}
    result = run_search(
        data,
        num_samples=4,
        num_cpus=2,
        address=cluster.address,
        max_rounds=40,
        early_stopping=10,
        seed=0,
        storage_dir=tmp_path / "tune",
        run_name="cluster",
    )
    assert len(result.trials) == 4
    assert len({t["node_id"] for t in result.trials}) == 2  # the search used both nodes
    assert result.best_metrics["val_aucpr"] > 0.9


def test_trees_train_data_parallel_across_nodes(cluster, features):
    x, y, x_held, y_held = features
    params = xgb_params({"eta": 0.2, "max_depth": 4}, nthread=1)
    trees = ClusterTrees(num_workers=2)
    with connected(cluster.address):
        booster = trees(params, x, y, 40)
    (fit,) = trees.fits
    assert len(fit.nodes) == 2 and fit.rows == len(y)  # every row, split over two nodes
    assert all(0 < w["rows"] < len(y) for w in fit.workers)
    assert "2 node(s)" in trees.summary(cluster.address)
    local = local_trees(params, x, y, 40)
    auc = roc_auc_score(y_held, booster.predict(xgb.DMatrix(x_held, missing=np.nan)))
    local_auc = roc_auc_score(y_held, local.predict(xgb.DMatrix(x_held, missing=np.nan)))
    assert auc > 0.95 and abs(auc - local_auc) < 0.02, (auc, local_auc)


def test_parts_parse_as_ray_tasks_on_both_nodes(cluster, shared_tgz, tmp_path):
    """Parsing spreads its parts over the cluster's nodes and writes what local parsing
    writes."""
    source = write_tar(Generator(shared_tgz, seed=5), 1_600, tmp_path / "g.tar")
    landing = land([str(source)], tmp_path / "raw", tmp_path / "cache", 60, 400)
    on_ray = update_parts(tmp_path / "raw", landing.parts, tmp_path / "ray", 1, cluster.address)
    local = update_parts(tmp_path / "raw", landing.parts, tmp_path / "local", 1)
    assert len(on_ray[0]) == 4 and len(on_ray[2]) == 2 and local[2] == set()
    ray_corpus, _ = deduplicated(tmp_path / "ray", landing.parts)
    local_corpus, _ = deduplicated(tmp_path / "local", landing.parts)
    pd.testing.assert_frame_equal(ray_corpus.read(), local_corpus.read())
