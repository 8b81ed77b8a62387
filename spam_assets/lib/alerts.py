"""Alerts as a JSON POST to a configurable webhook (Slack/Teams/PagerDuty adapters, or any
HTTP receiver), with retries on connection errors and 429/5xx and a hard timeout.

Retries come from urllib3's ``Retry`` (backoff, Retry-After honoured), not a hand loop. An
alert that still cannot be delivered is reported to the caller, never raised: a broken
webhook must not fail the sensor that noticed the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


@dataclass(frozen=True)
class AlertResult:
    delivered: bool
    status: int | None
    detail: str


def post_alert(
    url: str | None,
    kind: str,
    summary: str,
    details: dict,
    timeout_s: float = 5.0,
    retries: int = 3,
    backoff_s: float = 0.5,
) -> AlertResult:
    """POST ``{"kind", "summary", "details", "sent_at", "source"}`` to ``url``."""
    if not url:
        return AlertResult(False, None, "no webhook configured (SPAM_ALERT_WEBHOOK_URL)")
    retry = Retry(
        total=retries,
        backoff_factor=backoff_s,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"POST"}),
        raise_on_status=False,
    )
    payload = {
        "kind": kind,
        "summary": summary,
        "details": details,
        "sent_at": datetime.now(UTC).isoformat(),
        "source": "spam-mlops",
    }
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        try:
            resp = session.post(url, json=payload, timeout=timeout_s)
        except requests.RequestException as exc:
            return AlertResult(False, None, f"{type(exc).__name__}: {exc}")
    ok = 200 <= resp.status_code < 300
    return AlertResult(ok, resp.status_code, resp.text[:500])
