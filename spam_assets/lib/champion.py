"""The serving champion judged on the challenger's test rows: the gate's comparison.

The champion is scored with its own featurizer and threshold (from its exported bundle, as
it serves), so a changed featurizer or threshold cannot flatter either side.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from spam_assets.lib.messages import messages_of
from spam_assets.lib.metrics import evaluate, matched_fpr_comparison, mcnemar
from spam_assets.lib.reputation import historical_reputation
from spam_serving.model_bundle import ModelBundle

CHAMPION = "champion"


class ChampionError(Exception):
    """The champion exists but cannot be scored (no bundle artifact, no feature store)."""


def champion_metrics(
    client: Any,
    model_name: str,
    test: Iterable[pd.DataFrame],
    exclude_version: str,
    log: Callable[[str], None],
    challenger: tuple[np.ndarray, float] | None = None,
    feature_store: Callable[[], Any] | None = None,
) -> dict | None:
    """Evaluate the model behind alias ``champion`` on the same test rows (``test``: the
    split's rows a batch at a time, so only a batch of messages is ever in memory), with its
    own featurizer and threshold (from its bundle). None when there is no champion yet.

    With ``challenger`` (its scores per test row, same order, and its threshold) it adds an
    exact McNemar test on the paired predictions (a point difference in F1 on a few thousand
    messages can be noise) and the comparison at the champion's held-out ham FPR
    (``matched``, see ``matched_fpr_comparison``). ``feature_store`` gives the Feast store
    a champion with sender-reputation features needs."""
    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except Exception:
        return None
    if str(mv.version) == str(exclude_version):
        log(f"champion is v{mv.version}, the model under evaluation")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(mv.run_id, "bundle", tmp)
        except Exception as exc:
            raise ChampionError(
                f"champion v{mv.version} has no 'bundle' artifact in run {mv.run_id}: {exc}"
            ) from exc
        bundle = ModelBundle.load(local)
        store = None
        if bundle.featurizer.config.reputation:
            if feature_store is None:
                raise ChampionError(f"champion v{mv.version} needs reputation features: no store")
            store = feature_store()
        parts, labels, groups = [], [], []
        for frame in test:
            messages = messages_of(frame)
            reputation = None if store is None else historical_reputation(store, messages)
            parts.append(bundle.predict_proba(messages, reputation))
            labels.append(frame["label"].to_numpy())
            groups.append(frame["group"].to_numpy())
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=int)
    scores = np.concatenate(parts) if parts else np.zeros(0)
    metrics = evaluate(
        y,
        scores,
        np.concatenate(groups) if groups else np.zeros(0, dtype=object),
        bundle.threshold,
        {float(k): v for k, v in bundle.meta.get("fpr_thresholds", {}).items()},
    )
    out = {**metrics, "model_version": str(mv.version)}
    if challenger is not None:
        chall_scores, chall_threshold = challenger
        champ_pred = (scores >= bundle.threshold).astype(int)
        chall_pred = (chall_scores >= chall_threshold).astype(int)
        out["mcnemar"] = mcnemar(y, champ_pred, chall_pred)
        out["matched"] = matched_fpr_comparison(y, scores, bundle.threshold, chall_scores)
    return out
