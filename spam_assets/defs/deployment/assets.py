"""Deployment stage: build the Bento, run it locally, promote the model to ``champion``.

The MLflow alias ``champion`` moves only after the served model answered a smoke prediction,
so the alias always names a model that is actually serving.
"""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from spam_assets.defs.resources import MlflowRegistry, MonitoringResource, ServingResource
from spam_assets.lib.helper_process import HelperError, run_helper
from spam_assets.lib.local_server import (
    ServerError,
    pid_alive,
    port_in_use,
    smoke_test,
    start_server,
    stop_server,
    try_it_command,
    wait_for_version,
    wait_ready,
)
from spam_serving.model_store import read_aliases, read_canary, write_aliases
from spam_serving.settings import PROJECT_ROOT, get_settings

STATE_FILE = "local_deployment.json"


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
    """Serve ``bento``'s model under both aliases, smoke-test it, then move ``champion``.

    A running server of the same service code keeps running and hot-swaps the model (no
    dropped requests); different code, a dead server or ``restart`` starts a new process.
    On any failure the alias file is restored, so the previous model keeps serving.
    With ``SPAM_TARGET=azure`` it does not materialize (a server inside a step pod would die
    with the pod, and ``champion`` is moved by ``aks_deployment``); an observation says so.
    """
    target = get_settings().target
    if target != "local":
        reason = f"SPAM_TARGET={target}: serving runs on AKS (aks_deployment), not on 127.0.0.1"
        context.log.info(f"local_deployment skipped: {reason}")
        yield dg.AssetObservation(asset_key=context.asset_key, metadata={"skipped": reason})
        return
    api_key = serving.ensure_api_key()
    state_path = serving.state_dir / STATE_FILE
    state = local_state(serving.state_dir)
    version = str(bento["model_version"])
    entry = {"model_tag": bento["model_tag"], "model_version": version}
    previous_aliases = read_aliases(serving.alias_file)
    previous_canary = read_canary(serving.alias_file)
    running = bool(state) and pid_alive(state["pid"]) and state.get("port") == serving.port
    hot_swap = running and not config.restart and state.get("code_hash") == bento["code_hash"]
    if config.strategy not in ("direct", "canary"):
        raise dg.Failure(description=f"local_deployment: unknown strategy {config.strategy!r}")
    champion = previous_aliases.get("champion")
    canary = (
        config.strategy == "canary"
        and champion is not None
        and str(champion.get("model_version")) != version
    )
    if canary:
        stage = monitoring.canary_stages[0]
        canary_state = {
            "version": version,
            "champion_version": str(champion.get("model_version")),
            "fraction": stage,
            "started_at": datetime.now(UTC).isoformat(),
        }
        write_aliases(serving.alias_file, {"champion": champion, "challenger": entry}, canary_state)
    else:
        canary_state = {}
        write_aliases(serving.alias_file, {"champion": entry, "challenger": entry})
    try:
        if hot_swap:
            mode, ready_s, pid = ("canary" if canary else "hot-swap"), 0.0, state["pid"]
            context.log.info(f"server pid {pid} runs the same code; swapping the model")
            wait_for_version(serving.url, api_key, version, "staging" if canary else "production")
        else:
            if running:
                context.log.info(f"stopping server pid {state['pid']} ({state['bento_tag']})")
                stop_server(state["pid"])
            elif port_in_use(serving.host, serving.port):
                raise ServerError(
                    f"port {serving.port} is in use by a process this deployment did not start; "
                    "stop it or set SPAM_SERVE_PORT"
                )
            mode = "restart" if running else "start"
            server = start_server(
                bento["bento_tag"],
                serving.host,
                serving.port,
                serving.process_env(),
                serving.state_dir / "bento.log",
            )
            pid = server.pid
            try:
                ready_s = wait_ready(server, serving.startup_timeout_s)
            except ServerError:
                stop_server(server.pid)
                raise
        if canary:
            smoke = smoke_test(serving.url, api_key, version, "staging")
            smoke_test(
                serving.url, api_key, (str(champion.get("model_version")), version), "production"
            )
        else:
            smoke = smoke_test(serving.url, api_key, version, "production")
            smoke_test(serving.url, api_key, version, "staging")
    except ServerError as exc:
        if previous_aliases:
            write_aliases(serving.alias_file, previous_aliases, previous_canary)
        if running and not hot_swap and not pid_alive(state["pid"]):
            _restart_previous(context, serving, state)
        raise dg.Failure(
            description=f"local_deployment of model v{version} failed: {exc}",
            metadata={"log": dg.MetadataValue.path(str(serving.state_dir / "bento.log"))},
        ) from exc

    if canary:
        context.log.info(
            f"model v{version} is the canary: {canary_state['fraction']:.0%} of production "
            f"(champion stays v{canary_state['champion_version']}); canary_rollout decides"
        )
    else:
        registry.client().set_registered_model_alias(registry.model_name, "champion", version)
    new_state = {
        "pid": pid,
        "port": serving.port,
        "url": serving.url,
        "bento_tag": bento["bento_tag"] if not hot_swap else state["bento_tag"],
        "code_hash": bento["code_hash"],
        "model_version": canary_state.get("champion_version", version),
        "canary": canary_state,
        "deployed_at": datetime.now(UTC).isoformat(),
    }
    state_path.write_text(json.dumps(new_state, indent=2))
    curl = try_it_command(serving.url, serving.api_keys_file, multiline=True)
    if not canary:
        context.log.info(
            f"model v{version} serving at {serving.url} ({mode}); champion -> v{version}"
        )
    yield dg.Output(
        {**new_state, "mode": mode, "api_keys_file": serving.api_keys_file, "curl": curl},
        metadata={
            "url": dg.MetadataValue.url(serving.url),
            "pid": pid,
            "model_version": version,
            "bento_tag": new_state["bento_tag"],
            "mode": mode,
            "canary_fraction": canary_state.get("fraction", 0.0),
            "champion_version": new_state["model_version"],
            "ready_seconds": round(ready_s, 2),
            "smoke_label": smoke["label"],
            "smoke_spam_probability": round(smoke["spam_probability"], 4),
            "api_keys_file": dg.MetadataValue.path(serving.api_keys_file),
            "try_it": dg.MetadataValue.md(f"```\n{curl}\n```"),
            "deployed_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )


def _restart_previous(
    context: dg.AssetExecutionContext, serving: ServingResource, state: dict
) -> None:
    """Best effort: bring the previous Bento back on the port after a failed replacement."""
    try:
        server = start_server(
            state["bento_tag"],
            serving.host,
            serving.port,
            serving.process_env(),
            serving.state_dir / "bento.log",
        )
        wait_ready(server, serving.startup_timeout_s)
        state["pid"] = server.pid
        (serving.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
        context.log.warning(f"previous deployment {state['bento_tag']} restarted")
    except ServerError as exc:
        context.log.error(f"could not restart the previous deployment: {exc}")


def local_state(state_dir: Path) -> dict:
    """The last successful local deployment (for the CLI summary)."""
    path = state_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
