"""Helpers to run the real code location in-process against a private SPAM_HOME."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import dagster as dg

#: Small-corpus settings: 2 Tune trials, smaller vocabularies. The gate floors are lowered
#: because a few hundred messages cannot reach the production floors; the gate logic itself
#: is the same code.
SMALL_RUN_ENV = {
    "SPAM_TUNE_NUM_SAMPLES": "2",
    "SPAM_TUNE_MAX_ROUNDS": "200",
    "SPAM_TUNE_EARLY_STOPPING_ROUNDS": "20",
    "SPAM_MIN_DF": "2",
    "SPAM_MAX_TEXT_FEATURES": "800",
    "SPAM_MAX_META_FEATURES": "200",
    "SPAM_GATE_MIN_F1": "0.5",
    "SPAM_GATE_MAX_EASY_HAM_FPR": "0.2",
}


def load_defs() -> dg.Definitions:
    """Fresh definitions: resources are built from the current SPAM_* environment."""
    from spam_assets.definitions import defs

    return defs()


def run_assets(
    instance: dg.DagsterInstance, selection: list[str] | None = None
) -> dg.ExecuteInProcessResult:
    job = load_defs().resolve_job_def("spam_pipeline")
    keys = [dg.AssetKey(s) for s in selection] if selection else None
    return job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False)


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    out = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            out.append(f"{event.step_key}: {data.error.message if data.error else ''}")
            if data.user_failure_data and data.user_failure_data.description:
                out.append(data.user_failure_data.description)
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            check = event.asset_check_evaluation_data
            if not check.passed:
                out.append(f"check {check.check_name} failed: {check.description}")
    return "\n".join(out)


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    assert event is not None, f"{asset} was never materialized"
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def skipped_reason(result: dg.ExecuteInProcessResult) -> str:
    """The reason an asset that stood aside recorded (its one observation's ``skipped``)."""
    (obs,) = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    return obs.metadata["skipped"].value


class WarningRecords(logging.Handler):
    """Collects WARNING+ messages of one logger; Ray's loggers do not propagate to the root
    logger, so pytest's caplog does not see them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def logger_warnings(name: str) -> Iterator[list[str]]:
    """The warnings logger ``name`` emits inside the block."""
    records = WarningRecords()
    target = logging.getLogger(name)
    target.addHandler(records)
    try:
        yield records.messages
    finally:
        target.removeHandler(records)
