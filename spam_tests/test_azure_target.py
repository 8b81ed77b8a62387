"""SPAM_TARGET=azure: the code location's Definitions wire ADLS Gen2, the k8s executor,
MLflow on PostgreSQL + Blob and Feast on Azure Cache for Redis, without contacting Azure."""

from __future__ import annotations

import json
import traceback

import dagster as dg
import pytest

from spam_assets.azure_target import HEAVY_STEP_RESOURCES, azure_executor_config
from spam_serving.settings import get_settings

AZURE_ENV = {
    "SPAM_TARGET": "azure",
    "SPAM_AZURE_STORAGE_ACCOUNT": "spamadls",
    "SPAM_MLFLOW_TRACKING_URI": "postgresql://mlflow@spam-pg.postgres.database.azure.com/mlflow",
    "SPAM_MLFLOW_ARTIFACT_URI": "wasbs://mlflow@spamadls.blob.core.windows.net/artifacts",
    "SPAM_DAGSTER_POSTGRES_URL": "postgresql://dagster@spam-pg.postgres.database.azure.com/dagster",
    "SPAM_FEAST_REGISTRY": "postgresql+psycopg://feast@spam-pg.postgres.database.azure.com/feast",
    "SPAM_FEAST_REDIS": "spam-redis.redis.cache.windows.net:6380,ssl=true",
    "SPAM_RAY_ADDRESS": "ray://raycluster-head-svc.ray:10001",
    "SPAM_K8S_NAMESPACE": "dagster",
    "SPAM_LOG_BLOB_CONTAINER": "inference-log",
}


@pytest.fixture
def azure_env(spam_env, monkeypatch):
    for key, value in AZURE_ENV.items():
        monkeypatch.setenv(key, value)
    return spam_env


def test_definitions_wire_the_azure_resources(azure_env):
    from dagster_azure.adls2 import ADLS2PickleIOManager

    from spam_assets.definitions import defs

    d = defs()
    assert d.resolve_job_def("spam_pipeline").executor_def.name == "k8s_job_executor"
    resources = d.resources
    io = resources["io_manager"]
    assert isinstance(io, ADLS2PickleIOManager)
    assert io.adls2.storage_account == "spamadls"
    assert io.adls2.credential.credential_type == "default_azure_credential"
    assert io.adls2_file_system == "dagster" and io.adls2_prefix == "spam-mlops"
    registry = resources["registry"]
    assert registry.tracking_uri == AZURE_ENV["SPAM_MLFLOW_TRACKING_URI"]
    assert registry.artifact_location == AZURE_ENV["SPAM_MLFLOW_ARTIFACT_URI"]
    assert resources["tuning"].ray_address == AZURE_ENV["SPAM_RAY_ADDRESS"]
    assert resources["feast"].redis == AZURE_ENV["SPAM_FEAST_REDIS"]
    assert resources["aks_target"].target == "azure"


def test_executor_config_is_valid_for_dagster_k8s(azure_env):
    from dagster_k8s import k8s_job_executor

    config = azure_executor_config(get_settings())
    checked = k8s_job_executor.configured(config, name="check").apply_config_mapping({})
    assert checked.success, checked.errors
    value = checked.value["config"]
    assert value["job_namespace"] == "dagster"
    assert value["max_concurrent"] == get_settings().max_concurrent
    assert value["volume_mounts"] == [{"name": "spam-home", "mount_path": str(azure_env)}]


def test_heavy_steps_carry_their_pod_resources(azure_env):
    from spam_assets.definitions import defs

    graph = defs().resolve_asset_graph()
    for step, resources in HEAVY_STEP_RESOURCES.items():
        node = graph.get(dg.AssetKey(step))
        # Dagster stores dict tags as JSON; dagster-k8s parses them back per step
        k8s = json.loads(node.assets_def.op.tags["dagster-k8s/config"])
        assert k8s["container_config"]["resources"] == resources, step
    tuned = graph.get(dg.AssetKey("tuned_model")).assets_def.op.tags
    tuned_k8s = json.loads(tuned["dagster-k8s/config"])
    assert tuned_k8s["container_config"]["resources"]["requests"]["cpu"] == "4"
    assert tuned_k8s["pod_spec_config"]["node_selector"] == {"spam-mlops/pool": "work"}


def test_feast_uses_the_azure_store(azure_env):
    from spam_serving.feature_store import online_store_kind, repo_config

    s = get_settings()
    assert online_store_kind(s) == "azure"
    config = repo_config(s)
    assert config.registry.registry_type == "sql"
    assert config.online_store.connection_string.startswith(AZURE_ENV["SPAM_FEAST_REDIS"])


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        ("SPAM_AZURE_STORAGE_ACCOUNT", "SPAM_AZURE_STORAGE_ACCOUNT"),
        ("SPAM_MLFLOW_TRACKING_URI", "SPAM_MLFLOW_TRACKING_URI"),
        ("SPAM_MLFLOW_ARTIFACT_URI", "SPAM_MLFLOW_ARTIFACT_URI"),
        ("SPAM_FEAST_REGISTRY", "SPAM_FEAST_REGISTRY"),
        ("SPAM_FEAST_REDIS", "SPAM_FEAST_REDIS"),
        ("SPAM_LOG_BLOB_CONTAINER", "SPAM_LOG_BLOB_CONTAINER"),
    ],
)
def test_missing_azure_settings_fail_at_load_naming_the_variable(
    azure_env, monkeypatch, unset, named
):
    from spam_assets.definitions import defs

    monkeypatch.delenv(unset)
    with pytest.raises(Exception) as err:
        defs()
    # dg wraps errors of the defs folder; the cause is ours, with the variable named
    text = "".join(traceback.format_exception(err.value))
    assert "SPAM_TARGET=azure needs" in text
    assert named in text.split("SPAM_TARGET=azure needs", 1)[1]


def test_dagster_cli_validates_the_azure_code_location(azure_env, tmp_path):
    """The exact command the deploy workflow runs in the user-code pod, here, as a process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "spam_assets.definitions"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Validation successful" in proc.stderr + proc.stdout


def test_local_deployment_stands_aside_on_azure(azure_env):
    """No bentoml server inside a step pod, no champion move from it: an observation says why."""
    from spam_assets.defs.deployment.assets import local_deployment
    from spam_assets.defs.resources import build_resources
    from spam_tests.helpers.pipeline import skipped_reason

    @dg.asset(name="bento")
    def bento_value() -> dict:
        return {"model_version": "3", "model_tag": "spam-classifier:v3", "code_hash": "ab" * 8}

    resources = {**build_resources(), "io_manager": dg.mem_io_manager}  # no ADLS from here
    result = dg.materialize([bento_value, local_deployment], resources=resources)
    assert result.success
    assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == {"bento"}
    assert "serving runs on AKS" in skipped_reason(result)
    assert not (azure_env / "serving" / "api_keys").exists()
