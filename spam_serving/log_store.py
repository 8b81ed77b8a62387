"""Where the inference log's Parquet files live: a local directory, or an Azure Blob container.

Why an interface of four calls: the writer (serving pods) and the readers (the monitoring
assets, log retention) only need to put a whole file, list a stream's files by hour, open
one for pyarrow, and delete old hours. Both stores give the guarantee the readers rely on,
that a file is either absent or complete: locally a hidden temporary name renamed into
place, on Blob a single upload (Put Blob, or Put Block List for large files: staged blocks
are invisible until the commit). Blob is what AKS uses (``SPAM_LOG_BLOB_CONTAINER``; ADLS
Gen2 accounts serve the same Blob API); tests run it against Azurite, Microsoft's storage
emulator.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from spam_serving.settings import SpamSettings


class LogStore(Protocol):
    """A flat namespace of ``<stream>/date=YYYY-MM-DD/hour=HH/<name>`` keys."""

    def put(self, key: str, data: bytes) -> None:
        """Write one complete file; a reader never sees part of it."""

    def list(self, stream: str, hours: Iterable[datetime] | None = None) -> list[str]:
        """Keys of a stream's Parquet files (optionally only those hours), oldest first."""

    def source(self, key: str) -> str | pa.BufferReader:
        """What pyarrow reads the file from: a local path (so column subsets are read from
        disk), or the downloaded bytes."""

    def prune(self, stream: str, before: datetime) -> tuple[int, int]:
        """Delete the stream's hours older than ``before``'s hour: (hours, bytes freed)."""


def hour_prefix(stream: str, hour: datetime) -> str:
    return f"{stream}/date={hour:%Y-%m-%d}/hour={hour:%H}/"


def _hour_of(key: str) -> datetime | None:
    """The UTC hour a ``<stream>/date=.../hour=.../`` key belongs to, ``None`` if it is not
    one (anything else under the log is never touched)."""
    parts = key.split("/")
    if len(parts) < 3 or not parts[1].startswith("date=") or not parts[2].startswith("hour="):
        return None
    try:
        return datetime.strptime(f"{parts[1][5:]} {parts[2][5:]}", "%Y-%m-%d %H").replace(
            tzinfo=UTC
        )
    except ValueError:
        return None


def _sort_key(key: str) -> str:
    return key.rsplit("/", 1)[-1]


class LocalLogStore:
    """Files under a directory (``SPAM_HOME/inference_log`` by default)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalLogStore({str(self.root)!r})"

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def list(self, stream: str, hours: Iterable[datetime] | None = None) -> list[str]:
        base = self.root / stream
        if hours is None:
            files = base.glob("date=*/hour=*/part-*.parquet")
        else:
            files = (
                f
                for h in hours
                for f in (base / f"date={h:%Y-%m-%d}" / f"hour={h:%H}").glob("part-*.parquet")
            )
        return sorted((f.relative_to(self.root).as_posix() for f in files), key=_sort_key)

    def source(self, key: str) -> str:
        return str(self.root / key)

    def prune(self, stream: str, before: datetime) -> tuple[int, int]:
        cutoff = before.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        hours = freed = 0
        base = self.root / stream
        if not base.is_dir():
            return 0, 0
        for date_dir in sorted(base.glob("date=*")):
            for hour_dir in sorted(date_dir.glob("hour=*")):
                start = _hour_of(f"{stream}/{date_dir.name}/{hour_dir.name}")
                if start is None or not hour_dir.is_dir() or start >= cutoff:
                    continue
                freed += sum(f.stat().st_size for f in hour_dir.rglob("*") if f.is_file())
                shutil.rmtree(hour_dir)
                hours += 1
            if date_dir.is_dir() and not any(date_dir.iterdir()):
                date_dir.rmdir()
        return hours, freed


class BlobLogStore:
    """Blobs in one container under a prefix: the serving pods' log on AKS.

    Credentials: a connection string when given (Azurite, or an account key), else the pod's
    workload identity (``DefaultAzureCredential``) on ``https://<account>.blob.core.windows.net``.
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
    ) -> None:
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        # few, quick retries: the log writer retries a failed file itself (its journal keeps
        # the rows), and the SDK's default (10 retries, backoff to minutes) would hold the
        # writer thread for many flush intervals on an outage
        client_options = {
            "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2),
            "connection_timeout": 5,
        }
        if connection_string:
            service = BlobServiceClient.from_connection_string(connection_string, **client_options)
        elif account_url:
            from azure.identity import DefaultAzureCredential

            service = BlobServiceClient(
                account_url, credential=DefaultAzureCredential(), **client_options
            )
        else:
            raise ValueError("BlobLogStore needs a connection string or an account URL")
        self.container = service.get_container_client(container)
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def __repr__(self) -> str:
        return f"BlobLogStore({self.container.container_name!r}, {self.prefix!r})"

    def ensure_container(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.container.create_container()

    def put(self, key: str, data: bytes) -> None:
        self.container.upload_blob(self.prefix + key, data, overwrite=True)

    def list(self, stream: str, hours: Iterable[datetime] | None = None) -> list[str]:
        prefixes = [stream + "/"] if hours is None else [hour_prefix(stream, h) for h in hours]
        keys = []
        for p in prefixes:
            for blob in self.container.list_blobs(name_starts_with=self.prefix + p):
                key = blob.name[len(self.prefix) :]
                name = key.rsplit("/", 1)[-1]
                if name.startswith("part-") and name.endswith(".parquet") and _hour_of(key):
                    keys.append(key)
        return sorted(keys, key=_sort_key)

    def source(self, key: str) -> pa.BufferReader:
        return pa.BufferReader(self.container.download_blob(self.prefix + key).readall())

    def prune(self, stream: str, before: datetime) -> tuple[int, int]:
        cutoff = before.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        hours: set[datetime] = set()
        freed = 0
        for blob in self.container.list_blobs(name_starts_with=self.prefix + stream + "/"):
            start = _hour_of(blob.name[len(self.prefix) :])
            if start is None or start >= cutoff:
                continue
            self.container.delete_blob(blob.name)
            hours.add(start)
            freed += blob.size or 0
        return len(hours), freed


def log_store(settings: SpamSettings) -> LogStore:
    """The store the settings name: Blob when ``SPAM_LOG_BLOB_CONTAINER`` is set, else the
    local ``inference_log_dir``."""
    s = settings
    return make_log_store(
        s.inference_log_dir,
        s.log_blob_container,
        s.log_blob_prefix,
        s.azure_storage_account,
        s.azure_storage_connection_string,
    )


def make_log_store(
    local_dir: Path | str,
    container: str | None,
    prefix: str = "",
    account: str | None = None,
    connection_string: str | None = None,
) -> LogStore:
    """:func:`log_store` from its parts (the Dagster resource holds them as fields)."""
    if not container:
        return LocalLogStore(Path(local_dir))
    return BlobLogStore(
        container,
        prefix,
        connection_string=connection_string,
        account_url=f"https://{account}.blob.core.windows.net" if account else None,
    )
