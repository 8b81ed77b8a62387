"""Label-stratified row samples that keep time order: how the steps whose cost grows with
every row they fit on (the Tune search, the featurizer, the ensemble's cross-fit) stay
bounded on a big corpus while the deployed trees still train on every row."""

from __future__ import annotations

import numpy as np


def stratified(y: np.ndarray, keep: float, rng: np.random.Generator) -> np.ndarray | slice:
    """Row indices keeping ``keep`` of each label (sorted: rows stay in time order), or
    every row (``slice(None)``) when ``keep >= 1``."""
    if keep >= 1.0:
        return slice(None)
    y = np.asarray(y)
    picked = [
        rng.choice(idx, size=max(1, round(len(idx) * keep)), replace=False)
        for idx in (np.flatnonzero(y == label) for label in np.unique(y))
    ]
    return np.sort(np.concatenate(picked))


def sample_rows(y: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray | slice:
    """At most ``max_rows`` rows of ``y`` (about; each label keeps its share), or every row."""
    n = len(y)
    keep = 1.0 if max_rows is None or n <= max_rows else max_rows / n
    return stratified(y, keep, np.random.default_rng(seed))


def describe(picked: np.ndarray | slice, n: int, what: str, setting: str) -> str:
    """What an asset's metadata says about a sample."""
    if isinstance(picked, slice):
        return f"all {n} {what}"
    return f"{len(picked)} of {n} {what} (label-stratified sample, {setting})"
