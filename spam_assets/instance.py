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


class InstanceConfigError(RuntimeError):
    """The configured Dagster storage cannot be used; the message says why."""


def check_postgres(url: str, timeout_s: int = 5) -> None:
    """Fail fast with the server's own reason (Dagster itself retries, then only says
    'too many retries'). The password is never echoed."""
    import psycopg2
    from sqlalchemy.engine import make_url

    safe = make_url(url).render_as_string(hide_password=True)
    try:
        psycopg2.connect(url.replace("+psycopg2", ""), connect_timeout=timeout_s).close()
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InstanceConfigError(
            f"SPAM_DAGSTER_POSTGRES_URL={safe}: cannot connect ({reason})"
        ) from exc


def prepare_dagster_home(settings: SpamSettings | None = None) -> Path:
    """Write ``dagster.yaml`` and point ``DAGSTER_HOME`` at it; returns the directory."""
    s = settings or get_settings()
    if s.dagster_postgres_url:
        check_postgres(s.dagster_postgres_url)
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
