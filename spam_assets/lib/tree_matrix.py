"""The rows tree models train on, as XGBoost's ``QuantileDMatrix`` built chunk by chunk.

Why not ``DMatrix``: from a dense array it keeps every non-missing entry (zeros included) as a
sparse (index, value) pair, 8 bytes an entry, twice the float32 matrix it came from, and
``hist`` then builds its quantized index beside it. ``QuantileDMatrix`` keeps only the
quantized index (a byte an entry here), and reads its input through a ``DataIter``, so the
rows may be several blocks (train and validation, raw mail and its JSON-fields copies,
memory-mapped ``.npy`` files) that are never concatenated: each chunk is made contiguous on
its own. With ``tree_method="hist"`` the model is the same as from a ``DMatrix`` of the
concatenated rows (``spam_tests/test_tree_matrix.py`` checks it byte for byte).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spam_assets.lib.mapped import release

#: rows per chunk handed to XGBoost (~12 MB at 3,000 float32 columns)
CHUNK_ROWS = 4_096

Rows = np.ndarray | Sequence[np.ndarray]


def blocks_of(x: Rows) -> list[np.ndarray]:
    """``x`` as a list of 2-D blocks (one array is one block)."""
    return [x] if isinstance(x, np.ndarray) else list(x)


def n_rows(x: Rows) -> int:
    return sum(len(b) for b in blocks_of(x))


def concatenated(x: Rows) -> np.ndarray:
    """The rows as one float32 array (what needs it whole, e.g. a Ray Dataset)."""
    blocks = blocks_of(x)
    if len(blocks) == 1:
        return np.asarray(blocks[0], dtype=np.float32)
    return np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks])


def tree_matrix(x: Rows, y: Rows | None = None, ref=None, chunk_rows: int = CHUNK_ROWS):
    """A ``QuantileDMatrix`` of the rows ``x`` (one array or blocks of equal width) with
    labels ``y`` (the same blocks' labels, or one array for all rows); ``ref``: the training
    matrix whose bin edges an evaluation set must share. Absent values are NaN, as in every
    matrix of this project; zeros are values."""
    import xgboost as xgb

    xs = blocks_of(x)
    ys = None if y is None else _label_blocks(y, [len(b) for b in xs])

    class _Chunks(xgb.DataIter):
        def __init__(self) -> None:
            self._spans = [
                (i, start, min(start + chunk_rows, len(b)))
                for i, b in enumerate(xs)
                for start in range(0, len(b), chunk_rows)
            ]
            self._at = 0
            super().__init__()

        def next(self, input_data) -> bool:
            if self._at == len(self._spans):
                return False
            i, start, stop = self._spans[self._at]
            self._at += 1
            view = xs[i][start:stop]
            chunk = np.ascontiguousarray(view, dtype=np.float32)
            release(view)  # a memory-mapped block's pages leave the resident set
            label = None if ys is None else np.asarray(ys[i][start:stop], dtype=np.float32)
            input_data(data=chunk, label=label)
            return True

        def reset(self) -> None:
            self._at = 0

    return xgb.QuantileDMatrix(_Chunks(), missing=np.nan, ref=ref)


def _label_blocks(y: Rows, sizes: list[int]) -> list[np.ndarray]:
    # one label array is cut at the row blocks' boundaries
    blocks = np.split(y, np.cumsum(sizes)[:-1]) if isinstance(y, np.ndarray) else list(y)
    if [len(b) for b in blocks] != sizes:
        raise ValueError(f"labels {[len(b) for b in blocks]} do not match rows {sizes}")
    return blocks
