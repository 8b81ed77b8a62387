"""Bad challengers never reach production: a model trained on shuffled labels is stopped by
the quality gate, and a canary that fails at runtime is rolled back by ``canary_rollout``
while clients see zero failed requests (the champion answers the canary's share)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import dagster as dg
import mlflow
import numpy as np
import pytest
import requests

from spam_assets.lib.gate import GateFloors, gate_failures
from spam_assets.lib.metrics import evaluate, matched_fpr_comparison
from spam_serving.featurize import FeaturizerConfig
from spam_serving.inference_log import read_log
from spam_serving.model_store import read_aliases, read_canary, write_aliases
from spam_serving.parsing import parse_message
from spam_tests.helpers.env import free_port
from spam_tests.helpers.serving import (
    API_KEYS,
    broken_bundle,
    running_server,
    train_bundle,
    train_small,
)

CONFIG = FeaturizerConfig(max_text_features=400, max_meta_features=80, min_df=2)


def test_gate_rejects_a_model_trained_on_shuffled_labels(real_sample):
    train, held_out = real_sample[::2], real_sample[1::2]
    y = np.array([label for _, label, _ in held_out])
    groups = np.array([g for g, _, _ in held_out])
    held_msgs = [parse_message(raw) for _, _, raw in held_out]

    def metrics(sample):
        f, booster, _, _ = train_small(sample, CONFIG, max_depth=4, rounds=30)
        import xgboost as xgb

        scores = booster.predict(xgb.DMatrix(f.transform(held_msgs)))
        return evaluate(y, scores, groups, 0.5, {}), scores

    good, good_scores = metrics(train)
    labels = np.random.default_rng(0).permutation([label for _, label, _ in train])
    shuffled, shuffled_scores = metrics(
        [(g, int(lab), raw) for (g, _, raw), lab in zip(train, labels, strict=True)]
    )
    matched = matched_fpr_comparison(y, good_scores, 0.5, shuffled_scores)
    floors = GateFloors(max_easy_ham_fpr=0.05)  # ~150 held-out easy ham at threshold 0.5
    assert gate_failures(good, None, floors) == []
    champion = {**good, "model_version": "1", "matched": matched}
    failures = gate_failures(shuffled, champion, floors)
    assert any("below floor" in f for f in failures)
    assert any("worse than champion v1" in f for f in failures)
    assert shuffled["f1"] < good["f1"] - 0.3
    # at the good model's false-positive count the shuffled one catches far less spam
    assert matched["challenger_recall"] < matched["champion_recall"] - 0.3, matched
    by_f1 = gate_failures(shuffled, champion, GateFloors(max_easy_ham_fpr=0.05, compare="f1"))
    assert any("worse than champion v1" in f for f in by_f1)


@pytest.mark.slow
def test_failing_canary_is_rolled_back_with_zero_failed_requests(spam_env, instance, real_sample):
    home = spam_env
    v1 = train_bundle(real_sample, home / "bundles" / "v1", "1", rounds=20)
    v2 = broken_bundle(real_sample, home / "bundles" / "v2", "2")
    champion = {"bundle_path": str(v1), "model_version": "1"}
    challenger = {"bundle_path": str(v2), "model_version": "2"}
    alias_file = home / "serving" / "aliases.json"
    started = datetime.now(UTC).isoformat()
    canary = {"version": "2", "champion_version": "1", "fraction": 0.5, "started_at": started}
    write_aliases(alias_file, {"champion": champion, "challenger": challenger}, canary)

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    client.create_registered_model("spam-classifier")
    for _ in range(2):
        client.create_model_version("spam-classifier", source=str(v1))
    client.set_registered_model_alias("spam-classifier", "champion", "1")
    client.set_registered_model_alias("spam-classifier", "challenger", "2")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    messages = [raw for _, _, raw in real_sample[:40]]
    outcomes: list[tuple[int, str]] = []
    stop = threading.Event()

    def client_loop(offset: int) -> None:
        with requests.Session() as s:
            i = offset
            while not stop.is_set():
                resp = s.post(
                    f"{url}/predict",
                    data=messages[i % len(messages)],
                    headers={"X-API-Key": API_KEYS[0], "Content-Type": "message/rfc822"},
                    timeout=30,
                )
                outcomes.append((resp.status_code, resp.json().get("model_version", "")))
                i += 3

    with running_server(home, port, SPAM_LOG_FLUSH_S="0.2", SPAM_MODEL_POLL_INTERVAL_S="0.2"):
        threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        # the canary fails its share and the champion answers every request; wait until the
        # log the judge reads holds both kinds of rows (a fixed sleep raced a slow machine)
        _wait_for_logged_fallbacks(home / "inference_log", canary_version="2")
        fallbacks = requests.get(f"{url}/metrics", timeout=10).text
        assert 'spam_request_errors_total{kind="canary_failure"}' in fallbacks

        from spam_assets.defs.deployment.canary import canary_rollout
        from spam_assets.defs.resources import build_resources

        result = dg.materialize([canary_rollout], resources=build_resources(), instance=instance)
        meta = {
            k: v.value
            for k, v in result.asset_materializations_for_node("canary_rollout")[0].metadata.items()
        }
        time.sleep(2)  # traffic keeps flowing across the rollback
        stop.set()
        for t in threads:
            t.join()

    assert meta["action"] == "rollback" and "error rate" in meta["reason"], meta
    assert meta["challenger_error_rate"] == 1.0 and meta["challenger_requests"] > 0
    assert len(outcomes) > 50
    assert {status for status, _ in outcomes} == {200}  # zero failed requests
    assert {version for _, version in outcomes} == {"1"}  # v2 never answered anyone
    aliases = read_aliases(alias_file)
    assert aliases["challenger"]["model_version"] == "1" and read_canary(alias_file) == {}
    assert str(client.get_model_version_by_alias("spam-classifier", "challenger").version) == "1"
    assert client.get_model_version("spam-classifier", "2").tags["canary"] == "rolled_back"


def _wait_for_logged_fallbacks(root, canary_version: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (root / "predictions").is_dir():
            log = read_log(root, "predictions", columns=["fallback_from"]).to_pydict()
            fallback = log.get("fallback_from", [])  # no file written yet: no column
            if canary_version in fallback and any(f is None for f in fallback):
                return
        time.sleep(0.2)
    pytest.fail(f"no canary fallbacks and champion answers in {root} after {timeout_s} s")
