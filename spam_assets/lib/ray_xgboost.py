"""Data-parallel XGBoost on a Ray cluster (Ray Train's ``XGBoostTrainer``).

Used for the deployed trees when ``SPAM_RAY_ADDRESS`` names a cluster: the rows go into the
cluster's object store as a Ray Dataset, Ray Train splits them across ``num_workers``
workers placed on different nodes where it can (``SPREAD``), and XGBoost's own collective
(the rabit tracker Ray Train starts) builds one model from every shard's histograms. The
result is an ordinary ``xgboost.Booster``: ONNX export, SHAP and the ensemble treat it like
a locally trained one. Without a cluster nothing here runs; the local path stays
``xgboost.train``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spam_assets.lib.tree_matrix import Rows, concatenated


@dataclass(frozen=True)
class ClusterFit:
    """Where the shards were trained: one entry per worker."""

    workers: list[dict]

    @property
    def nodes(self) -> set[str]:
        return {w["node_id"] for w in self.workers}

    @property
    def rows(self) -> int:
        return sum(w["rows"] for w in self.workers)


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: its shard as a DMatrix, then ``xgboost.train`` inside the
    collective Ray Train set up (histograms are all-reduced across workers).

    One report at the end, rank 0's with the model as checkpoint: Ray Train's
    ``RayTrainReportCallback`` reports after every round, and every report is a barrier
    across the workers and the controller (~2 s a round measured on this machine's cluster:
    40 rounds of 300 rows took 100 s)."""
    import ray
    import ray.train
    import xgboost as xgb
    from ray.train.xgboost import RayTrainReportCallback

    shard = ray.train.get_dataset_shard("train")
    blocks = [b["data"] for b in shard.iter_batches(batch_size=None, batch_format="numpy")]
    rows = np.concatenate(blocks) if blocks else np.empty((0, config["n_columns"] + 1))
    dtrain = xgb.DMatrix(rows[:, :-1], label=rows[:, -1], missing=np.nan)
    ray.get(
        config["tally"].add.remote(
            {
                "rank": ray.train.get_context().get_world_rank(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "rows": int(rows.shape[0]),
            }
        )
    )
    booster = xgb.train(config["params"], dtrain, num_boost_round=config["rounds"])
    with tempfile.TemporaryDirectory(prefix="spam-trees-") as out:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            booster.save_model(str(Path(out) / RayTrainReportCallback.CHECKPOINT_NAME))
            checkpoint = ray.train.Checkpoint.from_directory(out)
        ray.train.report({"rounds": booster.num_boosted_rounds()}, checkpoint=checkpoint)


def train_on_cluster(
    params: dict, x: Rows, y: Rows, rounds: int, num_workers: int
) -> tuple[object, ClusterFit]:
    """Train ``rounds`` boosting rounds on (x, y) across ``num_workers`` Ray Train workers
    of the connected cluster (``ray.init`` done by the caller); returns the booster and
    where each shard ran."""
    import ray
    import ray.train
    from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer

    @ray.remote(num_cpus=0)
    class Tally:
        def __init__(self) -> None:
            self.seen: list[dict] = []

        def add(self, item: dict) -> None:
            self.seen.append(item)

        def all(self) -> list[dict]:
            return sorted(self.seen, key=lambda w: w["rank"])

    tally = Tally.remote()
    data = np.column_stack([concatenated(x), concatenated(y).reshape(-1)])
    dataset = ray.data.from_numpy(data)
    # one thread per worker: a worker holds one CPU of its node
    worker_params = {**params, "nthread": 1}
    with tempfile.TemporaryDirectory(prefix="spam-ray-train-") as storage:
        trainer = XGBoostTrainer(
            _worker_loop,
            train_loop_config={
                "params": worker_params,
                "rounds": rounds,
                "n_columns": data.shape[1] - 1,
                "tally": tally,
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=num_workers,
                resources_per_worker={"CPU": 1},
                placement_strategy="SPREAD",
            ),
            run_config=ray.train.RunConfig(storage_path=str(Path(storage)), name="trees"),
            datasets={"train": dataset},
        )
        result = trainer.fit()
        booster = RayTrainReportCallback.get_model(result.checkpoint)
    fit = ClusterFit(ray.get(tally.all.remote()))
    ray.kill(tally)
    return booster, fit


@contextmanager
def connected(address: str | None, num_cpus: int | None = None) -> Iterator[None]:
    """A Ray driver for the block: connected to the cluster at ``address``, or a local Ray
    of ``num_cpus`` without one; an already open one is kept (and not shut down). A cluster
    with token authentication needs ``RAY_AUTH_TOKEN`` in the environment, as any Ray
    driver does."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            num_cpus=None if address else num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


@dataclass
class ClusterTrees:
    """``fit_trees`` for :func:`spam_assets.lib.training.train` that trains every tree model
    on the cluster, and remembers where."""

    num_workers: int
    fits: list[ClusterFit] = field(default_factory=list)

    def __call__(self, params: dict, x: Rows, y: Rows, rounds: int):
        booster, fit = train_on_cluster(params, x, y, rounds, self.num_workers)
        self.fits.append(fit)
        return booster

    def summary(self, address: str) -> str:
        nodes = {n for f in self.fits for n in f.nodes}
        rows = sum(f.rows for f in self.fits)
        return (
            f"Ray cluster {address}: {len(self.fits)} fits by {self.num_workers} Ray Train "
            f"workers on {len(nodes)} node(s), {rows} rows in all"
        )
