"""Azurite, Microsoft's Azure Storage emulator, as a real process on 127.0.0.1 for the tests of
the Blob paths (``make install-azurite`` puts it under ``tools/azurite``). Only the Blob
service is started: Azurite does not serve the ADLS Gen2 ``dfs`` endpoint, so what the
project reads and writes through the Blob API (the inference log, MLflow's ``wasbs://``
artifacts) is under test here, and the ADLS2 IO manager of dagster-azure is not."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from spam_serving.settings import PROJECT_ROOT
from spam_tests.helpers.env import free_port, stop_process, wait_listening

AZURITE_BIN = PROJECT_ROOT / "tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
#: Azurite's published development key (not a secret: it is in Azurite's documentation)
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    port: int
    process: subprocess.Popen

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )


@contextlib.contextmanager
def running_azurite(workdir: Path, port: int | None = None) -> Iterator[Azurite]:
    """Azurite's Blob service on ``port`` (a free one by default), its data in ``workdir``
    (a restart on the same port and folder finds the same blobs); stopped afterwards."""
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"{AZURITE_BIN} is missing: run `make install-azurite`")
    if shutil.which("node") is None:
        raise RuntimeError("node is missing: run `make install-azurite`")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "azurite.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            str(AZURITE_BIN),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(workdir),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_listening(port, proc, 60, "azurite")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {(workdir / 'azurite.log').read_text()[-2000:]}") from None
        yield Azurite(port, proc)
    finally:
        stop_process(proc, 10)
        log.close()
