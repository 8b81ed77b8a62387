"""The prediction log: partitioned, never raising into the request path, and losing nothing
that was acknowledged: not to a killed worker, not to a disk that fails for a while."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from spam_serving.inference_log import ParquetLogWriter, log_files, logged_message, read_log


def _row(i: int, ts: datetime) -> dict:
    return {"ts": ts, "prediction_id": f"{i:032x}", "score": i / 100, "label": "ham"}


def test_rows_land_in_hourly_partitions(tmp_path):
    writer = ParquetLogWriter(tmp_path, "predictions", flush_rows=10, flush_s=0.2)
    t0 = datetime(2026, 11, 25, 9, 59, 58, tzinfo=UTC)
    for i in range(25):
        assert writer.append(_row(i, t0 + timedelta(seconds=i // 10)))
    writer.close()
    assert writer.written_rows == 25 and writer.dropped_rows == 0
    nine = log_files(tmp_path, "predictions", [t0])
    ten = log_files(tmp_path, "predictions", [t0 + timedelta(seconds=2)])
    assert nine and ten and all("hour=09" in str(f) for f in nine)
    assert all("hour=10" in str(f) for f in ten)
    table = read_log(tmp_path, "predictions")
    assert sorted(table.column("prediction_id").to_pylist()) == [f"{i:032x}" for i in range(25)]


def test_time_based_flush_without_close(tmp_path):
    writer = ParquetLogWriter(tmp_path, "feedback", flush_rows=1000, flush_s=0.2)
    writer.append(_row(1, datetime.now(UTC)))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not log_files(tmp_path, "feedback"):
        time.sleep(0.05)
    assert read_log(tmp_path, "feedback").num_rows == 1
    writer.close()


def test_a_broken_disk_never_raises_into_the_request_path(tmp_path):
    """Neither journal nor Parquet writable: rows wait in memory, and what is still there when
    the writer stops is counted as dropped (the metric's callback sees it too)."""
    root = tmp_path / "not-a-dir"
    root.write_text("a file where the log directory should be")
    counted = []
    writer = ParquetLogWriter(
        root, "predictions", flush_rows=5, flush_s=0.1, on_drop=counted.append
    )
    for i in range(12):
        assert writer.append(_row(i, datetime.now(UTC))) is True
    writer.close()
    assert writer.written_rows == 0 and writer.failed_flushes >= 1
    assert writer.dropped_rows == 12 and sum(counted) == 12


def test_an_unwritable_log_directory_loses_nothing(tmp_path):
    """The stream's directory replaced by a file for a while (the soak's fault): rows stay in
    the journal, the writer retries, and every row lands once the directory is back."""
    blocked = tmp_path / "predictions"
    blocked.write_text("not a directory")
    writer = ParquetLogWriter(tmp_path, "predictions", flush_rows=5, flush_s=0.05)
    for i in range(40):
        assert writer.append(_row(i, datetime.now(UTC)))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and writer.failed_flushes < 2:
        time.sleep(0.02)
    assert writer.failed_flushes >= 2 and writer.written_rows == 0 and writer.waiting_rows == 40
    blocked.unlink()
    writer.close(timeout=60)
    assert writer.dropped_rows == 0
    ids = read_log(tmp_path, "predictions").column("prediction_id").to_pylist()
    assert sorted(ids) == [f"{i:032x}" for i in range(40)]
    assert not list((tmp_path / ".journal").glob("predictions-*"))


def test_a_failed_warm_up_keeps_the_writer_alive(tmp_path, monkeypatch):
    """The Parquet warm-up runs in the writer thread (not on the service's start-up path): if
    it fails, the thread goes on and later rows are still written."""
    import spam_serving.inference_log as inference_log

    real_write = inference_log.pq.write_table
    calls = []

    def write_table(table, where, **kwargs):
        calls.append(where)
        if len(calls) == 1:
            raise OSError("simulated warm-up failure")
        return real_write(table, where, **kwargs)

    monkeypatch.setattr(inference_log.pq, "write_table", write_table)
    writer = ParquetLogWriter(tmp_path, "predictions", flush_rows=3, flush_s=0.1)
    for i in range(3):
        assert writer.append(_row(i, datetime.now(UTC)))
    writer.close()
    assert writer.alive is False and writer.failed_flushes == 0
    assert writer.written_rows == 3 and read_log(tmp_path, "predictions").num_rows == 3
    assert not isinstance(calls[0], (str, Path))  # the first call was the in-memory warm-up


def test_full_queue_drops_instead_of_blocking(tmp_path):
    writer = ParquetLogWriter(tmp_path, "predictions", flush_rows=10_000, flush_s=60, max_queue=3)
    results = [writer.append(_row(i, datetime.now(UTC))) for i in range(200)]
    assert results.count(False) > 0 and writer.dropped_rows == results.count(False)
    writer.close()
    assert writer.written_rows + writer.dropped_rows == 200


def test_sigkill_loses_no_acknowledged_row(tmp_path):
    """A worker killed mid-stream: every visible file is complete, and the next writer on the
    same log adopts the dead worker's journals, so every row whose ``append`` returned is in
    the log, once (the child reports how many returned before it was killed)."""
    progress = tmp_path / "acknowledged"
    script = textwrap.dedent(
        f"""
        import os, time
        from datetime import UTC, datetime
        from spam_serving.inference_log import ParquetLogWriter
        w = ParquetLogWriter({str(tmp_path)!r}, "predictions", flush_rows=200, flush_s=0.05)
        fd = os.open({str(progress)!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        i = 0
        while True:
            row = {{"ts": datetime.now(UTC), "prediction_id": str(i), "text": "x" * 2000}}
            assert w.append(row)
            i += 1
            os.pwrite(fd, b"%012d" % i, 0)
            if i % 200 == 0:
                time.sleep(0.001)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    journals = tmp_path / ".journal"
    while time.monotonic() < deadline and (
        len(log_files(tmp_path, "predictions")) < 5 or not list(journals.glob("predictions-*"))
    ):  # killed while rows wait in a journal (between a flush and the next row, none does)
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    acknowledged = int(progress.read_bytes() or b"0")
    files = log_files(tmp_path, "predictions")
    assert len(files) >= 5
    for f in files:  # every visible file is a complete Parquet file
        assert pq.read_metadata(f).num_rows > 0
    assert list((tmp_path / ".journal").glob("predictions-*"))  # the dead worker's rows

    heir = ParquetLogWriter(tmp_path, "predictions", flush_rows=200, flush_s=0.05)
    heir.close(timeout=60)
    assert heir.recovered_rows > 0 and heir.dropped_rows == 0
    ids = [int(x) for x in read_log(tmp_path, "predictions").column("prediction_id").to_pylist()]
    assert len(ids) == len(set(ids)), "a row was written twice"
    assert set(range(acknowledged)) <= set(ids), "an acknowledged row was lost"
    assert not list((tmp_path / ".journal").glob("predictions-*"))
    hidden = [p for p in Path(tmp_path).rglob("*") if p.name.startswith(".")]
    assert all(p not in log_files(tmp_path, "predictions") for p in hidden)


def test_a_journal_written_twice_replaces_instead_of_duplicating(tmp_path):
    """An heir killed after writing an adopted journal's Parquet but before deleting it: the
    next heir writes it again under the same name, so the rows are in the log once; a torn
    tail (the row being appended when the writer died) is skipped."""
    import pickle
    import struct

    frames = b""
    for i in range(10):
        blob = pickle.dumps(_row(i, datetime(2026, 11, 25, 9, tzinfo=UTC)))
        frames += struct.pack("<I", len(blob)) + blob
    journal = tmp_path / ".journal" / "predictions-1764061200000000000-999999999_1-000001.sealed"
    journal.parent.mkdir()
    for _ in range(2):
        journal.write_bytes(frames + b"\x05\x00")
        heir = ParquetLogWriter(tmp_path, "predictions", flush_rows=1000, flush_s=60)
        heir.close()
        assert heir.recovered_rows == 10 and not journal.exists()
        assert read_log(tmp_path, "predictions").num_rows == 10
    assert [f.name for f in log_files(tmp_path, "predictions")] == [
        "part-1764061200000000000-999999999-000001.parquet"
    ]


def test_monitoring_reads_only_the_columns_it_needs(tmp_path, monkeypatch):
    """Drift and consolidation never load the logged messages (~6 KB a row); retraining
    does; a part written before a column existed reads as nulls in it."""
    from spam_assets.lib import monitoring

    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    writer = ParquetLogWriter(tmp_path, "predictions", flush_rows=2, flush_s=60)
    writer.append({**_row(0, t0), "message": '{"subject": "old part"}'})
    writer.append({**_row(1, t0), "message": '{"subject": "old part"}'})
    writer.close()
    writer = ParquetLogWriter(tmp_path, "predictions", flush_rows=1, flush_s=60)
    writer.append({**_row(2, t0), "sender_domain": "example.org", "message": '{"x": 1}'})
    writer.close()

    requested: list = []
    real_read = pq.read_table

    def spy(path, *args, **kwargs):
        requested.append(kwargs.get("columns"))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    preds = monitoring.read_predictions(tmp_path, [t0])
    assert len(preds) == 3 and "message" not in preds.columns
    assert requested and all(cols is not None and "message" not in cols for cols in requested)
    assert sorted(preds["sender_domain"].fillna("-")) == ["-", "-", "example.org"]
    requested.clear()
    with_messages = monitoring.read_predictions(tmp_path, [t0], with_messages=True)
    assert with_messages["message"].notna().all()
    assert all("message" in cols for cols in requested)


def test_retraining_reads_the_messages_of_labelled_predictions_only(tmp_path, monkeypatch):
    from spam_assets.lib.monitoring import labelled_examples
    from spam_serving.parsing import ParsedMessage

    now = datetime.now(UTC)
    writer = ParquetLogWriter(tmp_path, "predictions", flush_rows=100, flush_s=60)
    for i in range(5):
        msg = ParsedMessage(subject=f"message {i}", body="hello", content_hash=f"h{i}")
        writer.append(
            {
                **_row(i, now),
                "model_version": "1",
                "message": logged_message(msg),
            }
        )
    writer.close()
    # a second part with no labelled prediction in it
    writer = ParquetLogWriter(tmp_path, "predictions", flush_rows=100, flush_s=60)
    writer.append({**_row(7, now), "model_version": "1", "message": '{"subject": "x"}'})
    writer.close()
    feedback = ParquetLogWriter(tmp_path, "feedback", flush_rows=100, flush_s=60)
    for i, label, dt in ((1, "ham", 0), (3, "ham", 0), (3, "spam", 1)):  # 3 corrected later
        feedback.append(
            {"ts": now + timedelta(seconds=dt), "prediction_id": f"{i:032x}", "label": label}
        )
    feedback.close()

    kept = read_log(tmp_path, "predictions", prediction_ids={f"{3:032x}", "unknown"})
    assert kept.column("prediction_id").to_pylist() == [f"{3:032x}"]
    assert read_log(tmp_path, "predictions", prediction_ids=set()).num_rows == 0

    reads: list = []
    real_read = pq.read_table

    def spy(path, *args, **kwargs):
        reads.append((Path(path).name, kwargs.get("columns")))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    df = labelled_examples(tmp_path, now - timedelta(hours=1))
    messages_read = {name for name, cols in reads if cols and "message" in cols}
    ids_read = {name for name, cols in reads if cols == ["prediction_id"]}
    assert len(ids_read) == 2 and len(messages_read) == 1  # the unlabelled part: ids only
    assert df["subject"].tolist() == ["message 1", "message 3"]
    assert df["label"].tolist() == [0, 1]  # the latest label of prediction 3
    assert df["served_model_version"].tolist() == ["1", "1"]
