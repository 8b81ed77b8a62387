"""The deployed model's features: a featurizer refitted on train + validation.

Model selection (Ray Tune, early stopping) and the decision threshold use ``feature_pipeline``,
fitted on train only, so validation scores are out-of-sample for the vocabulary *and* the
trees. The validation slice is the newest data, though (in a retrain: the newest labelled
live traffic), so the model that is deployed is fitted once more on train + validation, with
a vocabulary chosen on both: new words only the newest messages use are the point of a
retrain (README, "Loop pay-off"). These helpers build that featurizer and its matrices and
hand every downstream asset the matrix of the model it is looking at.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spam_assets.lib.featurize_pool import Chunk, FeaturizePool, frame_chunks
from spam_assets.lib.matrices import write_blocks
from spam_assets.lib.messages import messages_of
from spam_assets.lib.sampling import sample_rows
from spam_assets.lib.split_store import SplitTable
from spam_serving.featurize import Featurizer
from spam_serving.reputation import REPUTATION_FEATURES

if TYPE_CHECKING:
    from spam_assets.lib.tuned import TunedModel

FIT_SPLITS = ("train", "validation")
#: rows the deployed featurizer transforms at a time when it writes files
CHUNK_ROWS = 10_000


def deployed_features(
    feature_pipeline: Featurizer,
    feature_matrices: Mapping,
    dataset_splits: SplitTable,
    max_rows: int | None = None,
    seed: int = 0,
    out_dir: Path | None = None,
    workers: int = 1,
) -> tuple[Featurizer, Mapping]:
    """Featurizer fitted on train + validation (same config as ``feature_pipeline``; at most
    ``max_rows`` of their messages, a label-stratified sample, and only those are read) and
    its matrix per split, rows in ``feature_matrices`` order, transformed ``CHUNK_ROWS`` at a
    time: arrays in memory, or with ``out_dir`` files (a :class:`FeatureMatrices`,
    memory-mapped), in ``workers`` processes (``spam_assets.lib.featurize_pool``). The
    sender-reputation block, which has no fitted state, is copied from ``feature_matrices``
    (the point-in-time join is not repeated)."""
    config = feature_pipeline.config
    n_rep = len(REPUTATION_FEATURES) if config.reputation else 0
    splits = [s for s, n in dataset_splits.counts.items() if n]
    for split in splits:
        ids = dataset_splits.read(["message_id"], splits=(split,))["message_id"]
        if ids.tolist() != list(feature_matrices[split]["message_id"]):
            raise ValueError(f"dataset_splits and feature_matrices disagree on '{split}' rows")
    labels = fit_labels(feature_matrices)
    picked = sample_rows(labels, max_rows, seed)
    fit_rows = dataset_splits.take_across(FIT_SPLITS, picked)
    featurizer = Featurizer(config).fit(messages_of(fit_rows), labels[picked])
    del fit_rows
    n_base = feature_pipeline.n_base_features

    def chunks(split: str) -> Iterator[Chunk]:
        rep = feature_matrices[split]["X"][:, n_base - n_rep : n_base] if n_rep else None
        return frame_chunks(dataset_splits.iter_frames(split, batch_rows=CHUNK_ROWS), rep)

    with FeaturizePool(featurizer, workers) as pool:
        if out_dir is None:
            return featurizer, {s: np.vstack(list(pool.map(chunks(s)))) for s in splits}
        blocks = {split: pool.map(chunks(split)) for split in splits}
        return featurizer, write_blocks(out_dir, blocks, feature_matrices, featurizer.n_features)


def final_rows(matrices: Mapping, feature_matrices: Mapping) -> dict:
    """The rows the final model trains on (``fit_final``'s ``final``): train + validation
    under the deployed featurizer (``matrices``, from :func:`deployed_features`), as blocks of
    rows, not concatenated (``spam_assets.lib.tree_matrix``)."""
    return {"X": [_x(matrices[s]) for s in FIT_SPLITS], "y": fit_labels(feature_matrices)}


def reputation_block(
    feature_matrices: Mapping, splits: tuple[str, ...], n_base: int, reputation: bool
) -> np.ndarray | None:
    """The sender-reputation columns of ``splits``' rows (one after another), or None
    without reputation features."""
    if not reputation:
        return None
    n_rep = len(REPUTATION_FEATURES)
    return np.vstack([feature_matrices[s]["X"][:, n_base - n_rep : n_base] for s in splits])


def _x(split_matrix) -> np.ndarray:
    """A split's rows from either form :func:`deployed_features` returns."""
    return split_matrix["X"] if isinstance(split_matrix, Mapping) else split_matrix


def fit_labels(feature_matrices: Mapping, splits: tuple[str, ...] = FIT_SPLITS) -> np.ndarray:
    """Labels of ``splits``' rows, one split after another (the final fit's by default)."""
    return np.concatenate([np.asarray(feature_matrices[s]["y"]) for s in splits])


def deployed_matrix(tuned_model: TunedModel, feature_matrices: Mapping, split: str) -> np.ndarray:
    """The ``split`` rows as the deployed model sees them: its own matrices when it was
    refitted with a different featurizer, otherwise ``feature_matrices``'."""
    own = tuned_model.matrices
    return own[split]["X"] if own else feature_matrices[split]["X"]
