"""Shared fixtures: the real corpus (read once), an isolated SPAM_HOME per test; helpers live
in ``spam_tests.helpers``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from spam_tests.helpers.corpus import SHARED_TGZ, read_mirror, stratified
from spam_tests.helpers.env import TEST_REDIS_DB, delete_redis_project, free_port


@pytest.fixture(scope="session")
def shared_tgz() -> Path:
    if not SHARED_TGZ.is_file():
        pytest.fail(f"the real corpus is required beside the checkout: {SHARED_TGZ} is missing")
    return SHARED_TGZ


@pytest.fixture(scope="session")
def mirror(shared_tgz: Path) -> dict[str, list[tuple[str, bytes]]]:
    """group -> [(name, raw bytes)] of the whole real corpus."""
    return read_mirror(shared_tgz)


@pytest.fixture(scope="session")
def real_sample(mirror) -> list[tuple[str, int, bytes]]:
    """~600 real messages across all groups: (group, label, raw)."""
    out = []
    for group, messages in sorted(mirror.items()):
        label = 1 if "spam" in group else 0
        out += [(group, label, raw) for _, raw in stratified(messages, 120)]
    return out


@pytest.fixture
def spam_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private SPAM_HOME; tests set SPAM_* on top of it."""
    home = tmp_path / "spam_home"
    monkeypatch.setenv("SPAM_HOME", str(home))
    monkeypatch.delenv("SPAM_CORPUS_SOURCES", raising=False)
    monkeypatch.delenv("SPAM_DAGSTER_POSTGRES_URL", raising=False)
    monkeypatch.delenv("SPAM_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("SPAM_API_KEYS", raising=False)
    monkeypatch.delenv("SPAM_API_KEYS_FILE", raising=False)
    monkeypatch.setenv("SPAM_SERVE_PORT", str(free_port()))
    monkeypatch.setenv("SPAM_SERVE_WORKERS", "1")
    # Feast: the real Redis (found by `auto`), a test db and a project (key suffix) of its own
    project = f"t{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("SPAM_FEAST_PROJECT", project)
    monkeypatch.setenv("SPAM_FEAST_REDIS", f"127.0.0.1:6379,db={TEST_REDIS_DB}")
    # a loaded 2-core machine can exceed the 50 ms production budget; tests that are about
    # the budget set their own (the degraded path is tested with a silent server)
    monkeypatch.setenv("SPAM_REPUTATION_TIMEOUT_MS", "2000")
    yield home
    delete_redis_project(TEST_REDIS_DB, project)
    # a local_deployment started in this home must not outlive the test
    state = home / "serving" / "local_deployment.json"
    if state.is_file():
        from spam_assets.lib.local_server import stop_server

        stop_server(json.loads(state.read_text())["pid"])


@pytest.fixture
def instance(tmp_path: Path):
    """An isolated Dagster instance (SQLite in a temp dir)."""
    import dagster as dg

    directory = tmp_path / "dagster"
    directory.mkdir()
    with dg.instance_for_test(temp_dir=str(directory)) as inst:
        yield inst


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A private SPAM_HOME has a Feast project in the real Redis (cleaned up afterwards), so
    every test that uses one needs Redis: ``-m "not redis"`` deselects them all."""
    for item in items:
        if "spam_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)
