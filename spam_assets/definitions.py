"""The code location: everything under ``defs/`` (autoloaded, one folder per stage) plus the
executor and the job that materializes the whole chain."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from spam_assets.defs.monitoring.jobs import NOT_TRAINING
from spam_serving.settings import get_settings

#: Every asset of the training chain; ``make run`` and the retrain path materialize this.
spam_pipeline = dg.define_asset_job(
    "spam_pipeline",
    selection=dg.AssetSelection.all() - NOT_TRAINING,
    description="raw corpus -> parsed -> splits -> features -> tuned model -> evaluation -> ONNX",
)


@dg.definitions
def defs() -> dg.Definitions:
    settings = get_settings()
    if settings.target == "azure":
        from spam_assets.azure_target import azure_executor

        executor = azure_executor(settings)
    elif settings.executor == "in_process":
        executor = dg.in_process_executor
    else:
        # 2 cores here: Ray trials already use every core, so steps beside them would thrash.
        executor = dg.multiprocess_executor.configured({"max_concurrent": settings.max_concurrent})
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(jobs=[spam_pipeline], executor=executor),
    )
