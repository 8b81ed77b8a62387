"""Append-only prediction and feedback logs as hourly-partitioned Parquet files.

Why this shape: a prediction that was answered must be in the log, or counted as dropped,
whatever happens to the worker or its disk (docs/decisions/inference-log-journal.md). So a
request appends its row to a per-worker journal file (one ``write`` of a length-prefixed
pickle, ~10 us, no ``fsync``: the page cache survives a killed process) before it is
answered, and one background thread per worker turns sealed journals into Parquet. A journal
is deleted only once its rows are in Parquet files; a failed write (disk full, directory
gone) keeps it and retries, and a worker that starts adopts the journals of dead workers.
Parquet files are written to a hidden temporary name and renamed into place under a name
derived from the journal, so a retry replaces instead of duplicating and readers (the
monitoring assets) only ever see complete files. If even the journal cannot be written the
row waits in memory (bounded by ``max_queue``), and what cannot be kept is counted as dropped.
Paths are ``<root>/<stream>/date=YYYY-MM-DD/hour=HH/part-<time>-<pid>-<seq>.parquet``; the
hour is the partition key the ``inference_log`` asset reads; journals live in
``<root>/.journal/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from spam_serving.log_store import LocalLogStore, LogStore

if TYPE_CHECKING:
    from spam_serving.parsing import ParsedMessage

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
#: ``label`` of a prediction row whose model failed (a canary pod's errors; see predictor)
ERROR_LABEL = "error"
JOURNAL_DIR = ".journal"
_FRAME = struct.Struct("<I")
_RETRY_MAX_S = 30.0


def logged_message(msg: ParsedMessage) -> str:
    """A parsed message as the ``message`` column of the predictions stream holds it (JSON of
    its record; retraining's ``labelled_examples`` reads it back)."""
    return json.dumps(msg.to_record(), default=str)


def _owner() -> str:
    """This process as journal names spell it: pid and start time (ms), so a pid reused after
    a restart (pods start their workers at the same pids) is not mistaken for the writer."""
    return f"{os.getpid()}_{int(psutil.Process().create_time() * 1000)}"


def _owner_alive(owner: str) -> bool:
    pid, _, started = owner.partition("_")
    try:
        return int(psutil.Process(int(pid)).create_time() * 1000) == int(started)
    except (psutil.Error, ValueError):
        return False


def read_journal(path: Path) -> tuple[list[dict], int]:
    """The complete rows of a journal and the bytes of a torn tail (a frame cut by a crash or
    a failed write; its row was never acknowledged, see :meth:`ParquetLogWriter.append`)."""
    data = path.read_bytes()
    rows, pos = [], 0
    while pos + _FRAME.size <= len(data):
        (n,) = _FRAME.unpack_from(data, pos)
        if pos + _FRAME.size + n > len(data):
            break
        rows.append(pickle.loads(data[pos + _FRAME.size : pos + _FRAME.size + n]))
        pos += _FRAME.size + n
    return rows, len(data) - pos


class ParquetLogWriter:
    """Writer of one log stream (``predictions`` or ``feedback``): journal, then Parquet."""

    def __init__(
        self,
        root: Path,
        stream: str,
        flush_rows: int = 2000,
        flush_s: float = 5.0,
        max_queue: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
        store: LogStore | None = None,
    ) -> None:
        self.root = Path(root)
        self.store: LogStore = store if store is not None else LocalLogStore(self.root)
        self.stream = stream
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.max_queue = max_queue
        self.on_drop = on_drop
        self.journal_dir = self.root / JOURNAL_DIR
        self._owner = _owner()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._active: Path | None = None
        self._journals = 0
        self._pending = 0  # rows in the open journal
        self._backlog = 0  # rows in sealed journals not yet in Parquet
        self._memory: list[dict] = []  # rows the journal could not take
        self._sealed: list[Path] = []
        self._wake = threading.Event()
        self._stopping = False
        self._seq = 0
        self.written_rows = 0
        self.dropped_rows = 0
        self.files_written = 0
        self.failed_flushes = 0
        self.recovered_rows = 0
        #: set once the writer thread has warmed pyarrow up (see :func:`_warm_up_parquet`)
        self.warmed_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"log-{stream}", daemon=True)
        self._thread.start()

    def append(self, record: dict) -> bool:
        """Journal one row; never raises. ``True``: the row is on its way to Parquet (in the
        journal, or in memory when the journal cannot be written). ``False``: dropped (more
        than ``max_queue`` rows waiting), and the caller counts it."""
        frame = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _FRAME.pack(len(frame)) + frame
        with self._lock:
            if self._pending + self._backlog + len(self._memory) >= self.max_queue:
                self.dropped_rows += 1
                return False
            try:
                if self._fd is None:
                    self._open_journal()
                if os.write(self._fd, frame) != len(frame):
                    raise OSError("short write to the journal")
                self._pending += 1
            except OSError:
                # a torn frame ends this journal: what follows goes to a new one
                self._seal_locked()
                self._memory.append(record)
            if self._pending >= self.flush_rows:
                self._wake.set()
        return True

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def waiting_rows(self) -> int:
        """Rows appended but not yet in Parquet (journal and memory)."""
        with self._lock:
            return self._pending + self._backlog + len(self._memory)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is journaled and stop the thread. Rows that cannot be written stay in
        their journal for the next writer; only rows held in memory are lost (and counted)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _open_journal(self) -> None:
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self._journals += 1
        name = f"{self.stream}-{time.time_ns()}-{self._owner}-{self._journals:06d}.open"
        self._active = self.journal_dir / name
        self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _seal_locked(self) -> None:
        """Close the open journal and queue it for Parquet (caller holds the lock)."""
        if self._fd is None:
            return
        fd, active, self._fd, self._active = self._fd, self._active, None, None
        with contextlib.suppress(OSError):
            os.close(fd)
        sealed = active.with_suffix(".sealed")
        try:
            os.replace(active, sealed)
        except OSError:
            sealed = active  # still readable under its open name
        self._sealed.append(sealed)
        self._backlog += self._pending
        self._pending = 0

    def _run(self) -> None:
        _warm_up_parquet()
        self.warmed_up.set()
        self._adopt_orphans()
        delay = self.flush_s
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            stopping = self._stopping
            with self._lock:
                self._seal_locked()
                memory, self._memory = self._memory, []
            ok = self._write_sealed() and self._write_memory(memory)
            delay = self.flush_s if ok else min(_RETRY_MAX_S, max(self.flush_s, 2 * delay))
            if stopping:
                with self._lock:
                    lost, self._memory = len(self._memory), []
                self._drop(lost)
                return

    def _drop(self, n: int) -> None:
        if n:
            self.dropped_rows += n
            if self.on_drop is not None:
                self.on_drop(n)

    def _adopt_orphans(self) -> None:
        """Journals of this stream whose writer is gone (killed, or a previous pod): claimed
        by rename, so two starting workers never write the same one twice."""
        try:
            candidates = sorted(self.journal_dir.glob(f"{self.stream}-*"))
        except OSError:
            return
        for path in candidates:
            if len(_journal_fields(path)) != 4:
                continue
            owner = _journal_owner(path)
            if owner is None or owner == self._owner or _owner_alive(owner):
                continue
            claimed = path.with_name(f"{path.name}.adopted-{self._owner}")
            try:
                os.replace(path, claimed)
            except OSError:
                continue  # another worker claimed it first
            with self._lock:
                self._sealed.append(claimed)
            logger.info("inference log %s: adopted journal %s", self.stream, path.name)

    def _write_sealed(self) -> bool:
        """Sealed journals -> Parquet, oldest first; ``False`` at the first that fails."""
        while True:
            with self._lock:
                if not self._sealed:
                    return True
                path = self._sealed[0]
            try:
                rows, torn = read_journal(path)
            except FileNotFoundError:
                rows, torn = [], 0
            except OSError:
                self.failed_flushes += 1
                return False
            if torn:
                logger.warning(
                    "inference log %s: %d bytes of a torn row at the end of %s",
                    self.stream,
                    torn,
                    path.name,
                )
            own = ".adopted-" not in path.name
            try:
                files = _parquet_files(rows, self.stream, _parquet_stem(path))
            except Exception:  # rows Arrow cannot convert: set aside, never retried forever
                bad = self.journal_dir / "bad"
                bad.mkdir(exist_ok=True)
                os.replace(path, bad / path.name)
                self._drop(len(rows))
                logger.exception("inference log %s: unwritable rows in %s", self.stream, path.name)
            else:
                if not self._put(files, path.name):
                    return False
                path.unlink(missing_ok=True)
                if not own:
                    self.recovered_rows += len(rows)
            with self._lock:
                self._sealed.pop(0)
                if own:
                    self._backlog -= len(rows)

    def _write_memory(self, rows: list[dict]) -> bool:
        if not rows:
            return True
        self._seq += 1
        stem = f"part-{time.time_ns()}-{os.getpid()}-m{self._seq:06d}"
        try:
            files = _parquet_files(rows, self.stream, stem)
        except Exception:
            logger.exception("inference log %s: unwritable rows held in memory", self.stream)
            self._drop(len(rows))
            return True
        if self._put(files, "rows held in memory"):
            return True
        with self._lock:
            self._memory[:0] = rows
        return False

    def _put(self, files: list[tuple[str, bytes, int]], what: str) -> bool:
        """Store every file of one journal; ``False`` (and a retry later) if one fails. Any
        error of the store counts: a full disk, a directory gone, Blob unreachable."""
        try:
            for key, data, _ in files:
                self.store.put(key, data)
        except Exception:
            self.failed_flushes += 1
            logger.exception("inference log %s: could not store %s", self.stream, what)
            return False
        self.written_rows += sum(n for _, _, n in files)
        self.files_written += len(files)
        return True


def _parquet_files(rows: list[dict], stream: str, stem: str) -> list[tuple[str, bytes, int]]:
    """``(key, Parquet bytes, rows)`` per UTC hour of the rows, each named ``stem``: writing
    the same rows again replaces the same files."""
    by_hour: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        ts = row.get("ts") or datetime.now(UTC)
        by_hour[(ts.strftime("%Y-%m-%d"), ts.strftime("%H"))].append(row)
    out = []
    for (day, hour), part in by_hour.items():
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(part), sink, compression="zstd")
        key = f"{stream}/date={day}/hour={hour}/{stem}.parquet"
        out.append((key, sink.getvalue().to_pybytes(), len(part)))
    return out


def _journal_fields(path: Path) -> list[str]:
    """``[stream, open time ns, owner, seq]`` of a journal named
    ``<stream>-<ns>-<pid>_<start ms>-<seq>.(open|sealed)[.adopted-<owner>]``."""
    return path.name.split(".", 1)[0].split("-")


def _journal_owner(path: Path) -> str | None:
    """Who is responsible for a journal: its adopter if it was adopted, else its writer."""
    if ".adopted-" in path.name:
        return path.name.rsplit(".adopted-", 1)[1]
    bits = _journal_fields(path)
    return bits[2] if len(bits) == 4 else None


def _parquet_stem(path: Path) -> str:
    """The Parquet name of a journal's rows, ``part-<open ns>-<pid>-<seq>``: the same across
    sealing, retries and adoption, so writing a journal twice replaces, never duplicates."""
    _, stamp, owner, seq = _journal_fields(path)
    return f"part-{stamp}-{owner.partition('_')[0]}-{seq}"


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


def as_store(where: Path | str | LogStore) -> LogStore:
    """A store from a directory (the local log) or a store itself."""
    return LocalLogStore(Path(where)) if isinstance(where, (str, os.PathLike)) else where


def log_files(root: Path, stream: str, hours: Iterable[datetime] | None = None) -> list[Path]:
    """Complete Parquet files of a local stream (optionally only the given UTC hours), oldest
    first."""
    return [Path(root) / key for key in LocalLogStore(Path(root)).list(stream, hours)]


def read_log(
    where: Path | LogStore,
    stream: str,
    hours: Iterable[datetime] | None = None,
    columns: Sequence[str] | None = None,
    prediction_ids: Collection[str] | None = None,
    problems: list[str] | None = None,
) -> pa.Table:
    """All rows of a stream as one table (schemas of different files are unified).

    ``columns`` reads only those (the ones a file lacks come back as nulls): a prediction row
    carries its parsed message (~6 KB), which monitoring never needs, and reading it for a
    day of traffic would cost gigabytes. ``prediction_ids`` keeps only those rows, file by
    file, so retraining holds the messages that have a label, not every message logged.
    A file that cannot be read (corrupt, or cut by a copy outside the writer) is skipped and
    named in ``problems``: one bad file never fails a drift run."""
    store = as_store(where)
    # a Python set: pyarrow's is_in rebuilds its hash table on every call (~200 ms per
    # file for a million ids), a set lookup per row costs ~0.2 us
    ids = None if prediction_ids is None else frozenset(prediction_ids)
    tables = []
    for key in store.list(stream, hours):
        try:
            table = _read_file(store, key, columns, ids)
        except Exception as exc:
            if problems is not None:
                problems.append(f"{key}: {type(exc).__name__}: {str(exc)[:120]}")
            logger.warning("inference log: skipped unreadable %s (%s)", key, exc)
            continue
        if table is not None:
            tables.append(table)
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="default")


def _read_file(
    store: LogStore, key: str, columns: Sequence[str] | None, ids: frozenset | None
) -> pa.Table | None:
    """One file's wanted rows and columns (``None``: no wanted row). Local files are read
    column by column from disk; a blob is downloaded once."""
    source = store.source(key)
    mask = None
    if ids is not None:
        keys = pq.read_table(source, columns=["prediction_id"]).column("prediction_id")
        mask = [key in ids for key in keys.to_pylist()]
        if not any(mask):
            return None  # nothing wanted here: the other columns are never read
    if columns is None:
        table = pq.read_table(source)
    else:
        present = set(pq.read_schema(source).names)
        table = pq.read_table(source, columns=[c for c in columns if c in present])
    if mask is not None:
        table = table.filter(pa.array(mask, pa.bool_()))
    return table


def prune_log(where: Path | LogStore, stream: str, before: datetime) -> tuple[int, int]:
    """Delete the stream's hour partitions older than ``before``'s hour; returns (hours
    deleted, bytes freed). Only ``date=YYYY-MM-DD/hour=HH`` partitions are touched: anything
    else under the log stays."""
    return as_store(where).prune(stream, before)
