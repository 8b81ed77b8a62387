"""The Bento pins its serving packages by hand; they must be the versions ``uv.lock`` resolves,
or the image serves with other code than the one the tests ran."""

from __future__ import annotations

import re
import tomllib

import yaml

from spam_serving.settings import PROJECT_ROOT


def test_bentofile_pins_match_uv_lock():
    packages = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())["python"]["packages"]
    lock = tomllib.loads((PROJECT_ROOT / "uv.lock").read_text())
    locked = {p["name"].lower().replace("_", "-"): p["version"] for p in lock["package"]}
    assert packages
    for spec in packages:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]+\])?==(\S+)", spec)
        assert m, f"bentofile pin {spec!r} is not an exact 'name==version'"
        name = m.group(1).lower().replace("_", "-")
        assert name in locked, f"{name} is pinned in bentofile.yaml but not in uv.lock"
        assert locked[name] == m.group(3), f"{name}: bentofile {m.group(3)}, uv.lock {locked[name]}"
