"""Streaming a memory-mapped matrix keeps only a chunk of it resident, and changes no value."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spam_assets.lib.mapped import release, row_chunks
from spam_assets.lib.tree_matrix import tree_matrix


def _rss_file_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


def _matrix(tmp_path: Path, rows: int = 20_000, cols: int = 1_000) -> np.ndarray:
    x = np.lib.format.open_memmap(
        tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(rows, cols)
    )
    x[:] = (np.arange(rows * cols) % 97).astype(np.float32).reshape(rows, cols)
    x.flush()
    del x
    return np.load(tmp_path / "x.npy", mmap_mode="r")  # 80 MB, read-only as assets open it


def test_release_drops_a_chunks_pages_from_the_resident_set(tmp_path):
    x = _matrix(tmp_path)
    before = _rss_file_mb()
    assert float(np.asarray(x, dtype=np.float64).sum()) > 0  # every page touched
    touched = _rss_file_mb()
    assert touched - before > 60
    assert release(x[:, :10])  # a column slice covers its whole rows: every row here
    assert _rss_file_mb() - before < 10
    # the data is still there, read back from the page cache
    assert x[19_999, 999] == np.float32((19_999 * 1_000 + 999) % 97)


def test_streaming_keeps_one_chunk_resident_and_yields_the_same_rows(tmp_path):
    x = _matrix(tmp_path)
    expected = np.array(x)  # a copy in memory
    before = _rss_file_mb()
    peak = 0.0
    got = []
    for chunk in row_chunks(x[:, :600], 2_000):
        got.append(chunk)
        peak = max(peak, _rss_file_mb() - before)
    np.testing.assert_array_equal(np.concatenate(got), expected[:, :600])
    assert peak < 20  # a chunk is 8 MB of file; the whole matrix 80 MB


def test_release_leaves_arrays_in_memory_and_private_changes_alone(tmp_path):
    x = np.ones((100, 10), np.float32)
    assert not release(x[10:20])
    _matrix(tmp_path)
    private = np.load(tmp_path / "x.npy", mmap_mode="c")  # copy-on-write: changes are ours
    private[5, 5] = -1.0
    assert not release(private[:10])
    assert private[5, 5] == -1.0
    assert [len(c) for c in row_chunks(x, 40)] == [40, 40, 20]
    assert x.sum() == 1000


def test_a_tree_matrix_of_a_mapped_file_is_the_one_of_the_array_and_leaves_it_unmapped(
    tmp_path,
):
    x = _matrix(tmp_path, rows=20_000, cols=200)
    y = ((np.arange(20_000) * 200) % 97 > 48).astype(np.float32)  # column 0, file untouched
    tree_matrix(np.ones((10, 2), np.float32))  # XGBoost's library mapped in first
    before = _rss_file_mb()
    from_file = tree_matrix(x, y, chunk_rows=1_000)
    assert _rss_file_mb() - before < 5  # 16 MB of file, released chunk by chunk
    in_memory = tree_matrix(np.array(x), y, chunk_rows=1_000)
    np.testing.assert_array_equal(from_file.get_data().toarray(), in_memory.get_data().toarray())


def test_written_matrix_pages_leave_the_writer_and_reach_the_file(tmp_path):
    from spam_assets.lib.matrices import write_blocks

    rows, cols = 20_000, 1_000  # 80 MB
    expected = (np.arange(rows * cols) % 89).astype(np.float32).reshape(rows, cols)
    keys = {"train": {"y": np.zeros(rows), "message_id": [str(i) for i in range(rows)],
                      "group": ["g"] * rows}}  # fmt: skip
    before, seen = _rss_file_mb(), []

    def blocks():
        for i in range(0, rows, 2_000):
            seen.append(_rss_file_mb() - before)  # while the matrix is being written
            yield expected[i : i + 2_000]

    out = write_blocks(tmp_path / "m", {"train": blocks()}, keys, cols)
    assert max(seen) < 20  # a block is 8 MB of file; the matrix 80 MB
    np.testing.assert_array_equal(out["train"]["X"], expected)  # read back from the file
