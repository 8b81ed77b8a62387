"""Atomic file writes: readers (the next asset, the UI, a polling service) see the old file or
the complete new one, never half of it, even if the writer dies mid-way."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a hidden sibling, then rename it over ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path
