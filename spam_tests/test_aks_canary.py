"""The canary on AKS: start, advance, promote and roll back as Helm values changes of the
production release, each rendered, validated against the Kubernetes schemas and accepted by
Helm's install action (client dry run); the judge reading an unreachable cluster fails with
the reason; canary pods mark their rows so the judge (which reads only the log) can tell
them, and their failures, from the champion's."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import requests

from spam_assets.defs.deployment.aks import aks_deployment
from spam_assets.defs.deployment.canary import canary_rollout
from spam_assets.defs.resources import build_resources
from spam_assets.lib import aks, aks_canary
from spam_assets.lib.canary import (
    CanaryDecision,
    CanaryPolicy,
    RunningCanary,
    decide,
    version_stats,
)
from spam_assets.lib.monitoring import hours_between, read_predictions
from spam_serving.gateway import CANARY_ENV
from spam_serving.inference_log import ERROR_LABEL
from spam_serving.model_store import write_aliases
from spam_serving.settings import SpamSettings
from spam_tests.helpers.aks import aks_resource, bento_value, write_kubeconfig
from spam_tests.helpers.env import free_port
from spam_tests.helpers.serving import API_KEYS, broken_bundle, running_server, train_bundle

RELEASE, NAMESPACE = "spam-serving-production", "spam-production"
DIGEST_7, DIGEST_8 = "sha256:" + "7" * 64, "sha256:" + "8" * 64
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _settings() -> SpamSettings:
    return SpamSettings(target="azure", aks_ingress_host_production="spam.example.org")


def _image(tag: str, digest: str) -> aks.ImageSpec:
    return aks.ImageSpec("spamacr.azurecr.io", "spam-classifier", tag, digest)


def _by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _dry_run_install(values: dict) -> dict:
    """Helm's own install action over the values (in-memory release storage, no cluster)."""
    import helm_python as helm

    with helm.Config(storage_driver="memory", namespace=NAMESPACE) as cfg:
        return cfg.install(aks.CHART_DIR, RELEASE, values, dry_run="client")


def _track_env(deployment: dict) -> str:
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(e["value"] for e in env if e["name"] == "SPAM_SERVE_TRACK")


def _advance(fraction: float) -> CanaryDecision:
    return CanaryDecision("advance", "healthy", fraction)


def test_a_canary_moves_through_its_stages_as_release_values():
    s = _settings()
    stable = aks.release_values(s, "production", _image("v7-01234567", DIGEST_7))
    before = _by_kind(aks.render_valid(stable, RELEASE, NAMESPACE))

    start = aks_canary.start_values(s, stable, _image("v8-89abcdef", DIGEST_8), 0.1, T0)
    canary = aks_canary.read_canary(start)
    assert canary == RunningCanary("7", "8", 0.1, T0, T0)
    docs = _by_kind(aks.render_valid(start, RELEASE, NAMESPACE))
    stable_pods = docs[("Deployment", RELEASE)]
    canary_pods = docs[("Deployment", f"{RELEASE}-canary")]
    assert stable_pods["spec"]["template"]["spec"]["containers"][0]["image"].endswith(DIGEST_7)
    assert canary_pods["spec"]["template"]["spec"]["containers"][0]["image"].endswith(DIGEST_8)
    assert (_track_env(stable_pods), _track_env(canary_pods)) == ("stable", "canary")
    annotations = canary_pods["metadata"]["annotations"]
    assert annotations["spam-mlops/canary-started-at"] == T0.isoformat()
    ingress = docs[("Ingress", f"{RELEASE}-canary")]["metadata"]["annotations"]
    assert ingress["nginx.ingress.kubernetes.io/canary-weight"] == "10"
    assert _dry_run_install(start)["status"] == "pending-install"

    later = T0 + timedelta(hours=2)
    advanced = aks_canary.next_values(start, _advance(0.5), later)
    assert aks_canary.read_canary(advanced) == RunningCanary("7", "8", 0.5, T0, later)
    ingress = _by_kind(aks.render_valid(advanced, RELEASE, NAMESPACE))[
        ("Ingress", f"{RELEASE}-canary")
    ]["metadata"]["annotations"]
    assert ingress["nginx.ingress.kubernetes.io/canary-weight"] == "50"
    assert aks_canary.next_values(advanced, CanaryDecision("hold", "few", 0.5), later) is None

    promoted = aks_canary.next_values(advanced, CanaryDecision("promote", "ok", 1.0), later)
    assert aks_canary.read_canary(promoted) is None
    docs = _by_kind(aks.render_valid(promoted, RELEASE, NAMESPACE))
    assert ("Deployment", f"{RELEASE}-canary") not in docs
    image = docs[("Deployment", RELEASE)]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"spamacr.azurecr.io/spam-classifier@{DIGEST_8}"
    assert promoted["image"]["tag"] == "v8-89abcdef"
    assert _dry_run_install(promoted)["status"] == "pending-install"

    rolled_back = aks_canary.next_values(advanced, CanaryDecision("rollback", "bad", 0.0), later)
    assert aks_canary.read_canary(rolled_back) is None
    # every object is what it was before the canary started: same images, no canary objects
    assert _by_kind(aks.render_valid(rolled_back, RELEASE, NAMESPACE)) == before
    assert _dry_run_install(rolled_back)["status"] == "pending-install"


def test_canary_values_that_cannot_be_judged_are_refused_with_the_key():
    s = _settings()
    stable = aks.release_values(s, "production", _image("v7-01234567", DIGEST_7))
    start = aks_canary.start_values(s, stable, _image("v8-89abcdef", DIGEST_8), 0.1, T0)
    with pytest.raises(ValueError, match=r"a canary \(v8 at 10%\) is already running"):
        aks_canary.start_values(s, start, _image("v9-00000000", None), 0.1, T0)
    with pytest.raises(ValueError, match="production already runs model v7"):
        aks_canary.start_values(s, stable, _image("v7-fedcba98", None), 0.1, T0)
    by_hand = {**start, "canary": {**start["canary"], "startedAt": ""}}
    with pytest.raises(ValueError, match=r"canary\.startedAt '' is not an ISO 8601 time"):
        aks_canary.read_canary(by_hand)
    foreign = {**start, "canary": {**start["canary"], "image": {"tag": "nightly"}}}
    with pytest.raises(ValueError, match=r"canary\.image\.tag 'nightly' is not an image of"):
        aks_canary.read_canary(foreign)
    naive = {**start, "canary": {**start["canary"], "startedAt": "2026-12-07T09:00:00"}}
    with pytest.raises(ValueError, match="has no time zone"):
        aks_canary.read_canary(naive)
    # the chart's schema refuses a start time that is not one
    with pytest.raises(Exception, match="startedAt"):
        aks.render(
            {**start, "canary": {**start["canary"], "startedAt": "yesterday"}}, RELEASE, NAMESPACE
        )


def test_the_judge_fails_clearly_when_the_production_cluster_is_unreachable(spam_env, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", free_port())
    resources = {**build_resources(), "aks_target": aks_resource(kubeconfig=str(kubeconfig))}
    with pytest.raises(dg.Failure) as err:
        dg.materialize([canary_rollout], resources=resources)
    message = err.value.description
    assert f"canary_rollout: reading the canary: production: values of {RELEASE}" in message
    assert "connection refused" in message


def test_a_canary_deployment_checks_the_cluster_and_names_a_bad_strategy(spam_env, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", free_port())
    resources = {**build_resources(), "aks_target": aks_resource(kubeconfig=str(kubeconfig))}

    def run(strategy: str) -> str:
        config = dg.RunConfig(
            ops={"aks_deployment": {"config": {"strategy": strategy, "approve_production": True}}}
        )
        with pytest.raises(dg.Failure) as err:
            dg.materialize([bento_value, aks_deployment], resources=resources, run_config=config)
        return err.value.description

    assert "unknown strategy 'linear': direct or canary" in run("linear")
    assert "staging: cluster of context 'staging' is unreachable" in run("canary")


@pytest.mark.slow
def test_canary_pods_log_their_rows_and_their_failures_for_the_judge(spam_env, real_sample):
    """A pod of the canary track (``SPAM_SERVE_TRACK=canary``, as the chart sets it) serves
    only the challenger: its production answers are logged as the canary's, and when its
    model fails, the request fails (no champion in the pod) and an ``error`` row records it,
    which the judge counts and drift never sees."""
    home = spam_env
    good = train_bundle(real_sample, home / "bundles" / "v8", "8", rounds=10)
    bad = broken_bundle(real_sample, home / "bundles" / "v9", "9")
    alias_file = home / "serving" / "aliases.json"
    entry = {"bundle_path": str(good), "model_version": "8"}
    write_aliases(alias_file, {"champion": entry, "challenger": entry})
    port = free_port()
    url, started = f"http://127.0.0.1:{port}", datetime.now(UTC)
    headers = {"X-API-Key": API_KEYS[0], "Content-Type": "message/rfc822"}
    messages = [raw for _, _, raw in real_sample[:20]]
    env = {"SPAM_SERVE_TRACK": "canary", "SPAM_LOG_FLUSH_S": "0.2"}
    with running_server(home, port, SPAM_MODEL_POLL_INTERVAL_S="0.2", **env):
        answers = [
            requests.post(f"{url}/predict", data=m, headers=headers, timeout=30) for m in messages
        ]
        assert {r.status_code for r in answers} == {200}
        assert {r.json()["environment"] for r in answers} == {CANARY_ENV}
        entry = {"bundle_path": str(bad), "model_version": "9"}
        write_aliases(alias_file, {"champion": entry, "challenger": entry})
        deadline, failed, before_swap = time.monotonic() + 30, [], 0
        while time.monotonic() < deadline and len(failed) < 10:
            resp = requests.post(f"{url}/predict", data=messages[0], headers=headers, timeout=30)
            if resp.status_code == 200:
                before_swap += 1  # v8 answers until the worker picked up the alias change
            else:
                failed.append(resp.status_code)
        assert failed == [500] * 10
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert 'spam_request_errors_total{kind="canary_failure"}' in metrics
    hours = hours_between(started, datetime.now(UTC))
    log = read_predictions(home / "inference_log", hours, failures=True)
    errors = log[log["label"] == ERROR_LABEL]
    assert len(errors) >= 10 and set(errors["fallback_from"]) == {"9"}
    assert set(errors["environment"]) == {CANARY_ENV}
    answered = log[log["model_version"] == "8"]
    assert len(answered) == 20 + before_swap and set(answered["environment"]) == {CANARY_ENV}
    # drift and feedback never see the error rows
    assert ERROR_LABEL not in set(read_predictions(home / "inference_log", hours)["label"])
    log["true_label"] = None
    stats = version_stats(log, champion="7", challenger="9")
    assert stats["challenger"]["errors"] == len(errors)
    assert stats["challenger"]["error_rate"] == 1.0
    assert decide(stats, 0.1, CanaryPolicy()).action == "rollback"
