"""A real two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``,
separate processes): corpus parts parse as Ray tasks on both nodes, the Tune search spreads
its trials over both nodes, and the deployed trees train data-parallel there (Ray Train's
XGBoostTrainer), each node holding part of the rows, to the quality of a local fit. The
driver is a process of its own, as a Dagster step is (``spam_tests.helpers.ray_driver``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.scale_corpus import Generator, write_tar
from spam_assets.lib.parsed_store import deduplicated, update_parts
from spam_assets.lib.raw_store import land
from spam_tests.helpers.ray_cluster import ray_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def driven(tmp_path_factory, shared_tgz) -> tuple[dict, Path, list]:
    """Corpus parts landed, then one driver process on a two-node cluster parses them, runs
    the search and trains the trees (each case below reads its part of the answer)."""
    work = tmp_path_factory.mktemp("cluster-work")
    source = write_tar(Generator(shared_tgz, seed=5), 1_600, work / "g.tar")
    landing = land([str(source)], work / "raw", work / "cache", 60, 400)
    with ray_cluster(tmp_path_factory.mktemp("ray")) as cluster:
        env = {**os.environ, **cluster.env, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
        proc = subprocess.run(
            [sys.executable, "-m", "spam_tests.helpers.ray_driver", "all", cluster.address,
             str(work)],
            capture_output=True, text=True, timeout=900, env=env,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), work, landing.parts


def test_parts_parse_as_ray_tasks_on_both_nodes(driven):
    """Parsing spreads its parts over the cluster's nodes and writes what local parsing
    writes."""
    result, work, parts = driven
    on_ray = result["parse"]
    assert len(on_ray["parsed"]) == 4 and len(on_ray["nodes"]) == 2
    local = update_parts(work / "raw", parts, work / "local", 1)
    assert local[2] == set()
    ray_corpus, _ = deduplicated(work / "ray", parts)
    local_corpus, _ = deduplicated(work / "local", parts)
    pd.testing.assert_frame_equal(ray_corpus.read(), local_corpus.read())


def test_tune_trials_run_on_both_nodes(driven):
    result = driven[0]["tune"]
    assert result["trials"] == 4
    assert len(result["nodes"]) == 2  # the search used both nodes
    assert result["best_val_aucpr"] > 0.9


def test_trees_train_data_parallel_across_nodes(driven):
    result = driven[0]["trees"]
    workers = result["workers"]
    assert len(result["nodes"]) == 2 and sum(w["rows"] for w in workers) == result["rows"]
    assert all(0 < w["rows"] < result["rows"] for w in workers)  # every row, split over two
    assert "2 node(s)" in result["summary"]
    auc, local_auc = result["auc"], result["local_auc"]
    assert auc > 0.95 and abs(auc - local_auc) < 0.02, (auc, local_auc)
