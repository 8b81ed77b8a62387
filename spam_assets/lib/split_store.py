"""The split table as files: one Parquet per split, passed downstream by reference.

``dataset_splits`` used to be one frame of every kept message's parsed text (1.7 GB at
100,000 messages), built in memory and loaded whole by every reader. Now the split is chosen
on the key columns alone (ids, groups, labels, times, hashes: what the protocol in
``spam_assets.lib.splits`` reads), and the rows are streamed a parsed part at a time into one
Parquet file per split. Readers take the columns and splits they need (:meth:`SplitTable.read`)
or a split a batch at a time (:meth:`SplitTable.iter_frames`).

Row order: parts in the corpus's order, each part's rows by message id, then the feedback
rows; within a split, rows keep that order (what ``groupby("split")`` gave before). A corpus
in one part (the public one) has exactly the order of before.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spam_assets.lib.files import new_generation
from spam_assets.lib.parsed_store import ParsedCorpus
from spam_assets.lib.splits import SPLITS, assign_splits, merge_feedback

#: what the split protocol, feedback merging and the leakage check read
KEY_COLUMNS = ["message_id", "group", "label", "sha256", "content_hash", "sent_at", "received_at"]
#: materializations kept on disk (a run reading an older one still finds it)
KEEP = 3
#: rows per batch when a reader iterates a split
BATCH_ROWS = 10_000


@dataclass(frozen=True)
class SplitTable:
    """``dataset_splits``: a Parquet file per split and its row count."""

    root: str
    files: dict[str, str]
    counts: dict[str, int]

    def read(
        self, columns: list[str] | None = None, splits: tuple[str, ...] = SPLITS
    ) -> pd.DataFrame:
        """The rows of ``splits`` (in that order) with ``columns`` (all when None)."""
        frames = [
            pq.read_table(self.files[s], columns=columns).to_pandas()
            for s in splits
            if s in self.files
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    def iter_frames(
        self, split: str, columns: list[str] | None = None, batch_rows: int = BATCH_ROWS
    ) -> Iterator[pd.DataFrame]:
        """A split's rows ``batch_rows`` at a time, in order."""
        source = pq.ParquetFile(self.files[split])
        for batch in source.iter_batches(batch_size=batch_rows, columns=columns):
            yield batch.to_pandas()

    def take(self, split: str, positions: np.ndarray | slice) -> pd.DataFrame:
        """The rows at ``positions`` (sorted) of a split, read batch by batch."""
        if isinstance(positions, slice):
            return self.read(splits=(split,))
        wanted, start, out = np.asarray(positions), 0, []
        for frame in self.iter_frames(split):
            lo, hi = np.searchsorted(wanted, [start, start + len(frame)])
            if hi > lo:
                out.append(frame.iloc[wanted[lo:hi] - start])
            start += len(frame)
        if not out:
            return pq.read_schema(self.files[split]).empty_table().to_pandas()
        return pd.concat(out, ignore_index=True)

    def take_across(self, splits: tuple[str, ...], positions: np.ndarray | slice) -> pd.DataFrame:
        """Rows at ``positions`` of the splits read one after another (e.g. the training
        period: train, then validation)."""
        if isinstance(positions, slice):
            return self.read(splits=splits)
        wanted, start, out = np.asarray(positions), 0, []
        for split in splits:
            n = self.counts.get(split, 0)
            lo, hi = np.searchsorted(wanted, [start, start + n])
            if hi > lo:
                out.append(self.take(split, wanted[lo:hi] - start))
            start += n
        return pd.concat(out, ignore_index=True)

    def frames(
        self, splits: tuple[str, ...], batch_rows: int = BATCH_ROWS
    ) -> Iterator[pd.DataFrame]:
        """The splits' rows, one after another, ``batch_rows`` at a time."""
        for split in splits:
            if self.counts.get(split, 0):
                yield from self.iter_frames(split, batch_rows=batch_rows)


@dataclass
class SplitPlan:
    """Every row's split, chosen on the key columns before anything is written."""

    #: key columns and ``split`` of every row: corpus rows, then feedback rows
    assigned: pd.DataFrame
    provenance: dict
    split_of: dict[str, str]
    feedback_rows: pd.DataFrame | None


def plan_splits(
    corpus: ParsedCorpus, feedback: pd.DataFrame | None, validation_fraction: float
) -> SplitPlan:
    """The split protocol (``spam_assets.lib.splits``) on the corpus's key columns plus the
    labelled feedback (which replaces corpus rows of the same content)."""
    keys = corpus.read(KEY_COLUMNS)
    merged, provenance = merge_feedback(keys, feedback)
    assigned = assign_splits(merged, validation_fraction)
    n_corpus = len(merged) - provenance["feedback_rows"]  # merged: corpus rows, then feedback
    in_corpus = assigned.iloc[:n_corpus]
    fb_rows = None
    if provenance["feedback_rows"]:
        fb_rows = feedback.drop_duplicates("content_hash", keep="last").copy()
        for col in ("sent_at", "received_at"):  # as merge_feedback types them
            fb_rows[col] = pd.to_datetime(fb_rows[col], utc=True)
        fb_rows["split"] = assigned["split"].iloc[n_corpus:].to_numpy()
    split_of = dict(zip(in_corpus["message_id"], in_corpus["split"], strict=True))
    return SplitPlan(assigned, provenance, split_of, fb_rows)


def write_splits(base_dir: Path, corpus: ParsedCorpus, plan: SplitPlan) -> SplitTable:
    """The planned rows, a parsed part at a time, into a new directory of per-split files
    (renamed into place when complete; the oldest beyond :data:`KEEP` are removed)."""
    schema = _schema(corpus, plan.feedback_rows)
    counts = dict.fromkeys(SPLITS, 0)
    with new_generation(base_dir, KEEP) as (tmp, root):
        writers = {s: pq.ParquetWriter(tmp / f"{s}.parquet", schema) for s in SPLITS}
        try:
            for table in _corpus_tables(corpus, plan.split_of):
                _write(writers, counts, table, schema)
            if plan.feedback_rows is not None:
                fb = pa.Table.from_pandas(plan.feedback_rows, preserve_index=False)
                _write(writers, counts, fb, schema)
        finally:
            for writer in writers.values():
                writer.close()
    return SplitTable(str(root), {s: str(root / f"{s}.parquet") for s in SPLITS}, counts)


def table_of(df: pd.DataFrame, base_dir: Path) -> SplitTable:
    """A frame with a ``split`` column as a :class:`SplitTable` (tests, benchmarks)."""
    counts = {}
    with new_generation(base_dir, KEEP) as (tmp, root):
        for split in SPLITS:
            part = df[df["split"] == split]
            part.to_parquet(tmp / f"{split}.parquet", index=False)
            counts[split] = len(part)
    return SplitTable(str(root), {s: str(root / f"{s}.parquet") for s in SPLITS}, counts)


def _corpus_tables(corpus: ParsedCorpus, split_of: dict[str, str]) -> Iterator[pa.Table]:
    """Each parsed part's kept, not replaced rows by message id, with their split."""
    for path in corpus.parts:
        table = pq.read_table(path)
        ids = table.column("message_id").to_pylist()
        keep = np.array([i in split_of for i in ids], dtype=bool)
        table = table.filter(pa.array(keep))
        table = table.take(pc.sort_indices(table, sort_keys=[("message_id", "ascending")]))
        split = [split_of[i] for i in table.column("message_id").to_pylist()]
        yield table.append_column("split", pa.array(split, pa.string()))


def _schema(corpus: ParsedCorpus, feedback: pd.DataFrame | None) -> pa.Schema:
    """One schema for every part (a column all null in one part is typed by the others),
    plus ``split`` and, with feedback, its provenance columns."""
    schemas = [pq.read_schema(p).remove_metadata() for p in corpus.parts]
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    schema = schema.append(pa.field("split", pa.string()))
    if feedback is not None:
        fb = pa.Schema.from_pandas(feedback, preserve_index=False).remove_metadata()
        for field in fb:
            if schema.get_field_index(field.name) < 0:
                schema = schema.append(field)
    return schema


def _write(writers: dict, counts: dict, table: pa.Table, schema: pa.Schema) -> None:
    for name in schema.names:  # provenance columns the corpus rows do not have
        if name not in table.column_names:
            table = table.append_column(
                schema.field(name), pa.nulls(len(table), schema.field(name).type)
            )
    table = table.select(schema.names).cast(schema)
    for split, writer in writers.items():
        part = table.filter(pc.equal(table.column("split"), split))
        if len(part):
            writer.write_table(part)
            counts[split] += len(part)
