"""Reading memory-mapped matrices a chunk of rows at a time without keeping them resident.

The feature matrices are ``.npy`` files that assets open memory-mapped. Every page a reader
touches stays mapped into its process, and so counts in its resident set, until the kernel
needs the memory back: a pass over a 5 GB test matrix *looks* like a 5 GB process, although
the pages are clean file cache that could be dropped at any time (measured at 100k messages:
~2 GB of ``tuned_model``'s 7.4 GB peak). Readers that stream rows drop each chunk's pages from
their own mapping once they are done with it (``madvise(MADV_DONTNEED)``: the data stays in
the page cache, a second pass reads it from there), so a step's memory is bounded by its chunk,
as the scale benchmark measures it. Arrays in memory are left alone.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np

_PAGE = mmap.PAGESIZE
#: rows scored at a time (10,000 rows of 3,114 float32 columns: 125 MB)
SCORE_CHUNK_ROWS = 10_000


def _mapping(x: np.ndarray) -> mmap.mmap | None:
    """The ``mmap`` under a view of a file-backed ``np.memmap`` (None for an array in memory,
    and for a copy-on-write mapping, whose private changes dropping pages would discard)."""
    while x is not None:
        mm = getattr(x, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            return None if getattr(x, "mode", "c") == "c" else mm
        x = x.base if isinstance(x.base, np.ndarray) else None
    return None


def release(view: np.ndarray) -> bool:
    """Drop the pages under ``view``'s rows (a row range of a memory-mapped array; a column
    slice covers its whole rows) from this process's resident set. True when it did; a no-op
    for arrays in memory, on closed mappings and where ``madvise`` is unavailable."""
    mm = _mapping(view)
    if mm is None or view.size == 0 or not hasattr(mm, "madvise") or mm.closed:
        return False
    base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
    first = view.__array_interface__["data"][0] - base
    # the last byte of the view: its last row's start plus the row's length in the file
    last_row = view[-1] if view.ndim > 1 else view[-1:]
    row_bytes = view.strides[0] if view.ndim > 1 else view.itemsize
    end = last_row.__array_interface__["data"][0] - base + abs(row_bytes)
    start = first - first % _PAGE
    end = min(len(mm), end + (-end) % _PAGE)
    if start >= end:
        return False
    mm.madvise(mmap.MADV_DONTNEED, start, end - start)
    return True


def row_chunks(x: np.ndarray, chunk_rows: int) -> Iterator[np.ndarray]:
    """``x``'s rows ``chunk_rows`` at a time as float32 arrays in memory; each chunk's mapped
    pages are released before the next one is read."""
    for start in range(0, len(x), chunk_rows):
        view = x[start : start + chunk_rows]
        chunk = np.ascontiguousarray(view, dtype=np.float32)
        release(view)
        yield chunk
