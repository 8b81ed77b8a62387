"""Sensors of the loop.

``drift_retrain_sensor`` reads only the latest ``drift_report`` materialization's metadata
(never data: sensor ticks time out at 60 s) and requests ``spam_retrain`` when a threshold is
crossed. The cursor holds the last evaluated event id and the last time it fired, so a report
is judged once and a retrain is not requested again within the cooldown; the run_key makes the
request idempotent even if the cursor were lost.
``retrain_failure_alert`` posts failed retrain runs to the webhook.
"""

import json
import time

import dagster as dg

from spam_assets.defs.monitoring.jobs import retrain_job
from spam_assets.defs.monitoring.status import sensor_status
from spam_assets.defs.resources import MonitoringResource
from spam_assets.lib.drift import retrain_reasons
from spam_serving.settings import get_settings

DRIFT_REPORT = dg.AssetKey("drift_report")


def _cursor(raw: str | None) -> dict:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


def _last_retrain_start(instance: dg.DagsterInstance) -> float | None:
    """Start of the newest ``spam_retrain`` run (also manual ones), if any."""
    records = instance.get_run_records(dg.RunsFilter(job_name=retrain_job.name), limit=1)
    return records[0].create_timestamp.timestamp() if records else None


@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=get_settings().drift_sensor_interval_s,
    default_status=sensor_status("drift_retrain_sensor"),
    description="Retrain when the latest drift report crosses a threshold (with cooldown).",
)
def drift_retrain_sensor(context: dg.SensorEvaluationContext, monitoring: MonitoringResource):
    records = context.instance.fetch_materializations(DRIFT_REPORT, limit=1).records
    if not records or records[0].asset_materialization is None:
        return dg.SkipReason("no drift_report materialized yet")
    event = records[0]
    cursor = _cursor(context.cursor)
    partition = event.asset_materialization.partition
    if event.storage_id <= int(cursor.get("event_id", -1)):
        return dg.SkipReason(f"drift_report {partition} (event {event.storage_id}) already judged")
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    reasons, account = retrain_reasons(meta, monitoring.thresholds())
    cursor["event_id"] = event.storage_id
    if not reasons:
        context.update_cursor(json.dumps(cursor))
        return dg.SkipReason(f"drift_report {partition}: no threshold crossed: {account}")
    now = time.time()
    last = max(float(cursor.get("fired_at", 0.0)), _last_retrain_start(context.instance) or 0.0)
    cooldown_s = monitoring.retrain_cooldown_hours * 3600
    if now - last < cooldown_s:
        context.update_cursor(json.dumps(cursor))
        return dg.SkipReason(
            f"drift_report {partition}: {'; '.join(reasons)}, but the last retrain started "
            f"{(now - last) / 3600:.1f} h ago (cooldown {monitoring.retrain_cooldown_hours} h)"
        )
    cursor["fired_at"] = now
    context.update_cursor(json.dumps(cursor))
    summary = f"drift_report {partition}: {'; '.join(reasons)}"
    alert = monitoring.alert("drift", f"retraining: {summary}", {"partition": partition, **meta})
    context.log.info(f"retrain requested ({summary}); alert: {alert.detail[:200]}")
    return dg.RunRequest(
        run_key=f"drift-{event.storage_id}",
        tags={
            "spam/trigger": "drift",
            "spam/drift_partition": str(partition),
            "spam/drift_event": str(event.storage_id),
            "spam/reasons": "; ".join(reasons)[:255],
        },
    )


@dg.run_failure_sensor(
    monitored_jobs=[retrain_job],
    default_status=sensor_status("retrain_failure_alert"),
    description="POST failed retrain runs to the alert webhook.",
)
def retrain_failure_alert(context: dg.RunFailureSensorContext, monitoring: MonitoringResource):
    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    result = monitoring.alert(
        "retrain_failed",
        f"retrain run {run.run_id[:8]} failed: {message[:300]}",
        {"run_id": run.run_id, "job": run.job_name, "tags": dict(run.tags)},
    )
    if not result.delivered:
        context.log.warning(f"alert not delivered: {result.detail}")
