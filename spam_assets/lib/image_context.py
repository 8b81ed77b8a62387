"""Export a Bento's Docker build context (Dockerfile + code + models) to a directory.

Run as ``python -m spam_assets.lib.image_context BENTO_TAG OUT_DIR`` in its own process (like
``bento_build``: BentoML reads ``BENTOML_HOME`` once per process). ``az acr build`` uploads this
directory and builds it in the registry, so no local container engine is needed. It is the
context ``bentoml containerize`` would hand to docker: same Dockerfile, same model files.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def export_context(bento_tag: str, out_dir: Path) -> dict:
    import bentoml
    from bentoml._internal.container import construct_containerfile

    bento = bentoml.get(bento_tag)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    # construct_containerfile is what `bentoml containerize` itself calls; it yields a
    # temporary context that disappears on exit, so copy it out while it exists
    with construct_containerfile(bento, enable_buildkit=False) as (context, dockerfile):
        shutil.copytree(context, out_dir)
        rel = Path(dockerfile).relative_to(context)
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    return {
        "bento_tag": str(bento.tag),
        "context_dir": str(out_dir),
        "dockerfile": str(out_dir / rel),
        "files": len(files),
        "size_bytes": sum(p.stat().st_size for p in files),
    }


if __name__ == "__main__":
    print(json.dumps(export_context(sys.argv[1], Path(sys.argv[2]))))
