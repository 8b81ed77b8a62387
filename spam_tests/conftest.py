"""Shared fixtures: the real corpus (read once), an isolated SPAM_HOME per test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from corpus_subsample import SHARED_TGZ, read_mirror, stratified


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
    yield home
    # a local_deployment started in this home must not outlive the test
    state = home / "serving" / "local_deployment.json"
    if state.is_file():
        from spam_assets.lib.local_server import stop_server

        stop_server(json.loads(state.read_text())["pid"])


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_sources(monkeypatch: pytest.MonkeyPatch, sources: list[str]) -> None:
    monkeypatch.setenv("SPAM_CORPUS_SOURCES", json.dumps(sources))


@pytest.fixture
def instance(tmp_path: Path):
    """An isolated Dagster instance (SQLite in a temp dir)."""
    import dagster as dg

    directory = tmp_path / "dagster"
    directory.mkdir()
    with dg.instance_for_test(temp_dir=str(directory)) as inst:
        yield inst
