"""``canary_rollout``: judge the running canary on live traffic and move it on.

Runs on its own schedule (every 15 minutes by default). Each materialization reads the
production predictions and feedback logged since the canary's stage started, compares
challenger and champion (error rate, p95 latency, feedback accuracy; see
``spam_assets.lib.canary``) and either holds, advances to the next traffic stage, promotes
(MLflow ``champion`` moves) or rolls back (the challenger alias returns to the champion's
version and an alert goes out).

Where the canary runs decides how a stage change is applied: locally the alias file the
serving workers poll; on AKS (``SPAM_TARGET=azure`` with the clusters configured) the
production Helm release, upgraded with new values (``spam_assets.lib.aks_canary``). The
MLflow aliases change only after the serving side did, so they always say what serves what.
"""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from spam_assets.defs.resources import (
    AksResource,
    MlflowRegistry,
    MonitoringResource,
    ServingResource,
)
from spam_assets.lib import aks, aks_canary
from spam_assets.lib.canary import CanaryDecision, RunningCanary, decide, version_stats
from spam_assets.lib.local_deploy import local_state, write_state
from spam_assets.lib.monitoring import hours_between, join_feedback, read_feedback, read_predictions
from spam_serving.model_store import read_aliases, read_canary, write_aliases


@dg.asset(
    group_name="deployment",
    kinds={"bentoml", "kubernetes"},
    description="Canary judge: hold, advance (10% -> 50% -> 100%), promote or roll back.",
)
def canary_rollout(
    context: dg.AssetExecutionContext,
    serving: ServingResource,
    registry: MlflowRegistry,
    monitoring: MonitoringResource,
    aks_target: AksResource,
) -> dg.MaterializeResult:
    s = aks_target.settings()
    on_aks = aks.unconfigured_reason(s) is None
    try:
        found = _aks_canary(s) if on_aks else _local_canary(serving)
    except (aks.DeployError, ValueError) as exc:
        raise dg.Failure(description=f"canary_rollout: reading the canary: {exc}") from exc
    if found is None:
        return dg.MaterializeResult(metadata={"action": "none", "reason": "no canary running"})
    canary, release_values = found
    decision, stats = _judge(canary, monitoring)
    context.log.info(
        f"canary v{canary.challenger} at {canary.fraction:.0%}: {decision.action} "
        f"({decision.reason})"
    )
    applied: dict = {}
    try:
        if on_aks:
            applied = _apply_aks(s, release_values, decision)
        else:
            _apply_local(serving, canary, decision)
    except (aks.DeployError, ValueError) as exc:
        raise dg.Failure(
            description=f"canary_rollout: applying {decision.action} of v{canary.challenger}: "
            f"{exc}",
            metadata={"decision": decision.action, "reason": decision.reason},
        ) from exc
    _apply_registry(context, registry, monitoring, canary, decision, stats)
    return dg.MaterializeResult(
        metadata={
            "action": decision.action,
            "reason": decision.reason,
            "where": "aks" if on_aks else "local",
            "challenger_version": canary.challenger,
            "champion_version": canary.champion,
            "fraction_before": canary.fraction,
            "fraction_after": decision.next_fraction,
            "challenger_requests": stats["challenger"]["requests"],
            "challenger_error_rate": stats["challenger"]["error_rate"],
            "champion_requests": stats["champion"]["requests"],
            "stats": dg.MetadataValue.json(stats),
            **({"release": dg.MetadataValue.json(applied)} if applied else {}),
        }
    )


def _local_canary(serving: ServingResource) -> tuple[RunningCanary, None] | None:
    canary = read_canary(serving.alias_file)
    aliases = read_aliases(serving.alias_file)
    if not canary or "champion" not in aliases or "challenger" not in aliases:
        return None
    started = datetime.fromisoformat(canary["started_at"])
    return RunningCanary(
        champion=str(canary["champion_version"]),
        challenger=str(canary["version"]),
        fraction=float(canary["fraction"]),
        started_at=started,
        stage_started_at=datetime.fromisoformat(
            canary.get("stage_started_at") or canary["started_at"]
        ),
    ), None


def _aks_canary(s) -> tuple[RunningCanary, dict] | None:
    target = aks.cluster_targets(s)["production"]
    values = aks.user_values(target, aks.release_name(s.aks_release_prefix, "production"))
    found = aks_canary.read_canary(values) if values else None
    return (found, values) if found is not None else None


def _judge(canary: RunningCanary, monitoring: MonitoringResource) -> tuple[CanaryDecision, dict]:
    """The decision over the stage's production traffic (feedback since the canary began)."""
    log_root = monitoring.log_root  # one client for both reads when the log is on Blob
    since = canary.stage_started_at
    preds = read_predictions(log_root, hours_between(since, datetime.now(UTC)), failures=True)
    if len(preds):
        preds = preds[pd.to_datetime(preds["ts"], utc=True) >= since]
    log = join_feedback(preds, read_feedback(log_root, canary.started_at))
    stats = version_stats(log, canary.champion, canary.challenger)
    return decide(stats, canary.fraction, monitoring.canary_policy()), stats


def _apply_local(serving: ServingResource, canary: RunningCanary, decision: CanaryDecision) -> None:
    """The alias file the serving workers poll (and the local deployment's state)."""
    aliases = read_aliases(serving.alias_file)
    now = datetime.now(UTC).isoformat()
    if decision.action == "advance":
        state = read_canary(serving.alias_file)
        state.update(fraction=decision.next_fraction, stage_started_at=now)
        write_aliases(serving.alias_file, aliases, state)
    elif decision.action == "promote":
        new = aliases["challenger"]
        write_aliases(serving.alias_file, {"champion": new, "challenger": new})
        state = local_state(serving.state_dir)
        if state:
            state.update(model_version=canary.challenger, canary={}, promoted_at=now)
            write_state(serving.state_dir, state)
    elif decision.action == "rollback":
        old = aliases["champion"]
        write_aliases(serving.alias_file, {"champion": old, "challenger": old})


def _apply_aks(s, values: dict, decision: CanaryDecision) -> dict:
    """The production release upgraded with the decision's values (rendered and validated
    first; ``--wait`` with rollback on failure); nothing for a hold."""
    new = aks_canary.next_values(values, decision, datetime.now(UTC))
    if new is None:
        return {}
    target = aks.cluster_targets(s)["production"]
    name = aks.release_name(s.aks_release_prefix, "production")
    aks.render_valid(new, name, target.namespace)
    release = aks.upgrade_install(target, name, new, s.aks_rollout_timeout_s)
    canary = new.get("canary", {})
    return {
        "release": name,
        "revision": release.get("revision"),
        "status": release.get("status"),
        "image_tag": new["image"]["tag"],
        "canary_weight": canary.get("weight", 0) if canary.get("enabled") else 0,
    }


def _apply_registry(
    context: dg.AssetExecutionContext,
    registry: MlflowRegistry,
    monitoring: MonitoringResource,
    canary: RunningCanary,
    decision: CanaryDecision,
    stats: dict,
) -> None:
    """MLflow's aliases follow what now serves; a rollback tags the version and alerts."""
    client = registry.client()
    if decision.action == "promote":
        client.set_registered_model_alias(registry.model_name, "champion", canary.challenger)
    elif decision.action == "rollback":
        client.set_registered_model_alias(registry.model_name, "challenger", canary.champion)
        for key, value in (("canary", "rolled_back"), ("canary_rollback_reason", decision.reason)):
            client.set_model_version_tag(registry.model_name, canary.challenger, key, value)
        alert = monitoring.alert(
            "canary_rollback",
            f"canary v{canary.challenger} rolled back: {decision.reason}",
            {"champion": canary.champion, "challenger": canary.challenger, "stats": stats},
        )
        context.log.warning(f"rolled back canary v{canary.challenger}; alert: {alert.detail}")
