"""The GitHub Actions workflows: validated against the GitHub workflow JSON schema (the copy
check-jsonschema vendors from SchemaStore) and checked for what actionlint would not know:
job order and approvals, OIDC-only Azure access, pinned actions, and that every make target,
module, asset and CLI command they call exists in this repository."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spam_serving.settings import PROJECT_ROOT

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True)  # YAML 1.1 reads the key `on` as a boolean
    return doc


def schema_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_three_workflows_exist():
    assert {p.name for p in FILES} == {"ci.yml", "deploy.yml", "promote-model.yml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(path):
    proc = schema_check(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    doc = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    del doc["jobs"]["lint"]["runs-on"]
    doc["jobs"]["lint"]["step"] = doc["jobs"]["lint"].pop("steps")
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(doc))
    assert schema_check(broken).returncode != 0


def needs(job: dict) -> list[str]:
    value = job.get("needs", [])
    return [value] if isinstance(value, str) else list(value)


def ancestors(jobs: dict, name: str) -> set[str]:
    out: set[str] = set()
    stack = needs(jobs[name])
    while stack:
        n = stack.pop()
        if n not in out:
            out.add(n)
            stack += needs(jobs[n])
    return out


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_job_graph_is_closed_and_acyclic(path):
    jobs = load(path)["jobs"]
    for name, job in jobs.items():
        assert set(needs(job)) <= set(jobs), f"{name} needs an unknown job"
        assert name not in ancestors(jobs, name), f"{name} depends on itself"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_pinned_and_azure_access_is_oidc_only(path):
    doc = load(path)
    text = path.read_text()
    uses = re.findall(r"uses:\s*(\S+)", text)
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+(\.\d+)*", ref), f"unpinned action {ref}"
    assert not re.search(r"(client-secret|creds|password)\s*:", text), "stored credentials"
    assert "secrets." not in text  # ids are `vars`, access is federated
    if "azure/login" in text:
        assert doc["permissions"]["id-token"] == "write"
    assert doc["permissions"]["contents"] == "read"


def test_ci_runs_lint_and_the_full_suite_against_real_services():
    doc = load(WORKFLOWS / "ci.yml")
    assert set(doc["on"]) == {"pull_request", "push"}
    test = doc["jobs"]["test"]
    assert set(test["services"]) == {"postgres", "redis"}
    runs = " ".join(step.get("run", "") for step in test["steps"])
    assert "bash .ci/run" in runs
    from spam_tests.helpers.corpus import SHARED_TGZ

    assert SHARED_TGZ.name in runs  # the npm pack file the tests read
    assert "make lint" in " ".join(s.get("run", "") for s in doc["jobs"]["lint"]["steps"])


def test_deploy_goes_staging_then_smoke_then_approved_production():
    doc = load(WORKFLOWS / "deploy.yml")
    assert doc["on"]["workflow_run"]["workflows"] == ["ci"]
    assert doc["on"]["workflow_run"]["branches"] == ["main"]
    jobs = doc["jobs"]
    assert "success" in jobs["build"]["if"]
    assert ancestors(jobs, "deploy-production") == {"build", "deploy-staging", "smoke-staging"}
    assert jobs["deploy-production"]["environment"] == "production"
    assert jobs["deploy-staging"]["environment"] == "staging"
    smoke = " ".join(s.get("run", "") for s in jobs["smoke-staging"]["steps"])
    assert "aks_cli smoke --environment staging" in smoke
    assert "dagster definitions validate -m spam_assets.definitions" in smoke


def test_promotion_is_manual_and_ordered():
    doc = load(WORKFLOWS / "promote-model.yml")
    assert set(doc["on"]) == {"workflow_dispatch"}
    jobs = doc["jobs"]
    order = ["verify", "export", "staging", "smoke", "promote"]
    for before, after in itertools.pairwise(order):
        assert needs(jobs[after]) == [before]
    assert jobs["promote"]["environment"] == "production"
    promote = " ".join(s.get("run", "") for s in jobs["promote"]["steps"])
    assert '"approve_production": true' in promote and '"skip_staging": true' in promote


def _runs() -> str:
    return "\n".join(
        step.get("run", "")
        for path in FILES
        for job in load(path)["jobs"].values()
        for step in job["steps"]
    )


def test_everything_the_workflows_call_exists():
    from spam_assets.definitions import defs

    runs = _runs() + "\n" + "\n".join(str(load(p).get("env", {})) for p in FILES)
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    for target in re.findall(r"\bmake ([\w-]+)", runs):
        assert target in targets, f"make {target}"
    for module in re.findall(r"python -m (spam_\w+(?:\.\w+)*)", runs):
        assert (PROJECT_ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    assets = {k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()}
    selected = re.findall(r"--select ([\w,]+)", runs)
    assert selected
    for selection in selected:
        assert set(selection.split(",")) <= assets, selection
    from spam_assets import aks_cli

    choices = {"render", "smoke", "status"}
    assert set(re.findall(r"aks_cli (\w+)", runs)) <= choices
    assert 'choices=("render", "smoke", "status")' in Path(aks_cli.__file__).read_text()
    for path in re.findall(r"(?:-f|--file) ((?:helm|docker)/[\w./-]+)", runs):
        assert (PROJECT_ROOT / path).is_file(), path
