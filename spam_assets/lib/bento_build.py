"""Save a bundle in the BentoML model store and build the Bento around it.

Run as ``python -m spam_assets.lib.bento_build BUNDLE_DIR VERSION`` by the ``bento`` asset,
in its own process, because BentoML reads ``BENTOML_HOME`` once per process and the asset
must write to the store of the configured home, whatever else the step imported. Prints one
JSON line with the tags, the Bento's size and the hash of the service code.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import yaml

from spam_serving.model_store import save_bundle_to_store
from spam_serving.settings import PROJECT_ROOT

BENTOFILE = PROJECT_ROOT / "bentofile.yaml"


def service_code_hash(root: Path = PROJECT_ROOT) -> str:
    """Hash of the code a Bento serves: same hash, same behaviour (a model swap suffices)."""
    h = hashlib.sha256()
    for path in sorted((root / "spam_serving").glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(BENTOFILE.read_bytes())
    return h.hexdigest()[:16]


def build(bundle_dir: Path, model_version: str) -> dict:
    import bentoml

    model_tag = save_bundle_to_store(bundle_dir, model_version)
    spec = yaml.safe_load(BENTOFILE.read_text())
    code_hash = service_code_hash()
    from bentoml._internal.bento.build_config import BentoEnvSchema

    envs = [
        BentoEnvSchema(**e)
        for e in [*spec.get("envs", []), {"name": "SPAM_SERVE_MODEL_TAG", "value": model_tag}]
    ]
    bento = bentoml.bentos.build(
        service=spec["service"],
        name=spec.get("name"),
        labels={
            **spec.get("labels", {}),
            "model_version": str(model_version),
            "code_hash": code_hash,
        },
        include=spec.get("include"),
        exclude=spec.get("exclude"),
        python=spec.get("python"),
        docker=spec.get("docker"),
        envs=envs,
        models=[model_tag],
        build_ctx=str(PROJECT_ROOT),
    )
    size = sum(f.stat().st_size for f in Path(bento.path).rglob("*") if f.is_file())
    return {
        "bento_tag": str(bento.tag),
        "bento_path": str(bento.path),
        "model_tag": model_tag,
        "model_version": str(model_version),
        "size_bytes": size,
        "code_hash": code_hash,
    }


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1]), sys.argv[2])))
