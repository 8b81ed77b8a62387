"""Shared benchmark plumbing: the same corpus, parse, de-dup and split code as the assets."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

import pandas as pd

from spam_assets.lib.corpus_sources import RawMessage, read_sources
from spam_assets.lib.splits import assign_splits, deduplicate, parse_raw_table
from spam_serving.settings import PROJECT_ROOT, get_settings

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def raw_frame(msgs: list[RawMessage]) -> pd.DataFrame:
    """Raw messages as the table ``parse_raw_table`` reads."""
    return pd.DataFrame(
        {
            "message_id": [m.message_id for m in msgs],
            "group": [m.group for m in msgs],
            "label": [m.label for m in msgs],
            "sha256": [m.sha256 for m in msgs],
            "raw": [m.raw for m in msgs],
        }
    )


def raw_table() -> pd.DataFrame:
    """The configured corpus (``make`` points it at the mirror tarball when present)."""
    s = get_settings()
    return raw_frame(
        read_sources(list(s.corpus_sources), s.data_dir / "downloads", s.download_timeout_s)
    )


def split_table(raw: pd.DataFrame) -> pd.DataFrame:
    kept, _ = deduplicate(parse_raw_table(raw))
    return assign_splits(kept, get_settings().validation_fraction)


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def write_report(kind: str, text: str) -> Path:
    """Write ``benchmarks/results/<kind>-<date>[-N].md`` and echo it. Never overwrites: the
    README cites dated reports, and a later run the same day (on a differently loaded
    machine) is a second data point, not a replacement."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}-{dt.date.today().isoformat()}"
    path = RESULTS / f"{stem}.md"
    n = 1
    while path.exists():  # a second run the same day must not overwrite a cited report
        n += 1
        path = RESULTS / f"{stem}-{n}.md"
    path.write_text(text)
    print(text)
    print(f"\nreport written to {path}")
    return path
