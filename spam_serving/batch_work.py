"""A chunk of a request: parse, featurize and explain. What a batch helper process runs (see
``batch_helpers``), and what the worker runs for its own chunk and for single messages.

Kept apart from ``batch_helpers`` so that a helper imports only the model path's Python side
(parser, featurizer, explainer, numpy, the request schema): ``spam_serving.metrics`` would
give every helper its own Prometheus multiprocess files next to the workers'. The ONNX
session stays in the worker, where adaptive batching scores rows of many requests at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil

from spam_serving.explain import TreeExplainer
from spam_serving.featurize import Featurizer
from spam_serving.model_bundle import EXPLAINER_FILE, FEATURIZER_FILE, sha256_file
from spam_serving.parsing import ParsedMessage

if TYPE_CHECKING:
    from spam_serving.schemas import MessageIn

Explanations = list[list[dict]]
Chunk = tuple[list[ParsedMessage], np.ndarray | None, Explanations | None]
ModelKey = tuple[str, str, str | None]
"""A model as a helper finds it: its bundle directory, the featurizer state hash and the
explainer file's sha256 (None: the bundle has no explainer), both checked on load."""


@dataclass(frozen=True)
class ChunkModel:
    """What parsing, featurizing and explaining needs of a model."""

    featurizer: Featurizer
    explainer: TreeExplainer | None
    names: list[str]


_MODELS: dict[ModelKey, ChunkModel] = {}


def featurize_chunk(model: ChunkModel | None, messages: Sequence[MessageIn], top_k: int) -> Chunk:
    """Parsed messages, and with a model their feature rows and explanations (a model that
    uses sender reputation is featurized and explained after the lookup, by the worker)."""
    parsed = [m.parse() for m in messages]
    if model is None:
        return parsed, None, None
    x = model.featurizer.transform(parsed)
    return parsed, x, explain(model, messages, x, top_k)


def explain(
    model: ChunkModel, messages: Sequence[MessageIn], x: np.ndarray, top_k: int
) -> Explanations:
    """The ``top_k`` contributing features per message; ``[]`` where it asked for none."""
    out: Explanations = [[] for _ in messages]
    rows = [i for i, m in enumerate(messages) if m.explain]
    if model.explainer is None or top_k <= 0 or not rows:
        return out
    for i, top in zip(rows, model.explainer.top_features(x[rows], model.names, top_k), strict=True):
        out[i] = top
    return out


def init_helper(worker_pid: int) -> None:
    """Pool initializer: exit when the worker is gone. The parent process cannot tell: a
    helper's parent is the forkserver, which outlives a killed worker for as long as its
    children (the helpers) hold the liveness pipe it waits on."""
    worker = psutil.Process(worker_pid)
    threading.Thread(target=_watch_worker, args=(worker,), daemon=True).start()


def _watch_worker(worker: psutil.Process) -> None:
    while True:
        try:  # is_running() also tells a reused pid from the worker (start time)
            if not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.Error:
            break
        time.sleep(1.0)
    os._exit(0)


def model_for(key: ModelKey) -> ChunkModel:
    """The model behind ``key``, loaded once per helper (the last four are kept: the
    champion, the challenger and a swap in progress)."""
    model = _MODELS.get(key)
    if model is None:
        bundle, state_hash, explainer_sha = key
        path = Path(bundle) / FEATURIZER_FILE
        featurizer = Featurizer.from_json(path.read_text())
        if featurizer.state_hash != state_hash:
            raise ValueError(f"{path}: featurizer hash {featurizer.state_hash} != {state_hash}")
        explainer = None
        if explainer_sha is not None:
            path = Path(bundle) / EXPLAINER_FILE
            if sha256_file(path) != explainer_sha:
                raise ValueError(f"{path}: sha256 differs from the served model's")
            explainer = TreeExplainer.load(path)
        if len(_MODELS) >= 4:
            _MODELS.pop(next(iter(_MODELS)))
        model = _MODELS[key] = ChunkModel(featurizer, explainer, featurizer.feature_names)
    return model


def helper_chunk(key: ModelKey, messages: list[MessageIn], transform: bool, top_k: int) -> Chunk:
    """One helper's chunk of a batch."""
    return featurize_chunk(model_for(key) if transform else None, messages, top_k)


def helper_warm_up(keys: list[ModelKey]) -> int:
    """Load the served models and run one small multipart message through each before
    the first batch needs them (the first parse imports codecs and email modules lazily:
    ~100 ms on the first batch otherwise); the helper's pid."""
    from spam_serving.schemas import MessageIn

    sample = MessageIn(raw=_WARM_UP_MESSAGE)
    for key in keys:
        featurize_chunk(model_for(key), [sample], 5)
    return os.getpid()


_WARM_UP_MESSAGE = """From: Warm Up <warm-up@example.org>
Subject: =?utf-8?q?warm_up?=
Date: Wed, 02 Dec 2026 12:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b"

--b
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

warm =E9 up http://example.org/
--b
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

PGh0bWw+PGJvZHk+PGEgaHJlZj0iaHR0cDovL2V4YW1wbGUub3JnLyI+d2FybSB1cDwvYT48L2JvZHk+PC9odG1sPg==
--b--
"""
