"""The code location loads the way users and tools load it: workspace.yaml and dg."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "DAGSTER_"))}
    env["SPAM_HOME"] = str(home)
    env["DAGSTER_HOME"] = str(home / "dagster")
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return env


@pytest.mark.slow
def test_workspace_yaml_loads(tmp_path):
    proc = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "spam_assets" in out


@pytest.mark.slow
def test_dg_check_defs(tmp_path):
    proc = subprocess.run(
        [str(BIN / "dg"), "check", "defs", "--use-active-venv"],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_definitions_object():
    from dagster import AssetKey

    from spam_assets.definitions import defs

    d = defs()
    keys = {k.to_user_string() for k in d.resolve_all_asset_keys()}
    assert {"raw_corpus", "tuned_model", "onnx_model"} <= keys
    graph = d.resolve_asset_graph()
    assert graph.get(AssetKey("onnx_model")).parent_keys >= {AssetKey("model_evaluation")}
    job = d.resolve_job_def("spam_pipeline")
    assert job.executor_def.name == "multiprocess"
    checks = {k.name for k in d.resolve_asset_graph().asset_check_keys}
    assert {"quality_gate", "onnx_parity", "no_split_leakage"} <= checks


@pytest.mark.slow
def test_webserver_serves_the_code_location(tmp_path):
    """A real dagster-webserver on 127.0.0.1 loads the location from workspace.yaml."""
    import json
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(BIN / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    query = json.dumps(
        {
            "query": "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename } } } } }"
        }
    ).encode()
    try:
        deadline, entries = time.monotonic() + 120, []
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=query,
                    headers={"content-type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=5) as resp:
                    entries = json.load(resp)["data"]["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED":
                    break
            except OSError:
                pass
            time.sleep(1)
        assert entries, "webserver did not answer within 120 s"
        assert entries[0]["name"] == "spam_assets"
        assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
