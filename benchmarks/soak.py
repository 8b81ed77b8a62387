"""``make bench-soak``: mixed traffic against the real service while faults are injected on a
schedule, then the books are balanced: every request answered or shed with a reason, every
answered prediction in the inference log (or counted as dropped), every log file readable,
memory flat, health back after each fault.

The service runs as in production (``bentoml serve``, 2 workers) with a model trained with the
Feast sender-reputation block, reading it from a Redis server the soak starts on its own port
(the machine's Redis is never touched). Traffic comes from a separate process
(``benchmarks.soak_traffic``). Faults, at fixed shares of the run:

* 10%: model swap (the alias file moves ``champion`` to v2: a hot reload);
* 25%: canary stage change (v1 as challenger, 50% of production);
* 40%: one worker killed with SIGKILL (circus starts a new one);
* 55%: the soak's Redis stopped; 65%: started again;
* 75%: the inference log's directory made unwritable (a file where the stream's directory
  was); 85%: restored.

``SPAM_SOAK_SECONDS`` (default 300) sets the length; ``make test`` runs a short one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks.common import machine, write_report
from spam_tests.helpers.env import free_port, wait_listening

FAULTS = (
    (0.10, "model swap (hot reload to v2)"),
    (0.25, "canary stage: v1 answers 50% of production"),
    (0.40, "worker SIGKILLed"),
    (0.55, "Redis stopped"),
    (0.65, "Redis started again"),
    (0.75, "inference log directory unwritable"),
    (0.85, "inference log directory restored"),
)
#: a worker's RSS may grow this much from warm-up to the end (model swaps load a second
#: model; caches fill), beyond it the soak fails
MAX_RSS_GROWTH_MB = 150
#: the service answers again within this many seconds after each fault
MAX_RECOVERY_S = 15.0
#: from the Redis fault (15% of the run after the SIGKILL) to the end, every worker does at
#: least this share of the workers' CPU: the restarted worker takes its part of the traffic
MIN_WORKER_CPU_SHARE = 0.2


@dataclass
class SoakResult:
    seconds: float
    records: list[dict]
    faults: list[tuple[float, str]]
    logged_ids: set[str]
    corrupt_files: list[str]
    n_files: int
    dropped_metric: float
    rss_start: dict[int, float]
    rss_end: dict[int, float]
    #: per worker, its share of the workers' CPU from the Redis fault to the end
    cpu_share: dict[int, float] = field(default_factory=dict)
    recovered_rows: int = 0
    notes: list[str] = field(default_factory=list)


def _redis(port: int, data: Path) -> subprocess.Popen:
    """A Redis of the soak's own, persisting to its directory (so a restart keeps the rows)."""
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc, 20, "redis-server")
    return proc


def _workers(server_pid: int) -> list[psutil.Process]:
    """The server's worker processes (the large direct children)."""
    try:
        kids = psutil.Process(server_pid).children()
    except psutil.Error:
        return []
    return [p for p in kids if _rss(p) > 60]


def _rss(p: psutil.Process) -> float:
    try:
        return p.memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


def _cpu_seconds(server_pid: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of each worker of the server."""
    out = {}
    for p in _workers(server_pid):
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def _metric(url: str, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_soak(seconds: float, work: Path, sample: list[tuple[str, int, bytes]]) -> SoakResult:
    """Train the two models, start Redis and the service, run the traffic and the faults."""
    import pyarrow.parquet as pq

    from spam_assets.lib.reputation import historical_reputation
    from spam_serving.inference_log import JOURNAL_DIR, PREDICTIONS, log_files
    from spam_serving.model_store import write_aliases
    from spam_serving.settings import get_settings
    from spam_tests.helpers.reputation import build_store, sample_frame
    from spam_tests.helpers.serving import API_KEYS, running_server, train_bundle

    home = work / "home"
    redis_port = free_port()
    redis_dir = work / "redis"
    redis = _redis(redis_port, redis_dir)
    project = "soak"
    env = {
        "SPAM_HOME": str(home),
        "SPAM_FEAST_PROJECT": project,
        "SPAM_FEAST_REDIS": f"127.0.0.1:{redis_port},db=0",
        "SPAM_FEAST_ONLINE_STORE": "redis",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = get_settings()
        messages, frame = sample_frame(sample)
        store, _ = build_store(settings, frame, "redis")
        reputation = historical_reputation(store, messages)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    bundles = {
        v: train_bundle(sample, home / "bundles" / f"v{v}", v, rounds=r, reputation=reputation)
        for v, r in (("1", 30), ("2", 20))
    }
    entries = {v: {"bundle_path": str(p), "model_version": v} for v, p in bundles.items()}
    alias_file = home / "serving" / "aliases.json"
    write_aliases(alias_file, {"champion": entries["1"], "challenger": entries["1"]})
    messages_file = work / "messages.json"
    messages_file.write_text(
        json.dumps([[base64.b64encode(raw).decode(), label] for _, label, raw in sample])
    )
    out = work / "traffic.jsonl"
    log_root = home / "inference_log"
    faults: list[tuple[float, str]] = []
    port = free_port()
    server_env = {
        **{k: v for k, v in env.items() if k != "SPAM_HOME"},
        "SPAM_REPUTATION_TIMEOUT_MS": "200",
        "SPAM_LOG_FLUSH_S": "1",
        "SPAM_MODEL_POLL_INTERVAL_S": "0.5",
    }
    try:
        with running_server(home, port, **server_env) as server:
            url = server.url
            traffic = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.soak_traffic",
                    "--url",
                    url,
                    "--key",
                    API_KEYS[0],
                    "--seconds",
                    str(seconds),
                    "--messages",
                    str(messages_file),
                    "--out",
                    str(out),
                ],
                cwd=Path(__file__).resolve().parents[1],
            )
            t0 = time.monotonic()
            time.sleep(min(3.0, seconds * 0.05))
            rss_start = {p.pid: _rss(p) for p in _workers(server.pid)}
            cpu_mark: dict[int, float] = {}
            for share, name in FAULTS:
                time.sleep(max(0.0, t0 + share * seconds - time.monotonic()))
                faults.append((round(time.monotonic() - t0, 3), name))
                if name.startswith("model swap"):
                    write_aliases(
                        alias_file, {"champion": entries["2"], "challenger": entries["2"]}
                    )
                elif name.startswith("canary"):
                    write_aliases(
                        alias_file,
                        {"champion": entries["2"], "challenger": entries["1"]},
                        {"fraction": 0.5, "stage": 0, "version": "1"},
                    )
                elif name.startswith("worker"):
                    victim = _workers(server.pid)[0]
                    os.kill(victim.pid, signal.SIGKILL)
                    rss_start.pop(victim.pid, None)
                elif name == "Redis stopped":
                    cpu_mark = _cpu_seconds(server.pid)
                    redis.terminate()
                    redis.wait(timeout=20)
                elif name == "Redis started again":
                    redis = _redis(redis_port, redis_dir)
                elif name.endswith("unwritable"):
                    (log_root / PREDICTIONS).rename(log_root / ".predictions.away")
                    (log_root / PREDICTIONS).write_text("not a directory")
                elif name.endswith("restored"):
                    (log_root / PREDICTIONS).unlink()
                    (log_root / ".predictions.away").rename(log_root / PREDICTIONS)
            traffic.wait(timeout=seconds + 120)
            time.sleep(3.0)  # writers flush (SPAM_LOG_FLUSH_S=1) and retry what failed
            rss_end = {p.pid: _rss(p) for p in _workers(server.pid)}
            cpu_end = _cpu_seconds(server.pid)
            dropped = _metric(url, "spam_inference_log_dropped_total")
        # stopped (SIGTERM): every worker closes its writers
    finally:
        redis.terminate()
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    files = log_files(log_root, PREDICTIONS)
    logged: set[str] = set()
    corrupt = []
    for f in files:
        try:
            logged.update(pq.read_table(f, columns=["prediction_id"]).column(0).to_pylist())
        except Exception as exc:
            corrupt.append(f"{f.name}: {type(exc).__name__}")
    leftovers = list((log_root / JOURNAL_DIR).glob("*-*-*-*.*"))
    used = {pid: cpu_end[pid] - cpu_mark.get(pid, 0.0) for pid in cpu_end}
    total = sum(used.values()) or 1.0
    result = SoakResult(
        seconds,
        records,
        faults,
        logged,
        corrupt,
        len(files),
        dropped,
        rss_start,
        rss_end,
        cpu_share={pid: u / total for pid, u in used.items()},
    )
    if leftovers:
        result.notes.append(f"{len(leftovers)} journal files left unrecovered")
    return result


def summarize(r: SoakResult) -> dict:
    """The books: outcomes by status, unanswered requests, predictions missing from the log
    per fault window, recovery after each fault, memory."""
    statuses: dict[int, int] = {}
    for rec in r.records:
        statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
    server_errors = [x for x in r.records if x["status"] >= 500 and x["status"] != 503]
    unexplained_503 = [x for x in r.records if x["status"] == 503 and not x.get("reason")]
    unanswered = [x for x in r.records if x["status"] == 0]
    windows = [(0.0, "before any fault"), *r.faults]
    answered: dict[str, float] = {}
    for rec in r.records:
        for pid in rec["ids"]:
            answered[pid] = rec["t"]
    missing = {pid: t for pid, t in answered.items() if pid not in r.logged_ids}
    per_window = []
    for i, (start, name) in enumerate(windows):
        end = windows[i + 1][0] if i + 1 < len(windows) else float("inf")
        n_ans = sum(start <= t < end for t in answered.values())
        n_miss = sum(start <= t < end for t in missing.values())
        ms = sorted(
            x["ms"]
            for x in r.records
            if start <= x["t"] < end and x["kind"] == "predict_raw" and x["status"] == 200
        )
        per_window.append(
            {
                "window": name,
                "from_s": start,
                "answered": n_ans,
                "missing": n_miss,
                "p50_ms": ms[len(ms) // 2] if ms else None,
                "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else None,
            }
        )
    recovery = []
    for t_fault, name in r.faults:
        after = [x["t"] for x in r.records if x["t"] >= t_fault and x["status"] == 200]
        recovery.append((name, (min(after) - t_fault) if after else None))
    growth = {pid: r.rss_end[pid] - r.rss_start[pid] for pid in r.rss_start if pid in r.rss_end}
    return {
        "requests": len(r.records),
        "statuses": statuses,
        "retried": sum(1 for x in r.records if x["retries"]),
        "server_errors": server_errors,
        "unexplained_503": unexplained_503,
        "unanswered": unanswered,
        "answered_predictions": len(answered),
        "logged_predictions": len(r.logged_ids & set(answered)),
        "missing": len(missing),
        "dropped_metric": r.dropped_metric,
        "per_window": per_window,
        "recovery": recovery,
        "rss_growth": growth,
    }


def failures(s: dict, r: SoakResult) -> list[str]:
    """What the soak promises, as the reasons it did not hold (empty: it held)."""
    out = []
    if s["server_errors"]:
        out.append(f"{len(s['server_errors'])} 5xx other than 503: {s['server_errors'][:3]}")
    if s["unexplained_503"]:
        out.append(f"{len(s['unexplained_503'])} 503s without a reason")
    if s["unanswered"]:
        out.append(f"{len(s['unanswered'])} requests never answered: {s['unanswered'][:3]}")
    if s["missing"] > s["dropped_metric"]:
        out.append(
            f"{s['missing']} answered predictions missing from the log, "
            f"{s['dropped_metric']:.0f} counted as dropped"
        )
    if r.corrupt_files:
        out.append(f"unreadable log files: {r.corrupt_files[:3]}")
    slow = [(n, t) for n, t in s["recovery"] if t is None or t > MAX_RECOVERY_S]
    if slow:
        out.append(f"not answering within {MAX_RECOVERY_S:.0f} s after: {slow}")
    starved = {p: round(x, 2) for p, x in r.cpu_share.items() if x < MIN_WORKER_CPU_SHARE}
    if starved:
        out.append(
            f"a worker idles after the restart (CPU share < {MIN_WORKER_CPU_SHARE}): {starved}"
        )
    grown = {p: g for p, g in s["rss_growth"].items() if g > MAX_RSS_GROWTH_MB}
    if grown:
        out.append(f"worker RSS grew beyond {MAX_RSS_GROWTH_MB} MB: {grown}")
    return out + r.notes


def report(r: SoakResult, s: dict) -> str:
    failed = failures(s, r)
    lines = [
        f"# Soak under faults ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {machine()}. {r.seconds:.0f} s of mixed traffic from a separate process "
        "(6 clients: raw and JSON /predict, /predict_batch of 10-30, /feedback, async jobs, "
        "hostile messages) against `bentoml serve` with 2 workers and a sender-reputation "
        "model reading the soak's own Redis; faults on a schedule (below).",
        "",
        f"Verdict: **{'held' if not failed else 'NOT held'}**"
        + ("" if not failed else ": " + "; ".join(failed)),
        "",
        "| outcome | requests |",
        "|---|---|",
        *(f"| HTTP {k} | {v} |" for k, v in sorted(s["statuses"].items())),
        f"| of which retried after a broken connection | {s['retried']} |",
        "",
        f"Predictions answered: {s['answered_predictions']}; in the inference log: "
        f"{s['logged_predictions']}; missing: {s['missing']}; counted as dropped in `/metrics`: "
        f"{s['dropped_metric']:.0f}. Log files: {r.n_files}, unreadable: {len(r.corrupt_files)}.",
        "",
        "Latency of raw `/predict` per window, and its ratio to the window before any fault "
        "(the baseline, same run):",
        "",
        "| window (fault at its start) | from s | predictions answered | missing from the log "
        "| p50 ms | p99 ms | p50 x baseline |",
        "|---|---|---|---|---|---|---|",
        *(_window_row(w, s["per_window"][0]) for w in s["per_window"]),
        "",
        "| fault | first 200 after it, s |",
        "|---|---|",
        *(f"| {n} | {'-' if t is None else f'{t:.2f}'} |" for n, t in s["recovery"]),
        "",
        "| worker (pid) | RSS growth from warm-up to the end, MB |",
        "|---|---|",
        *(f"| {pid} | {g:+.0f} |" for pid, g in s["rss_growth"].items()),
        "",
        "| worker (pid) at the end | share of the workers' CPU from the Redis fault to the end |",
        "|---|---|",
        *(f"| {pid} | {x:.0%} |" for pid, x in r.cpu_share.items()),
        "",
        f"Bounds: 5xx only as 503 with a reason; every request answered; no prediction missing "
        f"beyond the dropped count; every file readable; health within {MAX_RECOVERY_S:.0f} s "
        f"of each fault; RSS growth <= {MAX_RSS_GROWTH_MB} MB per surviving worker; every "
        f"worker (the restarted one too) >= {MIN_WORKER_CPU_SHARE:.0%} of the CPU after the "
        "restart.",
    ]
    return "\n".join(lines) + "\n"


def _window_row(w: dict, base: dict) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    ratio = f"{w['p50_ms'] / base['p50_ms']:.2f}x" if w["p50_ms"] and base["p50_ms"] else "-"
    return (
        f"| {w['window']} | {w['from_s']:.1f} | {w['answered']} | {w['missing']} | "
        f"{ms(w['p50_ms'])} | {ms(w['p99_ms'])} | {ratio} |"
    )


def main() -> None:
    from spam_tests.helpers.corpus import SHARED_TGZ, read_mirror, stratified

    seconds = float(os.environ.get("SPAM_SOAK_SECONDS", "300"))
    mirror = read_mirror(SHARED_TGZ)
    sample = [
        (g, 1 if "spam" in g else 0, raw)
        for g, msgs in sorted(mirror.items())
        for _, raw in stratified(msgs, 120)
    ]
    work = Path(tempfile.mkdtemp(prefix="spam-soak-"))
    try:
        result = run_soak(seconds, work, sample)
        write_report("soak", report(result, summarize(result)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
