"""Every knob in one place: a pydantic-settings object overridable by ``SPAM_*`` env vars.

Dagster resources take their defaults from here (so the UI shows the effective values), and
the serving side reads the same object, so a value is never defined twice.
List values are JSON in the environment, e.g.
``SPAM_CORPUS_SOURCES='["spam:/data/junk.mbox", "ham:/data/Maildir"]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]

APACHE_CORPUS_URLS: tuple[str, ...] = (
    "https://spamassassin.apache.org/old/publiccorpus/20030228_easy_ham.tar.bz2",
    "https://spamassassin.apache.org/old/publiccorpus/20030228_easy_ham_2.tar.bz2",
    "https://spamassassin.apache.org/old/publiccorpus/20030228_hard_ham.tar.bz2",
    "https://spamassassin.apache.org/old/publiccorpus/20030228_spam.tar.bz2",
    "https://spamassassin.apache.org/old/publiccorpus/20050311_spam_2.tar.bz2",
)


class SpamSettings(BaseSettings):
    """Embedded defaults run everything locally under ``home``."""

    model_config = SettingsConfigDict(env_prefix="SPAM_", extra="ignore")

    @model_validator(mode="after")
    def _retention_covers_its_readers(self) -> SpamSettings:
        needed = max(self.feedback_lookback_hours, self.drift_window_hours)
        if self.log_retention_hours < needed:
            raise ValueError(
                f"SPAM_LOG_RETENTION_HOURS={self.log_retention_hours} is shorter than what reads "
                f"the raw log: SPAM_FEEDBACK_LOOKBACK_HOURS={self.feedback_lookback_hours}, "
                f"SPAM_DRIFT_WINDOW_HOURS={self.drift_window_hours}"
            )
        return self

    home: Path = Field(
        default=PROJECT_ROOT / ".spam_home",
        description="Root of all local state: data, MLflow, Dagster storage, model bundles.",
    )

    # corpus
    corpus_sources: list[str] = Field(
        default=list(APACHE_CORPUS_URLS),
        description="URLs or paths (.tar.bz2/.tgz, maildir, .eml dir, mbox); prefix "
        "'spam:'/'ham:' to label a source whose name does not say.",
    )
    download_timeout_s: float = Field(120.0, description="Seconds to wait for a corpus download.")
    corpus_chunk_rows: int = Field(
        10_000,
        ge=1,
        description="Messages per part of the raw store (and so per parsed part): the unit "
        "ingest and parsing hold in memory, per worker.",
    )
    parse_workers: int = Field(
        2, ge=1, description="Processes that parse raw parts at once (one part each)."
    )
    featurize_workers: int = Field(
        2,
        ge=1,
        description="Processes that featurize chunks of rows at once (feature_matrices, "
        "the deployed featurizer's matrices and the ensemble's cross-fit in tuned_model); "
        "1 featurizes in the step's own process.",
    )

    # features and model policy
    max_text_features: int = Field(
        3000,
        description="Word vocabulary (body + subject), chosen by chi-square on train.",
    )
    max_meta_features: int = Field(
        500, description="Metadata tokens kept (URL and sender domains, header names, mailer)."
    )
    min_df: int = Field(
        3, description="Least number of training messages a word or n-gram must occur in."
    )
    validation_fraction: float = Field(
        0.2, description="Newest share of each training group held out for validation."
    )
    refit_with_validation: bool = Field(
        True,
        description="Final fit: refit the featurizer and the deployed model on train + "
        "validation (the newest data) after model selection; thresholds still come from "
        "held-out scores (out-of-fold for the ensemble, the validation slice for the trees "
        "alone).",
    )
    target_ham_fpr: float = Field(
        0.002,
        ge=0,
        le=1,
        description="Ham false-positive budget of the 'junk' action (label spam), held with "
        "SPAM_BUDGET_CONFIDENCE on the training period's out-of-fold ham. The default is the "
        "smallest round budget the embedded corpus (~2,600 held-out ham) can certify: 0.1% "
        "needs ~3,000 ham even with zero false positives.",
    )
    reject_ham_fpr: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Budget of the 'reject' action (0: above every out-of-fold ham score).",
    )
    budget_confidence: float = Field(
        0.95,
        ge=0,
        lt=1,
        description="Confidence with which a threshold keeps its ham FP budget: the one-sided "
        "Clopper-Pearson upper bound of the out-of-fold ham FPR must be within the budget "
        "(0: the point estimate). Too few ham to certify a budget puts the threshold above "
        "every out-of-fold ham score, and the tuned_model metadata says so.",
    )
    ensemble: bool = Field(
        True,
        description="Deploy the ensemble (XGBoost + char n-gram model + signs, stacked); "
        "false: the XGBoost model alone, threshold from the validation slice.",
    )
    ensemble_folds: int = Field(
        5, ge=2, description="Time-blocked folds of the ensemble's out-of-fold cross-fit."
    )
    stack_l2: float = Field(1.0, gt=0, description="L2 penalty of the ensemble's second stage.")
    balance_ham_groups: bool = Field(
        True,
        description="Second stage: every ham group (source) weighs as much as the largest, so "
        "a small source of legitimate bulk mail (hard ham) is not traded away.",
    )
    char_features: int = Field(
        200_000, description="Character n-gram vocabulary of the ensemble's text model."
    )
    gate_min_f1: float = Field(
        0.80,
        description="Quality-gate floor on test F1 at the deployed threshold: it catches a "
        "broken model. At a budget held with 95% confidence the threshold sits high and F1 "
        "is bounded by recall (0.86 on the time split), so the floor is 0.80, not 0.90.",
    )
    gate_max_easy_ham_fpr: float = Field(
        0.01, description="Quality-gate ceiling on test easy-ham FPR at the deployed threshold."
    )
    gate_max_f1_regression: float = Field(
        0.0, description="gate_compare=f1: allowed F1 drop vs the champion."
    )
    gate_compare: Literal["matched_fpr", "f1"] = Field(
        "matched_fpr",
        description="Champion comparison: spam recall at the champion's held-out ham FPR "
        "(matched_fpr) or F1 at each model's own threshold (f1).",
    )
    gate_max_recall_regression: float = Field(
        0.0, ge=0, description="matched_fpr: allowed recall drop vs the champion."
    )

    # tuning
    ray_address: str | None = Field(
        None,
        description="Ray cluster to tune on (ray://host:10001 or host:6379); unset: a local Ray.",
    )
    ray_num_cpus: int = Field(
        2,
        description="Local Ray size; at most this many Tune trials at once (also on a cluster).",
    )
    ray_train_workers: int = Field(
        2,
        ge=1,
        description="With SPAM_RAY_ADDRESS: Ray Train workers (one CPU each, spread over the "
        "nodes) that fit the deployed tree models data-parallel.",
    )
    tune_num_samples: int = Field(8, description="Ray Tune trials of the XGBoost search.")
    tune_max_rounds: int = Field(600, description="Most boosting rounds a trial may train.")
    tune_early_stopping_rounds: int = Field(
        40, description="A trial stops after this many rounds without a better validation loss."
    )
    tune_max_rows: int = Field(
        50_000,
        ge=1000,
        description="The search runs on at most this many training rows (a label-stratified "
        "sample, validation in proportion); the final model is fitted on all of them.",
    )
    fit_max_rows: int = Field(
        50_000,
        ge=1000,
        description="The featurizer (vocabularies, char n-gram model) and the ensemble's "
        "cross-fit (second stage, operating points) are fitted on at most this many "
        "training-period messages (a label-stratified sample); the deployed trees train on all.",
    )
    seed: int = Field(42, description="Seed of the search, the folds and every model fit.")

    # tracking
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow server or database; unset: SQLite under SPAM_HOME."
    )
    mlflow_experiment: str = Field(
        "spam-mlops", description="MLflow experiment of the training runs."
    )
    registered_model_name: str = Field(
        "spam-classifier", description="Name in the MLflow Model Registry (and of the Bento model)."
    )

    # orchestration
    max_concurrent: int = Field(2, description="Parallel steps per Dagster run.")
    executor: Literal["multiprocess", "in_process"] = Field(
        "multiprocess",
        description="Local executor: a process per step (steps run in parallel, a failing "
        "step cannot take the run down) or every step in the run's process (no per-step "
        "start-up: small corpora, tests). The azure target always runs a pod per step.",
    )
    max_concurrent_runs: int = Field(1, description="Dagster runs at once (run queue).")
    dagster_postgres_url: str | None = Field(
        None, description="postgresql://... for Dagster run/event/schedule storage."
    )

    # serving (the BentoML service and the local deployment)
    serve_host: str = Field("127.0.0.1", description="Address the local deployment listens on.")
    serve_port: int = Field(3100, description="Port of the local Bento deployment.")
    serve_workers: int = Field(2, description="Service worker processes (one per core).")
    serve_access_log: bool = Field(False, description="Per-request access log (costs CPU).")
    serve_reuse_port: bool = Field(
        True,
        description="Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads "
        "connections over the workers (spam_serving/bentoml_patches.py).",
    )
    serve_reconnect_every: int = Field(
        100,
        ge=0,
        description="Every Nth response of a worker asks its client to reconnect (Connection: "
        "close), so keep-alive clients spread over the workers again after one restarts; 0: "
        "never.",
    )
    serve_track: Literal["stable", "canary"] = Field(
        "stable",
        description="Set by the Helm chart on its pods. `canary` pods (the challenger image of "
        "an AKS canary) log production requests as `production-canary`, and a request their "
        "model fails as an `error` row, so the canary judge tells their rows from the champion's.",
    )
    trace_asgi_messages: bool = Field(
        False,
        description="OpenTelemetry child spans per ASGI message (http send/receive); off: one "
        "server span per request (spam_serving/bentoml_patches.py).",
    )
    api_keys: list[str] = Field(
        default_factory=list, description="Accepted API keys (JSON list); see api_keys_file."
    )
    api_keys_file: Path | None = Field(
        None, description="File with one API key per line (a mounted Kubernetes secret)."
    )
    max_request_bytes: int = Field(5_000_000, description="Body limit for /predict* (413).")
    max_async_request_bytes: int = Field(50_000_000, description="Body limit for async jobs.")
    predict_batch_limit: int = Field(100, description="Messages per /predict_batch (422).")
    async_batch_limit: int = Field(10_000, description="Messages per async job (422).")
    adaptive_batching: bool = Field(
        True, description="Batch concurrent model calls (BentoML's CorkDispatcher)."
    )
    batch_max_latency_ms: int = Field(
        250, description="Adaptive batching: queueing budget; beyond it requests get 503."
    )
    batch_max_size: int = Field(128, description="Adaptive batching: rows per model call.")
    batch_helpers: int = Field(
        1,
        ge=0,
        description="Helper processes per worker that featurize part of a large batch in "
        "parallel (spam_serving/batch_helpers.py); 0: batches stay in the worker.",
    )
    batch_split_min: int = Field(
        16, ge=2, description="Batches of at least this many messages are split with helpers."
    )
    explain_top_k: int = Field(5, description="Contributions returned per prediction.")
    gc_freeze: bool = Field(
        True,
        description="gc.freeze() the start-up heap once it is loaded (see spam_serving/heap.py).",
    )
    canary_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of production requests sent to the challenger."
    )
    model_poll_interval_s: float = Field(1.0, description="How often the alias file is read.")
    serve_model_tag: str | None = Field(
        None, description="BentoML model tag served when no alias file exists (set in a Bento)."
    )
    log_flush_rows: int = Field(2000, description="Inference log: rows per Parquet file.")
    log_flush_s: float = Field(5.0, description="Inference log: max seconds before a flush.")
    log_queue_size: int = Field(
        100_000,
        description="Inference log: rows waiting for Parquet (journal or memory), then drop.",
    )
    log_messages: bool = Field(True, description="Keep parsed messages in the log (retraining).")

    # monitoring and the retraining loop (DESIGN.md section 2 defaults)
    monitoring_start: str = Field(
        "2026-01-01-00:00", description="First hourly partition of inference_log/drift_report."
    )
    drift_window_hours: int = Field(24, description="Hours of traffic a drift report covers.")
    drift_schedule_cron: str = Field(
        "5 * * * *", description="When hourly_drift_schedule ticks (cron, UTC)."
    )
    drift_schedule_lag_hours: int = Field(
        1,
        ge=0,
        description="Which hour a drift_schedule tick materializes: 1 = the last complete hour; "
        "0 = the current hour, again at every tick (demos and the daemon test).",
    )
    canary_schedule_cron: str = Field(
        "*/15 * * * *", description="When canary_schedule judges a running canary (cron, UTC)."
    )
    drift_sensor_interval_s: int = Field(
        300, ge=5, description="Least seconds between two drift_retrain_sensor evaluations."
    )
    log_retention_cron: str = Field(
        "30 3 * * *", description="When log_retention_schedule prunes the raw log (cron, UTC)."
    )
    automations_stopped: list[str] = Field(
        default_factory=list,
        description="Schedules and sensors that start stopped (names, e.g. "
        "'[\"canary_schedule\"]'); every other one runs by default with the daemon.",
    )
    drift_min_predictions: int = Field(200, description="Fewer predictions: no drift verdict.")
    drift_score_psi: float = Field(0.2, description="Retrain when score PSI reaches this.")
    drift_feature_psi: float = Field(0.2, description="A feature drifted at this PSI.")
    drift_share: float = Field(0.3, description="Retrain when more features than this drift.")
    drift_html_max_rows: int = Field(
        50_000, description="Rows sampled into Evidently's HTML report (our numbers use all)."
    )
    feedback_accuracy_floor: float = Field(0.9, description="Retrain below this accuracy.")
    feedback_min_count: int = Field(50, description="Labels needed before accuracy counts.")
    ham_fpr_alert_factor: float = Field(
        2.0,
        gt=0,
        description="Retrain when live ham labelled by feedback is junked at more than this "
        "many times the budget (SPAM_TARGET_HAM_FPR), judged on the 95% lower bound of its "
        "rate, so a few unlucky labels do not trigger it.",
    )
    feedback_lookback_hours: int = Field(
        24 * 30, description="Labelled traffic of this many hours joins the retraining data."
    )
    log_retention_hours: int = Field(
        24 * 35,
        description="Hours of raw inference log kept (messages included); the daily "
        "spam_log_retention job deletes older hours. At least the feedback lookback and the "
        "drift window, or retraining and drift would lose data they read.",
    )
    retrain_cooldown_hours: float = Field(6.0, description="No second retrain within this.")
    alert_webhook_url: str | None = Field(None, description="JSON POST target for alerts.")
    alert_timeout_s: float = Field(5.0, description="Hard timeout of one alert POST.")
    alert_retries: int = Field(
        3, description="Retries of an alert on connection errors, 429 and 5xx, with backoff."
    )
    canary_stages: list[float] = Field(
        default_factory=lambda: [0.1, 0.5, 1.0],
        description="Production share of a retrained model, stage by stage (JSON list).",
    )
    canary_min_requests: int = Field(200, description="Requests per side before judging.")
    canary_min_feedback: int = Field(30, description="Labels per side before comparing.")
    canary_max_error_rate_increase: float = Field(
        0.01, description="Canary: roll back when its error rate exceeds the champion's by more."
    )
    canary_max_latency_ratio: float = Field(
        1.5, description="Canary: p95 latency ratio beyond which (and significantly) it rolls back."
    )
    canary_max_accuracy_drop: float = Field(
        0.02,
        description="Canary: accuracy drop beyond which (and significantly) it rolls back.",
    )
    canary_min_latency_increase_ms: float = Field(
        5.0, ge=0, description="A p95 gap below this never rolls back, whatever the ratio."
    )
    canary_alpha: float = Field(
        0.05, gt=0, lt=1, description="Latency/accuracy rollback needs a p-value below this."
    )

    # feature store (Feast): sender reputation
    reputation_features: bool = Field(
        False, description="Train with the rep:* sender reputation features (see README)."
    )
    feast_project: str = Field("spam_mlops", description="Feast project (Redis key suffix).")
    feast_online_store: Literal["auto", "sqlite", "redis"] = Field(
        "auto", description="Online store; auto = Redis when one answers at feast_redis."
    )
    feast_redis: str = Field(
        "127.0.0.1:6379,db=0", description="Redis connection string: host:port[,db=N,...]."
    )
    feast_key_ttl_seconds: int = Field(
        90 * 86400, description="Redis expires a sender's key this long after its last write."
    )
    feast_registry: str | None = Field(
        None, description="Registry path/URL (default: a file under home/feast)."
    )
    feast_registry_cache_ttl_s: int = Field(60, description="Registry cache refresh (s).")
    reputation_timeout_ms: float = Field(
        50.0, description="Online lookup budget per request; beyond it: degraded answer."
    )
    reputation_retry_after_s: float = Field(
        1.0, description="After a failed lookup, answer degraded this long without trying."
    )

    # production target (SPAM_TARGET=azure): Dagster on AKS, ADLS Gen2, MLflow on Postgres+Blob
    target: Literal["local", "azure"] = Field(
        "local", description="local: files/SQLite/local Ray; azure: ADLS2, k8s executor, AKS."
    )
    azure_storage_account: str | None = Field(
        None, description="ADLS Gen2 account of the asset IO manager (terraform output)."
    )
    azure_storage_container: str = Field("dagster", description="ADLS2 container for assets.")
    azure_storage_prefix: str = Field("spam-mlops", description="Path prefix inside it.")
    azure_storage_connection_string: str | None = Field(
        None,
        description="Blob connection string (Azurite, or an account key); unset: the pod's "
        "workload identity on SPAM_AZURE_STORAGE_ACCOUNT.",
    )
    log_blob_container: str | None = Field(
        None,
        description="Blob container of the inference log (serving pods write it, monitoring "
        "reads it); unset: the local SPAM_HOME/inference_log.",
    )
    log_blob_prefix: str = Field(
        "inference_log", description="Path prefix of the inference log inside its container."
    )
    azure_tenant_id: str | None = Field(None, description="Entra tenant (Key Vault CSI).")
    mlflow_artifact_uri: str | None = Field(
        None, description="MLflow artifact root, e.g. wasbs://mlflow@<acct>.blob.core.windows.net"
    )
    k8s_namespace: str = Field("dagster", description="Namespace of Dagster run/step pods.")
    k8s_service_account: str = Field(
        "dagster-user-code", description="Service account (workload identity) of step pods."
    )
    k8s_home_claim: str = Field(
        "spam-home", description="ReadWriteMany claim mounted as SPAM_HOME in run/step pods."
    )
    aks_registry: str | None = Field(
        None, description="Container registry of the serving image, e.g. spamacr.azurecr.io."
    )
    aks_image_repository: str = Field("spam-classifier", description="Image repository.")
    aks_image_builder: Literal["acr", "docker", "podman"] = Field(
        "acr", description="acr: `az acr build` (no local engine); docker/podman: build + push."
    )
    aks_kubeconfig: Path | None = Field(
        None, description="kubeconfig file (default: KUBECONFIG, ~/.kube/config, in-cluster)."
    )
    aks_context_staging: str | None = Field(None, description="kube context of staging.")
    aks_context_production: str | None = Field(None, description="kube context of production.")
    aks_namespace_staging: str = Field(
        "spam-staging", description="Namespace of the staging release."
    )
    aks_namespace_production: str = Field(
        "spam-production", description="Namespace of the production release."
    )
    aks_release_prefix: str = Field("spam-serving", description="Helm release: <prefix>-<env>.")
    aks_workload_identity_client_id: str | None = Field(
        None, description="Client id of the serving pods' identity (reads Key Vault)."
    )
    aks_key_vault_name: str | None = Field(None, description="Key Vault holding the API keys.")
    aks_api_keys_secret: str = Field("spam-api-keys", description="Key Vault secret name.")
    aks_ingress_host_staging: str | None = Field(
        None, description="Staging host name; set: staging gets the NGINX ingress too."
    )
    aks_ingress_host_production: str | None = Field(
        None, description="Production host name (required: production serves via ingress)."
    )
    aks_production_approval: Literal["manual", "auto"] = Field(
        "manual",
        description="manual: production only in a run configured approve_production=true.",
    )
    aks_rollout_timeout_s: int = Field(600, description="helm --wait budget per release.")

    @property
    def serving_dir(self) -> Path:
        """Alias file, API key file and the serving pid/state of the local deployment."""
        return self.home / "serving"

    @property
    def alias_file(self) -> Path:
        return self.serving_dir / "aliases.json"

    @property
    def default_api_keys_file(self) -> Path:
        return self.serving_dir / "api_keys"

    @property
    def inference_log_dir(self) -> Path:
        return self.home / "inference_log"

    @property
    def reports_dir(self) -> Path:
        """Drift reports (Evidently HTML + our JSON), one per materialized partition."""
        return self.home / "reports"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def bundles_dir(self) -> Path:
        return self.home / "bundles"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def feast_dir(self) -> Path:
        """Offline reputation tables, the file registry and the SQLite online store."""
        return self.home / "feast"

    @property
    def effective_mlflow_uri(self) -> str:
        """Embedded default: SQLite backend under ``home`` (artifacts beside it)."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.home / "mlflow" / "artifacts"


def get_settings() -> SpamSettings:
    """Fresh settings from the current environment (tests change env between calls)."""
    return SpamSettings()
