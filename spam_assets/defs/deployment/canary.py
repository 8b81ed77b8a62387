"""``canary_rollout``: judge the running canary on live traffic and move it on.

Runs on its own schedule (every 15 minutes by default). Each materialization reads the
production predictions and feedback logged since the canary started, compares challenger and
champion (error rate, p95 latency, feedback accuracy; see ``spam_assets.lib.canary``) and
either holds, advances to the next traffic stage, promotes (MLflow ``champion`` moves) or rolls
back (the challenger alias returns to the champion's version and an alert goes out). The alias
file and the MLflow aliases are changed together, so they always say what serves what.
"""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from spam_assets.defs.resources import MlflowRegistry, MonitoringResource, ServingResource
from spam_assets.lib.canary import decide, version_stats
from spam_assets.lib.local_deploy import local_state, write_state
from spam_assets.lib.monitoring import hours_between, join_feedback, read_feedback, read_predictions
from spam_serving.model_store import read_aliases, read_canary, write_aliases


@dg.asset(
    group_name="deployment",
    kinds={"bentoml"},
    description="Canary judge: hold, advance (10% -> 50% -> 100%), promote or roll back.",
)
def canary_rollout(
    context: dg.AssetExecutionContext,
    serving: ServingResource,
    registry: MlflowRegistry,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    canary = read_canary(serving.alias_file)
    aliases = read_aliases(serving.alias_file)
    if not canary or "champion" not in aliases or "challenger" not in aliases:
        return dg.MaterializeResult(metadata={"action": "none", "reason": "no canary running"})
    started = datetime.fromisoformat(canary["started_at"])
    since_stage = datetime.fromisoformat(canary.get("stage_started_at", canary["started_at"]))
    champion, challenger = str(canary["champion_version"]), str(canary["version"])
    log_root = monitoring.log_root  # one client for both reads when the log is on Blob
    preds = read_predictions(log_root, hours_between(since_stage, datetime.now(UTC)))
    if len(preds):
        preds = preds[pd.to_datetime(preds["ts"], utc=True) >= since_stage]
    log = join_feedback(preds, read_feedback(log_root, started))
    stats = version_stats(log, champion, challenger)
    fraction = float(canary["fraction"])
    decision = decide(stats, fraction, monitoring.canary_policy())
    context.log.info(
        f"canary v{challenger} at {fraction:.0%}: {decision.action} ({decision.reason})"
    )

    client = registry.client()
    now = datetime.now(UTC).isoformat()
    if decision.action == "advance":
        write_aliases(
            serving.alias_file,
            aliases,
            {**canary, "fraction": decision.next_fraction, "stage_started_at": now},
        )
    elif decision.action == "promote":
        write_aliases(
            serving.alias_file,
            {"champion": aliases["challenger"], "challenger": aliases["challenger"]},
        )
        client.set_registered_model_alias(registry.model_name, "champion", challenger)
        _record_state(serving, challenger)
    elif decision.action == "rollback":
        write_aliases(
            serving.alias_file, {"champion": aliases["champion"], "challenger": aliases["champion"]}
        )
        client.set_registered_model_alias(registry.model_name, "challenger", champion)
        client.set_model_version_tag(registry.model_name, challenger, "canary", "rolled_back")
        client.set_model_version_tag(
            registry.model_name, challenger, "canary_rollback_reason", decision.reason
        )
        alert = monitoring.alert(
            "canary_rollback",
            f"canary v{challenger} rolled back: {decision.reason}",
            {"champion": champion, "challenger": challenger, "stats": stats},
        )
        context.log.warning(f"rolled back canary v{challenger}; alert: {alert.detail}")
    return dg.MaterializeResult(
        metadata={
            "action": decision.action,
            "reason": decision.reason,
            "challenger_version": challenger,
            "champion_version": champion,
            "fraction_before": fraction,
            "fraction_after": decision.next_fraction,
            "challenger_requests": stats["challenger"]["requests"],
            "challenger_error_rate": stats["challenger"]["error_rate"],
            "champion_requests": stats["champion"]["requests"],
            "stats": dg.MetadataValue.json(stats),
        }
    )


def _record_state(serving: ServingResource, version: str) -> None:
    """The local deployment's state file names the version serving production."""
    state = local_state(serving.state_dir)
    if state:
        state.update(model_version=version, canary={}, promoted_at=datetime.now(UTC).isoformat())
        write_state(serving.state_dir, state)
