"""The loop's cadence: hourly drift monitoring, the canary judge, raw-log retention.

All of them run by default with the daemon (``make ui`` / ``dagster dev``): "scheduled drift
sensors" is one of the three ways this project is used, and a loop whose schedules start
stopped never closes. ``SPAM_AUTOMATIONS_STOPPED`` lists the ones to start stopped; each
cron is a setting (the daemon test runs the drift schedule every minute)."""

from datetime import timedelta

import dagster as dg

from spam_assets.defs.monitoring.jobs import canary_job, monitoring_job
from spam_assets.defs.monitoring.partitions import HOURLY
from spam_assets.defs.monitoring.retention import spam_log_retention
from spam_assets.defs.monitoring.status import schedule_status
from spam_serving.settings import get_settings


@dg.schedule(
    cron_schedule=get_settings().drift_schedule_cron,
    job=monitoring_job,
    execution_timezone="UTC",
    default_status=schedule_status("hourly_drift_schedule"),
    description="The last complete hour's inference_log, then its drift_report "
    "(SPAM_DRIFT_SCHEDULE_CRON, default at :05).",
)
def hourly_drift_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    lag = get_settings().drift_schedule_lag_hours
    hour = context.scheduled_execution_time.replace(minute=0, second=0, microsecond=0)
    key = HOURLY.get_partition_key_for_timestamp((hour - timedelta(hours=lag)).timestamp())
    # a complete hour is materialized once; the current hour (lag 0) again at every tick
    run_key = key if lag else f"{key}@{context.scheduled_execution_time.isoformat()}"
    return dg.RunRequest(run_key=run_key, partition_key=key)


canary_schedule = dg.ScheduleDefinition(
    name="canary_schedule",
    job=canary_job,
    cron_schedule=get_settings().canary_schedule_cron,
    execution_timezone="UTC",
    default_status=schedule_status("canary_schedule"),
    description="canary_rollout: advance, promote or roll back a running canary; a no-op "
    "when none runs (SPAM_CANARY_SCHEDULE_CRON, default every 15 minutes).",
)

log_retention_schedule = dg.ScheduleDefinition(
    name="log_retention_schedule",
    job=spam_log_retention,
    cron_schedule=get_settings().log_retention_cron,
    execution_timezone="UTC",
    default_status=schedule_status("log_retention_schedule"),
    description="Delete raw inference-log hours past SPAM_LOG_RETENTION_HOURS "
    "(SPAM_LOG_RETENTION_CRON, default daily at 03:30 UTC).",
)
