"""Atomic file writes: readers (the next asset, the UI, a polling service) see the old file or
the complete new one, never half of it, even if the writer dies mid-way."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a hidden sibling, then rename it over ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


@contextmanager
def new_generation(base_dir: Path, keep: int) -> Iterator[tuple[Path, Path]]:
    """A new materialization directory under ``base_dir``: yields ``(tmp, final)``; the block
    writes into the hidden ``tmp``, which is renamed to ``final`` when the block completes (a
    reference to an earlier directory never sees a later one's files). Then only the newest
    ``keep`` directories stay; a ``tmp`` left by a writer that died is removed first."""
    base_dir.mkdir(parents=True, exist_ok=True)
    for stale in base_dir.glob(".*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    tmp, final = base_dir / f".{name}.tmp", base_dir / name
    tmp.mkdir()
    yield tmp, final
    tmp.rename(final)
    done = sorted(p for p in base_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
