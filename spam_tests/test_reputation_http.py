"""Sender reputation through the real service: a model trained with the ``rep:*`` block,
served by ``bentoml serve`` reading Feast's online store in the real Redis, and the same
service when Redis is gone (a closed port): 200s marked degraded, with a metric, never a 5xx."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
import requests

from spam_assets.lib.reputation import historical_reputation
from spam_serving.feature_store import OnlineReputation
from spam_serving.model_bundle import ModelBundle
from spam_serving.model_store import write_aliases
from spam_serving.parsing import parse_message
from spam_serving.settings import get_settings
from spam_tests.helpers.env import TEST_REDIS_DB, free_port
from spam_tests.helpers.reputation import build_store, sample_frame
from spam_tests.helpers.serving import API_KEYS, running_server, train_bundle

pytestmark = [pytest.mark.slow, pytest.mark.redis]
KEY = {"X-API-Key": API_KEYS[0]}


@pytest.fixture
def reputation_model(spam_env, real_sample):
    """Store built from the real sample (Redis, the test's own project) + a model trained
    on point-in-time reputation; both aliases point at it."""
    settings = get_settings()
    messages, frame = sample_frame(real_sample)
    store, _ = build_store(settings, frame, "redis")
    reputation = historical_reputation(store, messages)
    path = train_bundle(
        real_sample, spam_env / "bundles" / "v1", "1", rounds=30, reputation=reputation
    )
    entry = {"bundle_path": str(path), "model_version": "1"}
    write_aliases(spam_env / "serving" / "aliases.json", {"champion": entry, "challenger": entry})
    feast_env = {
        "SPAM_FEAST_PROJECT": settings.feast_project,
        "SPAM_FEAST_REDIS": settings.feast_redis,
        "SPAM_FEAST_ONLINE_STORE": "redis",
        "SPAM_SERVE_WORKERS": "1",
        "SPAM_REPUTATION_TIMEOUT_MS": str(settings.reputation_timeout_ms),
    }
    return spam_env, path, feast_env, real_sample


def _raw(sample, i: int) -> dict:
    """8-bit mail travels as base64 (the raw bytes, exactly)."""
    return {"raw_base64": base64.b64encode(sample[i][2]).decode()}


def test_served_reputation_matches_the_online_store(reputation_model):
    home, path, env, sample = reputation_model
    raws = [_raw(sample, i) for i in range(0, 40, 4)]
    with running_server(home, free_port(), **env) as server:
        answers = [
            requests.post(server.url + "/predict", json=r, headers=KEY, timeout=30) for r in raws
        ]
        batch = requests.post(
            server.url + "/predict_batch",
            json={"messages": raws},
            headers=KEY,
            timeout=30,
        )
    assert all(a.status_code == 200 for a in answers)
    assert not any("degraded" in a.json() for a in answers)
    assert batch.status_code == 200
    assert not any("degraded" in p for p in batch.json()["predictions"])
    # the served score is the bundle's score on the online rows (same features as in-process)
    bundle = ModelBundle.load(path)
    messages = [parse_message(sample[i][2]) for i in range(0, 40, 4)]
    rep = OnlineReputation(get_settings())
    with asyncio.Runner() as loop:
        loop.run(rep.warm_up())
        rows, degraded = loop.run(rep.lookup(messages))
    assert degraded is None and (rows[:, 0] > 0).any()
    expected = bundle.predict_proba(messages, rows)
    served = np.array([a.json()["spam_probability"] for a in answers])
    np.testing.assert_allclose(served, expected, rtol=1e-6)
    top = {f["feature"] for a in answers for f in a.json()["top_features"]}
    assert any(name.startswith("rep:") for name in top)


def test_redis_down_answers_degraded_never_5xx(reputation_model):
    home, _, env, sample = reputation_model
    env = {**env, "SPAM_FEAST_REDIS": f"127.0.0.1:{free_port()},db={TEST_REDIS_DB}"}
    with running_server(home, free_port(), **env) as server:
        singles = [
            requests.post(server.url + "/predict", json=_raw(sample, i), headers=KEY, timeout=30)
            for i in range(5)
        ]
        batch = requests.post(
            server.url + "/predict_batch",
            json={"messages": [_raw(sample, i) for i in range(20)]},
            headers=KEY,
            timeout=30,
        )
        metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert [r.status_code for r in singles] == [200] * 5
    for r in singles:
        body = r.json()
        assert body["degraded"] is True
        assert "message-only features" in body["degraded_reason"]
        assert 0.0 <= body["spam_probability"] <= 1.0
    assert batch.status_code == 200
    assert all(p["degraded"] for p in batch.json()["predictions"])
    degraded = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("spam_degraded_predictions_total{")
    ]
    assert sum(degraded) >= 25
