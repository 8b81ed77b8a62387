"""``make mlflow-ui``: the MLflow UI on the embedded SQLite store (127.0.0.1:5000)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from spam_serving.settings import get_settings


def main() -> None:
    s = get_settings()
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        os.environ.get("SPAM_MLFLOW_PORT", "5000"),
        "--backend-store-uri",
        s.effective_mlflow_uri,
        "--artifacts-destination",
        str(s.mlflow_artifact_root),
    ]
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
