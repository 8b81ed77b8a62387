"""``docs/configuration.md``, generated from the settings object so it cannot drift from the
code: one table per section of ``spam_serving/settings.py`` (its ``# section`` comments), a
row per field with its ``SPAM_*`` variable, default and description.

``python -m spam_assets.settings_doc`` rewrites the page (``make docs``); a test fails when the
committed page differs from what this renders."""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

from spam_serving.settings import PROJECT_ROOT, SpamSettings

DOC_PATH = PROJECT_ROOT / "docs" / "configuration.md"
_SECTION_RE = re.compile(r"^    # (.+)$")
_FIELD_RE = re.compile(r"^    (\w+): ")

HEADER = """# Configuration

Every setting lives in one pydantic-settings object, `SpamSettings` in
`spam_serving/settings.py`, and each is overridable by its `SPAM_*` environment variable
(lists and mappings as JSON, e.g. `SPAM_CORPUS_SOURCES='["ham:/data/Maildir"]'`). The Dagster
resources are built from it, so the effective values show in the UI; the service reads the
same object.

This page is generated from that object (`make docs`; a test checks it is current). Paths
default under `SPAM_HOME` when unset.
"""


def sections() -> list[tuple[str, list[str]]]:
    """(section title, field names) in source order."""
    out: list[tuple[str, list[str]]] = [("general", [])]
    fields = SpamSettings.model_fields
    for line in inspect.getsource(SpamSettings).splitlines():
        if m := _SECTION_RE.match(line):
            out.append((m.group(1), []))
        elif (m := _FIELD_RE.match(line)) and m.group(1) in fields:
            out[-1][1].append(m.group(1))
    return [(title, names) for title, names in out if names]


def _default(name: str) -> str:
    field = SpamSettings.model_fields[name]
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        try:
            value = "./" + str(value.relative_to(PROJECT_ROOT))
        except ValueError:
            value = str(value)
    elif isinstance(value, list | tuple | dict):
        value = json.dumps(list(value) if isinstance(value, tuple) else value)
        if len(value) > 60:
            value = value[:57] + "..."
    return f"`{value}`"


def render() -> str:
    lines = [HEADER]
    for title, names in sections():
        lines += [f"## {title[0].upper() + title[1:]}", "", "| variable | default | meaning |"]
        lines.append("|---|---|---|")
        for name in names:
            desc = (SpamSettings.model_fields[name].description or "").replace("|", "\\|")
            lines.append(f"| `SPAM_{name.upper()}` | {_default(name)} | {desc} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if DOC_PATH.is_file() and DOC_PATH.read_text() == text else 1)
    DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOC_PATH.write_text(text)
    print(f"wrote {DOC_PATH}")


if __name__ == "__main__":
    main()
