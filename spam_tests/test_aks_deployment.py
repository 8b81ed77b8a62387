"""aks_deployment without a cluster: image spec, release names, per-release values, image
build commands, and the asset's behaviour when unconfigured or when the cluster is down
(the real Helm v4 engine dialing a closed port, not a mock)."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from spam_assets.defs.deployment.aks import aks_deployment
from spam_assets.defs.resources import build_resources
from spam_assets.lib import aks
from spam_serving.settings import SpamSettings, get_settings
from spam_tests.helpers.aks import BENTO, aks_resource, bento_value, write_kubeconfig
from spam_tests.helpers.env import free_port
from spam_tests.helpers.infra import azure_settings
from spam_tests.helpers.pipeline import skipped_reason


def test_image_spec_tags_model_and_code_and_rejects_bad_refs():
    spec = aks.ImageSpec.for_bento(BENTO, "spamacr.azurecr.io", "spam-classifier")
    assert spec.ref == "spamacr.azurecr.io/spam-classifier:v7-01234567"
    assert spec.registry_name == "spamacr"
    assert spec.values() == {"tag": "v7-01234567"}
    pinned = aks.ImageSpec(spec.registry, spec.repository, spec.tag, "sha256:" + "0" * 64)
    assert pinned.values()["digest"] == "sha256:" + "0" * 64
    for bad in (
        dict(registry="Spam ACR", repository="r", tag="t"),
        dict(registry="spamacr.azurecr.io", repository="Spam/Classifier", tag="t"),
        dict(registry="spamacr.azurecr.io", repository="r", tag="latest"),
        dict(registry="spamacr.azurecr.io", repository="r", tag="-x"),
        dict(registry="spamacr.azurecr.io", repository="r", tag="t", digest="sha256:xyz"),
    ):
        with pytest.raises(ValueError):
            aks.ImageSpec(**bad)


def test_release_names_follow_helm_rules():
    assert aks.release_name("spam-serving", "staging") == "spam-serving-staging"
    assert aks.release_name("spam-serving", "production") == "spam-serving-production"
    with pytest.raises(ValueError, match="unknown environment"):
        aks.release_name("spam-serving", "prod")
    with pytest.raises(ValueError, match="invalid Helm release name"):
        aks.release_name("Spam_Serving", "staging")
    with pytest.raises(ValueError, match="invalid Helm release name"):
        aks.release_name("x" * 60, "production")


def test_release_values_per_environment():
    s = azure_settings(feast_registry="postgresql://feast@pg:5432/feast")
    image = aks.ImageSpec("spamacr.azurecr.io", "spam-classifier", "v7-01234567")
    staging = aks.release_values(s, "staging", image)
    production = aks.release_values(s, "production", image)
    assert staging["environment"] == "staging" and "autoscaling" not in staging
    assert production["environment"] == "production"
    assert production["autoscaling"]["minReplicas"] == 3  # from values-production.yaml
    assert production["ingress"]["host"] == "spam.example.org"
    assert production["ingress"]["tlsSecretName"] == "spam-tls"
    with pytest.raises(ValueError, match="SPAM_AKS_INGRESS_HOST_PRODUCTION"):
        aks.release_values(SpamSettings(), "production", image)
    assert production["image"] == {"repository": image.repository_ref, "tag": image.tag}
    assert production["apiKeys"]["csi"]["keyVaultName"] == "spam-kv-prod"
    assert production["config"]["SPAM_FEAST_REGISTRY"] == "postgresql://feast@pg:5432/feast"
    # without Key Vault settings the chart's default (a Secret you manage) stays
    plain = aks.release_values(SpamSettings(), "staging", image)
    assert "apiKeys" not in plain and "SPAM_FEAST_REGISTRY" not in plain["config"]
    other = aks.ImageSpec("otheracr.azurecr.io", "spam-classifier", "v8-01234567")
    with pytest.raises(ValueError, match="same repository"):
        aks.release_values(s, "production", image, canary=other)


def test_serving_pods_ship_the_inference_log_to_blob():
    """With SPAM_LOG_BLOB_CONTAINER the release tells the pods where the log goes, and they
    get the workload identity that writes it; without an identity the values are refused."""
    image = aks.ImageSpec("spamacr.azurecr.io", "spam-classifier", "v7-01234567")
    s = azure_settings(log_blob_container="inference-log", azure_storage_account="spamadls")
    config = aks.release_values(s, "staging", image)["config"]
    assert config["SPAM_LOG_BLOB_CONTAINER"] == "inference-log"
    assert config["SPAM_AZURE_STORAGE_ACCOUNT"] == "spamadls"
    docs = aks.render_valid(aks.release_values(s, "staging", image), "spam-serving-staging", "ns")
    pods = [d for d in docs if d["kind"] == "Deployment"]
    labels = pods[0]["spec"]["template"]["metadata"]["labels"]
    assert labels.get("azure.workload.identity/use") == "true"
    with pytest.raises(ValueError, match="SPAM_AKS_WORKLOAD_IDENTITY_CLIENT_ID"):
        aks.release_values(SpamSettings(log_blob_container="inference-log"), "staging", image)


def test_image_build_commands(tmp_path):
    spec = aks.ImageSpec("spamacr.azurecr.io", "spam-classifier", "v7-01234567")
    (acr,) = aks.image_build_commands("acr", spec, tmp_path, BENTO["bento_tag"])
    assert acr[:5] == ["az", "acr", "build", "--registry", "spamacr"]
    assert acr[acr.index("--image") + 1] == "spam-classifier:v7-01234567"
    assert acr[acr.index("--file") + 1] == str(tmp_path / "env" / "docker" / "Dockerfile")
    assert "BENTO_USER_UID=10001" in acr and acr[-1] == str(tmp_path)
    build, push = aks.image_build_commands("docker", spec, tmp_path, BENTO["bento_tag"])
    assert build[:3] == ["bentoml", "containerize", BENTO["bento_tag"]]
    assert build[build.index("--image-tag") + 1] == spec.ref
    assert "build-arg=BENTO_USER_GID=10001" in build
    assert push == ["docker", "push", spec.ref]
    with pytest.raises(ValueError, match="unknown image builder"):
        aks.image_build_commands("kaniko", spec, tmp_path, BENTO["bento_tag"])
    assert aks.digest_command("acr", spec)[:4] == ["az", "acr", "repository", "show"]


def test_run_commands_names_a_missing_tool_and_a_failing_step(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}
    with pytest.raises(aks.DeployError, match="needs `az` on PATH"):
        aks.run_commands([["az", "acr", "build"]], env, 10)
    token = tmp_path / "token"
    token.write_text("secret-federated-token\n")
    login = aks.az_login_command(
        {"AZURE_FEDERATED_TOKEN_FILE": str(token), "AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"}
    )
    assert login[:3] == ["az", "login", "--service-principal"]
    assert login[-1] == "secret-federated-token"
    assert aks.az_login_command({}) is None
    with pytest.raises(aks.DeployError) as err:  # the token never reaches an error message
        aks.run_commands([login], env, 10)
    assert "secret-federated-token" not in str(err.value)
    failing = tmp_path / "failing-tool"
    failing.write_text("#!/bin/sh\necho 'registry says no' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(aks.DeployError, match=r"failed \(3\): registry says no"):
        aks.run_commands([[str(failing), "push"]], env, 10)


def test_parse_digest():
    d = "sha256:" + "a1" * 32
    assert aks.parse_digest(f"{d}\n") == d
    assert aks.parse_digest(f"spamacr.azurecr.io/spam-classifier@{d}") == d
    for bad in ("", "sha256:abc", f"{d} sha256:{'b2' * 32}"):
        with pytest.raises(aks.DeployError):
            aks.parse_digest(bad)


def test_unconfigured_target_skips_with_the_reason(spam_env):
    result = dg.materialize([bento_value, aks_deployment], resources=build_resources())
    assert result.success
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == {"bento"}  # never a fake deployment
    assert "SPAM_TARGET=local" in skipped_reason(result)


def test_azure_target_without_registry_names_what_is_missing(spam_env):
    resources = {**build_resources(), "aks_target": aks_resource(registry=None)}
    result = dg.materialize([bento_value, aks_deployment], resources=resources)
    assert result.success
    assert skipped_reason(result) == "AKS deployment not configured: set SPAM_AKS_REGISTRY"


def test_unreachable_cluster_fails_before_any_image_build(spam_env, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", free_port())
    resources = {**build_resources(), "aks_target": aks_resource(kubeconfig=str(kubeconfig))}
    with pytest.raises(dg.Failure) as err:
        dg.materialize([bento_value, aks_deployment], resources=resources)
    message = err.value.description
    assert "model v7" in message
    assert "staging: cluster of context 'staging' is unreachable" in message
    assert "connection refused" in message
    serving_dir = get_settings().serving_dir
    assert not (serving_dir / "image-context").exists()  # no build was attempted


def test_approval_checks_production_cluster_too(spam_env, tmp_path):
    """With approval, production's context is checked up front as well (and named)."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", free_port())
    resources = {
        **build_resources(),
        "aks_target": aks_resource(kubeconfig=str(kubeconfig), context_production="prod-x"),
    }
    config = dg.RunConfig(
        ops={"aks_deployment": {"config": {"approve_production": True, "skip_staging": True}}}
    )
    with pytest.raises(dg.Failure) as err:
        dg.materialize([bento_value, aks_deployment], resources=resources, run_config=config)
    assert "production: cluster of context 'prod-x' is unreachable" in err.value.description
    assert 'context "prod-x" does not exist' in err.value.description


def test_helm_install_action_accepts_the_release_values_without_a_cluster():
    """Helm's own install action (client dry run, in-memory release storage) over the values
    the asset generates: chart loading, schema, rendering and release bookkeeping."""
    import helm_python as helm

    s = SpamSettings(target="azure", aks_ingress_host_production="spam.example.org")
    image = aks.ImageSpec("spamacr.azurecr.io", "spam-classifier", "v7-01234567")
    values = aks.release_values(s, "production", image)
    with helm.Config(storage_driver="memory", namespace="spam-production") as cfg:
        release = cfg.install(aks.CHART_DIR, "spam-serving-production", values, dry_run="client")
    assert release["status"] == "pending-install" and release["revision"] == 1
    assert "spamacr.azurecr.io/spam-classifier:v7-01234567" in release["manifest"]
    assert "kind: HorizontalPodAutoscaler" in release["manifest"]


def _aks_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spam_assets.aks_cli", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip


def test_aks_cli_renders_valid_manifests_and_fails_clearly_without_a_cluster(spam_env, tmp_path):
    import yaml

    out = tmp_path / "staging.yaml"
    proc = _aks_cli(
        "render", "--environment", "staging", "--image-tag", "v7-01234567", "--out", str(out),
        env={"SPAM_AKS_REGISTRY": "spamacr.azurecr.io"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = list(yaml.safe_load_all(out.read_text()))
    assert aks.validate_manifests(docs) == []
    assert {d["metadata"]["namespace"] for d in docs} == {"spam-staging"}
    missing = _aks_cli("render", "--environment", "staging", env={"SPAM_AKS_REGISTRY": ""})
    assert missing.returncode == 2 and "SPAM_AKS_REGISTRY" in missing.stderr
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", free_port())
    smoke = _aks_cli(
        "smoke", "--environment", "staging",
        env={"SPAM_AKS_KUBECONFIG": str(kubeconfig), "SPAM_AKS_CONTEXT_STAGING": "staging"},
    )  # fmt: skip
    assert smoke.returncode == 2
    assert "smoke spam-serving-staging" in smoke.stderr and "unreachable" in smoke.stderr
