"""Run one of our ``python -m`` helpers in its own process and read its JSON answer.

BentoML reads ``BENTOML_HOME`` once per process, so the steps that touch a BentoML store
(``bento_build``, ``image_context``) run as helpers with the deployment's environment; each
prints one JSON line last.
"""

from __future__ import annotations

import json
import subprocess
import sys

from spam_serving.settings import PROJECT_ROOT


class HelperError(RuntimeError):
    """The helper exited non-zero; ``stderr`` holds the tail of what it said."""

    def __init__(self, module: str, stderr: str) -> None:
        super().__init__(f"{module} failed: {stderr[-2000:]}")
        self.stderr = stderr


def run_helper(module: str, *args: str, env: dict[str, str], timeout_s: float = 600) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise HelperError(module, proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])
