"""Feature matrices as files: what ``feature_matrices`` passes downstream is paths, not arrays.

Each split is one ``.npy`` of float32 rows (written chunk by chunk through a memory map, so
the step holds one chunk of features at a time) and a Parquet of its row keys (label,
message id, group). Readers get the same mapping the asset used to pickle,
``matrices[split] -> {"X", "y", "message_id", "group"}``, with ``X`` memory-mapped read-only:
pages come from the file when touched and the kernel can drop them again, and nothing of it
goes through a pickle. Every materialization writes a directory of its own (older ones are
pruned), so a reference to an earlier materialization never reads a later one's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spam_assets.lib.files import new_generation
from spam_assets.lib.mapped import release
from spam_assets.lib.split_store import SplitTable

#: materializations kept on disk (the newest; a run reading an older one still finds it)
KEEP = 3


@dataclass(frozen=True)
class SplitFiles:
    x_path: str
    keys_path: str
    n_rows: int
    n_cols: int


class FeatureMatrices(Mapping):
    """``split -> {"X", "y", "message_id", "group"}`` over the files of one materialization."""

    def __init__(self, root: str, splits: dict[str, SplitFiles]) -> None:
        self.root = root
        self.splits = splits
        self._cache: dict[str, dict] = {}

    def __getitem__(self, split: str) -> dict:
        if split not in self._cache:
            files = self.splits[split]
            keys = pq.read_table(files.keys_path).to_pandas()
            self._cache[split] = {
                "X": np.load(files.x_path, mmap_mode="r"),
                "y": keys["y"].to_numpy(dtype=np.int8),
                "message_id": keys["message_id"].tolist(),
                "group": keys["group"].tolist(),
            }
        return self._cache[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self.splits)

    def __len__(self) -> int:
        return len(self.splits)

    def __getstate__(self) -> dict:  # a pickle holds the paths, never the loaded arrays
        return {"root": self.root, "splits": self.splits}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state["splits"])

    @property
    def nbytes_on_disk(self) -> int:
        return sum(Path(f.x_path).stat().st_size for f in self.splits.values())


def _write(
    base_dir: Path,
    rows: dict[str, tuple[int, Iterator[np.ndarray], dict[str, list]]],
    n_cols: int,
) -> FeatureMatrices:
    """Each split's row blocks into its ``.npy`` and its keys (``y``, ``message_id``,
    ``group``) into Parquet, under a new directory renamed into place when complete; the
    oldest beyond :data:`KEEP` are removed."""
    splits = {}
    with new_generation(base_dir, KEEP) as (tmp, root):
        for split, (n_rows, blocks, keys) in rows.items():
            x = np.lib.format.open_memmap(
                tmp / f"{split}.npy", mode="w+", dtype=np.float32, shape=(n_rows, n_cols)
            )
            start = 0
            for block in blocks:
                written = x[start : start + len(block)]
                written[:] = block
                # written pages stay in the page cache (and reach the file), not in this
                # process's resident set: the step's memory is a block, not the matrix
                release(written)
                start += len(block)
            if start != n_rows:
                raise ValueError(f"{split}: {start} feature rows for {n_rows} keys")
            x.flush()
            del x
            table = pa.table(
                {
                    "y": pa.array(np.asarray(keys["y"], dtype=np.int8)),
                    "message_id": pa.array([str(v) for v in keys["message_id"]], pa.string()),
                    "group": pa.array([str(v) for v in keys["group"]], pa.string()),
                }
            )
            pq.write_table(table, tmp / f"{split}.keys.parquet")
            splits[split] = SplitFiles(
                str(root / f"{split}.npy"), str(root / f"{split}.keys.parquet"), n_rows, n_cols
            )
    return FeatureMatrices(str(root), splits)


def write_matrices(
    base_dir: Path,
    table: SplitTable,
    featurize: Callable[[Iterator[pd.DataFrame]], Iterator[np.ndarray]],
    n_cols: int,
    chunk_rows: int,
) -> FeatureMatrices:
    """Featurize each split's rows, read ``chunk_rows`` at a time, into its ``.npy``:
    ``featurize`` maps the split's frames of rows to their float32 feature blocks, one per
    frame, in order (``FeaturizePool.map`` for several processes)."""
    rows = {}
    for split, n in table.counts.items():
        if n:
            keys = table.read(["label", "message_id", "group"], splits=(split,))
            ids = {"y": keys["label"], "message_id": keys["message_id"], "group": keys["group"]}
            frames = table.iter_frames(split, batch_rows=chunk_rows)
            rows[split] = (n, featurize(frames), ids)
    return _write(base_dir, rows, n_cols)


def write_blocks(
    base_dir: Path, blocks: dict[str, Iterator[np.ndarray]], keys_from: Mapping, n_cols: int
) -> FeatureMatrices:
    """Row blocks per split, computed as they are written (the deployed featurizer's, in
    the final fit), as files with the row keys of ``keys_from`` (the same rows, same order)."""
    keys = ("y", "message_id", "group")
    return _write(
        base_dir,
        {
            split: (len(keys_from[split]["y"]), it, {k: keys_from[split][k] for k in keys})
            for split, it in blocks.items()
        },
        n_cols,
    )
