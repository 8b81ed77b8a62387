"""Deployment stage: build the Bento, run it locally, promote the model to ``champion``.

The MLflow alias ``champion`` moves only after the served model answered a smoke prediction,
so the alias always names a model that is actually serving.
"""

import time

import dagster as dg

from spam_assets.defs.resources import MlflowRegistry, MonitoringResource, ServingResource
from spam_assets.lib.helper_process import HelperError, run_helper
from spam_assets.lib.local_deploy import (
    STATE_FILE,
    STRATEGIES,
    DeploymentFailed,
    LocalTarget,
    deploy_local,
    local_state,
)
from spam_assets.lib.local_server import try_it_command
from spam_serving.settings import PROJECT_ROOT, get_settings

__all__ = ["STATE_FILE", "bento", "local_deployment", "local_state"]


@dg.asset(
    group_name="deployment",
    description="The Bento: service code + the model bundle in the BentoML model store, built "
    "with bentoml build (what local_deployment serves and aks_deployment ships).",
    kinds={"bentoml"},
)
def bento(context: dg.AssetExecutionContext, onnx_model: dict, serving: ServingResource):
    """``bentoml build`` of ``bentofile.yaml`` with the exported bundle as its model."""
    try:
        info = run_helper(
            "spam_assets.lib.bento_build",
            onnx_model["bundle_path"],
            str(onnx_model["model_version"]),
            env=serving.process_env(),
        )
    except HelperError as exc:
        raise dg.Failure(
            description=f"bento: bentoml build of {PROJECT_ROOT / 'bentofile.yaml'} failed",
            metadata={"stderr": dg.MetadataValue.text(exc.stderr[-4000:])},
        ) from exc
    context.log.info(f"built {info['bento_tag']} with model {info['model_tag']}")
    return dg.Output(
        info,
        metadata={
            "bento_tag": info["bento_tag"],
            "model_tag": info["model_tag"],
            "model_version": info["model_version"],
            "size_bytes": info["size_bytes"],
            "code_hash": info["code_hash"],
            "bento_path": dg.MetadataValue.path(info["bento_path"]),
        },
    )


class LocalDeploymentConfig(dg.Config):
    restart: bool = False
    """Restart the server even when only the model changed (default: hot swap)."""
    strategy: str = "direct"
    """``direct``: the new model serves everything and becomes champion at once (``make
    run``). ``canary``: it becomes challenger and answers the first canary stage's share of
    production; ``canary_rollout`` promotes or rolls it back (the retrain job uses this)."""


@dg.asset(
    group_name="deployment",
    description="The Bento served on 127.0.0.1 by a real bentoml serve process; the MLflow "
    "alias champion moves only once it answers.",
    kinds={"bentoml"},
    output_required=False,
)
def local_deployment(
    context: dg.AssetExecutionContext,
    config: LocalDeploymentConfig,
    bento: dict,
    serving: ServingResource,
    registry: MlflowRegistry,
    monitoring: MonitoringResource,
):
    """Serve ``bento``'s model (``spam_assets.lib.local_deploy``: hot swap or start, direct or
    canary, smoke-tested, the previous model restored on failure), then move ``champion``.
    With ``SPAM_TARGET=azure`` it does not materialize (a server inside a step pod would die
    with the pod, and ``champion`` is moved by ``aks_deployment``); an observation says so.
    """
    target = get_settings().target
    if target != "local":
        reason = f"SPAM_TARGET={target}: serving runs on AKS (aks_deployment), not on 127.0.0.1"
        context.log.info(f"local_deployment skipped: {reason}")
        yield dg.AssetObservation(asset_key=context.asset_key, metadata={"skipped": reason})
        return
    if config.strategy not in STRATEGIES:
        raise dg.Failure(description=f"local_deployment: unknown strategy {config.strategy!r}")
    version = str(bento["model_version"])
    local = LocalTarget(
        host=serving.host,
        port=serving.port,
        url=serving.url,
        state_dir=serving.state_dir,
        alias_file=serving.alias_file,
        env=serving.process_env(),
        startup_timeout_s=serving.startup_timeout_s,
        api_key=serving.ensure_api_key(),
    )
    try:
        done = deploy_local(
            bento,
            local,
            strategy=config.strategy,
            restart=config.restart,
            canary_fraction=monitoring.canary_stages[0],
            log=context.log.info,
        )
    except DeploymentFailed as exc:
        raise dg.Failure(
            description=f"local_deployment of model v{version} failed: {exc}",
            metadata={"log": dg.MetadataValue.path(str(local.log_file))},
        ) from exc

    state = done.state
    if done.canary:
        context.log.info(
            f"model v{version} is the canary: {done.canary['fraction']:.0%} of production "
            f"(champion stays v{done.canary['champion_version']}); canary_rollout decides"
        )
    else:
        registry.client().set_registered_model_alias(registry.model_name, "champion", version)
        context.log.info(
            f"model v{version} serving at {serving.url} ({done.mode}); champion -> v{version}"
        )
    curl = try_it_command(serving.url, serving.api_keys_file, multiline=True)
    yield dg.Output(
        {**state, "mode": done.mode, "api_keys_file": serving.api_keys_file, "curl": curl},
        metadata={
            "url": dg.MetadataValue.url(serving.url),
            "pid": state["pid"],
            "model_version": version,
            "bento_tag": state["bento_tag"],
            "mode": done.mode,
            "canary_fraction": done.canary.get("fraction", 0.0),
            "champion_version": state["model_version"],
            "ready_seconds": round(done.ready_s, 2),
            "smoke_label": done.smoke["label"],
            "smoke_spam_probability": round(done.smoke["spam_probability"], 4),
            "api_keys_file": dg.MetadataValue.path(serving.api_keys_file),
            "try_it": dg.MetadataValue.md(f"```\n{curl}\n```"),
            "deployed_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
