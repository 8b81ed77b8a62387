"""The whole training chain, materialized with Dagster's Python API on a real stratified
subsample of the corpus (Apache .tar.bz2 layout, ~420 messages, 2 Tune trials), with the
sender reputation features on so Feast (real Redis online store) is on the path end to end."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
import redis
import requests

from spam_assets.lib.metrics import evaluate
from spam_assets.lib.reputation import historical_reputation
from spam_serving.feature_store import feature_store
from spam_serving.model_bundle import ModelBundle
from spam_serving.parsing import from_record
from spam_serving.settings import get_settings
from spam_tests.helpers.corpus import DEFAULT_PER_GROUP, write_apache_tarballs
from spam_tests.helpers.env import TEST_REDIS_DB, set_sources
from spam_tests.helpers.pipeline import (
    SMALL_RUN_ENV,
    check_results,
    failure_messages,
    latest_metadata,
    logger_warnings,
    run_assets,
)

pytestmark = pytest.mark.slow

ALL_ASSETS = {
    "raw_corpus",
    "parsed_messages",
    "dataset_splits",
    "feature_pipeline",
    "sender_reputation",
    "feast_registry",
    "online_features",
    "feature_matrices",
    "tuned_model",
    "model_evaluation",
    "onnx_model",
    "bento",
    "local_deployment",
    "labelled_feedback",
    "drift_reference",
}
PARSED_COLUMNS = {
    "message_id",
    "group",
    "label",
    "sent_at",
    "sender",
    "sender_domain",
    "subject",
    "body",
    "is_html",
    "n_urls",
    "n_attachments",
    "content_hash",
    "sha256",
}


@pytest.fixture
def small_run(spam_env, monkeypatch, tmp_path, shared_tgz):
    tarballs = write_apache_tarballs(tmp_path / "corpus", DEFAULT_PER_GROUP, shared_tgz)
    set_sources(monkeypatch, [str(p) for p in tarballs])
    for key, value in SMALL_RUN_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SPAM_REPUTATION_FEATURES", "true")
    return spam_env


def test_full_chain(small_run: Path, instance, monkeypatch):
    home = small_run
    with logger_warnings("ray.tune.tune") as tune_warnings:
        result = run_assets(instance)
    assert result.success, failure_messages(result)
    # Tune runs the search as configured (it warns when it ignores a setting, e.g.
    # max_concurrent_trials next to a BasicVariantGenerator)
    assert not tune_warnings, tune_warnings
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == ALL_ASSETS
    checks = check_results(result)
    assert checks == {
        "parse_failure_rate": True,
        "label_counts": True,
        "null_rates": True,
        "no_split_leakage": True,
        "quality_gate": True,
        "onnx_parity": True,
    }

    # raw store + manifest
    manifest = json.loads((home / "data" / "raw" / "manifest.json").read_text())
    assert manifest["n_messages"] == sum(DEFAULT_PER_GROUP.values())
    parts = [p for source in manifest["sources"] for p in source["parts"]]
    raw = pd.concat(
        pd.read_parquet(home / "data" / "raw" / "parts" / f"{p['id']}.parquet") for p in parts
    )
    assert len(raw) == manifest["n_messages"] and raw["sha256"].str.len().eq(64).all()

    # parsed Parquet parts have the DESIGN.md columns; the asset's value refers to them
    with open(home / "data" / "assets" / "parsed_messages.pkl", "rb") as f:
        parsed = pickle.load(f).read()
    assert set(parsed.columns) >= PARSED_COLUMNS
    assert parsed["content_hash"].is_unique

    # MLflow: parent run per Dagster run, Tune trials nested under it, model registered
    meta = latest_metadata(instance, "tuned_model")
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("spam-mlops")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_id == meta["mlflow_run_id"])
    assert parent.data.tags["dagster_run_id"] == result.run_id
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    assert all("val_aucpr" in r.data.metrics for r in children)
    assert "test_f1" in parent.data.metrics  # model_evaluation logged to the model's run
    version = client.get_model_version_by_alias("spam-classifier", "challenger")
    assert str(version.version) == "1" and version.run_id == parent.info.run_id
    assert {"threshold", "featurizer_hash", "onnx_sha256"} <= set(version.tags)

    # evaluation metadata: table, confusion matrix, PR curve image
    ev = latest_metadata(instance, "model_evaluation")
    metric_names = [r.data["metric"] for r in ev["metrics"].records]
    assert "F1" in metric_names and "predicted spam" in ev["confusion_matrix"]
    assert "data:image/png;base64," in ev["pr_curve"]
    assert "data:image/png;base64," in ev["low_fpr_curve"]
    low = [r.data for r in ev["recall_at_low_ham_fpr"].records]
    assert [p["ham_fpr"] for p in low] == sorted(p["ham_fpr"] for p in low)
    assert all(a["recall"] <= b["recall"] for a, b in itertools.pairwise(low))
    assert 0.5 <= ev["f1"] <= 1.0

    # the ONNX bundle reproduces the evaluation from raw parsed rows (serving path)
    bundle = ModelBundle.load(latest_metadata(instance, "onnx_model")["bundle_path"])
    with open(home / "data" / "assets" / "dataset_splits.pkl", "rb") as f:
        table = pickle.load(f)  # a reference: a Parquet file per split
    assert len(pickle.dumps(table)) < 2_000
    splits = table.read()
    test = splits[splits["split"] == "test"]
    messages = [from_record(r) for r in test.to_dict("records")]
    store = feature_store(get_settings())
    scores = bundle.predict_proba(messages, historical_reputation(store, messages))
    again = evaluate(
        test["label"].to_numpy(), scores, test["group"].to_numpy(), bundle.threshold, {}
    )
    assert again["f1"] == pytest.approx(ev["f1"], abs=5e-5)  # metadata rounds to 4 places
    assert version.tags["featurizer_hash"] == bundle.featurizer.state_hash

    # the final fit covers train + validation (the newest data); the thresholds and the
    # score-drift reference use out-of-fold scores of the whole training period (the
    # ensemble's time-blocked cross-fit), not the deployed model's in-sample ones
    n_fit = int(splits["split"].isin(["train", "validation"]).sum())
    selection = latest_metadata(instance, "feature_pipeline")
    assert selection["fitted_on_rows"] == int((splits["split"] == "train").sum())
    assert meta["fitted_on"] == "train + validation" and meta["fitted_on_rows"] == n_fit
    assert meta["featurizer_refitted"] is True
    assert bundle.featurizer.state_hash != selection["state_hash"]
    with open(home / "data" / "assets" / "tuned_model.pkl", "rb") as f:
        tuned = pickle.load(f)
    oos = np.asarray(tuned.oof_scores["validation"])
    assert tuned.stack is not None and set(tuned.thresholds) >= {"junk", "reject"}
    assert meta["thresholds_chosen_on"].startswith("out-of-fold")
    ref = pd.read_parquet(str(latest_metadata(instance, "drift_reference")["path"]))
    assert ref["score_out_of_sample"].all()
    np.testing.assert_allclose(ref.loc[ref["split"] == "validation", "score"], oos)
    np.testing.assert_allclose(ref.loc[ref["split"] == "train", "score"], tuned.oof_scores["train"])
    val = splits[splits["split"] == "validation"]
    val_messages = [from_record(r) for r in val.to_dict("records")]
    in_sample = bundle.predict_proba(val_messages, historical_reputation(store, val_messages))
    assert np.abs(in_sample - oos).max() > 1e-3

    # Feast: offline tables, registry, and rows in the real Redis (auto found it)
    names = bundle.featurizer.feature_names
    assert names[bundle.featurizer.n_base_features - 1] == "rep:sender_spam_rate"
    rep_meta = latest_metadata(instance, "sender_reputation")
    assert rep_meta["domain_reputation_rows"] > 0
    online = latest_metadata(instance, "online_features")
    assert online["online_store"] == "redis" and online["mode"] == "full"
    r = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    project = get_settings().feast_project
    assert len(list(r.scan_iter(match=f"*{project}"))) == online["dagster/row_count"]

    # deployed: a real server answers with the new model, which is now the champion
    deployed = latest_metadata(instance, "local_deployment")
    assert deployed["mode"] == "start" and deployed["model_version"] == "1"
    assert str(client.get_model_version_by_alias("spam-classifier", "champion").version) == "1"
    key = (home / "serving" / "api_keys").read_text().splitlines()[-1]
    answer = requests.post(
        f"{deployed['url']}/predict",
        json={"subject": "WIN CASH NOW", "body": "click http://x.biz"},
        headers={"X-API-Key": key},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    # the ensemble answers a JSON-fields message with that door's own thresholds, and with
    # the action its band maps to
    bands = bundle.meta["thresholds"]
    assert answer.json()["threshold"] == pytest.approx(bands["junk_fields"])
    expected = "deliver"
    for action in ("junk", "reject"):
        if answer.json()["spam_probability"] >= bands[action + "_fields"]:
            expected = action
    assert answer.json()["action"] == expected
    assert "degraded" not in answer.json()  # Redis answered the reputation lookup
    assert answer.json()["top_features"]
    bento_meta = latest_metadata(instance, "bento")
    assert bento_meta["model_tag"] == "spam-classifier:v1" and bento_meta["size_bytes"] > 0
    # aks_deployment ran in the chain but did not pretend: skipped, with the reason observed
    skipped = instance.fetch_observations(dg.AssetKey("aks_deployment"), limit=1).records
    assert "SPAM_TARGET=local" in skipped[0].asset_observation.metadata["skipped"].value
    # the Docker context `az acr build` would upload: the Bento's Dockerfile + the model files
    context_dir = home / "image-context"
    export = subprocess.run(
        [sys.executable, "-m", "spam_assets.lib.image_context", bento_meta["bento_tag"],
         str(context_dir)],
        env={**os.environ, "BENTOML_HOME": str(home / "bentoml")},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-2000:]
    dockerfile = Path(json.loads(export.stdout.splitlines()[-1])["dockerfile"]).read_text()
    assert "BENTO_USER_UID" in dockerfile and "EXPOSE 3000" in dockerfile
    assert any((context_dir / "models").rglob("*.onnx"))
    # same service code again: the running process swaps the model instead of restarting
    redeploy = run_assets(instance, ["local_deployment"])
    assert redeploy.success, failure_messages(redeploy)
    again = latest_metadata(instance, "local_deployment")
    assert again["mode"] == "hot-swap" and again["pid"] == deployed["pid"]

    # unchanged corpus: raw_corpus is a no-op that says so
    stored = sorted((home / "data" / "raw").rglob("*"))
    before = {p: p.stat().st_mtime_ns for p in stored}
    again_raw = run_assets(instance, ["raw_corpus"])
    assert again_raw.success
    assert latest_metadata(instance, "raw_corpus")["changed"] is False
    assert {p: p.stat().st_mtime_ns for p in sorted((home / "data" / "raw").rglob("*"))} == before

    # with a champion in place the evaluation compares against it on the same test rows
    rerun = run_assets(instance, ["model_evaluation"])
    assert rerun.success, failure_messages(rerun)
    ev2 = latest_metadata(instance, "model_evaluation")
    columns = [c.name for c in ev2["metrics"].schema.columns]
    assert ev2["champion_version"] == "1" and "v1 (champion)" in columns
    # v1 against itself (native booster vs its exported bundle): same spam at the same cost
    curve = ev2["recall_at_held_out_ham_fpr"]
    assert set(curve) == {"0.1%", "0.5%", "1%", "2%"}
    assert all(
        p["challenger_recall"] == pytest.approx(p["champion_recall"], abs=0.01)
        for p in curve.values()
    )
    assert ev2["matched_challenger_recall"] == pytest.approx(
        ev2["matched_champion_recall"], abs=0.01
    )

    # a gate the challenger cannot pass blocks the export in the same run
    monkeypatch.setenv("SPAM_GATE_MIN_F1", "0.999")
    blocked = run_assets(instance, ["model_evaluation", "onnx_model"])
    assert not blocked.success
    assert check_results(blocked) == {"quality_gate": False}
    assert "onnx_model" not in {
        e.asset_key.to_user_string() for e in blocked.get_asset_materialization_events()
    }
    assert np.isfinite(scores).all()
