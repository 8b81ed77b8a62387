"""Real bundles and a real ``bentoml serve`` process for the serving tests."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import xgboost as xgb

from spam_assets.lib.local_server import ServerProcess, start_server, stop_server, wait_ready
from spam_assets.lib.onnx_export import to_onnx
from spam_serving.explain import TreeExplainer
from spam_serving.featurize import Featurizer, FeaturizerConfig
from spam_serving.model_bundle import write_bundle
from spam_serving.parsing import parse_message
from spam_serving.settings import PROJECT_ROOT

API_KEYS = ("test-key-alpha-0123456789", "test-key-beta-9876543210")


def train_small(
    sample: list[tuple[str, int, bytes]],
    config: FeaturizerConfig,
    max_depth: int,
    rounds: int,
    reputation: np.ndarray | None = None,
) -> tuple[Featurizer, xgb.Booster, np.ndarray, list]:
    """A small real model on real (group, label, raw) messages: featurizer, booster, X, msgs.
    With ``reputation`` (rows per message) the model uses the ``rep:*`` block too."""
    msgs = [parse_message(raw) for _, _, raw in sample]
    y = np.array([label for _, label, _ in sample])
    f = Featurizer(replace(config, reputation=reputation is not None))
    x = f.fit(msgs, y).transform(msgs, reputation)
    booster = xgb.train(
        {
            "objective": "binary:logistic",
            "max_depth": max_depth,
            "eta": 0.3,
            "nthread": 1,
            "seed": 0,
        },
        xgb.DMatrix(x, label=y),
        num_boost_round=rounds,
    )
    return f, booster, x, msgs


def train_bundle(
    sample: list[tuple[str, int, bytes]],
    path: Path,
    version: str,
    rounds: int,
    reputation: np.ndarray | None = None,
):
    """A small real model on real messages, exported exactly like the ``onnx_model`` asset."""
    config = FeaturizerConfig(max_text_features=400, max_meta_features=80, min_df=2)
    f, booster, _, _ = train_small(sample, config, 4, rounds, reputation)
    write_bundle(
        path,
        to_onnx(booster, f.n_features),
        f,
        bytes(booster.save_raw("ubj")),
        {"model_version": version, "threshold": 0.5, "model_name": "spam-classifier"},
        explainer=TreeExplainer.from_xgboost_json(booster.save_raw("json")),
    )
    return path


def broken_bundle(sample: list[tuple[str, int, bytes]], path: Path, version: str) -> Path:
    """Loads fine, fails on every prediction: its ONNX graph wants 7 more input columns than
    the featurizer produces (what a mismatched export would look like in production)."""
    config = FeaturizerConfig(max_text_features=400, max_meta_features=80, min_df=2)
    f, booster, _, _ = train_small(sample, config, max_depth=3, rounds=10)
    write_bundle(
        path,
        to_onnx(booster, f.n_features + 7),
        f,
        bytes(booster.save_raw("ubj")),
        {"model_version": version, "threshold": 0.5, "model_name": "spam-classifier"},
        explainer=TreeExplainer.from_xgboost_json(booster.save_raw("json")),
    )
    return path


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAM_")}
    env.update(
        {
            "SPAM_HOME": str(home),
            "BENTOML_HOME": str(home / "bentoml"),
            "SPAM_API_KEYS": json.dumps(list(API_KEYS)),
            "SPAM_SERVE_WORKERS": "2",
            "SPAM_MODEL_POLL_INTERVAL_S": "0.2",
            "SPAM_LOG_FLUSH_S": "0.5",
            "BENTOML_DO_NOT_TRACK": "true",
            **extra,
        }
    )
    return env


@contextlib.contextmanager
def running_server(home: Path, port: int, **extra: str) -> Iterator[ServerProcess]:
    server = start_server(
        "spam_serving.service:SpamClassifier",
        "127.0.0.1",
        port,
        server_env(home, **extra),
        home / "serving" / "bento.log",
        cwd=PROJECT_ROOT,
    )
    try:
        wait_ready(server, 120)
        yield server
    finally:
        stop_server(server.pid)
