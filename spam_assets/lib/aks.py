"""Deploying the Bento to AKS with the real Helm v4 engine (helm-python-sdk): image spec,
per-release values, rendering + validation of the chart, and the release itself.

No Dagster imports: the ``aks_deployment`` asset and the tests call these directly. Nothing
here shells out to a ``helm`` binary; the image build is the one step that needs an external
tool (``az acr build``, or docker/podman), named in the error when it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from spam_serving.settings import PROJECT_ROOT, SpamSettings

CHART_DIR = PROJECT_ROOT / "helm" / "spam-serving"
PRODUCTION_VALUES = CHART_DIR / "values-production.yaml"
ENVIRONMENTS = ("staging", "production")
#: The image's user: the chart runs pods as this uid/gid (non-root, >= 10000).
IMAGE_UID = 10001
#: Kubernetes version the rendered manifests are validated against (AKS's supported line).
KUBE_VERSION = "1.33.0"
#: Custom resources of the chart: not in the Kubernetes schemas, checked by :data:`CRD_FIELDS`.
CRD_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("selector", "endpoints"),
    ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"): ("provider", "parameters"),
    ("external-secrets.io/v1", "ExternalSecret"): ("secretStoreRef", "target", "data"),
}
_REGISTRY = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9](:[0-9]+)?$")
_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


class DeployError(RuntimeError):
    """A deployment step failed; the message names the step, the release and the cause."""


@dataclass(frozen=True)
class ImageSpec:
    """Where the serving image lives: ``<registry>/<repository>:<tag>``.

    The tag carries the model version and the service-code hash, so one tag is one exact
    (model, code) pair and a rollback is a values change, never a rebuild."""

    registry: str
    repository: str
    tag: str
    #: ``sha256:...`` of the pushed image; releases pin it (the tag stays for humans)
    digest: str | None = None

    def __post_init__(self) -> None:
        if not _REGISTRY.match(self.registry):
            raise ValueError(f"invalid registry {self.registry!r} (e.g. spamacr.azurecr.io)")
        if not _REPOSITORY.match(self.repository):
            raise ValueError(f"invalid image repository {self.repository!r}")
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", self.tag) or self.tag == "latest":
            raise ValueError(f"invalid image tag {self.tag!r}")
        if self.digest is not None and not re.fullmatch(r"sha256:[a-f0-9]{64}", self.digest):
            raise ValueError(f"invalid image digest {self.digest!r}")

    def values(self) -> dict[str, str]:
        """The chart's ``image``/``canary.image`` keys for this image."""
        return {"tag": self.tag, **({"digest": self.digest} if self.digest else {})}

    @property
    def repository_ref(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def ref(self) -> str:
        return f"{self.repository_ref}:{self.tag}"

    @property
    def registry_name(self) -> str:
        """ACR's resource name (what ``az acr build --registry`` takes)."""
        return self.registry.split(".", 1)[0]

    @classmethod
    def for_bento(cls, bento: dict, registry: str, repository: str) -> ImageSpec:
        """The image of a ``bento`` asset value (model version + code hash)."""
        tag = f"v{bento['model_version']}-{str(bento['code_hash'])[:8]}"
        return cls(registry=registry, repository=repository, tag=tag)


def release_name(prefix: str, environment: str) -> str:
    """``<prefix>-<environment>``, checked by Helm's own release-name rules."""
    import helm_python as helm

    if environment not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {environment!r}; expected one of {ENVIRONMENTS}")
    name = f"{prefix}-{environment}"
    try:
        helm.validate_release_name(name)
    except helm.HelmError as exc:
        raise ValueError(f"invalid Helm release name {name!r}: {exc}") from exc
    return name


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def release_values(
    settings: SpamSettings,
    environment: str,
    image: ImageSpec,
    canary: ImageSpec | None = None,
    canary_weight: int = 10,
) -> dict[str, Any]:
    """The values this release is installed with (on top of the chart's values.yaml).

    Production adds values-production.yaml; identity, Key Vault and Feast come from the
    settings, so the chart never holds an environment's secrets or ids."""
    values: dict[str, Any] = {}
    if environment == "production":
        values = yaml.safe_load(PRODUCTION_VALUES.read_text()) or {}
    values = _deep_merge(
        values,
        {
            "environment": environment,
            "image": {"repository": image.repository_ref, **image.values()},
            "config": {
                "SPAM_FEAST_PROJECT": settings.feast_project,
                "SPAM_FEAST_REDIS": settings.feast_redis,
                "SPAM_TARGET": settings.target,
                "SPAM_REPUTATION_TIMEOUT_MS": f"{settings.reputation_timeout_ms:g}",
                **(
                    {"SPAM_FEAST_REGISTRY": settings.feast_registry}
                    if settings.feast_registry
                    else {}
                ),
            },
        },
    )
    host = (
        settings.aks_ingress_host_production
        if environment == "production"
        else settings.aks_ingress_host_staging
    )
    if host:
        values["ingress"] = {**values.get("ingress", {}), "enabled": True, "host": host}
    elif values.get("ingress", {}).get("enabled"):
        raise ValueError(
            f"{environment} serves through the ingress: set "
            f"SPAM_AKS_INGRESS_HOST_{environment.upper()} (its public host name)"
        )
    if settings.aks_key_vault_name and settings.aks_workload_identity_client_id:
        values["apiKeys"] = {
            "source": "csi",
            "csi": {
                "keyVaultName": settings.aks_key_vault_name,
                "tenantId": settings.azure_tenant_id or "",
                "secretName": settings.aks_api_keys_secret,
            },
        }
        values["serviceAccount"] = {
            "workloadIdentityClientId": settings.aks_workload_identity_client_id
        }
    if settings.log_blob_container:
        # the serving pods ship their inference log to Blob, where monitoring reads it; the
        # pods authenticate with the workload identity the chart labels them with
        if not settings.aks_workload_identity_client_id:
            raise ValueError(
                "SPAM_LOG_BLOB_CONTAINER needs SPAM_AKS_WORKLOAD_IDENTITY_CLIENT_ID: the "
                "serving pods write the log to Blob with their workload identity"
            )
        values["config"].update(
            {
                "SPAM_LOG_BLOB_CONTAINER": settings.log_blob_container,
                "SPAM_LOG_BLOB_PREFIX": settings.log_blob_prefix,
                "SPAM_AZURE_STORAGE_ACCOUNT": str(settings.azure_storage_account or ""),
            }
        )
        values["serviceAccount"] = {
            **values.get("serviceAccount", {}),
            "workloadIdentityClientId": settings.aks_workload_identity_client_id,
        }
    if canary is not None:
        if canary.repository_ref != image.repository_ref:
            raise ValueError("the canary image must come from the same repository")
        values["canary"] = {"enabled": True, "weight": canary_weight, "image": canary.values()}
    return values


def render(values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    """Schema-check ``values`` and render the chart offline; one dict per manifest."""
    import helm_python as helm

    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("namespace", namespace)
                docs.append(doc)
    return docs


def validate_manifests(docs: list[dict[str, Any]], kube_version: str = KUBE_VERSION) -> list[str]:
    """Every manifest against the Kubernetes schemas (strict: unknown fields are errors);
    the chart's custom resources by their required fields. Returns the problems found."""
    import kubernetes_validate

    problems = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        crd = CRD_FIELDS.get((doc.get("apiVersion"), doc.get("kind")))
        if crd is not None:
            missing = [f for f in crd if f not in (doc.get("spec") or {})]
            if missing:
                problems.append(f"{name}: spec lacks {missing}")
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            problems.append(f"{name}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{name}: no schema: {exc}")
    return problems


def render_valid(values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    """:func:`render`, then :func:`validate_manifests`; invalid manifests raise."""
    docs = render(values, release, namespace)
    problems = validate_manifests(docs)
    if problems:
        raise DeployError("invalid manifests:\n  " + "\n  ".join(problems))
    return docs


def image_build_commands(
    builder: str, spec: ImageSpec, context_dir: Path, bento_tag: str
) -> list[list[str]]:
    """The commands that build and push ``spec``.

    ``acr``: ``az acr build`` runs the build in the registry (no local container engine);
    the context is the Bento's Docker context exported by :mod:`spam_assets.lib.image_context`.
    ``docker``/``podman``: ``bentoml containerize`` with that backend, then a push."""
    uid = [f"BENTO_USER_UID={IMAGE_UID}", f"BENTO_USER_GID={IMAGE_UID}"]
    if builder == "acr":
        return [
            [
                "az", "acr", "build",
                "--registry", spec.registry_name,
                "--image", f"{spec.repository}:{spec.tag}",
                "--file", str(context_dir / "env" / "docker" / "Dockerfile"),
                *[a for arg in uid for a in ("--build-arg", arg)],
                str(context_dir),
            ]
        ]  # fmt: skip
    if builder in ("docker", "podman"):
        return [
            [
                "bentoml", "containerize", bento_tag,
                "--backend", builder,
                "--image-tag", spec.ref,
                *[a for arg in uid for a in ("--opt", f"build-arg={arg}")],
            ],
            [builder, "push", spec.ref],
        ]  # fmt: skip
    raise ValueError(f"unknown image builder {builder!r}; expected acr, docker or podman")


def run_commands(commands: list[list[str]], env: dict[str, str], timeout_s: float) -> str:
    """Run the build/push commands in order; a missing tool or a failed step is a
    :class:`DeployError` naming the command (the registry credentials come from the caller's
    ``az login`` / workload identity, never from here)."""
    out = []
    for argv in commands:
        if shutil.which(argv[0], path=env.get("PATH")) is None:
            raise DeployError(f"image build needs `{argv[0]}` on PATH (`{' '.join(argv[:3])}`)")
        try:
            proc = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DeployError(f"`{' '.join(argv[:3])}` timed out after {timeout_s:.0f} s") from exc
        if proc.returncode != 0:
            raise DeployError(
                f"`{' '.join(argv[:3])}` failed ({proc.returncode}): {proc.stderr[-2000:]}"
            )
        out.append(proc.stdout[-2000:])
    return "\n".join(out)


@dataclass(frozen=True)
class ClusterTarget:
    """A kube context + namespace a release goes to."""

    environment: str
    context: str | None
    namespace: str
    kubeconfig: str | None = None

    @contextmanager
    def session(self, action: str) -> Iterator[Any]:
        """A Helm ``Config`` for this target; a Helm error inside becomes a
        :class:`DeployError` that names the stage and the action."""
        import helm_python as helm

        with helm.Config(
            kubeconfig_path=self.kubeconfig, kube_context=self.context, namespace=self.namespace
        ) as cfg:
            try:
                yield cfg
            except helm.HelmError as exc:
                raise DeployError(f"{self.environment}: {action}: {exc}") from exc


def cluster_targets(settings: SpamSettings) -> dict[str, ClusterTarget]:
    kubeconfig = str(settings.aks_kubeconfig) if settings.aks_kubeconfig else None
    return {
        "staging": ClusterTarget(
            "staging", settings.aks_context_staging, settings.aks_namespace_staging, kubeconfig
        ),
        "production": ClusterTarget(
            "production",
            settings.aks_context_production,
            settings.aks_namespace_production,
            kubeconfig,
        ),
    }


def unconfigured_reason(settings: SpamSettings) -> str | None:
    """Why ``aks_deployment`` does not run here, or None when it is configured."""
    if settings.target != "azure":
        return f"SPAM_TARGET={settings.target}: the AKS deployment runs only with SPAM_TARGET=azure"
    missing = [
        name
        for name, value in (
            ("SPAM_AKS_REGISTRY", settings.aks_registry),
            ("SPAM_AKS_CONTEXT_STAGING", settings.aks_context_staging),
            ("SPAM_AKS_CONTEXT_PRODUCTION", settings.aks_context_production),
        )
        if not value
    ]
    if missing:
        return "AKS deployment not configured: set " + ", ".join(missing)
    return None


def check_reachable(target: ClusterTarget) -> None:
    """Fail fast (before any image build) when the cluster cannot be reached."""
    with target.session(f"cluster of context {target.context!r} is unreachable") as cfg:
        cfg.check_reachable()


def upgrade_install(
    target: ClusterTarget, release: str, values: dict[str, Any], timeout_s: int
) -> dict[str, Any]:
    """``helm upgrade --install --wait --rollback-on-failure``: waits for the rollout (every
    pod ready, so the startup/readiness probes passed); a failed rollout restores the
    previous revision and raises."""
    import helm_python as helm

    common = {"wait": "watcher", "timeout": timeout_s, "rollback_on_failure": True}
    with (
        target.session(f"helm upgrade --install {release}") as cfg,
        helm.Chart.load(CHART_DIR) as chart,
    ):
        if release in {r["name"] for r in cfg.list()}:
            return cfg.upgrade(
                chart, release, values, cleanup_on_fail=True, max_history=10, **common
            )
        return cfg.install(chart, release, values, create_namespace=True, **common)


def smoke_test(target: ClusterTarget, release: str, timeout_s: int) -> dict[str, Any]:
    """``helm test``: the chart's test pod posts a real message to the release's Service with
    a key from the mounted secret and checks the JSON answer (in-cluster, no public URL)."""
    with target.session(f"smoke test of {release} failed") as cfg:
        return cfg.test(release, timeout=timeout_s, logs=True)


def az_login_command(env: dict[str, str]) -> list[str] | None:
    """``az login`` with the pod's workload identity (the federated token AKS mounts), or
    None outside such a pod (a developer's or CI's existing ``az login`` is used)."""
    token_file = env.get("AZURE_FEDERATED_TOKEN_FILE")
    if not token_file:
        return None
    return [
        "az", "login", "--service-principal",
        "--username", env["AZURE_CLIENT_ID"],
        "--tenant", env["AZURE_TENANT_ID"],
        "--federated-token", Path(token_file).read_text().strip(),
    ]  # fmt: skip


def digest_command(builder: str, spec: ImageSpec) -> list[str]:
    """The command printing the pushed image's digest (what releases pin)."""
    if builder == "acr":
        return [
            "az", "acr", "repository", "show",
            "--name", spec.registry_name,
            "--image", f"{spec.repository}:{spec.tag}",
            "--query", "digest", "-o", "tsv",
        ]  # fmt: skip
    return [builder, "image", "inspect", "--format", "{{index .RepoDigests 0}}", spec.ref]


def parse_digest(output: str) -> str:
    """``sha256:<64 hex>`` from a digest command's output (bare or ``repo@sha256:...``)."""
    found = re.findall(r"sha256:[a-f0-9]{64}", output)
    if len(set(found)) != 1:
        raise DeployError(f"expected one image digest in the registry's answer, got: {output!r}")
    return found[0]


def user_values(target: ClusterTarget, release: str) -> dict[str, Any] | None:
    """The values ``release`` was installed with (``helm get values``), or None when the
    release does not exist. The canary judge changes these and upgrades with the result."""
    with target.session(f"values of {release}") as cfg:
        if release not in {r["name"] for r in cfg.list()}:
            return None
        return dict(cfg.get_values(release) or {})


def release_status(target: ClusterTarget, release: str) -> dict[str, Any]:
    """Revision, status and image of a deployed release."""
    with target.session(f"status of {release}") as cfg:
        status = cfg.status(release)
        values = cfg.get_values(release)
    return {
        "release": release,
        "namespace": target.namespace,
        "revision": status.get("revision"),
        "status": status.get("status"),
        "image": (values or {}).get("image", {}),
    }
