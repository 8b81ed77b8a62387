"""The two ways of use a person watches rather than calls, on a real instance: the Dagster UI in
a real browser (Debian's Chromium, driven by Playwright), and the daemon closing the loop on
its own. One small materialization, then ``dagster dev`` (webserver + daemon) as a process on
that instance with the drift schedule ticking every minute; traffic with a clear shift goes
through the real endpoint and the test only watches: the schedule's tick materializes
``inference_log`` and ``drift_report``, the sensor's tick launches ``spam_retrain``, and the new
version lands as a canary. Assertions read the run records and metadata the daemon produced.

``SPAM_UI_SCREENSHOTS=<dir>`` keeps the pages' screenshots there (``docs/images`` holds three).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import requests

from spam_serving.model_store import read_aliases, read_canary
from spam_serving.settings import PROJECT_ROOT
from spam_tests.helpers.corpus import stratified, write_tarballs
from spam_tests.helpers.env import TEST_REDIS_DB, delete_redis_project, free_port
from spam_tests.helpers.loop import by_group, newer_halves, replay, wait_for_log
from spam_tests.helpers.pipeline import SMALL_RUN_ENV, failure_messages, run_assets

pytestmark = [pytest.mark.slow, pytest.mark.redis]

OLDER = {"easy-ham-1": 200, "hard-ham-1": 40, "spam-1": 40}
NEWER = {"easy-ham-2": 100, "spam-2": 120}
ASSETS = (
    "raw_corpus",
    "parsed_messages",
    "dataset_splits",
    "feature_pipeline",
    "feature_matrices",
    "sender_reputation",
    "feast_registry",
    "online_features",
    "tuned_model",
    "model_evaluation",
    "onnx_model",
    "bento",
    "local_deployment",
    "aks_deployment",
    "labelled_feedback",
    "drift_reference",
    "inference_log",
    "drift_report",
    "canary_rollout",
)
CHROMIUM = "/usr/bin/chromium"
#: where the pages' screenshots go (read before the fixture clears the SPAM_* environment)
SCREENSHOTS = os.environ.get("SPAM_UI_SCREENSHOTS")
#: Chromium's own connections fail on this machine's closed network; these keep it quiet
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _env(home: Path, sources: list[Path], port: int, project: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "DAGSTER_"))}
    env.update(SMALL_RUN_ENV)
    env.update(
        {
            "SPAM_HOME": str(home),
            "SPAM_CORPUS_SOURCES": json.dumps([str(p) for p in sources]),
            "SPAM_SERVE_PORT": str(port),
            "SPAM_SERVE_WORKERS": "1",
            "SPAM_FEAST_PROJECT": project,
            "SPAM_FEAST_REDIS": f"127.0.0.1:6379,db={TEST_REDIS_DB}",
            "SPAM_REPUTATION_TIMEOUT_MS": "2000",
            "SPAM_LOG_FLUSH_S": "0.3",
            "SPAM_MODEL_POLL_INTERVAL_S": "0.2",
            "SPAM_ENSEMBLE_FOLDS": "3",
            "SPAM_EXECUTOR": "in_process",  # the daemon's retrain run: no per-step start-up
            "SPAM_REFIT_WITH_VALIDATION": "false",  # ~300 training messages: see test_loop_e2e
            # the loop on a small corpus, on a test's clock
            "SPAM_DRIFT_SCHEDULE_CRON": "* * * * *",
            "SPAM_DRIFT_SCHEDULE_LAG_HOURS": "0",
            "SPAM_DRIFT_SENSOR_INTERVAL_S": "5",
            "SPAM_DRIFT_MIN_PREDICTIONS": "50",
            "SPAM_FEEDBACK_MIN_COUNT": "20",
            "SPAM_AUTOMATIONS_STOPPED": '["canary_schedule", "log_retention_schedule"]',
            # what the gate decides on ~100 held-out messages is test_loop_e2e's and
            # test_canary_rollback's subject; here the daemon's part of the loop is
            "SPAM_GATE_MAX_RECALL_REGRESSION": "1.0",
            "BENTOML_DO_NOT_TRACK": "true",
        }
    )
    return env


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def live(tmp_path_factory, mirror):
    """A small instance materialized in-process (under ``SPAM_HOME``, so the UI and the daemon
    see it), its endpoint, and ``dagster dev`` running on it."""
    from spam_assets.cli import summary
    from spam_assets.instance import prepare_dagster_home

    base = tmp_path_factory.mktemp("daemon")
    home = base / "home"
    first, second = newer_halves(mirror, NEWER)
    corpus = {g: stratified(mirror[g], n) for g, n in OLDER.items()}
    corpus.update(by_group(second))
    sources = write_tarballs(base / "corpus", corpus)
    project = f"t{uuid.uuid4().hex[:10]}"
    env = _env(home, sources, free_port(), project)
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(("SPAM_", "DAGSTER_"))]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        prepare_dagster_home()
        with dg.DagsterInstance.get() as instance:
            result = run_assets(instance)
            assert result.success, failure_messages(result)
            printed = summary(instance)
        ui_port = free_port()
        log = base / "dagster-dev.log"
        with open(log, "wb") as out:
            dev = subprocess.Popen(
                [sys.executable, "-m", "spam_assets.cli", "ui"],
                env={**os.environ, "SPAM_UI_PORT": str(ui_port)},
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = json.loads((home / "serving" / "local_deployment.json").read_text())
        try:
            _wait_http(f"http://127.0.0.1:{ui_port}/server_info", dev, log, 240)
            yield {
                "home": home,
                "ui": f"http://127.0.0.1:{ui_port}",
                "url": state["url"],
                "key": (home / "serving" / "api_keys").read_text().splitlines()[-1],
                "first": first,
                "log": log,
                "summary": printed,
            }
        finally:
            os.killpg(dev.pid, signal.SIGTERM)
            try:
                dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
            from spam_assets.lib.local_server import stop_server

            # the loop may have restarted the server (a new pid): stop whatever runs now too
            now = json.loads((home / "serving" / "local_deployment.json").read_text())
            for pid in {state["pid"], now["pid"]}:
                stop_server(pid)
            delete_redis_project(TEST_REDIS_DB, project)


def _dismiss(page) -> None:
    """Dagster's first-visit "Join the community" dialog covers the page a moment after it
    loads: skip it (the browser then remembers, for every later page)."""
    with contextlib.suppress(Exception):  # no dialog this time: nothing covers the page
        page.get_by_role("button", name="Skip").click(timeout=10_000)


def _instance(home: Path) -> dg.DagsterInstance:
    from dagster._core.instance.ref import InstanceRef

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster")))


def test_the_run_summary_says_where_everything_is(live):
    out = live["summary"]
    for line in ("Dagster UI", "endpoint", "try it", "drift reports", "spam caught"):
        assert line in out, out


def test_the_ui_in_a_browser(live):
    from playwright.sync_api import sync_playwright

    shots = SCREENSHOTS
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        # the asset catalog lists every asset of the code location
        page.goto(f"{live['ui']}/assets", wait_until="networkidle")
        _dismiss(page)
        page.get_by_text("model_evaluation", exact=True).first.wait_for(timeout=60_000)
        body = page.inner_text("body")
        missing = [a for a in ASSETS if a not in body]
        assert not missing, f"asset catalog lacks {missing}"

        # model_evaluation: the metric table, the confusion matrix, both plots
        page.goto(f"{live['ui']}/assets/model_evaluation", wait_until="networkidle")
        page.get_by_text("confusion_matrix").first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        for label in ("metrics", "confusion_matrix", "pr_curve", "low_fpr_curve", "predicted spam"):
            assert label in text, f"model_evaluation page lacks {label!r}"
        if shots:
            page.screenshot(path=str(Path(shots) / "model_evaluation.png"), full_page=True)
        images = page.locator("img[src^='data:image/png']")
        if images.count() == 0:  # large markdown opens in a dialog
            page.get_by_text("[Show Markdown]").first.click()
        page.locator("img[src^='data:image/png']").first.wait_for(timeout=30_000)
        loaded = page.evaluate(
            "Array.from(document.querySelectorAll(\"img[src^='data:image/png']\"))"
            ".map(i => i.complete && i.naturalWidth > 0)"
        )
        assert loaded and all(loaded), loaded

        # the Automation page lists every schedule and sensor, and none is in error
        page.goto(f"{live['ui']}/automation", wait_until="networkidle")
        page.get_by_text("hourly_drift_schedule").first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        for name in (
            "hourly_drift_schedule",
            "canary_schedule",
            "log_retention_schedule",
            "drift_retrain_sensor",
            "retrain_failure_alert",
        ):
            assert name in text, f"Automation page lacks {name}"
        if shots:
            page.screenshot(path=str(Path(shots) / "automation.png"), full_page=True)

        # the asset graph renders (the training group's lineage)
        page.goto(
            f"{live['ui']}/locations/spam_assets/asset-groups/training/lineage",
            wait_until="networkidle",
        )
        page.get_by_text("tuned_model").first.wait_for(timeout=60_000)
        if shots:
            page.screenshot(path=str(Path(shots) / "asset_graph.png"), full_page=False)
        browser.close()
    assert not errors, errors
    # the code location is named as the project says (no name-mismatch warning)
    assert "does not match" not in live["log"].read_text()


def test_the_daemon_closes_the_loop(live):
    """Traffic with a shift through the endpoint; then only the daemon acts."""
    home, first = live["home"], live["first"]
    started = time.time()
    sent = replay(live["url"], live["key"], first)
    assert sent["failures"] == [] and sent["n"] == len(first)
    wait_for_log(home / "inference_log", started, len(first), len(first))

    instance = _instance(home)
    deadline = time.monotonic() + 900
    retrain = None
    while time.monotonic() < deadline:
        records = instance.get_run_records(dg.RunsFilter(job_name="spam_retrain"), limit=1)
        if records and records[0].dagster_run.status in (
            dg.DagsterRunStatus.SUCCESS,
            dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED,
        ):
            retrain = records[0].dagster_run
            break
        time.sleep(5)
    assert retrain is not None, (
        "no spam_retrain run finished within 15 minutes:\n" + live["log"].read_text()[-4000:]
    )
    assert retrain.status == dg.DagsterRunStatus.SUCCESS, retrain.run_id
    # the sensor launched it, for the drift report the schedule's tick produced
    assert retrain.tags.get("dagster/sensor_name") == "drift_retrain_sensor"
    assert retrain.tags.get("spam/trigger") == "drift"
    monitoring = instance.get_run_records(
        dg.RunsFilter(
            job_name="spam_monitoring",
            tags={"dagster/schedule_name": "hourly_drift_schedule"},
            statuses=[dg.DagsterRunStatus.SUCCESS],
        )
    )
    assert monitoring, "the schedule never materialized the monitoring job"
    event_id = int(retrain.tags["spam/drift_event"])
    (report,) = [
        r
        for r in instance.fetch_materializations(dg.AssetKey("drift_report"), limit=200).records
        if r.storage_id == event_id
    ]
    meta = {k: v.value for k, v in report.asset_materialization.metadata.items()}
    assert meta["retrain_recommended"] is True and meta["n_predictions"] >= len(first)
    assert meta["n_feedback"] >= len(first) and "score PSI" in meta["reasons"]
    producer = instance.get_run_by_id(report.run_id)
    assert producer.tags.get("dagster/schedule_name") == "hourly_drift_schedule"

    # the new version landed as a canary: MLflow challenger v2, champion still v1
    aliases = read_aliases(home / "serving" / "aliases.json")
    assert aliases["champion"]["model_version"] == "1"
    assert aliases["challenger"]["model_version"] == "2"
    assert read_canary(home / "serving" / "aliases.json").get("fraction", 0) > 0
    answer = requests.post(
        f"{live['url']}/predict",
        json={"subject": "hi", "body": "lunch at noon?"},
        headers={"X-API-Key": live["key"], "X-Environment": "staging"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["model_version"] == "2"
