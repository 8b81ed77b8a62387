"""Where the corpus comes from and where data and model bundles go."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from spam_assets.defs.resources.slice import SettingsSlice, Source


class CorpusResource(SettingsSlice):
    """Where raw mail comes from (see ``spam_assets.lib.corpus_sources`` for the forms)."""

    SOURCES: ClassVar[dict[str, Source]] = {
        "sources": "corpus_sources",
        "cache_dir": lambda s: s.data_dir / "downloads",
        "chunk_rows": "corpus_chunk_rows",
    }

    sources: list[str]
    cache_dir: str
    download_timeout_s: float
    chunk_rows: int
    parse_workers: int
    featurize_workers: int


class StorageResource(SettingsSlice):
    """Local roots for the raw store and model bundles."""

    data_dir: str
    bundles_dir: str

    @property
    def raw_dir(self) -> Path:
        return Path(self.data_dir) / "raw"

    @property
    def parsed_dir(self) -> Path:
        return Path(self.data_dir) / "parsed"

    def bundle_dir(self, model_name: str, version: str) -> Path:
        return Path(self.bundles_dir) / model_name / f"v{version}"
