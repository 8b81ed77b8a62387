"""``aks_deployment``: the Bento as a container on AKS, staging first, production on approval.

Order matters: the clusters are checked first (an unreachable API server fails the step before
minutes of image build), then the image is built and pushed and pinned by digest, then each
stage is rendered, validated against the Kubernetes schemas, installed with ``--wait`` and
rollback-on-failure, smoke-tested in-cluster (``helm test``), and only then the MLflow alias
of that stage moves (``staging``, then ``champion``; ``challenger`` when production gets the
model as a canary, which ``canary_rollout`` then judges). Unconfigured, the asset does not
materialize: it records an observation with the reason, so the UI says why, and nothing
downstream believes a deployment happened.
"""

from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg

from spam_assets.defs.resources import AksResource, MlflowRegistry, ServingResource
from spam_assets.lib import aks, aks_canary
from spam_assets.lib.helper_process import HelperError, run_helper

#: MLflow alias moved after each stage's smoke test passed.
STAGE_ALIAS = {"staging": "staging", "production": "champion"}


class AksDeploymentConfig(dg.Config):
    approve_production: bool = False
    """The manual approval: with ``SPAM_AKS_PRODUCTION_APPROVAL=manual`` (default) production
    is deployed only in a run launched with this set (Launchpad, or the promotion workflow)."""
    skip_staging: bool = False
    """Promote what staging already runs (same image) without redeploying staging."""
    strategy: str = "direct"
    """``direct``: production runs the new image and ``champion`` moves once its smoke test
    passed. ``canary``: production keeps its image and runs the new one beside it for the
    first canary stage's share of requests (``challenger`` moves); ``canary_rollout`` then
    advances, promotes or rolls it back (the retrain job uses this)."""


def build_and_push(bento: dict, spec: aks.ImageSpec, builder: str, serving: ServingResource):
    """Build + push the image, return the spec pinned to the pushed digest."""
    context_dir = serving.state_dir / "image-context" / spec.tag
    if builder == "acr":
        try:
            run_helper(
                "spam_assets.lib.image_context",
                bento["bento_tag"],
                str(context_dir),
                env=serving.process_env(),
            )
        except HelperError as exc:
            raise aks.DeployError(f"exporting the Docker context: {exc}") from exc
    env = serving.process_env()
    login = aks.az_login_command(env) if builder == "acr" else None
    build = aks.image_build_commands(builder, spec, context_dir, bento["bento_tag"])
    aks.run_commands(([login] if login else []) + build, env, 3600)
    digest = aks.parse_digest(aks.run_commands([aks.digest_command(builder, spec)], env, 120))
    return replace(spec, digest=digest)


def _canary_values(s, target: aks.ClusterTarget, release: str, spec: aks.ImageSpec) -> dict:
    """Production's values with ``spec`` as the canary beside what production runs now."""
    current = aks.user_values(target, release)
    if current is None:
        raise aks.DeployError(
            f"production: no release {release} to run a canary beside; deploy production "
            "with strategy direct first"
        )
    return aks_canary.start_values(s, current, spec, s.canary_stages[0], datetime.now(UTC))


@dg.asset(
    group_name="deployment",
    description="The Bento on AKS via Helm (staging, then production after approval).",
    kinds={"kubernetes", "helm", "azure"},
    output_required=False,
)
def aks_deployment(
    context: dg.AssetExecutionContext,
    config: AksDeploymentConfig,
    bento: dict,
    aks_target: AksResource,
    serving: ServingResource,
    registry: MlflowRegistry,
):
    s = aks_target.settings()
    reason = aks.unconfigured_reason(s)
    if reason:
        context.log.warning(f"aks_deployment skipped: {reason}")
        yield dg.AssetObservation(
            asset_key=context.asset_key, metadata={"skipped": reason, "target": s.target}
        )
        return
    if config.strategy not in ("direct", "canary"):
        raise dg.Failure(description=f"unknown strategy {config.strategy!r}: direct or canary")
    approved = s.aks_production_approval == "auto" or config.approve_production
    stages = [] if config.skip_staging else ["staging"]
    stages += ["production"] if approved else []
    if not stages:
        raise dg.Failure(description="aks_deployment: skip_staging without production approval")
    targets = aks.cluster_targets(s)
    releases: dict[str, dict] = {}
    try:
        for stage in stages:
            aks.check_reachable(targets[stage])
        spec = aks.ImageSpec.for_bento(bento, str(s.aks_registry), s.aks_image_repository)
        spec = build_and_push(bento, spec, s.aks_image_builder, serving)
        context.log.info(f"image {spec.ref}@{spec.digest}")
        for stage in stages:
            target, name = targets[stage], aks.release_name(s.aks_release_prefix, stage)
            alias = STAGE_ALIAS[stage]
            if stage == "production" and config.strategy == "canary":
                values = _canary_values(s, target, name, spec)
                alias = "challenger"
            else:
                values = aks.release_values(s, stage, spec)
            aks.render_valid(values, name, target.namespace)
            release = aks.upgrade_install(target, name, values, s.aks_rollout_timeout_s)
            smoke = aks.smoke_test(target, name, 300)
            registry.client().set_registered_model_alias(
                registry.model_name, alias, str(bento["model_version"])
            )
            releases[stage] = {
                "release": name,
                "namespace": target.namespace,
                "context": target.context,
                "revision": release.get("revision"),
                "status": release.get("status"),
                "smoke": (smoke.get("logs") or "")[-500:],
                "alias": alias,
                **({"canary_weight": values["canary"]["weight"]} if alias == "challenger" else {}),
            }
            context.log.info(f"{stage}: {name} deployed, smoke test passed, alias {alias} moved")
    except (aks.DeployError, ValueError) as exc:
        raise dg.Failure(
            description=f"aks_deployment of model v{bento['model_version']}: {exc}",
            metadata={"done": dg.MetadataValue.json(releases)},
        ) from exc
    pending = (
        None
        if approved
        else "production awaits approval: launch aks_deployment with approve_production: true"
    )
    if pending:
        context.log.info(pending)
    yield dg.Output(
        {"image": spec.ref, "digest": spec.digest, "releases": releases, "pending": pending},
        metadata={
            "image": spec.ref,
            "digest": str(spec.digest),
            "model_version": str(bento["model_version"]),
            "stages": ", ".join(releases),
            "releases": dg.MetadataValue.json(releases),
            "production": "awaiting approval" if pending else "deployed",
        },
    )
