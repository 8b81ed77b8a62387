"""A short soak: mixed traffic from a separate process against the real service while a model
swap, a canary stage change, a SIGKILLed worker, a Redis restart and an unwritable inference
log happen on a schedule (``benchmarks.soak``; ``make bench-soak`` runs the long one). The
books must balance: no 5xx but counted 503s, every request answered, every answered
prediction in the log or counted as dropped, every log file readable, memory flat, health back
after each fault."""

from __future__ import annotations

import pytest

from benchmarks.soak import FAULTS, failures, run_soak, summarize

pytestmark = [pytest.mark.slow]


def test_short_soak_under_faults_loses_nothing(tmp_path, real_sample):
    result = run_soak(60.0, tmp_path, real_sample[::2])
    books = summarize(result)
    assert books["requests"] > 100 and books["answered_predictions"] > 100
    assert [name for _, name in result.faults] == [name for _, name in FAULTS]
    assert failures(books, result) == []
    assert books["missing"] == 0, books["per_window"]
