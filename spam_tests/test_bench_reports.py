"""Benchmark reports are evidence the README cites: a re-run must add a file, not replace one."""

from __future__ import annotations

import datetime as dt
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

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


def test_stack_bound_adds_the_stack_floor_to_the_model_path():
    from benchmarks.serving import stack_bound

    # an empty endpoint at 1,000 rps and a 1,000 msg/s model path: each request costs both
    b = stack_bound(1000.0, 1000.0, clients=32)
    assert b["rps"] == 500.0
    assert b["share_of_ceiling"] == 0.5
    assert b["min_mean_ms"] == 64.0  # Little's law: 32 clients / 500 rps
    # a free stack leaves the whole ceiling
    assert stack_bound(1e12, 800.0)["share_of_ceiling"] > 0.999


def _point(rps: float, p99: float = 10.0) -> dict:
    return {"rps": rps, "p50_ms": 1.0, "p95_ms": 5.0, "p99_ms": p99, "errors": {}}


def test_floor_section_says_which_targets_the_stack_leaves_reachable():
    from benchmarks.serving import floor_section

    def results(bento_floor: float) -> dict:
        return {
            "fastapi+sklearn": {32: _point(200.0)},
            "bento": {32: _point(500.0)},
            "bento, empty endpoint": {8: _point(bento_floor * 0.9), 32: _point(bento_floor)},
            "fastapi, empty endpoint": {32: _point(3000.0)},
        }

    # slow stack: 1/(1/1000 + 1/1800) = 643 rps -> 1,000 rps and 50% of the ceiling are out
    # of reach, 3x the 200-rps baseline and p99 <= 50 ms at 32 clients (mean >= 49.8 ms) not
    slow = "\n".join(floor_section(results(1000.0), ceiling=1800.0))
    assert "| bento | 1000 (32) | 10.0 | 643 | 36% | 3.21x | 49.8 |" in slow
    assert "rps >= 1000: **no**" in slow and "50% of the ceiling: **no**" in slow
    assert "3x the baseline: yes" in slow and "p99 <= 50 ms at 32 clients: yes" in slow
    assert "reaches 78% of the bound" in slow  # 500 of 643 rps
    servers = {"bento, empty endpoint": {"cold_start_s": 4.5}}
    fast = "\n".join(floor_section(results(20000.0), ceiling=1800.0, servers=servers))
    assert "**no**" not in fast
    assert "spawn -> ready (empty endpoint): 4.5 s" in fast


def test_the_median_round_stands_for_the_server_with_every_round_kept():
    from benchmarks.serving import PORTS, median_round, rounds_section

    rounds = [_point(900.0, 60.0), _point(700.0, 99.0), _point(850.0, 63.0)]
    mid = median_round(rounds)
    assert mid["rps"] == 850.0 and mid["p99_ms"] == 63.0  # the middle run, its own p99
    assert mid["rounds_rps"] == [900.0, 700.0, 850.0] and mid["rounds_p99_ms"][1] == 99.0
    assert rounds[2] == _point(850.0, 63.0)  # the rounds themselves are left as they were
    results = {name: {32: _point(100.0)} for name in PORTS}
    results["bento"][32] = mid
    text = "\n".join(rounds_section(results))
    assert "| bento | 900 / 700 / 850 | 850 | 60 / 99 / 63 | 63.0 |" in text
    assert "| fastapi+sklearn | 100 | 100 | 10 | 10.0 |" in text  # a single round reads as one


def test_cold_start_is_the_median_of_its_starts_with_every_start_listed():
    from benchmarks.serving import cold_start_cell, median_cold_start

    server = {"rss_mb": 270.0, "workers": 2, **median_cold_start([6.2, 4.6, 4.9])}
    assert server["cold_start_s"] == 4.9 and server["cold_starts_s"] == [6.2, 4.6, 4.9]
    assert cold_start_cell(server) == "4.9 (median of 6.2 / 4.6 / 4.9)"
    assert cold_start_cell({"cold_start_s": 5.04}) == "5.0"  # one start reads as one


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1: 200 for good bodies, 422 for ``bad``, and ``close`` answers with
    ``Connection: close`` (the client must reconnect, not count an error)."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(body)
        status = 422 if b"bad" in body else 200
        payload = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        if b"close" in body:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        return


@pytest.mark.parametrize("client", ["raw", "aiohttp"])
def test_loadgen_counts_answers_by_status_and_survives_closed_connections(client):
    import uvloop

    from benchmarks import loadgen

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Handler.seen = []
    bodies = [b'{"m": "good"}', b'{"m": "bad"}', b'{"m": "close"}', b'{"m": "good2"}']
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/predict"
        out = uvloop.run(loadgen.run(url, bodies, {"X-API-Key": "k"}, 3, 5.0, 40, 0.0, client))
    finally:
        server.shutdown()
    assert out["requests"] == 40 == len(_Handler.seen)  # --max-requests bounds the run
    n_bad = sum(1 for body in _Handler.seen if b"bad" in body)
    assert n_bad > 0 and out["errors"] == {"422": n_bad} and out["ok"] == 40 - n_bad
    assert set(_Handler.seen) == set(bodies)  # bodies go out whole, and all of them
    assert out["p50_ms"] > 0 and out["client_cpu_us_per_request"] > 0


def test_token_bayes_reads_which_tokens_a_message_has_and_the_most_telling_ones():
    from benchmarks import word_bayes
    from spam_serving.parsing import message_from_fields

    def msg(body: str, sender: str = "c@unseen.net"):
        return message_from_fields(subject="", body=body, sender=sender)

    spam = [msg(f"cheap pills offer {i}", "x@pills.biz") for i in range(20)]
    ham = [msg(f"meeting notes agenda {i}", "bob@example.org") for i in range(20)]
    model = word_bayes.WordBayes.fit(spam + ham, [1] * 20 + [0] * 20)
    # tokens of one class lean to it, shared ones say nothing; unseen tokens add nothing
    assert model.log_odds["w:pills"] > 2 and model.log_odds["w:agenda"] < -2
    assert "w:1" not in model.log_odds
    assert model.logit(msg("cheap pills")) > 0 > model.logit(msg("agenda notes"))
    assert model.logit(msg("zzz qqq")) == 0.0
    # which tokens, not how often: repeating a word changes nothing
    assert model.logit(msg("pills pills pills")) == model.logit(msg("pills"))
    # a message is judged by its MAX_TOKENS most telling tokens only
    model.log_odds.update({f"w:t{i}": 0.5 for i in range(200)})
    many = msg(" ".join(f"t{i}" for i in range(200)))
    assert model.logit(many) == pytest.approx(0.5 * word_bayes.MAX_TOKENS)
    with pytest.raises(ValueError, match="spam and ham"):
        word_bayes.WordBayes.fit(spam, [1] * 20)


def test_design_bootstrap_is_paired_and_centred_on_the_difference():
    import numpy as np

    from benchmarks.design_oof import paired_bootstrap

    rng = np.random.default_rng(1)
    y = np.r_[np.ones(200, int), np.zeros(400, int)]
    groups = np.where(y == 1, "spam", np.where(np.arange(600) % 4 == 0, "hard-ham-1", "easy-ham-1"))
    base = rng.random(600) + 0.3 * y  # overlapping classes
    same = paired_bootstrap(y, groups, base, base)
    assert np.all(same == 0)  # the same scores: no difference in any resample
    # spam ranked above every ham: recall 100% at every point, so the difference is positive
    better = paired_bootstrap(y, groups, base + 10 * y, base)
    assert np.all(better[0] > 0) and np.all(better[0] <= better[1])
    assert np.all(better[1] <= better[2])


def test_scale_report_shows_anonymous_memory_and_the_index_still_reads_it():
    import os

    import numpy as np

    from benchmarks import index, scale

    before = scale._anon_rss(os.getpid())
    held = np.ones(50 * 2**20 // 8)  # 50 MB of heap
    assert scale._anon_rss(os.getpid()) - before > 40 * 2**20
    del held
    assert scale._anon_rss(2**22 + 12345) == 0  # no such process

    steps = [
        scale.Step(a, wall_s=20.0, step_s=10.0, own_peak_mb=900, tree_peak_mb=950, anon_peak_mb=600)
        for a in scale.STEPS
    ]
    text = scale.report(
        [scale.Run("generated 10,000", 10_000, steps)], "e53128a", "abc1234", "corpus note"
    )
    assert (
        "| generated 10,000 | 10,000 | raw_corpus | 10.0 | 20.0 | 900 | 950 | 600 | 1,000 | ok |"
        in text
    )
    assert "| generated 10,000 | " + f"{20 * len(scale.STEPS) / 60:.1f} | 900 | yes | 600 |" in text
    figures, _ = index._scale(text)
    assert figures["largest complete corpus"] == "10,000 messages"
    assert figures["largest step peak MB"] == "900"
    assert figures["largest anonymous peak MB"] == "600"
