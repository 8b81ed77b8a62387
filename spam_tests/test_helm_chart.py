"""The serving chart through the real Helm v4 engine (helm-python-sdk): lint, schema,
render with default / production / canary / secret-source values, every manifest against the
Kubernetes schemas, and checkov on what renders."""

from __future__ import annotations

import copy

import pytest
import yaml

from spam_assets.lib import aks
from spam_serving.settings import PROJECT_ROOT
from spam_tests.helpers.infra import azure_settings, checkov, describe

DIGEST = "sha256:" + "ab" * 32
IMAGE = aks.ImageSpec("spamacr.azurecr.io", "spam-classifier", "v7-0123abcd", DIGEST)
CANARY = aks.ImageSpec(
    "spamacr.azurecr.io", "spam-classifier", "v8-0123abcd", "sha256:" + "cd" * 32
)


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def container(doc: dict) -> dict:
    spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
    return spec["containers"][0]


VARIANTS = {
    "default": lambda: {},
    "staging": lambda: aks.release_values(azure_settings(), "staging", IMAGE),
    "production": lambda: aks.release_values(azure_settings(), "production", IMAGE),
    "production-canary": lambda: aks.release_values(
        azure_settings(), "production", IMAGE, canary=CANARY, canary_weight=25
    ),
    "external-secret": lambda: {
        "image": {"tag": "v1-abc", "digest": DIGEST},
        "apiKeys": {"source": "externalSecret"},
    },
}


@pytest.mark.parametrize("values_file", [None, "values-production.yaml"])
def test_chart_lints_clean_in_strict_mode(values_file):
    import helm_python as helm

    values = yaml.safe_load((aks.CHART_DIR / values_file).read_text()) if values_file else None
    report = helm.lint(aks.CHART_DIR, values, strict=True, kube_version=f"v{aks.KUBE_VERSION}")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_manifest_is_valid_kubernetes(variant):
    docs = aks.render(VARIANTS[variant](), "spam-serving-x", "spam-x")
    assert docs
    assert aks.validate_manifests(docs) == []


def test_validation_reports_a_broken_manifest():
    """The validator is not a rubber stamp: a wrong type and an unknown field are reported."""
    docs = aks.render({}, "spam-serving-x", "spam-x")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    wrong_type, unknown_field = copy.deepcopy(deployment), copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    container(unknown_field)["livenessProbes"] = {}
    problems = aks.validate_manifests([wrong_type, unknown_field])
    assert len(problems) == 2, problems
    assert "spec/replicas" in problems[0]
    assert "livenessProbes" in problems[1]


def test_production_values_harden_and_scale():
    docs = by_kind(aks.render(VARIANTS["production"](), "spam-serving-production", "spam-p"))
    deployment = docs["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert c["image"] == f"spamacr.azurecr.io/spam-classifier@{DIGEST}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == aks.IMAGE_UID
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["limits"]["memory"] == "3Gi"
    probes = ("startupProbe", "livenessProbe", "readinessProbe")
    assert [c[p]["httpGet"]["path"] for p in probes] == ["/readyz", "/livez", "/readyz"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the replica count
    hpa = docs["HorizontalPodAutoscaler"][0]["spec"]
    assert hpa["minReplicas"] == 3
    assert [m["type"] for m in hpa["metrics"]] == ["Resource", "Pods"]
    assert docs["PodDisruptionBudget"][0]["spec"]["minAvailable"] == 2
    assert docs["ServiceMonitor"][0]["spec"]["endpoints"][0]["path"] == "/metrics"
    policies = {p["metadata"]["name"]: p["spec"] for p in docs["NetworkPolicy"]}
    policy = policies["spam-serving-production"]
    assert policies["spam-serving-production-smoke-test"]["egress"][0]["ports"][0]["port"] == 3000
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert {p["ports"][0]["port"] for p in policy["egress"][1:]} == {6380, 5432}
    # the `helm test` pod may call the service, and is not itself fenced in by the policy
    smoke = docs["Pod"][0]["metadata"]["labels"]
    allowed = policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= smoke.items()
    assert not policy["podSelector"]["matchLabels"].items() <= smoke.items()
    service_selector = docs["Service"][0]["spec"]["selector"]
    assert not service_selector.items() <= smoke.items()
    # API keys: Key Vault through the CSI driver, with workload identity; never in env
    spc = docs["SecretProviderClass"][0]["spec"]["parameters"]
    assert spc["keyvaultName"] == "spam-kv-prod"
    assert spc["clientID"] == "11111111-2222-3333-4444-555555555555"
    assert pod["volumes"][-1]["csi"]["volumeAttributes"]["secretProviderClass"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SPAM_API_KEYS_FILE"] == "/var/run/secrets/spam/api-keys"
    assert "SPAM_API_KEYS" not in env
    config = docs["ConfigMap"][0]["data"]
    assert config["SPAM_FEAST_REDIS"] == "spam.redis.cache.windows.net:6380,ssl=true"
    sa = docs["ServiceAccount"][0]["metadata"]["annotations"]
    assert sa["azure.workload.identity/client-id"] == "11111111-2222-3333-4444-555555555555"


def test_canary_gets_its_weight_through_the_ingress():
    docs = by_kind(aks.render(VARIANTS["production-canary"](), "spam-serving-production", "p"))
    stable, canary = sorted(docs["Deployment"], key=lambda d: d["metadata"]["name"])
    assert container(canary)["image"].endswith("@sha256:" + "cd" * 32)
    assert container(stable)["image"].endswith(DIGEST)
    services = {
        s["metadata"]["name"]: s["spec"]["selector"]["spam-mlops/track"] for s in docs["Service"]
    }
    assert services == {
        "spam-serving-production": "stable",
        "spam-serving-production-canary": "canary",
    }
    ingresses = {i["metadata"]["name"]: i["metadata"]["annotations"] for i in docs["Ingress"]}
    assert (
        ingresses["spam-serving-production-canary"]["nginx.ingress.kubernetes.io/canary-weight"]
        == "25"
    )
    assert "nginx.ingress.kubernetes.io/canary" not in ingresses["spam-serving-production"]


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"image": {"tag": "latest"}}, "/image/tag"),
        ({"environment": "prod"}, "environment"),
        ({"config": {"SPAM_API_KEYS": "k1"}}, "/config"),
        ({"config": {"API_KEYS": "k1"}}, "API_KEYS"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"canary": {"weight": 150}}, "weight"),
        ({"replicas": 3}, "replicas"),
        ({"image": {"digest": "md5:123"}}, "digest"),
    ],
)
def test_schema_rejects_bad_values(values, needle):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as err:
        aks.render(values, "spam-serving-x", "spam-x")
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"canary": {"enabled": True, "image": {"tag": "v2-x"}}}, "ingress.enabled"),
        ({"canary": {"enabled": True}, "ingress": {"enabled": True}}, "canary.image"),
        ({"apiKeys": {"source": "csi"}}, "workloadIdentityClientId"),
        ({"apiKeys": {"source": "existingSecret", "existingSecret": ""}}, "existingSecret"),
    ],
)
def test_inconsistent_values_fail_rendering_with_the_reason(values, needle):
    import helm_python as helm

    with pytest.raises(helm.HelmError) as err:
        aks.render(values, "spam-serving-x", "spam-x")
    assert needle in str(err.value)


def test_checkov_passes_on_every_rendered_variant(tmp_path):
    """Digest-pinned releases must pass every checkov Kubernetes check; the only skips are the
    two annotated on the `helm test` pod (a one-shot pod has no probes)."""
    for variant in ("staging", "production", "production-canary"):
        docs = aks.render(VARIANTS[variant](), "spam-serving-x", "spam-x")
        (tmp_path / f"{variant}.yaml").write_text(yaml.safe_dump_all(docs))
    assert describe(checkov(tmp_path, "kubernetes")) == []


def test_checkov_flags_an_unpinned_image(tmp_path):
    """Defaults carry no digest (only a release knows it): checkov must say so, proving the
    scan above really inspects images."""
    (tmp_path / "default.yaml").write_text(yaml.safe_dump_all(aks.render({}, "s", "n")))
    assert {c["check_id"] for c in checkov(tmp_path, "kubernetes")} == {"CKV_K8S_43"}


def test_dagster_values_target_the_k8s_run_launcher_and_this_code_location():
    """helm/dagster/values.yaml (the official chart is not installable offline: structure)."""
    values = yaml.safe_load((PROJECT_ROOT / "helm" / "dagster" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "spam_assets.definitions"]
    assert deployment["image"]["tag"] != "latest"
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    mount = {m["name"]: m["mountPath"] for m in k8s["volumeMounts"]}
    assert mount["spam-home"] == "/spam-home"
    assert {e["name"]: e["value"] for e in deployment["env"]}["SPAM_HOME"] == "/spam-home"
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlParams"]["sslmode"] == "require"
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] is True
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"


def test_spam_home_claim_is_valid_and_shared():
    claim = yaml.safe_load((PROJECT_ROOT / "helm" / "dagster" / "spam-home-pvc.yaml").read_text())
    assert aks.validate_manifests([claim]) == []
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    values = yaml.safe_load((PROJECT_ROOT / "helm" / "dagster" / "values.yaml").read_text())
    claims = values["runLauncher"]["config"]["k8sRunLauncher"]["volumes"]
    assert claims[0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_dagster_user_code_dockerfile_passes_checkov():
    failed = checkov(PROJECT_ROOT / "docker" / "dagster-user-code.Dockerfile", "dockerfile")
    assert describe(failed) == []
