"""Benchmark reports are evidence the README cites: a re-run must add a file, not replace one."""

from __future__ import annotations

import datetime as dt

from benchmarks import common


def test_same_day_reports_are_numbered_not_overwritten(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    first = common.write_report("serving", "run one")
    second = common.write_report("serving", "run two")
    third = common.write_report("serving", "run three")
    day = dt.date.today().isoformat()
    assert [p.name for p in (first, second, third)] == [
        f"serving-{day}.md",
        f"serving-{day}-2.md",
        f"serving-{day}-3.md",
    ]
    assert first.read_text() == "run one" and third.read_text() == "run three"
    assert "report written to" in capsys.readouterr().out
