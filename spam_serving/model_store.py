"""Model bundles in the BentoML model store, and the alias file that says which one serves.

MLflow holds the truth about aliases (``champion``, ``challenger``); the deployment assets
mirror them into a small JSON file next to the service (``aliases.json``) because the serving
process must stay lean (no MLflow import, no tracking-server round trip per poll) and must
notice a move within a second. Each entry names a BentoML model tag (the bundle saved by the
``bento`` asset) or, for development, a bundle directory.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from spam_serving.model_bundle import META_FILE

BENTO_MODEL_NAME = "spam-classifier"


def bento_model_tag(model_version: str) -> str:
    return f"{BENTO_MODEL_NAME}:v{model_version}"


def save_bundle_to_store(bundle_dir: Path, model_version: str) -> str:
    """Copy a bundle into the BentoML model store (idempotent); returns its tag.

    Labels and metadata carry the MLflow version and featurizer hash so ``bentoml models
    list`` shows where a model came from.
    """
    import bentoml

    meta = json.loads((Path(bundle_dir) / META_FILE).read_text())
    tag = bento_model_tag(model_version)
    try:
        existing = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        existing = None
    if existing is not None:
        stored = json.loads((Path(existing.path) / META_FILE).read_text())
        if stored.get("onnx_sha256") == meta["onnx_sha256"]:
            return tag
        bentoml.models.delete(tag)
    with bentoml.models.create(
        tag,
        labels={"mlflow_version": str(model_version), "stage": "exported"},
        metadata={
            "mlflow_run_id": meta.get("mlflow_run_id"),
            "model_version": str(model_version),
            "featurizer_hash": meta["featurizer_hash"],
            "onnx_sha256": meta["onnx_sha256"],
            "threshold": meta["threshold"],
        },
    ) as model:
        for item in Path(bundle_dir).iterdir():
            if item.is_file():
                shutil.copy2(item, Path(model.path) / item.name)
    return tag


def bundle_dir_for(entry: dict) -> Path:
    """Directory of the bundle an alias entry names."""
    if entry.get("bundle_path"):
        return Path(entry["bundle_path"])
    import bentoml

    return Path(bentoml.models.get(entry["model_tag"]).path)


def read_aliases(alias_file: Path) -> dict[str, dict]:
    """``{alias: entry}``; empty when the file does not exist yet."""
    try:
        data = json.loads(Path(alias_file).read_text())
    except FileNotFoundError:
        return {}
    return {k: v for k, v in data.get("aliases", {}).items() if isinstance(v, dict)}


def read_canary(alias_file: Path) -> dict:
    """The canary state stored beside the aliases (``{}`` when no canary is running).

    ``fraction`` is the share of production traffic the challenger answers; the service reads
    it on every alias poll, so a rollout stage or a rollback needs no restart."""
    try:
        data = json.loads(Path(alias_file).read_text())
    except FileNotFoundError:
        return {}
    canary = data.get("canary")
    return canary if isinstance(canary, dict) else {}


def write_aliases(alias_file: Path, aliases: dict[str, dict], canary: dict | None = None) -> None:
    """Atomic replace, so a polling service never reads half a file."""
    alias_file = Path(alias_file)
    alias_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = alias_file.with_name(f".{alias_file.name}.{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps(
            {
                "aliases": aliases,
                "canary": canary or {},
                "updated_at": datetime.now(UTC).isoformat(),
            },
            indent=2,
            sort_keys=True,
        )
    )
    os.replace(tmp, alias_file)
