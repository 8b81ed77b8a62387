"""The documentation stays true to the code: the configuration page is what the settings
object renders, and every relative link in the README and docs/ resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spam_assets.settings_doc import DOC_PATH, render
from spam_serving.settings import PROJECT_ROOT, SpamSettings

_LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    return [
        PROJECT_ROOT / "README.md",
        *sorted((PROJECT_ROOT / "docs").rglob("*.md")),
        PROJECT_ROOT / "benchmarks" / "results" / "README.md",
    ]


def test_configuration_page_is_generated_from_the_settings():
    assert DOC_PATH.read_text() == render(), "docs/configuration.md is stale: run `make docs`"
    text = DOC_PATH.read_text()
    for name, field in SpamSettings.model_fields.items():
        assert f"`SPAM_{name.upper()}`" in text
        assert field.description, f"setting {name} has no description"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_relative_links_resolve(path):
    assert path.is_file(), f"{path} is missing"
    broken = []
    for target in _LINK_RE.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # URLs, mailto:, in-page anchors
        if not (path.parent / target.split("#", 1)[0]).exists():
            broken.append(target)
    assert not broken, f"{path.name}: broken links {broken}"


def test_benchmark_index_and_readme_headline_are_generated_from_the_reports():
    """The README's headline table and benchmarks/results/README.md come from the dated
    reports (``make docs``), so they cannot disagree with them or with each other."""
    from benchmarks.index import (
        INDEX_PATH,
        README_PATH,
        readme_with_headline,
        render_headline,
        render_index,
        reports,
    )

    by_kind = reports()
    assert {"quality", "serving", "featurize", "loop", "loop-payoff", "feast"} <= set(by_kind)
    assert INDEX_PATH.read_text() == render_index(by_kind), "results index stale: make docs"
    readme = README_PATH.read_text()
    assert readme == readme_with_headline(readme, render_headline(by_kind)), "make docs"
    latest_quality = by_kind["quality"][-1]
    assert latest_quality.name in readme and all(latest_quality.figures.values())
