"""``SPAM_TARGET=azure``: the same code location on AKS.

Asset values go to ADLS Gen2 (dagster-azure's IO manager), every step runs in its own pod
(dagster-k8s's ``k8s_job_executor``), MLflow tracks to PostgreSQL with Blob artifacts, Ray Tune
connects to a KubeRay cluster when ``SPAM_RAY_ADDRESS`` is set, and Feast uses Azure Cache for
Redis with a SQL registry. Side files the assets write under ``SPAM_HOME`` (raw store, bundles,
reports) live on a ReadWriteMany volume that helm/dagster/values.yaml mounts into every run and
step pod at the same path, so steps in different pods see each other's files.

Nothing here contacts Azure: building the Definitions only wires configuration, so a missing
setting fails at load time with the variable's name instead of deep inside a run.
"""

from __future__ import annotations

import dagster as dg

from spam_serving.settings import SpamSettings

#: Step pod sizes for the heavy steps (``dagster-k8s/config`` op tags). Ray Tune trials and the
#: full-corpus featurization need the big pod; ONNX export loads the booster and the test set.
HEAVY_STEP_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "tuned_model": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "12Gi"}},
    "onnx_model": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "6Gi"}},
    "feature_matrices": {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"memory": "8Gi"}},
}
#: Everything else: parsing, checks, deployment calls.
DEFAULT_STEP_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}


def k8s_op_tags(step: str) -> dict[str, object]:
    """``op_tags`` for an asset: its pod resources when the k8s executor runs it (ignored by
    the local executor), plus a node selector for the user pool of terraform/aks.tf."""
    return {
        "dagster-k8s/config": {
            "container_config": {
                "resources": HEAVY_STEP_RESOURCES.get(step, DEFAULT_STEP_RESOURCES)
            },
            "pod_spec_config": {"node_selector": {"spam-mlops/pool": "work"}},
        }
    }


def missing_azure_settings(s: SpamSettings) -> list[str]:
    """``SPAM_*`` variables the azure target needs but are unset or of the wrong form."""
    problems = []
    if not s.azure_storage_account:
        problems.append("SPAM_AZURE_STORAGE_ACCOUNT (ADLS Gen2 account for asset values)")
    if not (s.mlflow_tracking_uri or "").startswith("postgresql"):
        problems.append("SPAM_MLFLOW_TRACKING_URI (postgresql://... on the flexible server)")
    if not (s.mlflow_artifact_uri or "").startswith(("wasbs://", "abfss://")):
        problems.append("SPAM_MLFLOW_ARTIFACT_URI (wasbs://<container>@<acct>.blob...)")
    if not (s.dagster_postgres_url or "").startswith("postgresql"):
        problems.append("SPAM_DAGSTER_POSTGRES_URL (Dagster run/event storage)")
    if not (s.feast_registry or "").startswith("postgresql"):
        problems.append("SPAM_FEAST_REGISTRY (postgresql://... SQL registry)")
    if not s.log_blob_container:
        problems.append("SPAM_LOG_BLOB_CONTAINER (Blob container of the serving pods' log)")
    if s.feast_redis.startswith(("127.", "localhost")):
        problems.append("SPAM_FEAST_REDIS (<name>.redis.cache.windows.net:6380,ssl=true,...)")
    return problems


def check_azure_settings(s: SpamSettings) -> None:
    problems = missing_azure_settings(s)
    if problems:
        raise ValueError(
            "SPAM_TARGET=azure needs these settings (see README, 'Production on AKS'):\n  "
            + "\n  ".join(problems)
        )


def azure_io_manager(s: SpamSettings) -> dg.ConfigurableIOManager:
    """ADLS Gen2 pickles with workload identity (DefaultAzureCredential in the pod)."""
    from dagster_azure.adls2 import ADLS2DefaultAzureCredential, ADLS2PickleIOManager, ADLS2Resource

    return ADLS2PickleIOManager(
        adls2=ADLS2Resource(
            storage_account=str(s.azure_storage_account),
            credential=ADLS2DefaultAzureCredential(kwargs={}),
        ),
        adls2_file_system=s.azure_storage_container,
        adls2_prefix=s.azure_storage_prefix,
    )


def azure_executor_config(s: SpamSettings) -> dict[str, object]:
    """Config of dagster-k8s's ``k8s_job_executor``: one pod per step in
    ``SPAM_K8S_NAMESPACE``, at most ``SPAM_MAX_CONCURRENT`` at once, the shared SPAM_HOME
    claim mounted at the same path as in the run pod. Image, env config maps and secrets are
    inherited from the K8sRunLauncher of helm/dagster/values.yaml."""
    return {
        "job_namespace": s.k8s_namespace,
        "service_account_name": s.k8s_service_account,
        "max_concurrent": s.max_concurrent,
        "volumes": [
            {"name": "spam-home", "persistentVolumeClaim": {"claimName": s.k8s_home_claim}}
        ],
        "volume_mounts": [{"name": "spam-home", "mount_path": str(s.home)}],
        "step_k8s_config": {
            "pod_template_spec_metadata": {"labels": {"azure.workload.identity/use": "true"}},
            "container_config": {"resources": DEFAULT_STEP_RESOURCES},
        },
    }


def azure_executor(s: SpamSettings) -> dg.ExecutorDefinition:
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(azure_executor_config(s), name="k8s_job_executor")
