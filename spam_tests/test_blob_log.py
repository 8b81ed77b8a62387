"""The monitoring loop's data path on Azure Blob, against Azurite (a real emulator process):
serving writers ship the inference log in the hourly Parquet layout monitoring reads, no
reader ever sees a partial file, an outage of the storage loses nothing, the monitoring
assets read the log from Blob and skip a corrupt file with a named warning, and MLflow keeps
its artifacts on Blob (``wasbs://``)."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spam_serving.inference_log import FEEDBACK, PREDICTIONS, ParquetLogWriter, read_log
from spam_serving.log_store import BlobLogStore, hour_prefix
from spam_tests.helpers.azurite import ACCOUNT, running_azurite

HOUR = datetime(2026, 11, 25, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    with running_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


def _store(azurite, container: str) -> BlobLogStore:
    store = BlobLogStore(container, "inference_log", connection_string=azurite.connection_string)
    store.ensure_container()
    return store


def _row(i: int, ts: datetime = HOUR) -> dict:
    return {"ts": ts, "prediction_id": f"{i:032x}", "score": i / 100, "label": "ham"}


def test_writer_ships_hourly_parquet_to_blob(azurite, tmp_path):
    store = _store(azurite, "ship")
    writer = ParquetLogWriter(tmp_path, PREDICTIONS, flush_rows=10, flush_s=0.1, store=store)
    for i in range(25):
        assert writer.append(_row(i, HOUR + timedelta(minutes=59, seconds=58 + i // 10)))
    writer.close(timeout=60)
    assert writer.written_rows == 25 and writer.dropped_rows == 0
    keys = store.list(PREDICTIONS)
    assert keys and all(k.startswith(f"{PREDICTIONS}/date=2026-11-25/hour=") for k in keys)
    assert {k.split("/")[2] for k in keys} == {"hour=09", "hour=10"}
    table = read_log(store, PREDICTIONS)
    assert sorted(table.column("prediction_id").to_pylist()) == [f"{i:032x}" for i in range(25)]
    # the same layout, under the prefix, as the local log
    names = [b.name for b in store.container.list_blobs()]
    assert all(n.startswith("inference_log/predictions/date=") for n in names)
    assert not list((tmp_path / ".journal").glob("predictions-*"))  # nothing left behind


def test_uncommitted_blocks_are_invisible_to_readers(azurite):
    """A large upload is staged block by block and appears only at the commit: a reader
    listing the hour meanwhile sees the complete files, never the one being written."""
    store = _store(azurite, "atomic")
    store.put(hour_prefix(PREDICTIONS, HOUR) + "part-1-1-000001.parquet", _parquet([_row(1)]))
    blob = store.container.get_blob_client(
        "inference_log/" + hour_prefix(PREDICTIONS, HOUR) + "part-2-1-000001.parquet"
    )
    data = _parquet([_row(i) for i in range(2, 500)])
    blob.stage_block("YQ==", data[: len(data) // 2])
    assert read_log(store, PREDICTIONS, [HOUR]).num_rows == 1  # staged, not committed
    blob.stage_block("Yg==", data[len(data) // 2 :])
    blob.commit_block_list(["YQ==", "Yg=="])
    assert read_log(store, PREDICTIONS, [HOUR]).num_rows == 499


def test_a_storage_outage_loses_nothing(tmp_path):
    """Azurite stopped while the service logs: rows wait in the journal, the writer retries,
    and after the storage is back every row is there, once."""
    workdir = tmp_path / "azurite"
    with running_azurite(workdir) as server:
        port, conn = server.port, server.connection_string
        store = _store(server, "outage")
        writer = ParquetLogWriter(tmp_path, PREDICTIONS, flush_rows=5, flush_s=0.1, store=store)
        for i in range(5):
            writer.append(_row(i))
        _wait(lambda: writer.written_rows == 5)
    # the storage is gone; the service keeps answering and logging
    for i in range(5, 40):
        assert writer.append(_row(i))
    _wait(lambda: writer.failed_flushes >= 2, timeout=60)
    assert writer.written_rows == 5 and writer.waiting_rows == 35
    with running_azurite(workdir, port=port) as server:
        assert server.connection_string == conn
        writer.close(timeout=120)
        assert writer.dropped_rows == 0 and writer.written_rows == 40
        ids = read_log(store, PREDICTIONS).column("prediction_id").to_pylist()
    assert sorted(ids) == [f"{i:032x}" for i in range(40)]


def test_monitoring_assets_read_blob_and_skip_corrupt_files(
    azurite, spam_env, instance, monkeypatch
):
    """``inference_log`` and ``labelled_feedback`` under ``SPAM_LOG_BLOB_CONTAINER``: they read
    what the serving pods shipped, and a corrupt and a truncated file in the same hour are
    skipped and named in the metadata, not a failed run."""
    from spam_serving.inference_log import logged_message
    from spam_serving.parsing import ParsedMessage
    from spam_tests.helpers.pipeline import load_defs

    monkeypatch.setenv("SPAM_LOG_BLOB_CONTAINER", "monitoring")
    monkeypatch.setenv("SPAM_AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    store = _store(azurite, "monitoring")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    preds = ParquetLogWriter(spam_env / "journal", PREDICTIONS, flush_s=60, store=store)
    feedback = ParquetLogWriter(spam_env / "journal", FEEDBACK, flush_s=60, store=store)
    for i in range(6):
        msg = ParsedMessage(subject=f"message {i}", body="hello there", content_hash=f"h{i}")
        row = {**_row(i, hour), "model_version": "1", "latency_ms": 2.5}
        row["message"] = logged_message(msg)
        preds.append(row)
        if i < 3:
            feedback.append({"ts": hour, "prediction_id": row["prediction_id"], "label": "spam"})
    preds.close(timeout=60)
    feedback.close(timeout=60)
    good = _parquet([_row(99, hour)])
    store.put(hour_prefix(PREDICTIONS, hour) + "part-8-8-000001.parquet", b"not parquet")
    store.put(hour_prefix(PREDICTIONS, hour) + "part-9-9-000001.parquet", good[: len(good) // 2])

    defs = load_defs()
    result = defs.resolve_job_def("spam_monitoring").execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("inference_log")],
        partition_key=f"{hour:%Y-%m-%d-%H}:00",
        raise_on_error=False,
    )
    assert result.success
    meta = _metadata(result, "inference_log")
    assert meta["n_predictions"] == 6 and meta["n_feedback"] == 3
    assert meta["skipped_log_files"] == 2
    assert "part-8-8-000001.parquet" in meta["skipped_log_files_detail"]
    assert "part-9-9-000001.parquet" in meta["skipped_log_files_detail"]

    result = defs.resolve_job_def("spam_retrain").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("labelled_feedback")], raise_on_error=False
    )
    assert result.success
    meta = _metadata(result, "labelled_feedback")
    assert meta["rows"] == 3 and meta["spam"] == 3 and meta["skipped_log_files"] == 2


def test_retention_prunes_old_hours_on_blob(azurite):
    store = _store(azurite, "retention")
    for hour in (HOUR - timedelta(days=40), HOUR):
        store.put(hour_prefix(PREDICTIONS, hour) + "part-1-1-000001.parquet", b"x" * 10)
    store.put("predictions/README", b"not the layout: kept")
    assert store.prune(PREDICTIONS, HOUR - timedelta(days=1)) == (1, 10)
    assert [k.split("/")[1] for k in store.list(PREDICTIONS)] == ["date=2026-11-25"]
    names = [b.name for b in store.container.list_blobs()]
    assert "inference_log/predictions/README" in names


def test_mlflow_artifacts_on_blob(azurite, tmp_path, monkeypatch):
    """The azure target's artifact root (``wasbs://``) through MLflow's own Blob repository,
    pointed at Azurite by the connection string."""
    import mlflow

    from spam_assets.defs.resources import ensure_experiment

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    _store(azurite, "mlflow")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    root = f"wasbs://mlflow@{ACCOUNT}.blob.core.windows.net/artifacts"
    experiment = ensure_experiment(uri, "blob-test", root)
    client = mlflow.MlflowClient(uri)
    run = client.create_run(experiment)
    (tmp_path / "featurizer.json").write_text('{"vocabulary": ["win", "cash"]}')
    client.log_artifact(run.info.run_id, str(tmp_path / "featurizer.json"))
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith(root)
    back = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="featurizer.json",
        dst_path=str(tmp_path / "back"),
        tracking_uri=uri,
    )
    assert Path(back).read_text() == '{"vocabulary": ["win", "cash"]}'
    container = BlobLogStore("mlflow", connection_string=azurite.connection_string).container
    assert any(b.name.endswith("featurizer.json") for b in container.list_blobs())


def _parquet(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _metadata(result, asset: str) -> dict:
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            if mat.asset_key.path[-1] == asset:
                return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialization of {asset}")
