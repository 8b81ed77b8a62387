"""Parsed parts, one per raw part, and the de-duplicated corpus as a reference to them.

A raw part is parsed once: its parsed part records the raw part's fingerprint and the
parser's version (a hash of the parser's source), and is reused while both match, so new
mail is the only mail parsed and a parser change re-parses everything. Parts are parsed in
worker processes (one part in memory per worker), or as Ray tasks when a cluster is
configured. De-duplication then runs over the key
columns of every part (ids, hashes, times: a few hundred bytes a row), and the result is a
:class:`ParsedCorpus`: the part files plus the kept ids, which readers load part by part.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spam_assets.lib.files import write_atomic
from spam_assets.lib.raw_store import RawPart, part_path
from spam_assets.lib.splits import deduplicate, parse_raw_table
from spam_serving import parsing, signs

KEPT_FILE = "kept.parquet"
#: what de-duplication and the parse metadata read from every part
KEY_COLUMNS = [
    "message_id", "group", "label", "sha256", "content_hash", "sent_at", "received_at",
    "parse_error", "defects", "truncated",
]  # fmt: skip


def parser_version() -> str:
    """Hash of the parser's source: parsed parts of another parser are parsed again."""
    digest = hashlib.sha256()
    for module in (parsing, signs):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ParsedCorpus:
    """The de-duplicated corpus: parsed part files and the ids kept across all of them."""

    parts: tuple[str, ...]
    kept: str
    n_kept: int

    def kept_ids(self) -> set[str]:
        return set(pq.read_table(self.kept, columns=["message_id"]).column(0).to_pylist())

    def iter_frames(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """Kept rows part by part (one part in memory)."""
        kept = self.kept_ids()
        read = columns
        if columns is not None and "message_id" not in columns:
            read = ["message_id", *columns]  # the filter needs it: one read per part
        for path in self.parts:
            df = pd.read_parquet(path, columns=read, engine="pyarrow")
            rows = df[df["message_id"].isin(kept).to_numpy()]
            yield rows if read is columns else rows[columns]

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """All kept rows as one frame sorted by message id: what ``parsed_messages`` was
        before it became a reference (the same rows, columns and types)."""
        frames = list(self.iter_frames(columns))
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
        if "message_id" in df.columns:
            df = df.sort_values("message_id", ignore_index=True)
        return df


def parsed_path(parsed_dir: Path, part: RawPart) -> Path:
    return parsed_dir / f"{part.id}.parquet"


def _is_current(path: Path, part: RawPart, version: str) -> bool:
    if not path.exists():
        return False
    meta = pq.read_schema(path).metadata or {}
    return (
        meta.get(b"raw_fingerprint") == part.fingerprint.encode()
        and meta.get(b"parser_version") == version.encode()
    )


def _parse_part(raw_path: str, out_path: str, fingerprint: str, version: str) -> int:
    """Worker: parse one raw part into one parsed part (atomic write)."""
    raw = pd.read_parquet(raw_path, engine="pyarrow")
    table = pa.Table.from_pandas(parse_raw_table(raw), preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), "raw_fingerprint": fingerprint, "parser_version": version}
    )
    write_atomic(Path(out_path), lambda p: pq.write_table(table, p))
    return len(raw)


def _parse_on_cluster(jobs: list[tuple[str, str, str, str]]) -> list[str]:
    """One Ray task per part on the connected cluster (every node must see the store's
    paths: the same volume, as the AKS step pods share theirs). Returns the node ids."""
    import ray

    @ray.remote(num_cpus=1, max_retries=2)
    def parse(job: tuple[str, str, str, str]) -> str:
        _parse_part(*job)
        return ray.get_runtime_context().get_node_id()

    return ray.get([parse.remote(job) for job in jobs])


def update_parts(
    raw_dir: Path,
    parts: list[RawPart],
    parsed_dir: Path,
    workers: int,
    ray_address: str | None = None,
) -> tuple[list[str], list[str], set[str]]:
    """Parse the raw parts whose parsed part is missing or stale, in ``workers`` local
    processes, or as Ray tasks on the cluster at ``ray_address``; remove parsed parts of
    raw parts that are gone. Returns (parsed now, reused) part ids and the Ray nodes that
    parsed (empty locally)."""
    version = parser_version()
    parsed_dir.mkdir(parents=True, exist_ok=True)
    todo = [p for p in parts if not _is_current(parsed_path(parsed_dir, p), p, version)]
    wanted = {parsed_path(parsed_dir, p).name for p in parts}
    for stale in parsed_dir.glob("*.parquet"):
        if stale.name not in wanted and stale.name != KEPT_FILE:
            stale.unlink()
    jobs = [
        (str(part_path(raw_dir, p.id)), str(parsed_path(parsed_dir, p)), p.fingerprint, version)
        for p in todo
    ]
    nodes: set[str] = set()
    if jobs and ray_address:
        from spam_assets.lib.ray_xgboost import connected

        with connected(ray_address):
            nodes = set(_parse_on_cluster(jobs))
    elif len(jobs) > 1 and workers > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            list(pool.map(_parse_part, *zip(*jobs, strict=True)))
    else:
        for job in jobs:
            _parse_part(*job)
    done = {p.id for p in todo}
    return [p.id for p in todo], [p.id for p in parts if p.id not in done], nodes


def deduplicated(parsed_dir: Path, parts: list[RawPart]) -> tuple[ParsedCorpus, dict]:
    """De-duplicate across all parts (key columns only); the kept ids are written beside
    the parts. Returns the corpus and the counts for the asset's metadata."""
    paths = [str(parsed_path(parsed_dir, p)) for p in parts]
    keys = pd.concat(
        [pd.read_parquet(p, columns=KEY_COLUMNS, engine="pyarrow") for p in paths],
        ignore_index=True,
    )
    kept, dups = deduplicate(keys)
    kept_path = parsed_dir / KEPT_FILE
    ids = pa.table({"message_id": pa.array(kept["message_id"], pa.string())})
    write_atomic(kept_path, lambda p: pq.write_table(ids, p))
    stats = {
        "n_input": len(keys),
        "n_kept": len(kept),
        **dups,
        "parse_errors": int(kept["parse_error"].notna().sum()),
        "with_mime_defects": int(kept["defects"].notna().sum()),
        "truncated": int(kept["truncated"].sum()),
        "per_group": kept.groupby("group").size().to_dict(),
    }
    return ParsedCorpus(tuple(paths), str(kept_path), len(kept)), stats
