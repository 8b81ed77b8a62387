"""The Dagster instance under ``SPAM_HOME``: SQLite by default, PostgreSQL when
``SPAM_DAGSTER_POSTGRES_URL`` is set. ``dagster.yaml`` is generated so the one settings object
stays the single place where storage is chosen."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from spam_serving.settings import SpamSettings, get_settings


def instance_config(settings: SpamSettings) -> dict:
    """The ``dagster.yaml`` content for these settings (the URL itself is read from the env
    at load time, so no credentials are written to disk)."""
    if settings.dagster_postgres_url:
        storage = {"postgres": {"postgres_url": {"env": "SPAM_DAGSTER_POSTGRES_URL"}}}
    else:
        storage = {"sqlite": {"base_dir": str(settings.dagster_home / "storage")}}
    return {
        "storage": storage,
        "telemetry": {"enabled": False},
        # 2 cores: one run at a time; Ray inside the run already uses both cores.
        "concurrency": {"runs": {"max_concurrent_runs": settings.max_concurrent_runs}},
        "local_artifact_storage": {
            "module": "dagster._core.storage.root",
            "class": "LocalArtifactStorage",
            "config": {"base_dir": str(settings.dagster_home)},
        },
    }


def prepare_dagster_home(settings: SpamSettings | None = None) -> Path:
    """Write ``dagster.yaml`` and point ``DAGSTER_HOME`` at it; returns the directory."""
    s = settings or get_settings()
    home = s.dagster_home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(instance_config(s), sort_keys=False)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != text:
        tmp = target.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
