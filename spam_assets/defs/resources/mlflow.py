"""MLflow: the registry resource, and dagster-mlflow's tracking resource (one MLflow run per
Dagster run, the parent of the Tune trials' runs)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import dagster as dg
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from dagster_mlflow.resources import MlFlow

from spam_assets.defs.resources.slice import SettingsSlice, Source
from spam_serving.settings import SpamSettings


def artifact_location(s: SpamSettings) -> str:
    """Artifacts on Blob/ADLS for the azure target, under ``SPAM_HOME`` locally."""
    return str(s.mlflow_artifact_uri if s.target == "azure" else s.mlflow_artifact_root)


class MlflowRegistry(SettingsSlice):
    """MLflow tracking/registry access by explicit run id (evaluation, export, deployment)."""

    SOURCES: ClassVar[dict[str, Source]] = {
        "tracking_uri": "effective_mlflow_uri",
        "experiment": "mlflow_experiment",
        "model_name": "registered_model_name",
        "artifact_location": lambda s: artifact_location(s),
    }

    tracking_uri: str
    experiment: str
    model_name: str
    artifact_location: str | None

    def client(self):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.MlflowClient(self.tracking_uri)

    def ensure_experiment(self) -> str:
        return ensure_experiment(self.tracking_uri, self.experiment, self.artifact_location)


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> str:
    """Create the experiment with an explicit artifact root (SQLite's default is ``./mlruns``)."""
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(
            name,
            artifact_location=Path(artifact_location).resolve().as_uri()
            if artifact_location and "://" not in artifact_location
            else artifact_location,
        )
    except Exception:  # created concurrently by another step
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@dg.resource(
    config_schema={
        **MLFLOW_CONFIG_SCHEMA,
        "artifact_location": dg.Field(str, is_required=False),
    },
    description="dagster-mlflow's tracking resource: one MLflow run per Dagster run.",
)
def mlflow_tracking(context) -> MlFlow:
    """dagster-mlflow's ``MlFlow`` with the experiment pre-created at our artifact root.

    The run it starts (tagged ``dagster_run_id``) is the parent of the Tune trial runs.
    """
    cfg = context.resource_config
    ensure_experiment(
        cfg["mlflow_tracking_uri"], cfg["experiment_name"], cfg.get("artifact_location")
    )
    mlf = MlFlow(context)
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        mlf.mlflow_run_id = active.info.run_id
    return mlf


def mlflow_tracking_for(s: SpamSettings) -> dg.ResourceDefinition:
    """dagster-mlflow's legacy resource, configured from the settings (it takes no Pythonic
    config)."""
    return mlflow_tracking.configured(
        {
            "experiment_name": s.mlflow_experiment,
            "mlflow_tracking_uri": s.effective_mlflow_uri,
            "artifact_location": artifact_location(s),
        }
    )
