"""Resources of the code location, one module per concern, each a slice of
:class:`SpamSettings` filled the same way (``slice.SettingsSlice``); ``build_resources`` puts
them together for the local or the azure target."""

from __future__ import annotations

import dagster as dg

from spam_assets.defs.resources.aks import AksResource
from spam_assets.defs.resources.feast import FeastResource
from spam_assets.defs.resources.io_manager import ParquetPickleIOManager
from spam_assets.defs.resources.mlflow import MlflowRegistry, ensure_experiment, mlflow_tracking_for
from spam_assets.defs.resources.monitoring import MonitoringResource
from spam_assets.defs.resources.policy import ModelPolicy
from spam_assets.defs.resources.serving import ServingResource
from spam_assets.defs.resources.slice import SettingsSlice
from spam_assets.defs.resources.storage import CorpusResource, StorageResource
from spam_assets.defs.resources.tuning import TuningResource
from spam_serving.settings import SpamSettings, get_settings

__all__ = [
    "AksResource",
    "CorpusResource",
    "FeastResource",
    "MlflowRegistry",
    "ModelPolicy",
    "MonitoringResource",
    "ParquetPickleIOManager",
    "ServingResource",
    "SettingsSlice",
    "StorageResource",
    "TuningResource",
    "build_resources",
    "ensure_experiment",
]


def build_resources(settings: SpamSettings | None = None) -> dict[str, object]:
    """All resources from one settings object: the local target, or ``SPAM_TARGET=azure``
    (ADLS Gen2 IO manager, MLflow on PostgreSQL + Blob; see ``spam_assets.azure_target``)."""
    s = settings or get_settings()
    if s.target == "azure":
        from spam_assets.azure_target import azure_io_manager, check_azure_settings

        check_azure_settings(s)
        io_manager: dg.ConfigurableIOManager = azure_io_manager(s)
    else:
        io_manager = ParquetPickleIOManager(base_dir=str(s.data_dir / "assets"))
    return {
        "io_manager": io_manager,
        "corpus": CorpusResource.from_settings(s),
        "storage": StorageResource.from_settings(s),
        "policy": ModelPolicy.from_settings(s),
        "feast": FeastResource.from_settings(s),
        "tuning": TuningResource.from_settings(s),
        "mlflow": mlflow_tracking_for(s),
        "registry": MlflowRegistry.from_settings(s),
        "serving": ServingResource.from_settings(s),
        "aks_target": AksResource.from_settings(s),
        "monitoring": MonitoringResource.from_settings(s),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
