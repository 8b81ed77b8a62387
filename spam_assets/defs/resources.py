"""Resources of the code location, built from :class:`SpamSettings` (``SPAM_*`` env vars).

Every knob lives in the settings object; the resources here only carry it into Dagster so the
effective values are visible (and overridable per run) in the UI.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import ClassVar, Self, get_args

import dagster as dg
import pandas as pd
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from dagster_mlflow.resources import MlFlow

from spam_serving.settings import SpamSettings, get_settings


class CorpusResource(dg.ConfigurableResource):
    """Where raw mail comes from (see ``spam_assets.lib.corpus_sources`` for the forms)."""

    sources: list[str]
    cache_dir: str
    download_timeout_s: float = 120.0


class StorageResource(dg.ConfigurableResource):
    """Local roots for the raw store and model bundles."""

    data_dir: str
    bundles_dir: str

    @property
    def raw_dir(self) -> Path:
        return Path(self.data_dir) / "raw"

    def bundle_dir(self, model_name: str, version: str) -> Path:
        return Path(self.bundles_dir) / model_name / f"v{version}"


class SettingsSlice(dg.ConfigurableResource):
    """A resource that is a named slice of :class:`SpamSettings`: field ``f`` is setting
    ``PREFIX + f`` (or ``f`` itself when in ``UNPREFIXED``). ``from_settings`` fills it and
    ``settings()`` hands the effective values back to the plain-Python side, so the field
    list is written once, in the class."""

    PREFIX: ClassVar[str] = ""
    UNPREFIXED: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def _setting(cls, field: str) -> str:
        return field if field in cls.UNPREFIXED else cls.PREFIX + field

    @classmethod
    def from_settings(cls, s: SpamSettings) -> Self:
        def plain(value: object) -> object:  # Dagster config holds str, not Path
            return str(value) if isinstance(value, Path) else value

        return cls(**{f: plain(getattr(s, cls._setting(f))) for f in cls.model_fields})

    def settings(self) -> SpamSettings:
        update = {}
        for field in type(self).model_fields:
            name, value = self._setting(field), getattr(self, field)
            update[name] = Path(value) if value is not None and _is_path(name) else value
        return get_settings().model_copy(update=update)


class ModelPolicy(SettingsSlice):
    """Featurizer sizes, the model kind, operating points and the quality-gate floors
    (DESIGN.md section 4); every field is the setting of the same name."""

    max_text_features: int
    max_meta_features: int
    min_df: int
    validation_fraction: float
    refit_with_validation: bool
    target_ham_fpr: float
    reject_ham_fpr: float
    budget_confidence: float
    ensemble: bool
    ensemble_folds: int
    stack_l2: float
    balance_ham_groups: bool
    char_features: int
    gate_min_f1: float
    gate_max_easy_ham_fpr: float
    gate_max_f1_regression: float
    gate_compare: str
    gate_max_recall_regression: float
    reputation_features: bool

    def training_policy(self):
        """What ``spam_assets.lib.training.train`` follows (asset and benchmark alike)."""
        from spam_assets.lib.training import TrainingPolicy

        return TrainingPolicy(
            refit_with_validation=self.refit_with_validation,
            target_ham_fpr=self.target_ham_fpr,
            reject_ham_fpr=self.reject_ham_fpr,
            budget_confidence=self.budget_confidence,
            ensemble_folds=self.ensemble_folds,
            stack_l2=self.stack_l2,
            balance_ham_groups=self.balance_ham_groups,
        )

    def featurizer_config(self):
        """The featurizer's configuration (asset and quality benchmark build it the same way)."""
        from spam_serving.featurize import FeaturizerConfig

        return FeaturizerConfig(
            max_text_features=self.max_text_features,
            max_meta_features=self.max_meta_features,
            min_df=self.min_df,
            reputation=self.reputation_features,
            stacked=self.ensemble,
            char_features=self.char_features,
        )


def _is_path(setting: str) -> bool:
    annotation = SpamSettings.model_fields[setting].annotation
    return annotation is Path or Path in get_args(annotation)


class FeastResource(SettingsSlice):
    """The Feast feature store (sender reputation): project, online store, Redis, registry.

    The store itself is built by ``spam_serving.feature_store`` from the per-target
    feature_store yaml, exactly as the service builds it."""

    PREFIX: ClassVar[str] = "feast_"
    UNPREFIXED: ClassVar[frozenset[str]] = frozenset({"home"})

    home: str
    project: str
    online_store: str
    redis: str
    key_ttl_seconds: int
    registry: str | None = None
    registry_cache_ttl_s: int = 60

    @property
    def offline_dir(self) -> Path:
        return self.settings().feast_dir / "offline"

    def store(self, resolve: bool = False):
        """A ``FeatureStore``; ``resolve`` picks (and records) the store when ``auto``."""
        from spam_serving.feature_store import feature_store, online_store_kind

        s = self.settings()
        return feature_store(s, online_store_kind(s, resolve=resolve))


class TuningResource(dg.ConfigurableResource):
    """Ray Tune: local Ray with ``num_cpus`` by default, a cluster when ``ray_address`` is set.
    Filled from :class:`SpamSettings` like :class:`ModelPolicy`."""

    ray_address: str | None
    num_cpus: int
    num_samples: int
    max_rounds: int
    early_stopping_rounds: int
    seed: int
    storage_dir: str

    def search(self, data: dict, run_name: str, **tracking):
        """Run the Ray Tune search with these settings; ``tracking`` carries the MLflow
        arguments of :func:`spam_assets.lib.tuning.run_search` (none: untracked)."""
        from spam_assets.lib.tuning import run_search

        return run_search(
            data,
            num_samples=self.num_samples,
            num_cpus=self.num_cpus,
            address=self.ray_address,
            max_rounds=self.max_rounds,
            early_stopping=self.early_stopping_rounds,
            seed=self.seed,
            storage_dir=Path(self.storage_dir),
            run_name=run_name,
            **tracking,
        )


class MlflowRegistry(dg.ConfigurableResource):
    """MLflow tracking/registry access by explicit run id (evaluation, export, deployment)."""

    tracking_uri: str
    experiment: str
    model_name: str
    artifact_location: str | None = None

    def client(self):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.MlflowClient(self.tracking_uri)

    def ensure_experiment(self) -> str:
        return ensure_experiment(self.tracking_uri, self.experiment, self.artifact_location)


class ServingResource(dg.ConfigurableResource):
    """Where and how the local Bento deployment runs; filled from :class:`SpamSettings`."""

    spam_home: str
    bentoml_home: str
    host: str
    port: int
    workers: int
    api_keys_file: str
    startup_timeout_s: float = 120.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state_dir(self) -> Path:
        return Path(self.spam_home) / "serving"

    @property
    def alias_file(self) -> Path:
        return self.state_dir / "aliases.json"

    def ensure_api_key(self) -> str:
        """The first key of the key file, creating the file (mode 600) on first use."""
        import secrets

        path = Path(self.api_keys_file)
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    return line.strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        path.write_text(f"# API keys of the local deployment, one per line\n{key}\n")
        path.chmod(0o600)
        return key

    def process_env(self) -> dict[str, str]:
        """Environment of the ``bentoml serve`` process and of the build helper."""
        return {
            **os.environ,
            "SPAM_HOME": self.spam_home,
            "BENTOML_HOME": self.bentoml_home,
            "SPAM_API_KEYS_FILE": self.api_keys_file,
            "SPAM_SERVE_WORKERS": str(self.workers),
            "BENTOML_DO_NOT_TRACK": "true",
        }


class AksResource(SettingsSlice):
    """The AKS deployment target (``SPAM_TARGET=azure``): registry, clusters, identity
    (settings ``SPAM_AKS_*``), handed to ``spam_assets.lib.aks`` through ``settings()``."""

    PREFIX: ClassVar[str] = "aks_"
    UNPREFIXED: ClassVar[frozenset[str]] = frozenset({"target"})

    target: str
    registry: str | None
    image_repository: str
    image_builder: str
    kubeconfig: str | None
    context_staging: str | None
    context_production: str | None
    namespace_staging: str
    namespace_production: str
    release_prefix: str
    workload_identity_client_id: str | None
    key_vault_name: str | None
    ingress_host_staging: str | None
    ingress_host_production: str | None
    production_approval: str
    rollout_timeout_s: int


class MonitoringResource(dg.ConfigurableResource):
    """Drift thresholds, feedback floors, canary policy and alerting; filled from
    :class:`SpamSettings` (no defaults here, so one place owns them)."""

    inference_log_dir: str
    monitoring_dir: str
    reports_dir: str
    window_hours: int
    min_predictions: int
    score_psi: float
    feature_psi: float
    drift_share: float
    html_max_rows: int
    accuracy_floor: float
    feedback_min_count: int
    target_ham_fpr: float
    ham_fpr_alert_factor: float
    feedback_lookback_hours: int
    log_retention_hours: int
    retrain_cooldown_hours: float
    alert_webhook_url: str | None
    alert_timeout_s: float
    alert_retries: int
    canary_stages: list[float]
    canary_min_requests: int
    canary_min_feedback: int
    canary_max_error_rate_increase: float
    canary_max_latency_ratio: float
    canary_max_accuracy_drop: float
    canary_min_latency_increase_ms: float
    canary_alpha: float

    @property
    def log_root(self) -> Path:
        return Path(self.inference_log_dir)

    @property
    def partitions_dir(self) -> Path:
        return Path(self.monitoring_dir) / "inference_log"

    @property
    def reference_dir(self) -> Path:
        return Path(self.monitoring_dir) / "reference"

    def thresholds(self):
        from spam_assets.lib.drift import RetrainThresholds

        return RetrainThresholds(
            score_psi=self.score_psi,
            drift_share=self.drift_share,
            accuracy_floor=self.accuracy_floor,
            min_feedback=self.feedback_min_count,
            min_predictions=self.min_predictions,
            ham_fpr_budget=self.target_ham_fpr,
            ham_fpr_factor=self.ham_fpr_alert_factor,
        )

    def canary_policy(self):
        from spam_assets.lib.canary import CanaryPolicy

        return CanaryPolicy(
            stages=tuple(self.canary_stages),
            min_requests=self.canary_min_requests,
            min_feedback=self.canary_min_feedback,
            max_error_rate_increase=self.canary_max_error_rate_increase,
            max_latency_ratio=self.canary_max_latency_ratio,
            max_accuracy_drop=self.canary_max_accuracy_drop,
            min_latency_increase_ms=self.canary_min_latency_increase_ms,
            alpha=self.canary_alpha,
        )

    def alert(self, kind: str, summary: str, details: dict):
        from spam_assets.lib.alerts import post_alert

        return post_alert(
            self.alert_webhook_url,
            kind,
            summary,
            details,
            timeout_s=self.alert_timeout_s,
            retries=self.alert_retries,
        )


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


class ParquetPickleIOManager(dg.ConfigurableIOManager):
    """DataFrames as Parquet (pyarrow), anything else pickled; writes are atomic renames so a
    crash mid-write never leaves a half file where a good one was."""

    base_dir: str

    def _base(self, key: dg.AssetKey) -> Path:
        return Path(self.base_dir).joinpath(*key.path)

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        base = self._base(context.asset_key)
        base.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, pd.DataFrame):
            path, stale = base.with_suffix(".parquet"), base.with_suffix(".pkl")
            tmp = path.with_suffix(".parquet.tmp")
            obj.to_parquet(tmp, engine="pyarrow", index=False)
            context.add_output_metadata({"rows": len(obj), "path": str(path)})
        else:
            path, stale = base.with_suffix(".pkl"), base.with_suffix(".parquet")
            tmp = path.with_suffix(".pkl.tmp")
            with open(tmp, "wb") as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            context.add_output_metadata({"path": str(path)})
        os.replace(tmp, path)
        stale.unlink(missing_ok=True)

    def load_input(self, context: dg.InputContext) -> object:
        base = self._base(context.asset_key)
        if base.with_suffix(".parquet").exists():
            return pd.read_parquet(base.with_suffix(".parquet"), engine="pyarrow")
        path = base.with_suffix(".pkl")
        if not path.exists():
            raise dg.Failure(
                description=f"{context.asset_key.to_user_string()}: no stored value at {base}.*; "
                "materialize it first"
            )
        with open(path, "rb") as f:
            return pickle.load(f)


def build_resources(settings: SpamSettings | None = None) -> dict[str, object]:
    """All resources from one settings object: the local target, or ``SPAM_TARGET=azure``
    (ADLS Gen2 IO manager, MLflow on PostgreSQL + Blob; see ``spam_assets.azure_target``)."""
    s = settings or get_settings()
    mlflow_uri = s.effective_mlflow_uri
    if s.target == "azure":
        from spam_assets.azure_target import azure_io_manager, check_azure_settings

        check_azure_settings(s)
        io_manager: dg.ConfigurableIOManager = azure_io_manager(s)
        artifacts = str(s.mlflow_artifact_uri)
    else:
        io_manager = ParquetPickleIOManager(base_dir=str(s.data_dir / "assets"))
        artifacts = str(s.mlflow_artifact_root)
    return {
        "io_manager": io_manager,
        "corpus": CorpusResource(
            sources=list(s.corpus_sources),
            cache_dir=str(s.data_dir / "downloads"),
            download_timeout_s=s.download_timeout_s,
        ),
        "storage": StorageResource(data_dir=str(s.data_dir), bundles_dir=str(s.bundles_dir)),
        "policy": ModelPolicy.from_settings(s),
        "feast": FeastResource.from_settings(s),
        "tuning": TuningResource(
            ray_address=s.ray_address,
            num_cpus=s.ray_num_cpus,
            num_samples=s.tune_num_samples,
            max_rounds=s.tune_max_rounds,
            early_stopping_rounds=s.tune_early_stopping_rounds,
            seed=s.seed,
            storage_dir=str(s.home / "ray_results"),
        ),
        "mlflow": mlflow_tracking.configured(
            {
                "experiment_name": s.mlflow_experiment,
                "mlflow_tracking_uri": mlflow_uri,
                "artifact_location": artifacts,
            }
        ),
        "registry": MlflowRegistry(
            tracking_uri=mlflow_uri,
            experiment=s.mlflow_experiment,
            model_name=s.registered_model_name,
            artifact_location=artifacts,
        ),
        "serving": ServingResource(
            spam_home=str(s.home),
            bentoml_home=str(s.bentoml_home),
            host=s.serve_host,
            port=s.serve_port,
            workers=s.serve_workers,
            api_keys_file=str(s.api_keys_file or s.default_api_keys_file),
        ),
        "aks_target": AksResource.from_settings(s),
        "monitoring": MonitoringResource(
            inference_log_dir=str(s.inference_log_dir),
            monitoring_dir=str(s.data_dir / "monitoring"),
            reports_dir=str(s.reports_dir),
            window_hours=s.drift_window_hours,
            min_predictions=s.drift_min_predictions,
            score_psi=s.drift_score_psi,
            feature_psi=s.drift_feature_psi,
            drift_share=s.drift_share,
            html_max_rows=s.drift_html_max_rows,
            accuracy_floor=s.feedback_accuracy_floor,
            feedback_min_count=s.feedback_min_count,
            target_ham_fpr=s.target_ham_fpr,
            ham_fpr_alert_factor=s.ham_fpr_alert_factor,
            feedback_lookback_hours=s.feedback_lookback_hours,
            log_retention_hours=s.log_retention_hours,
            retrain_cooldown_hours=s.retrain_cooldown_hours,
            alert_webhook_url=s.alert_webhook_url,
            alert_timeout_s=s.alert_timeout_s,
            alert_retries=s.alert_retries,
            canary_stages=list(s.canary_stages),
            canary_min_requests=s.canary_min_requests,
            canary_min_feedback=s.canary_min_feedback,
            canary_max_error_rate_increase=s.canary_max_error_rate_increase,
            canary_max_latency_ratio=s.canary_max_latency_ratio,
            canary_max_accuracy_drop=s.canary_max_accuracy_drop,
            canary_min_latency_increase_ms=s.canary_min_latency_increase_ms,
            canary_alpha=s.canary_alpha,
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
