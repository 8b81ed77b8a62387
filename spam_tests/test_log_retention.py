"""Retention of the raw inference log (``spam_log_retention``): old hours go, recent hours,
consolidated partitions and anything not in the log's layout stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from spam_serving.inference_log import ParquetLogWriter, log_files, prune_log
from spam_serving.settings import get_settings


def _hour_dir(root: Path, stream: str, hour: datetime, size: int = 100) -> Path:
    d = root / stream / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
    d.mkdir(parents=True)
    (d / "part-0.parquet").write_bytes(b"x" * size)
    return d


def test_prune_deletes_whole_hours_before_the_cutoff_only(tmp_path):
    cutoff = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    old = [
        _hour_dir(tmp_path, "predictions", datetime(2026, 11, 19, h, tzinfo=UTC)) for h in (0, 23)
    ]
    edge = _hour_dir(tmp_path, "predictions", datetime(2026, 11, 20, 9, tzinfo=UTC), 50)
    kept = [
        _hour_dir(tmp_path, "predictions", datetime(2026, 11, 20, h, tzinfo=UTC)) for h in (10, 11)
    ]
    odd = tmp_path / "predictions" / "date=notes" / "hour=xx"  # not the log's layout
    odd.mkdir(parents=True)
    stray = tmp_path / "predictions" / "README"
    stray.write_text("kept")

    assert prune_log(tmp_path, "predictions", cutoff) == (3, 250)
    assert not any(d.exists() for d in [*old, edge])
    assert not (tmp_path / "predictions" / "date=2026-11-19").exists()  # emptied date dir
    assert all(d.is_dir() for d in kept) and odd.is_dir() and stray.is_file()
    assert prune_log(tmp_path, "predictions", cutoff) == (0, 0)  # idempotent
    assert prune_log(tmp_path, "feedback", cutoff) == (0, 0)  # no stream yet


def test_retention_shorter_than_its_readers_is_refused(monkeypatch):
    monkeypatch.setenv("SPAM_FEEDBACK_LOOKBACK_HOURS", "48")
    monkeypatch.setenv("SPAM_LOG_RETENTION_HOURS", "24")
    with pytest.raises(ValidationError, match=r"SPAM_LOG_RETENTION_HOURS=24.*LOOKBACK_HOURS=48"):
        get_settings()
    monkeypatch.setenv("SPAM_LOG_RETENTION_HOURS", "48")
    assert get_settings().log_retention_hours == 48


def test_the_daily_job_prunes_the_service_log(spam_env, instance, monkeypatch):
    from spam_tests.helpers.pipeline import load_defs

    monkeypatch.setenv("SPAM_LOG_RETENTION_HOURS", str(24 * 31))
    settings = get_settings()
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(hours=2)
    for stream in ("predictions", "feedback"):
        writer = ParquetLogWriter(settings.inference_log_dir, stream, flush_rows=1, flush_s=60)
        for i, ts in enumerate((old, recent)):
            writer.append({"ts": ts, "prediction_id": f"{i:032x}", "label": "ham"})
        writer.close()

    defs = load_defs()
    assert defs.get_schedule_def("log_retention_schedule").job_name == "spam_log_retention"
    result = defs.get_job_def("spam_log_retention").execute_in_process(instance=instance)
    assert result.success
    (output,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: v.value for k, v in output.step_output_data.metadata.items()}
    assert metadata["predictions_hours_deleted"] == 1 and metadata["feedback_hours_deleted"] == 1
    for stream in ("predictions", "feedback"):
        assert not log_files(settings.inference_log_dir, stream, [old])
        assert log_files(settings.inference_log_dir, stream, [recent])
