"""Our Prometheus metrics, next to BentoML's built-in request metrics on ``/metrics``.

prometheus_client directly (``bentoml.metrics`` is deprecated); BentoML runs each worker with
``PROMETHEUS_MULTIPROC_DIR`` set, so these are aggregated across workers on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

PREDICTIONS = Counter(
    "spam_predictions",
    "Predictions served, by label, model version and environment.",
    ["label", "model_version", "environment"],
)
SPAM_PROBABILITY = Histogram(
    "spam_probability",
    "Distribution of predicted spam probabilities (prediction drift at a glance).",
    ["model_version"],
    buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
)
LATENCY = Histogram(
    "spam_request_latency_seconds",
    "Server-side latency of prediction endpoints, parse to response.",
    ["endpoint", "model_version"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter(
    "spam_request_errors",
    "Rejected or failed requests, by kind (unauthorized, bad_environment, too_large, ...).",
    ["kind"],
)
FEEDBACK = Counter("spam_feedback", "Feedback labels received.", ["label"])
MODEL_RELOADS = Counter(
    "spam_model_reloads", "Model swaps after an alias moved, by outcome.", ["alias", "outcome"]
)
LOG_DROPPED = Counter(
    "spam_inference_log_dropped",
    "Log rows dropped: more than SPAM_LOG_QUEUE_SIZE waiting, or neither journal nor Parquet "
    "writable when the worker stopped.",
    ["stream"],
)
DEGRADED = Counter(
    "spam_degraded_predictions",
    "Predictions answered with message-only features (sender reputation store timeout, "
    "error, or backoff after an error).",
    ["reason"],
)
GC_FROZEN = Gauge(
    "spam_gc_frozen_objects",
    "Objects a worker moved out of garbage collection after start-up (gc.freeze()).",
    multiprocess_mode="liveall",
)
BATCH_HELPERS_UP = Gauge(
    "spam_batch_helpers_up",
    "Batch helper processes ready to take part of a large batch (see batch_helpers).",
    multiprocess_mode="livesum",
)
BATCH_HELPER_MESSAGES = Counter(
    "spam_batch_helper_messages",
    "Messages of large batches parsed and featurized by a worker's helper processes.",
)
