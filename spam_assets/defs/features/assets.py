"""Feature stage: the featurizer is fitted on the train split only, then applied to all."""

import time
from pathlib import Path

import dagster as dg
import pandas as pd

from spam_assets.azure_target import k8s_op_tags
from spam_assets.defs.features.reputation import feast_registry
from spam_assets.defs.resources import (
    CorpusResource,
    FeastResource,
    ModelPolicy,
    StorageResource,
)
from spam_assets.lib.featurize_pool import Chunk, FeaturizePool
from spam_assets.lib.matrices import FeatureMatrices, write_matrices
from spam_assets.lib.messages import messages_of
from spam_assets.lib.reputation import historical_reputation
from spam_assets.lib.sampling import describe, sample_rows
from spam_assets.lib.split_store import SplitTable
from spam_serving.featurize import Featurizer


@dg.asset(
    group_name="features",
    description="The fitted featurizer (train split only): word TF-IDF vocabulary, structural "
    "and metadata features, and for the ensemble the char n-gram model and the signs' columns.",
)
def feature_pipeline(dataset_splits: SplitTable, policy: ModelPolicy) -> dg.Output[Featurizer]:
    """Fitted on at most ``SPAM_FIT_MAX_ROWS`` training messages (label-stratified, in
    time order): vocabularies settle long before a million messages, the fit's cost does not.
    Only the sampled rows are read."""
    labels = dataset_splits.read(["label"], splits=("train",))["label"].to_numpy()
    picked = sample_rows(labels, policy.fit_max_rows, policy.seed)
    fit_rows = dataset_splits.take("train", picked)
    featurizer = Featurizer(policy.featurizer_config()).fit(
        messages_of(fit_rows), fit_rows["label"].to_numpy()
    )
    names = featurizer.feature_names
    return dg.Output(
        featurizer,
        metadata={
            "n_features": featurizer.n_features,
            "n_text": len(featurizer.text_vocab),
            "n_meta": len(featurizer.meta_vocab),
            "state_hash": featurizer.state_hash,
            "fitted_on_rows": len(fit_rows),
            "fit_sample": describe(picked, len(labels), "training messages", "SPAM_FIT_MAX_ROWS"),
            "sample_features": ", ".join(names[:5] + names[-5:]),
        },
    )


@dg.asset(
    group_name="features",
    deps=[feast_registry],
    op_tags=k8s_op_tags("feature_matrices"),
    description="Dense float32 feature matrices per split (what XGBoost and ONNX both see), "
    "written as .npy files chunk by chunk and passed by reference; with reputation features "
    "on, the rep:* block comes from Feast's point-in-time join.",
)
def feature_matrices(
    dataset_splits: SplitTable,
    feature_pipeline: Featurizer,
    feast: FeastResource,
    corpus: CorpusResource,
    storage: StorageResource,
) -> dg.Output[FeatureMatrices]:
    start = time.perf_counter()
    store = feast.store() if feature_pipeline.config.reputation else None

    def chunk(rows: pd.DataFrame) -> Chunk:
        # the point-in-time join needs the Feast store: done here, the rest in the workers
        if store is None:
            return Chunk(rows)
        messages = messages_of(rows)  # parsed once: the workers take the messages
        return Chunk(messages, historical_reputation(store, messages))

    with FeaturizePool(feature_pipeline, corpus.featurize_workers) as pool:
        out = write_matrices(
            Path(storage.data_dir) / "matrices",
            dataset_splits,
            lambda frames: pool.map(map(chunk, frames)),
            feature_pipeline.n_features,
            corpus.chunk_rows,
        )
    elapsed = time.perf_counter() - start
    return dg.Output(
        out,
        metadata={
            **{f"{k}_shape": str((f.n_rows, f.n_cols)) for k, f in out.splits.items()},
            "path": dg.MetadataValue.path(out.root),
            "bytes_on_disk": out.nbytes_on_disk,
            "featurizer_state_hash": feature_pipeline.state_hash,
            "reputation_features": feature_pipeline.config.reputation,
            "messages_per_s": sum(dataset_splits.counts.values()) / max(elapsed, 1e-9),
            "featurize_workers": corpus.featurize_workers,
        },
    )
