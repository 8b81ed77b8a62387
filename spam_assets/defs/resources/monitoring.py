"""The monitoring loop: drift thresholds, feedback floors, canary policy, alerting."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from spam_assets.defs.resources.slice import SettingsSlice, Source
from spam_serving.log_store import LogStore, make_log_store
from spam_serving.settings import get_settings


class MonitoringResource(SettingsSlice):
    """Drift thresholds, feedback floors, canary policy and alerting."""

    SOURCES: ClassVar[dict[str, Source]] = {
        "monitoring_dir": lambda s: s.data_dir / "monitoring",
        "window_hours": "drift_window_hours",
        "min_predictions": "drift_min_predictions",
        "score_psi": "drift_score_psi",
        "feature_psi": "drift_feature_psi",
        "html_max_rows": "drift_html_max_rows",
        "accuracy_floor": "feedback_accuracy_floor",
    }

    inference_log_dir: str
    log_blob_container: str | None
    log_blob_prefix: str
    azure_storage_account: str | None
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
    def log_root(self) -> Path | LogStore:
        """The inference log the serving pods write: the local directory, or its Blob
        container (``SPAM_LOG_BLOB_CONTAINER``)."""
        if not self.log_blob_container:
            return Path(self.inference_log_dir)
        return make_log_store(
            self.inference_log_dir,
            self.log_blob_container,
            self.log_blob_prefix,
            self.azure_storage_account,
            # a secret: read from the environment when used, never shown as resource config
            get_settings().azure_storage_connection_string,
        )

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
