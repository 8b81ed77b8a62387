"""The Feast feature store (sender reputation)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from spam_assets.defs.resources.slice import SettingsSlice, Source


class FeastResource(SettingsSlice):
    """The Feast feature store (sender reputation): project, online store, Redis, registry.

    The store itself is built by ``spam_serving.feature_store`` from the per-target
    feature_store yaml, exactly as the service builds it."""

    PREFIX: ClassVar[str] = "feast_"
    SOURCES: ClassVar[dict[str, Source]] = {"home": "home"}

    home: str
    project: str
    online_store: str
    redis: str
    key_ttl_seconds: int
    registry: str | None
    registry_cache_ttl_s: int

    @property
    def offline_dir(self) -> Path:
        return self.settings().feast_dir / "offline"

    def store(self, resolve: bool = False):
        """A ``FeatureStore``; ``resolve`` picks (and records) the store when ``auto``."""
        from spam_serving.feature_store import feature_store, online_store_kind

        s = self.settings()
        return feature_store(s, online_store_kind(s, resolve=resolve))
