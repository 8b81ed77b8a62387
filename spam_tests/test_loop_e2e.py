"""The whole self-retraining loop on real data, through the real HTTP endpoint.

Train on the older period (plus the newer period's second half as held-out test), serve it,
replay the newer period's first half (by Date) with feedback, materialize the drift report,
let the sensor request a retrain, run it (feedback joins training; the gate compares against
the champion on the same held-out half), watch the canary get judged on live traffic and
promoted, and check that every alias says what serves what. Numbers are asserted, not only
"no exception"."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import mlflow
import pytest
import requests

from spam_assets.defs.monitoring.partitions import HOURLY
from spam_serving.model_store import read_aliases, read_canary
from spam_tests.helpers.corpus import stratified, write_tarballs
from spam_tests.helpers.env import set_sources
from spam_tests.helpers.loop import OLDER_GROUPS, by_group, newer_halves, replay, wait_for_log
from spam_tests.helpers.pipeline import (
    SMALL_RUN_ENV,
    failure_messages,
    latest_metadata,
    load_defs,
    run_assets,
)

pytestmark = pytest.mark.slow

OLDER = {"easy-ham-1": 220, "hard-ham-1": 40, "spam-1": 45}
NEWER = {"easy-ham-2": 110, "spam-2": 130}
LOOP_ENV = {
    "SPAM_LOG_FLUSH_S": "0.3",
    "SPAM_TARGET_HAM_FPR": "0.1",  # ~80 validation ham: at 0.1% one odd ham sets the threshold
    "SPAM_MODEL_POLL_INTERVAL_S": "0.2",
    "SPAM_DRIFT_MIN_PREDICTIONS": "50",
    "SPAM_FEEDBACK_MIN_COUNT": "20",
    "SPAM_CANARY_STAGES": "[0.5, 1.0]",
    "SPAM_CANARY_MIN_REQUESTS": "20",
    "SPAM_CANARY_MIN_FEEDBACK": "10",
    "SPAM_CANARY_MAX_ACCURACY_DROP": "0.05",
    # The final fit (refit on train + validation with a refitted vocabulary) is measured on
    # the whole corpus by bench-loop, where it is what makes the retrain pay off. On these
    # ~300 training messages the refitted vocabulary moves too far from the one Tune chose
    # the round count with: recall at v1's held-out ham FPR 0.743 -> 0.686 with it, 0.771 ->
    # 0.914 without (README, "Loop limitations"). This test is about the loop's mechanics
    # and the gate, so it trains the train-only model; test_pipeline_e2e covers the final fit.
    "SPAM_REFIT_WITH_VALIDATION": "false",
}


@pytest.fixture
def loop_home(spam_env, monkeypatch, tmp_path, mirror):
    first, second = newer_halves(mirror, NEWER)
    corpus = {g: stratified(mirror[g], n) for g, n in OLDER.items()}
    corpus.update(by_group(second))
    set_sources(monkeypatch, [str(p) for p in write_tarballs(tmp_path / "corpus", corpus)])
    for key, value in {**SMALL_RUN_ENV, **LOOP_ENV}.items():
        monkeypatch.setenv(key, value)
    return spam_env, first, second


def _key(home) -> str:
    return (home / "serving" / "api_keys").read_text().splitlines()[-1]


def _materialize(instance, job: str, **kwargs) -> dg.ExecuteInProcessResult:
    result = (
        load_defs()
        .resolve_job_def(job)
        .execute_in_process(instance=instance, raise_on_error=False, **kwargs)
    )
    assert result.success, failure_messages(result)
    return result


def test_drift_triggers_retrain_and_canary_promotion(loop_home, instance):
    home, first, second = loop_home
    assert {g for g, _, _ in first} == {"easy-ham-2", "spam-2"}
    assert all(g in OLDER_GROUPS or g.endswith("-2") for g in OLDER)

    # 1. train on the older period, serve v1
    trained = run_assets(instance)
    assert trained.success, failure_messages(trained)
    url, key = latest_metadata(instance, "local_deployment")["url"], _key(home)
    stale_eval = latest_metadata(instance, "model_evaluation")
    assert stale_eval["model_version"] == "1"

    # 2. live traffic: the newer period's first half, with true labels as feedback
    started = time.time()
    live = replay(url, key, first)
    assert live["failures"] == [] and live["n"] == len(first)
    assert live["served"] == {"1": len(first)}
    wait_for_log(home / "inference_log", started, len(first), len(first))

    # 3. the hourly monitoring job on the current hour: drift against the training reference
    partition = HOURLY.get_partition_key_for_timestamp(time.time())
    _materialize(instance, "spam_monitoring", partition_key=partition)
    log_meta = latest_metadata(instance, "inference_log")
    drift = latest_metadata(instance, "drift_report")
    # the replay plus local_deployment's two smoke predictions
    assert drift["n_predictions"] == len(first) + 2 and drift["n_feedback"] == len(first)
    assert drift["feedback_accuracy"] == pytest.approx(live["correct"] / live["n"], abs=1e-6)
    reference_share = drift["reference_spam_share"]
    live_spam_share = sum(g == "spam-2" for g, _, _ in first) / len(first)
    assert reference_share < 0.2 < live_spam_share  # the time split's shift, as DESIGN.md says
    assert drift["score_psi"] >= 0.2, drift  # ... which the score distribution shows
    assert drift["retrain_recommended"] is True and "score PSI" in drift["reasons"]
    assert log_meta["n_predictions"] >= 1
    html = drift["evidently_report"]
    page = Path(html).read_text()
    assert html.endswith(".html") and "<html" in page[:500] and "num_n_urls" in page
    columns = json.loads(Path(drift["report_json"]).read_text())["columns"]
    assert {c["column"] for c in columns} >= {"score", "num_n_urls", "sender_tld"}

    # 4. the sensor asks for a retrain, once
    from spam_assets.defs.monitoring.sensors import drift_retrain_sensor
    from spam_assets.defs.resources import build_resources

    monitoring = build_resources()["monitoring"]
    ctx = dg.build_sensor_context(instance=instance, resources={"monitoring": monitoring})
    request = drift_retrain_sensor(ctx)
    assert isinstance(request, dg.RunRequest), request
    again = drift_retrain_sensor(
        dg.build_sensor_context(
            instance=instance, cursor=ctx.cursor, resources={"monitoring": monitoring}
        )
    )
    assert isinstance(again, dg.SkipReason)

    # 5. the retrain job: same assets, feedback added, gate against the champion, canary
    retrain = _materialize(instance, "spam_retrain", tags=request.tags)
    assert retrain.dagster_run.tags["spam/trigger"] == "drift"
    feedback = latest_metadata(instance, "labelled_feedback")
    splits = latest_metadata(instance, "dataset_splits")
    evaluation = latest_metadata(instance, "model_evaluation")
    assert feedback["rows"] >= 0.95 * len(first)  # distinct contents of the replayed half
    assert splits["feedback_rows"] == feedback["rows"]
    assert evaluation["model_version"] == "2" and evaluation["champion_version"] == "1"
    assert evaluation["n_feedback_train"] == feedback["rows"]
    assert 0.0 <= evaluation["mcnemar_p_value"] <= 1.0
    # the loop pays off on the held-out second half (same rows for both models): at the
    # stale model's false-positive count, v2 catches at least as much spam (the gate's rule)
    assert evaluation["n_test"] == stale_eval["n_test"]
    assert evaluation["matched_challenger_recall"] >= evaluation["matched_champion_recall"]
    assert 0.0 <= evaluation["matched_mcnemar_p_value"] <= 1.0
    deployed = latest_metadata(instance, "local_deployment")
    assert deployed["mode"] == "canary" and deployed["canary_fraction"] == 0.5
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    alias = lambda a: str(client.get_model_version_by_alias("spam-classifier", a).version)  # noqa: E731
    assert (alias("champion"), alias("challenger")) == ("1", "2")
    aliases = read_aliases(home / "serving" / "aliases.json")
    assert aliases["champion"]["model_version"] == "1"
    assert aliases["challenger"]["model_version"] == "2"
    staging = requests.post(
        f"{url}/predict",
        json={"subject": "hello", "body": "lunch?"},
        headers={"X-API-Key": key, "X-Environment": "staging"},
        timeout=30,
    )
    assert staging.json()["model_version"] == "2"

    # 6. canary traffic (second half) with feedback; the judge promotes v2
    canary_start = time.time()
    traffic = replay(url, key, second, batch=2)  # routing is per request
    assert traffic["failures"] == []
    assert set(traffic["served"]) == {"1", "2"} and min(traffic["served"].values()) >= 20
    wait_for_log(home / "inference_log", canary_start, len(second), len(second))
    _materialize(instance, "spam_canary")
    judged = latest_metadata(instance, "canary_rollout")
    assert judged["action"] == "promote", judged
    assert (alias("champion"), alias("challenger")) == ("2", "2")
    assert read_canary(home / "serving" / "aliases.json") == {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        prod = requests.post(
            f"{url}/predict",
            json={"subject": "hello", "body": "lunch?"},
            headers={"X-API-Key": key},
            timeout=30,
        ).json()
        if prod["model_version"] == "2":
            break
        time.sleep(0.2)
    assert prod["model_version"] == "2"
    state = json.loads((home / "serving" / "local_deployment.json").read_text())
    assert state["model_version"] == "2" and state["canary"] == {}
    print(
        f"\nloop: stale v1 F1 {stale_eval['f1']:.4f} -> retrained v2 F1 {evaluation['f1']:.4f} "
        f"on the held-out half; spam recall at v1's ham FPR "
        f"{evaluation['matched_champion_recall']:.3f} -> "
        f"{evaluation['matched_challenger_recall']:.3f}; "
        f"drift score PSI {drift['score_psi']:.3f}, live accuracy "
        f"{live['correct'] / live['n']:.3f}; McNemar p {evaluation['mcnemar_p_value']:.4f}; "
        f"{datetime.now(UTC):%H:%M}"
    )
