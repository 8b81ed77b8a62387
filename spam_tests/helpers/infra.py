"""Run the real checkov (its own locked env, tools/checkov) and read its JSON report."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from spam_serving.settings import PROJECT_ROOT, SpamSettings

CHECKOV = PROJECT_ROOT / "tools" / "checkov" / ".venv" / "bin" / "checkov"


def checkov(target: Path, framework: str, *extra: str, expect_passes: bool = True) -> list[dict]:
    """Failed checks of ``checkov`` on ``target`` (a file or a directory); checkov's own
    errors (a parse failure, a missing binary) fail loudly instead of passing silently.
    ``expect_passes=False`` for scanners that report findings only (``secrets``)."""
    if not CHECKOV.is_file():
        raise AssertionError(f"{CHECKOV} missing: run `make install-tools` (`make test` does)")
    flag = "-d" if target.is_dir() else "-f"
    proc = subprocess.run(
        [str(CHECKOV), flag, str(target), "--framework", framework, "-o", "json",
         "--skip-download", "--quiet", *extra],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_LOG_LEVEL": "ERROR"},
    )  # fmt: skip
    if proc.returncode not in (0, 1):
        raise AssertionError(f"checkov failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    summaries = [r.get("summary", {}) for r in reports]
    if expect_passes:
        assert sum(s.get("passed", 0) for s in summaries) > 0, f"checkov checked nothing: {report}"
    assert all(s.get("parsing_errors", 0) == 0 for s in summaries), summaries
    return [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]


def describe(failed: list[dict]) -> list[str]:
    return [f"{c['check_id']} {c['check_name']} @ {c.get('resource')}" for c in failed]


def azure_settings(**extra) -> SpamSettings:
    """Settings of a configured azure target (Key Vault, workload identity, production host)."""
    return SpamSettings(
        target="azure",
        aks_key_vault_name="spam-kv-prod",
        aks_workload_identity_client_id="11111111-2222-3333-4444-555555555555",
        azure_tenant_id="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        feast_redis="spam.redis.cache.windows.net:6380,ssl=true",
        aks_ingress_host_production="spam.example.org",
        **extra,
    )
