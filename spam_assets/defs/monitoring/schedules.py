"""Hourly drift monitoring and the canary judge's cadence."""

from datetime import timedelta

import dagster as dg

from spam_assets.defs.monitoring.jobs import canary_job, monitoring_job
from spam_assets.defs.monitoring.partitions import HOURLY


@dg.schedule(
    cron_schedule="5 * * * *",
    job=monitoring_job,
    execution_timezone="UTC",
    description="At :05, the last complete hour: inference_log, then drift_report.",
)
def hourly_drift_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    hour = context.scheduled_execution_time.replace(minute=0, second=0, microsecond=0)
    key = HOURLY.get_partition_key_for_timestamp((hour - timedelta(hours=1)).timestamp())
    return dg.RunRequest(run_key=key, partition_key=key)


canary_schedule = dg.ScheduleDefinition(
    name="canary_schedule",
    job=canary_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    description="Every 15 minutes: canary_rollout (a no-op when no canary runs).",
)
