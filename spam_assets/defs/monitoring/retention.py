"""Retention of the raw inference log: the service appends every prediction with its parsed
message (~6 KB a row, for retraining), so without this the log grows without bound (about
0.5 TB a day at a sustained 1,000 rps before compression). What reads it: the hourly
consolidation and drift windows (``drift_window_hours``) and retraining
(``feedback_lookback_hours``); the settings refuse a retention shorter than either. The
consolidated hourly partitions (no messages) and drift reports are kept."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from spam_assets.defs.resources import MonitoringResource
from spam_serving.inference_log import FEEDBACK, PREDICTIONS, prune_log


@dg.op(
    description="Delete raw inference-log hours older than the retention.",
    out=dg.Out(dg.Nothing),  # nothing to store: what was deleted goes in the output metadata
)
def prune_inference_log(
    context: dg.OpExecutionContext, monitoring: MonitoringResource
) -> dg.Output:
    cutoff = datetime.now(UTC) - timedelta(hours=monitoring.log_retention_hours)
    metadata: dict = {"cutoff": cutoff.strftime("%Y-%m-%d %H:00 UTC")}
    for stream in (PREDICTIONS, FEEDBACK):
        hours, freed = prune_log(monitoring.log_root, stream, cutoff)
        metadata[f"{stream}_hours_deleted"] = hours
        metadata[f"{stream}_mib_freed"] = round(freed / 2**20, 2)
        context.log.info(
            f"{stream}: {hours} hours before {metadata['cutoff']} deleted, "
            f"{freed / 2**20:.1f} MiB freed"
        )
    return dg.Output(None, metadata=metadata)


@dg.job(description="Raw inference-log retention (SPAM_LOG_RETENTION_HOURS).")
def spam_log_retention() -> None:
    prune_inference_log()
