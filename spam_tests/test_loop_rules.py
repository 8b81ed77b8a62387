"""The loop's decision rules without a server: canary decisions, McNemar, alert delivery,
and the retrain sensor through Dagster's sensor test APIs (real instance, real events)."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from spam_assets.lib.alerts import post_alert
from spam_assets.lib.canary import (
    CanaryPolicy,
    accuracy_worse_p,
    decide,
    latency_slower_p,
    version_stats,
)
from spam_assets.lib.metrics import mcnemar
from spam_assets.lib.monitoring import feedback_metrics
from spam_tests.helpers.webhook import webhook

POLICY = CanaryPolicy(min_requests=100, min_feedback=20)


def _side(
    requests=500, errors=0, p95=10.0, n_feedback=100, accuracy=0.95, version="1", slower_p=0.5
):
    return {
        "latency_slower_p": slower_p,
        "version": version,
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else 0.0,
        "p95_latency_ms": p95,
        "n_feedback": n_feedback,
        "n_correct": round(accuracy * n_feedback),
        "accuracy": accuracy,
    }


@pytest.mark.parametrize(
    ("champion", "challenger", "fraction", "action", "next_fraction"),
    [
        (_side(), _side(version="2"), 0.1, "advance", 0.5),
        (_side(), _side(version="2"), 0.5, "promote", 1.0),
        (_side(), _side(requests=50, version="2"), 0.1, "hold", 0.1),
        (_side(), _side(n_feedback=5, version="2"), 0.1, "hold", 0.1),
        (_side(), _side(errors=3, requests=20, version="2"), 0.1, "rollback", 0.0),
        (_side(), _side(p95=30.0, slower_p=0.001, version="2"), 0.1, "rollback", 0.0),
        # 3x slower at p95 but Mann-Whitney sees no shift (a few outliers): keeps going
        (_side(), _side(p95=30.0, slower_p=0.3, version="2"), 0.1, "advance", 0.5),
        # the CI run: 4.4 vs 2.8 ms is x1.6 but 1.6 ms, below the 5 ms that matters
        (_side(p95=2.8), _side(p95=4.4, slower_p=1e-6, version="2"), 0.5, "promote", 1.0),
        # 100 vs 50 wrong of 1000 each: a real regression -> rolled back
        (
            _side(n_feedback=1000),
            _side(n_feedback=1000, accuracy=0.90, version="2"),
            0.5,
            "rollback",
            0.0,
        ),
        # the same 5-point gap on 100 labels a side (10 vs 5 wrong) is noise: Fisher p ~0.14
        (_side(), _side(accuracy=0.90, version="2"), 0.5, "promote", 1.0),
        (_side(accuracy=0.90), _side(accuracy=0.89, version="2"), 0.1, "advance", 0.5),
    ],
)
def test_canary_decisions(champion, challenger, fraction, action, next_fraction):
    decision = decide({"champion": champion, "challenger": challenger}, fraction, POLICY)
    assert (decision.action, decision.next_fraction) == (action, next_fraction)
    assert decision.reason


def test_accuracy_regression_needs_significance_and_says_so():
    # the CI run that rolled v2 back on noise: 54/62 right vs 55/58 right on canary feedback
    champion = _side(n_feedback=58, accuracy=55 / 58)
    challenger = _side(n_feedback=62, accuracy=54 / 62, version="2")
    policy = CanaryPolicy(min_requests=100, min_feedback=20, max_accuracy_drop=0.05)
    decision = decide({"champion": champion, "challenger": challenger}, 0.5, policy)
    assert decision.action == "promote"
    assert "not significant" in decision.reason and "Fisher p=0.1" in decision.reason
    # the same rates on 10x the labels are a regression
    big = {
        "champion": _side(n_feedback=580, accuracy=550 / 580),
        "challenger": _side(n_feedback=620, accuracy=540 / 620, version="2"),
    }
    rolled = decide(big, 0.5, policy)
    assert rolled.action == "rollback" and "significant at alpha 0.05" in rolled.reason
    # a stricter alpha keeps a borderline regression running
    assert decide(big, 0.5, CanaryPolicy(**{**policy.__dict__, "alpha": 1e-9})).action == (
        "promote"
    )


def test_latency_slower_p_is_one_sided_and_rank_based():
    rng = np.random.default_rng(0)
    fast = rng.gamma(4.0, 1.0, 200)
    assert latency_slower_p(fast + 2.0, fast) < 1e-6
    assert latency_slower_p(fast, fast + 2.0) > 0.99  # a faster challenger is never "slower"
    # one huge outlier moves the p95 ratio, not the ranks
    spiky = np.concatenate([fast[:190], np.full(10, 500.0)])
    assert latency_slower_p(spiky, fast) > 0.05
    assert latency_slower_p(np.array([]), fast) is None


def test_fisher_p_value_matches_the_tea_tasting_example():
    # Fisher's lady tasting tea: 3 of 4 right per cup kind; one-sided p = 17/70
    assert accuracy_worse_p(
        {"n_feedback": 4, "n_correct": 1}, {"n_feedback": 4, "n_correct": 3}
    ) == pytest.approx(17 / 70)
    # a better challenger is never "worse"
    assert accuracy_worse_p(
        {"n_feedback": 50, "n_correct": 50}, {"n_feedback": 50, "n_correct": 40}
    ) == pytest.approx(1.0)


def test_version_stats_counts_fallbacks_as_challenger_errors():
    log = pd.DataFrame(
        {
            "environment": ["production"] * 6 + ["production-canary"] * 2,
            "model_version": ["1"] * 6 + ["2"] * 2,
            "fallback_from": [None] * 4 + ["2", "2"] + [None, None],
            "latency_ms": [5.0] * 8,
            "label": ["spam", "ham"] * 4,
            "true_label": ["spam", "ham", "ham", None, None, None, "spam", "spam"],
        }
    )
    stats = version_stats(log, "1", "2")
    assert stats["champion"]["requests"] == 4
    assert stats["challenger"].pop("latency_slower_p") >= 0.5  # equal latencies: not slower
    assert stats["challenger"] == {
        "version": "2",
        "requests": 4,
        "errors": 2,
        "error_rate": 0.5,
        "p95_latency_ms": 5.0,
        "n_feedback": 2,
        "n_correct": 1,
        "accuracy": 0.5,
    }
    assert stats["champion"]["accuracy"] == pytest.approx(2 / 3)


def test_feedback_metrics():
    df = pd.DataFrame(
        {
            "label": ["spam", "spam", "ham", "ham", "spam"],
            "true_label": ["spam", "ham", "ham", "spam", None],
        }
    )
    m = feedback_metrics(df)
    assert m == {
        "n_feedback": 4,
        "n_correct": 2,
        "accuracy": 0.5,
        "f1": 0.5,
        "ham_fpr": 0.5,
        "n_feedback_ham": 2,
        "n_ham_false_positives": 1,
    }
    assert feedback_metrics(df.iloc[4:])["accuracy"] is None


def test_mcnemar_exact():
    y = np.array([1] * 40 + [0] * 40)
    a = y.copy()
    a[:12] = 0  # champion misses 12 spam
    b = y.copy()
    b[:2] = 0  # challenger misses 2 of those
    result = mcnemar(y, a, b)
    assert (result["b_only_correct"], result["a_only_correct"]) == (10, 0)
    assert result["p_value"] == pytest.approx(2 * 0.5**10)
    assert mcnemar(y, a, a)["p_value"] == 1.0


def test_alert_retries_then_delivers():
    with webhook([503, 502]) as hook:
        result = post_alert(hook.url, "drift", "score PSI 0.4", {"psi": 0.4}, backoff_s=0.01)
    assert result.delivered and result.status == 200
    assert hook.attempts == 3
    assert hook.bodies[0]["kind"] == "drift" and hook.bodies[0]["details"] == {"psi": 0.4}


def test_alert_gives_up_without_raising():
    with webhook([500] * 10) as hook:
        result = post_alert(hook.url, "drift", "x", {}, retries=2, backoff_s=0.01)
    assert not result.delivered and result.status == 500 and hook.attempts == 3
    with webhook([], delay_s=2.0) as hook:
        slow = post_alert(hook.url, "drift", "x", {}, timeout_s=0.3, retries=0)
    assert not slow.delivered and "Timeout" in slow.detail
    closed = post_alert("http://127.0.0.1:9/hook", "drift", "x", {}, retries=1, backoff_s=0.01)
    assert not closed.delivered and closed.status is None
    assert not post_alert(None, "drift", "x", {}).delivered


# ---------------------------------------------------------------- the retrain sensor
@pytest.fixture
def monitoring(spam_env, monkeypatch):
    monkeypatch.setenv("SPAM_RETRAIN_COOLDOWN_HOURS", "6")
    from spam_assets.defs.resources import build_resources

    return build_resources()["monitoring"]


def _report(instance, partition: str, **metadata) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization("drift_report", partition=partition, metadata=metadata)
    )


def _tick(instance, monitoring, cursor=None):
    from spam_assets.defs.monitoring.sensors import drift_retrain_sensor

    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"monitoring": monitoring}
    )
    result = drift_retrain_sensor(context)
    return result, context.cursor


def test_sensor_skips_without_report(instance, monitoring):
    result, _ = _tick(instance, monitoring)
    assert isinstance(result, dg.SkipReason) and "no drift_report" in result.skip_message


def test_sensor_skips_with_the_numbers_when_below_thresholds(instance, monitoring):
    _report(instance, "2026-11-25-10:00", n_predictions=1000, score_psi=0.05, drifted_share=0.1)
    result, cursor = _tick(instance, monitoring)
    assert isinstance(result, dg.SkipReason)
    assert (
        "no threshold crossed" in result.skip_message and "score PSI 0.050" in result.skip_message
    )
    assert json.loads(cursor)["event_id"] > 0


def test_sensor_fires_once_per_report_then_cools_down(instance, spam_env, monkeypatch):
    from spam_assets.defs.resources import build_resources

    with webhook() as hook:
        monkeypatch.setenv("SPAM_ALERT_WEBHOOK_URL", hook.url)
        monitoring = build_resources()["monitoring"]
        _report(instance, "2026-11-25-10:00", n_predictions=1000, score_psi=0.35, drifted_share=0.1)
        fired, cursor = _tick(instance, monitoring)
        assert isinstance(fired, dg.RunRequest)
        assert fired.run_key.startswith("drift-")
        assert "score PSI 0.350" in fired.tags["spam/reasons"]
        assert hook.bodies and hook.bodies[0]["kind"] == "drift"

        again, cursor = _tick(instance, monitoring, cursor)
        assert isinstance(again, dg.SkipReason) and "already judged" in again.skip_message

        _report(instance, "2026-11-25-11:00", n_predictions=900, drifted_share=0.6, score_psi=0.0)
        cooled, cursor = _tick(instance, monitoring, cursor)
        assert isinstance(cooled, dg.SkipReason)
        assert "cooldown" in cooled.skip_message and "drifted feature share" in cooled.skip_message

    # after the cooldown the next drifting report fires again
    state = json.loads(cursor)
    state["fired_at"] -= 7 * 3600
    _report(
        instance,
        "2026-11-25-12:00",
        n_predictions=900,
        score_psi=0.0,
        drifted_share=0.0,
        feedback_accuracy=0.7,
        n_feedback=80,
    )
    fired2, _ = _tick(instance, monitoring, json.dumps(state))
    assert isinstance(fired2, dg.RunRequest)
    assert "feedback accuracy 0.700" in fired2.tags["spam/reasons"]


def test_sensor_skips_thin_traffic_even_with_extreme_numbers(instance, monitoring):
    _report(instance, "2026-11-25-10:00", n_predictions=20, score_psi=5.0, drifted_share=1.0)
    result, _ = _tick(instance, monitoring)
    assert isinstance(result, dg.SkipReason) and "only 20 predictions" in result.skip_message


def test_sensor_tolerates_a_garbled_cursor(instance, monitoring):
    _report(instance, "2026-11-25-10:00", n_predictions=1000, score_psi=0.5)
    result, _ = _tick(instance, monitoring, cursor="not json")
    assert isinstance(result, dg.RunRequest)
