"""Real-data plumbing for the loop test and ``make bench-loop``: the newer period split in
halves by Date, and replaying messages (plus their true labels as feedback) over HTTP."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests

from spam_assets.lib.monitoring import hours_between, read_feedback, read_predictions
from spam_tests.helpers.corpus import stratified

NEWER_GROUPS = ("easy-ham-2", "spam-2")
OLDER_GROUPS = ("easy-ham-1", "hard-ham-1", "spam-1")


def _date(raw: bytes) -> float:
    head = raw.split(b"\n\n", 1)[0].decode("latin-1")
    for line in head.splitlines():
        if line.lower().startswith("date:"):
            try:
                return parsedate_to_datetime(line[5:].strip()).timestamp()
            except (TypeError, ValueError, IndexError):
                return 0.0
    return 0.0


def newer_halves(
    mirror: dict, per_group: dict[str, int] | None = None
) -> tuple[list[tuple[str, str, bytes]], list[tuple[str, str, bytes]]]:
    """The newer period's messages ``(group, name, raw)`` ordered by Date, cut in two halves:
    the first is replayed as live traffic, the second stays the held-out test."""
    rows = []
    for group in NEWER_GROUPS:
        msgs = mirror[group]
        if per_group and group in per_group:
            msgs = stratified(msgs, per_group[group])
        rows += [(group, name, raw) for name, raw in msgs]
    rows.sort(key=lambda r: (_date(r[2]), r[1]))
    half = len(rows) // 2
    return rows[:half], rows[half:]


def by_group(rows: list[tuple[str, str, bytes]]) -> dict[str, list[tuple[str, bytes]]]:
    out: dict[str, list[tuple[str, bytes]]] = {}
    for group, name, raw in rows:
        out.setdefault(group, []).append((name, raw))
    return out


def replay(
    url: str,
    api_key: str,
    rows: list[tuple[str, str, bytes]],
    environment: str = "production",
    feedback: bool = True,
    batch: int = 50,
) -> dict:
    """Send ``rows`` through /predict_batch, then each true label through /feedback.

    Returns counts by served version, correct predictions and every non-200 answer."""
    import base64

    headers = {"X-API-Key": api_key, "X-Environment": environment}
    served: dict[str, int] = {}
    correct, failures, n = 0, [], 0
    with requests.Session() as session:
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            body = {
                "messages": [{"raw_base64": base64.b64encode(raw).decode()} for _, _, raw in chunk]
            }
            # a routing key per request: the canary splits a replay the same way every run
            keyed = {**headers, "X-Routing-Key": f"replay-{i // batch}"}
            resp = session.post(f"{url}/predict_batch", json=body, headers=keyed, timeout=60)
            if resp.status_code != 200:
                failures.append((resp.status_code, resp.text[:200]))
                continue
            for (group, _, _), pred in zip(chunk, resp.json()["predictions"], strict=True):
                n += 1
                truth = "spam" if group.startswith("spam") else "ham"
                correct += pred["label"] == truth
                served[pred["model_version"]] = served.get(pred["model_version"], 0) + 1
                if feedback:
                    fb = session.post(
                        f"{url}/feedback",
                        json={"prediction_id": pred["prediction_id"], "label": truth},
                        headers=headers,
                        timeout=30,
                    )
                    if fb.status_code != 200:
                        failures.append((fb.status_code, fb.text[:200]))
    return {"n": n, "correct": correct, "served": served, "failures": failures}


def wait_for_log(root: Path, since: float, n_predictions: int, n_feedback: int, timeout=30.0):
    """Until the service's log writers flushed the expected rows (they write off-path)."""
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(since, UTC)
    deadline = time.monotonic() + timeout
    while True:
        preds = read_predictions(root, hours_between(start, datetime.now(UTC)))
        fb = read_feedback(root, start)
        if len(preds) >= n_predictions and len(fb) >= n_feedback:
            return len(preds), len(fb)
        if time.monotonic() > deadline:
            raise TimeoutError(f"log has {len(preds)} predictions, {len(fb)} feedback")
        time.sleep(0.25)
