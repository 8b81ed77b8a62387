"""Append-only prediction and feedback logs as hourly-partitioned Parquet files.

Why this shape: the request path must never wait for disk, so requests only put a dict on a
bounded in-memory queue (dropping, and counting, when it is full) and one background thread
per worker writes. Every file is written to a hidden temporary name and renamed into place, so
a crash can lose at most the rows still in memory, never corrupt a file already written, and
readers (the monitoring assets) only ever see complete files. Paths are
``<root>/<stream>/date=YYYY-MM-DD/hour=HH/part-<time>-<pid>-<seq>.parquet``; the hour is the
partition key the ``inference_log`` asset reads.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from spam_serving.parsing import ParsedMessage

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions"
FEEDBACK = "feedback"


def logged_message(msg: ParsedMessage) -> str:
    """A parsed message as the ``message`` column of the predictions stream holds it (JSON of
    its record; retraining's ``labelled_examples`` reads it back)."""
    return json.dumps(msg.to_record(), default=str)


class ParquetLogWriter:
    """Non-blocking writer of one log stream (``predictions`` or ``feedback``)."""

    def __init__(
        self,
        root: Path,
        stream: str,
        flush_rows: int = 2000,
        flush_s: float = 5.0,
        max_queue: int = 100_000,
    ) -> None:
        self.root = Path(root)
        self.stream = stream
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self._queue: queue.Queue[dict | None] = queue.Queue(maxsize=max_queue)
        self._seq = 0
        self.written_rows = 0
        self.dropped_rows = 0
        self.files_written = 0
        self.failed_flushes = 0
        #: set once the writer thread has warmed pyarrow up (see :func:`_warm_up_parquet`)
        self.warmed_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"log-{stream}", daemon=True)
        self._thread.start()

    def append(self, record: dict) -> bool:
        """Queue one row; never raises and never blocks. ``False`` means it was dropped."""
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            self.dropped_rows += 1
            return False

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued and stop the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            logger.warning("inference log %s: queue full at close", self.stream)
        self._thread.join(timeout)

    def _run(self) -> None:
        _warm_up_parquet()
        self.warmed_up.set()
        buffer: list[dict] = []
        oldest = time.monotonic()
        while True:
            timeout = max(0.05, self.flush_s - (time.monotonic() - oldest)) if buffer else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = ...
            if item is None:
                self._flush(buffer)
                return
            if isinstance(item, dict):
                if not buffer:
                    oldest = time.monotonic()
                buffer.append(item)
            if buffer and (
                len(buffer) >= self.flush_rows or time.monotonic() - oldest >= self.flush_s
            ):
                self._flush(buffer)
                buffer = []

    def _flush(self, rows: list[dict]) -> None:
        if not rows:
            return
        by_hour: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for row in rows:
            ts = row.get("ts") or datetime.now(UTC)
            by_hour[(ts.strftime("%Y-%m-%d"), ts.strftime("%H"))].append(row)
        for (day, hour), part in by_hour.items():
            try:
                self._write(day, hour, part)
            except Exception:  # a failing disk must not take the service down
                self.failed_flushes += 1
                self.dropped_rows += len(part)
                logger.exception(
                    "inference log %s: could not write %d rows", self.stream, len(part)
                )

    def _write(self, day: str, hour: str, rows: list[dict]) -> None:
        directory = self.root / self.stream / f"date={day}" / f"hour={hour}"
        directory.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"part-{time.time_ns()}-{os.getpid()}-{self._seq:06d}.parquet"
        tmp = directory / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows), tmp, compression="zstd")
        os.replace(tmp, directory / name)
        self.written_rows += len(rows)
        self.files_written += 1


def _warm_up_parquet() -> None:
    """pyarrow's first conversion imports pandas (~1 s of CPU, measured). The writer thread
    does it as soon as it starts, so it is over before the first flush under load, and the
    service does not wait for it to report ready (it did: ~1.1 s of every cold start). Rows
    queued meanwhile simply wait; a failure here only means the first real write pays."""
    try:
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist([{"ts": datetime.now(UTC), "x": 1.0}]), sink)
    except Exception:
        logger.exception("inference log: Parquet warm-up failed")


def log_files(root: Path, stream: str, hours: Iterable[datetime] | None = None) -> list[Path]:
    """Complete Parquet files of a stream (optionally only the given UTC hours), oldest first."""
    base = Path(root) / stream
    if hours is None:
        files = base.glob("date=*/hour=*/part-*.parquet")
    else:
        files = (
            f
            for h in hours
            for f in (base / f"date={h:%Y-%m-%d}" / f"hour={h:%H}").glob("part-*.parquet")
        )
    return sorted(files, key=lambda p: p.name)


def read_log(
    root: Path,
    stream: str,
    hours: Iterable[datetime] | None = None,
    columns: Sequence[str] | None = None,
    prediction_ids: Collection[str] | None = None,
) -> pa.Table:
    """All rows of a stream as one table (schemas of different files are unified).

    ``columns`` reads only those (the ones a file lacks come back as nulls): a prediction row
    carries its parsed message (~6 KB), which monitoring never needs, and reading it for a
    day of traffic would cost gigabytes. ``prediction_ids`` keeps only those rows, file by
    file, so retraining holds the messages that have a label, not every message logged."""
    files = log_files(root, stream, hours)
    # a Python set: pyarrow's is_in rebuilds its hash table on every call (~200 ms per
    # file for a million ids), a set lookup per row costs ~0.2 us
    ids = None if prediction_ids is None else frozenset(prediction_ids)
    tables = []
    for f in files:
        mask = None
        if ids is not None:
            keys = pq.read_table(f, columns=["prediction_id"]).column("prediction_id")
            mask = [key in ids for key in keys.to_pylist()]
            if not any(mask):
                continue  # nothing wanted here: the other columns are never read
        if columns is None:
            table = pq.read_table(f)
        else:
            present = set(pq.read_schema(f).names)
            table = pq.read_table(f, columns=[c for c in columns if c in present])
        if mask is not None:
            table = table.filter(pa.array(mask, pa.bool_()))
        tables.append(table)
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="default")


def prune_log(root: Path, stream: str, before: datetime) -> tuple[int, int]:
    """Delete the stream's hour directories older than ``before``'s hour (and date directories
    left empty); returns (hours deleted, bytes freed). Only ``date=YYYY-MM-DD/hour=HH``
    directories are touched: anything else under the log stays."""
    cutoff = before.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = freed = 0
    base = Path(root) / stream
    if not base.is_dir():
        return 0, 0
    for date_dir in sorted(base.glob("date=*")):
        for hour_dir in sorted(date_dir.glob("hour=*")):
            try:
                start = datetime.strptime(
                    f"{date_dir.name[5:]} {hour_dir.name[5:]}", "%Y-%m-%d %H"
                ).replace(tzinfo=UTC)
            except ValueError:
                continue
            if not hour_dir.is_dir() or start >= cutoff:
                continue
            freed += sum(f.stat().st_size for f in hour_dir.rglob("*") if f.is_file())
            shutil.rmtree(hour_dir)
            hours += 1
        if date_dir.is_dir() and not any(date_dir.iterdir()):
            date_dir.rmdir()
    return hours, freed
