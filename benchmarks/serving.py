"""``make bench-serving``: the Bento service against the FastAPI baselines, in one run.

Servers under test, each with the same number of worker processes, on 127.0.0.1:

* ``bento``: ``bentoml serve spam_serving.service:SpamClassifier`` with the deployed bundle
  (explanations on, inference log on: the real request path), with adaptive batching of the
  model call on (the default) and off, with the start-up heap's ``gc.freeze()`` off, and
  with OpenTelemetry's per-ASGI-message spans back on (``SPAM_TRACE_ASGI_MESSAGES``), and
  with BentoML's one shared listening socket instead of one per worker
  (``SPAM_SERVE_REUSE_PORT=false``), and without the batch helpers (``SPAM_BATCH_HELPERS=0``;
  both this and the default get the ``/predict_batch`` points), and serving the previous
  model kind: the same trees without the ensemble's stacking block (char n-gram model and
  signs; :func:`trees_only_bundle`), the speed the ensemble is compared with (it also gets
  the ``/predict_batch`` points);
* ``fastapi+sklearn``: the baseline a user would otherwise write (see ``baseline_app``);
* ``fastapi+ours``: the same FastAPI app calling our parser, featurizer and ONNX model;
* ``bento, empty endpoint`` and ``fastapi, empty endpoint``: each stack answering a constant
  to the same request (``empty_bento``, ``baseline_app``), the floor of its HTTP cost. With
  the in-process ceiling that bounds what a service on that stack can reach here, which the
  report sets against the targets.

Load comes from ``benchmarks.loadgen`` in a separate process (closed loop, bounded in time).
Servers start one at a time and then all stay up: after each server's concurrency sweep, every
server gets more 32-client rounds in turn, and its median round is what the ratios use.
Also measured: the in-process ceiling (parse + featurize + ONNX in a loop, no HTTP, same
number of processes), cold start (spawn to ready; for the Bento service and BentoML's empty
endpoint the median of ``SPAM_BENCH_COLD_STARTS`` starts, default 3), RSS per worker and of
its batch helpers, and a per-stage profile of the request path. Needs a trained bundle: run
``make run`` first.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import requests

from benchmarks.common import machine, raw_table, write_report
from spam_assets.lib.local_server import (
    ServerProcess,
    start_process,
    start_server,
    stop_server,
    wait_ready,
)
from spam_serving.model_bundle import ModelBundle
from spam_serving.model_store import write_aliases
from spam_serving.parsing import parse_message
from spam_serving.settings import PROJECT_ROOT, get_settings

WORKERS = 2
CONCURRENCY = (1, 8, 32, 64)
DURATION_S = float(os.environ.get("SPAM_BENCH_SECONDS", "8"))
#: 32-client points per server, interleaved across the servers (all up at once)
ROUNDS_AT_32 = int(os.environ.get("SPAM_BENCH_ROUNDS", "3"))
#: spawn -> ready samples of the Bento service and of BentoML's empty endpoint: the first when
#: each server starts, the rest after the load, interleaved, with nothing else running (one
#: start moves by up to a second with the machine); the median is what the target uses
COLD_STARTS = int(os.environ.get("SPAM_BENCH_COLD_STARTS", "3"))
COLD_SERVERS = ("bento", "bento, empty endpoint")
COLD_PORT = 3210
API_KEY = "bench-key-0123456789abcdef"
PORTS = {
    "bento": 3201,
    "bento, batching off": 3204,
    "bento, gc.freeze off": 3205,
    "bento, OTel message spans on": 3206,
    "bento, one shared socket": 3209,
    "bento, batch helpers off": 3211,
    "bento, trees only (previous model kind)": 3212,
    "fastapi+sklearn": 3202,
    "fastapi+ours": 3203,
    "bento, empty endpoint": 3207,
    "fastapi, empty endpoint": 3208,
}
SERVICE = "spam_serving.service:SpamClassifier"
#: Bento servers: the service each runs and the settings on top of the defaults
BENTO_VARIANTS = {
    "bento": (SERVICE, {}),
    "bento, batching off": (SERVICE, {"SPAM_ADAPTIVE_BATCHING": "false"}),
    "bento, gc.freeze off": (SERVICE, {"SPAM_GC_FREEZE": "false"}),
    "bento, OTel message spans on": (SERVICE, {"SPAM_TRACE_ASGI_MESSAGES": "true"}),
    "bento, one shared socket": (SERVICE, {"SPAM_SERVE_REUSE_PORT": "false"}),
    "bento, batch helpers off": (SERVICE, {"SPAM_BATCH_HELPERS": "0"}),
    # its SPAM_HOME (aliases file -> the trees-only bundle) is set in main()
    "bento, trees only (previous model kind)": (SERVICE, {}),
    "bento, empty endpoint": ("benchmarks.empty_bento:EmptyEndpoint", {}),
}
#: servers whose /predict_batch is measured: the service, and without its batch helpers
BATCH_SERVERS = ("bento", "bento, batch helpers off", "bento, trees only (previous model kind)")
TREES_ONLY = "bento, trees only (previous model kind)"
#: the ensemble against the previous model kind (issue #21): throughput kept, batch latency
MIN_RPS_VS_TREES, MAX_BATCH_VS_TREES = 0.5, 1.5
#: uvicorn servers: ``baseline_app``'s mode for each
FASTAPI_MODES = {
    "fastapi+sklearn": "sklearn",
    "fastapi+ours": "ours",
    "fastapi, empty endpoint": "empty",
}
FLOORS = {"bento": "bento, empty endpoint", "fastapi": "fastapi, empty endpoint"}
TARGETS = {
    "rps_at_32": 1000,
    "p99_ms_at_32": 50,
    "x_baseline": 3.0,
    "share_of_ceiling": 0.5,
    "batch100_ms": 100,
    "cold_start_s": 5,
    "rss_mb": 400,
}


def latest_bundle() -> Path:
    s = get_settings()
    bundles = sorted(
        (s.bundles_dir / s.registered_model_name).glob("v*"), key=lambda p: int(p.name[1:])
    )
    if not bundles:
        sys.exit(f"no model bundle under {s.bundles_dir}: run `make run` first")
    return bundles[-1]


def trees_only_bundle(bundle_dir: Path, out: Path) -> Path:
    """The deployed ensemble's trees alone, as the previous model kind served them: the same
    vocabularies without the stacking block (no char n-gram model, no sign columns), the
    trees' own ONNX graph and explainer. A bundle that is already trees-only is copied."""
    from spam_assets.lib.onnx_export import booster_from_bytes, to_onnx
    from spam_serving.explain import TreeExplainer
    from spam_serving.featurize import Featurizer
    from spam_serving.model_bundle import FEATURIZER_FILE, META_FILE, NATIVE_FILE, write_bundle

    state = json.loads((bundle_dir / FEATURIZER_FILE).read_text())
    meta = json.loads((bundle_dir / META_FILE).read_text())
    for key in ("stacked", "char_features"):
        state["config"].pop(key, None)
    for key in ("signs", "char_model"):
        state.pop(key, None)
    featurizer = Featurizer.from_dict(state)
    raw = (bundle_dir / NATIVE_FILE).read_bytes()
    booster = booster_from_bytes(raw)
    keep = ("model_version", "model_name", "threshold")
    write_bundle(
        out,
        to_onnx(booster, featurizer.n_features),
        featurizer,
        raw,
        {k: meta[k] for k in keep if k in meta},
        explainer=TreeExplainer.from_xgboost_json(booster.save_raw("json")),
    )
    return out


def train_baseline(path: Path, texts: list[str], labels: np.ndarray) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    start = time.perf_counter()
    pipe = Pipeline(
        [
            ("tfidf", TfidfVectorizer(sublinear_tf=True, min_df=3, max_features=20000)),
            ("xgb", XGBClassifier(n_estimators=300, max_depth=6, n_jobs=1, eval_metric="logloss")),
        ]
    )
    pipe.fit(texts, labels)
    path.write_bytes(pickle.dumps(pipe))
    return time.perf_counter() - start


def start_bento(name: str, port: int, env: dict, home: Path, log: Path) -> ServerProcess:
    """Spawn the Bento server ``name`` on ``port`` with a BentoML home of its own (BentoML
    keeps one task store, SQLite, per home)."""
    service, settings = BENTO_VARIANTS[name]
    own = {**env, "BENTOML_HOME": str(home / "bentoml" / str(port)), **settings}
    return start_server(service, "127.0.0.1", port, own, log, cwd=PROJECT_ROOT)


def bento_cold_start(name: str, env: dict, home: Path, log: Path) -> float:
    """Seconds from spawning the Bento server ``name`` (on a spare port) to ``/readyz``
    answering 200; the server is stopped again before this returns."""
    spawn = time.perf_counter()
    server = start_bento(name, COLD_PORT, env, home, log)
    try:
        wait_ready(server, 120)
        return time.perf_counter() - spawn
    finally:
        stop_server(server.pid)


def median_cold_start(samples: list[float]) -> dict:
    """The median spawn -> ready of several starts, with every sample kept."""
    return {"cold_start_s": float(np.median(samples)), "cold_starts_s": list(samples)}


def median_round(points: list[dict]) -> dict:
    """The round with the median rps, with every round's rps and p99 attached: one 8-s point
    swings by +-15% with the machine, so targets and ratios use the middle of several."""
    mid = dict(sorted(points, key=lambda p: p["rps"])[len(points) // 2])
    mid["rounds_rps"] = [p["rps"] for p in points]
    mid["rounds_p99_ms"] = [p["p99_ms"] for p in points]
    return mid


def wait_workers_listening(server: ServerProcess, n: int, timeout_s: float = 60) -> None:
    """Until ``n`` of the server's processes listen on its port. A server reports ready as soon
    as one worker is; keep-alive load that connects before the others listen stays on that one
    worker for the whole run (with each worker on its own socket, as Bento's are here)."""
    port = int(server.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listening = 0
        for proc in psutil.Process(server.pid).children(recursive=True):
            try:
                conns = proc.net_connections("tcp")
            except psutil.Error:
                continue
            listening += any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)
        if listening >= n:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.url}: fewer than {n} processes listening:\n{server.log_tail()}")


def rss_mb_per_worker(pid: int) -> tuple[float, int, float]:
    """Mean RSS of the worker processes (the server's children that serve requests), their
    number, and the mean RSS of what each worker started (batch helpers, their forkserver
    and resource tracker; RSS counts pages they share with each other once per process)."""
    try:
        direct = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return float("nan"), 0, float("nan")
    workers = [p for p in direct if p.memory_info().rss > 60 * 2**20] or direct
    rss = [p.memory_info().rss / 2**20 for p in workers]
    helpers = [
        sum(c.memory_info().rss for c in w.children(recursive=True)) / 2**20 for w in workers
    ]
    mean = float(np.mean(rss)) if rss else float("nan")
    return mean, len(rss), float(np.mean(helpers)) if helpers else 0.0


def has_batch_helpers(name: str) -> bool:
    """A variant of the service that keeps its batch helpers (every one but "helpers off")."""
    service, extra = BENTO_VARIANTS.get(name, ("", {}))
    return service == SERVICE and extra.get("SPAM_BATCH_HELPERS") != "0"


def start_batch_helpers(server: ServerProcess, n: int, batch: bytes, timeout_s: float = 60) -> None:
    """Send batches until ``n`` batch helpers are up (``/metrics``): each worker starts its
    own with its first batch large enough to split, and their start-up (~1 s of CPU each)
    must not land in a measured point."""
    deadline = time.monotonic() + timeout_s
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    post = urllib.request.Request(server.url + "/predict_batch", batch, headers)
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(post, timeout=30).read()
            text = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
            up = re.search(r"^spam_batch_helpers_up (\S+)$", text, re.MULTILINE)
            if up and float(up.group(1)) >= n:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{server.url}: fewer than {n} batch helpers up:\n{server.log_tail()}")


def start_uvicorn(mode: str, port: int, env: dict, log: Path) -> ServerProcess:
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    cmd = [
        uvicorn,
        "benchmarks.baseline_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = {**env, "SPAM_BASELINE_MODE": mode}
    return start_process(cmd, f"http://127.0.0.1:{port}", env, log, cwd=PROJECT_ROOT)


def wait_http(server: ServerProcess, timeout_s: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        try:
            requests.post(
                server.url + "/predict",
                json={"raw": "Subject: a\n\nb"},
                timeout=2,
                headers={"X-API-Key": API_KEY},
            )
            return time.perf_counter() - start
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError(f"{server.url} not up:\n{server.log_tail()}")


def load(url: str, bodies_file: Path, concurrency: int, duration: float) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "--url",
            url,
            "--bodies",
            str(bodies_file),
            "--header",
            f"X-API-Key: {API_KEY}",
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration),
            "--warmup",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=duration + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ceiling_worker(bundle_dir: str, raws: list[bytes], seconds: float, q) -> None:
    bundle = ModelBundle.load(bundle_dir)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        raw = raws[n % len(raws)]
        bundle.predict_proba([parse_message(raw)])
        n += 1
    q.put(n / (time.perf_counter() - start))


def in_process_ceiling(bundle_dir: Path, raws: list[bytes], procs: int, seconds: float) -> float:
    """Messages/s of parse + featurize + ONNX, one message per call, ``procs`` processes."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [
        ctx.Process(target=_ceiling_worker, args=(str(bundle_dir), raws, seconds, q))
        for _ in range(procs)
    ]
    for p in ps:
        p.start()
    rates = [q.get() for _ in ps]
    for p in ps:
        p.join()
    return float(sum(rates))


def stage_profile(bundle_dir: Path, raws: list[bytes]) -> dict[str, float]:
    """Microseconds per message for each stage of the request path, in this process."""
    bundle = ModelBundle.load(bundle_dir)
    names = bundle.featurizer.feature_names
    msgs = [parse_message(r) for r in raws]
    xs = [bundle.featurizer.transform([m]) for m in msgs]

    def per(fn, items) -> float:
        start = time.perf_counter()
        for it in items:
            fn(it)
        return (time.perf_counter() - start) / len(items) * 1e6

    out = {
        "parse (RFC822 -> fields)": per(parse_message, raws),
        "featurize": per(lambda m: bundle.featurizer.transform([m]), msgs),
        "ONNX predict (1 row)": per(bundle.predict_matrix, xs),
        "explain (top 5)": per(lambda x: bundle.explainer.top_features(x, names, 5), xs)
        if bundle.explainer
        else float("nan"),
    }
    batch = np.concatenate(xs[:100])
    out["ONNX predict, per row in a batch of 100"] = per(bundle.predict_matrix, [batch] * 20) / 100
    return out


def main() -> None:
    bundle_dir = latest_bundle()
    bundle = ModelBundle.load(bundle_dir)
    table = raw_table()
    sample = table.sample(n=min(400, len(table)), random_state=0)
    raws = list(sample["raw"])
    bodies = [{"raw": r.decode("utf-8", "surrogateescape")} for r in raws]
    # JSON cannot carry lone surrogates: fall back to latin-1 text for 8-bit messages
    for i, r in enumerate(raws):
        try:
            r.decode("utf-8")
        except UnicodeDecodeError:
            bodies[i] = {"raw": r.decode("latin-1")}
    work = Path(tempfile.mkdtemp(prefix="spam-bench-"))
    bodies_file = work / "bodies.json"
    bodies_file.write_text(json.dumps(bodies))
    batch_file = work / "batch.json"
    batch_file.write_text(json.dumps([{"messages": bodies[i : i + 100]} for i in (0, 100, 200)]))

    train = table.drop(sample.index)
    from benchmarks.baseline_text import message_text

    texts = [message_text(r.decode("latin-1")) for r in train["raw"]]
    model_path = work / "baseline.pkl"
    fit_s = train_baseline(model_path, texts, train["label"].to_numpy())

    home = work / "home"
    write_aliases(
        home / "serving" / "aliases.json",
        {"champion": {"bundle_path": str(bundle_dir), "model_version": bundle.version}},
    )
    trees_home = work / "home-trees-only"
    trees_dir = trees_only_bundle(bundle_dir, work / "bundle-trees-only")
    write_aliases(
        trees_home / "serving" / "aliases.json",
        {"champion": {"bundle_path": str(trees_dir), "model_version": bundle.version}},
    )
    BENTO_VARIANTS[TREES_ONLY][1]["SPAM_HOME"] = str(trees_home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAM_")}
    env.update(
        {
            "SPAM_HOME": str(home),
            "BENTOML_HOME": str(home / "bentoml"),
            "SPAM_API_KEYS": json.dumps([API_KEY]),
            "SPAM_SERVE_WORKERS": str(WORKERS),
            "SPAM_BASELINE_MODEL": str(model_path),
            "SPAM_BASELINE_BUNDLE": str(bundle_dir),
            "BENTOML_DO_NOT_TRACK": "true",
        }
    )

    results: dict[str, dict] = {}
    servers: dict[str, dict] = {}
    running: dict[str, ServerProcess] = {}
    try:
        for name in PORTS:  # one at a time, so each cold start has the machine to itself
            spawn = time.perf_counter()
            if name in BENTO_VARIANTS:
                server = start_bento(name, PORTS[name], env, home, work / "bento.log")
                running[name] = server
                wait_ready(server, 120)
            else:
                server = start_uvicorn(FASTAPI_MODES[name], PORTS[name], env, work / f"{name}.log")
                running[name] = server
                wait_http(server)
            servers[name] = {"cold_start_s": time.perf_counter() - spawn}
            wait_workers_listening(server, WORKERS)
            if has_batch_helpers(name):
                start_batch_helpers(server, WORKERS, json.dumps({"messages": bodies[:16]}).encode())
        for name, server in running.items():
            results[name] = {
                c: load(server.url + "/predict", bodies_file, c, DURATION_S) for c in CONCURRENCY
            }
            if name in BATCH_SERVERS:
                results[f"{name} batch100"] = {
                    c: load(server.url + "/predict_batch", batch_file, c, DURATION_S)
                    for c in (1, 2)
                }
        rounds = {name: [results[name][32]] for name in running}
        for _ in range(ROUNDS_AT_32 - 1):  # interleaved: the machine's drift hits every server
            for name, server in running.items():
                rounds[name].append(load(server.url + "/predict", bodies_file, 32, DURATION_S))
        for name in running:
            results[name][32] = median_round(rounds[name])
            rss, n_workers, helpers_rss = rss_mb_per_worker(running[name].pid)
            servers[name].update(rss_mb=rss, workers=n_workers, helpers_rss_mb=helpers_rss)
    finally:
        for server in running.values():
            stop_server(server.pid)

    cold = {name: [servers[name]["cold_start_s"]] for name in COLD_SERVERS}
    for _ in range(COLD_STARTS - 1):
        for name in COLD_SERVERS:
            cold[name].append(bento_cold_start(name, env, home, work / "cold.log"))
    for name in COLD_SERVERS:
        servers[name].update(median_cold_start(cold[name]))

    ceiling = in_process_ceiling(bundle_dir, raws, WORKERS, DURATION_S)
    ceiling_1 = in_process_ceiling(bundle_dir, raws, 1, DURATION_S)
    profile = stage_profile(bundle_dir, raws[:200])
    profile_trees = stage_profile(trees_dir, raws[:200])
    shutil.rmtree(work, ignore_errors=True)
    write_report(
        "serving",
        report(results, servers, ceiling, ceiling_1, profile, fit_s, bundle, profile_trees),
    )


def stack_bound(floor_rps: float, ceiling_rps: float, clients: int = 32) -> dict[str, float]:
    """What a service on an HTTP stack can reach here at best, from two measurements.

    Each request costs the machine at least what the stack's empty endpoint costs (``1 /
    floor_rps`` seconds of the whole machine, the load generator's share included) plus the
    model path (``1 / ceiling_rps``, measured with as many processes, no HTTP). Adding the two
    is optimistic (it ignores contention and the explanations the ceiling leaves out), so the
    result is an upper bound. In a closed loop Little's law gives the mean latency at that
    rate: ``clients / rps``; a p99 is at least the mean.
    """
    rps = 1.0 / (1.0 / floor_rps + 1.0 / ceiling_rps)
    return {
        "rps": rps,
        "share_of_ceiling": rps / ceiling_rps,
        "min_mean_ms": 1000.0 * clients / rps,
    }


def errors_cell(errors: dict) -> str:
    """``0``, or the total with its statuses: ``6 (503: 6)`` says load shedding, not a bug."""
    total = sum(errors.values())
    if not total:
        return "0"
    return f"{total} ({', '.join(f'{k}: {v}' for k, v in sorted(errors.items()))})"


def report(results, servers, ceiling, ceiling_1, profile, fit_s, bundle, profile_trees) -> str:
    def row(name, c):
        r = results[name][c]
        return (
            f"| {name} | {c} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {errors_cell(r['errors'])} |"
        )

    lines = [
        f"# Serving benchmark ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {machine()}. Model v{bundle.version} ({bundle.featurizer.n_features} "
        f"features). {WORKERS} worker processes per server; load from a separate process "
        "on the same 2 cores (`benchmarks.loadgen`, keep-alive connections, httptools "
        f"client on uvloop; closed loop, {DURATION_S:.0f} s per point after 1 s warm-up). "
        "Bodies: 400 real corpus messages as JSON `raw` (mean size ~6 KB). Bento requests "
        "include explanations and the inference log. Servers start one at a time (each cold "
        "start has the machine to itself) and then all stay up; 32-client rows are each "
        f"server's median of {ROUNDS_AT_32} interleaved rounds (next section). The Bento "
        f"service's and BentoML's empty endpoint's cold starts are medians of {COLD_STARTS} "
        "(the first start, then more after the load, interleaved, alone on the machine).",
        "",
        "## /predict throughput and latency",
        "",
        "| server | clients | rps | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in PORTS:
        lines += [row(name, c) for c in CONCURRENCY]
    lines += ["", *rounds_section(results)]
    lines += [
        "",
        "## /predict_batch (100 messages per request, Bento)",
        "",
        "| server | clients | batches/s | messages/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in BATCH_SERVERS:
        for c, r in results[f"{name} batch100"].items():
            lines.append(
                f"| {name} | {c} | {r['rps']:.1f} | {r['rps'] * 100:.0f} | {r['p50_ms']:.1f} | "
                f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {errors_cell(r['errors'])} |"
            )
    on, off, _ = (results[f"{name} batch100"][1]["p50_ms"] for name in BATCH_SERVERS)
    lines += [
        "",
        f"Batch helpers (one helper process per worker takes half of a batch): p50 at 1 client "
        f"{on:.1f} ms vs {off:.1f} ms without, {on / off:.2f}x.",
    ]
    b32 = results["bento"][32]
    base32 = results["fastapi+sklearn"][32]
    ours32 = results["fastapi+ours"][32]
    x_base = b32["rps"] / base32["rps"] if base32["rps"] else float("inf")
    share = b32["rps"] / ceiling
    batch_p50 = results["bento batch100"][1]["p50_ms"]
    lines += [
        "",
        "## Ratios and targets (32 clients)",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| Bento rps | {b32['rps']:.0f} | >= {TARGETS['rps_at_32']} | "
        f"{_ok(b32['rps'] >= TARGETS['rps_at_32'])} |",
        f"| Bento p99 | {b32['p99_ms']:.1f} ms | <= {TARGETS['p99_ms_at_32']} ms | "
        f"{_ok(b32['p99_ms'] <= TARGETS['p99_ms_at_32'])} |",
        f"| Bento / FastAPI+sklearn rps | {x_base:.2f}x (p99 {b32['p99_ms']:.0f} vs "
        f"{base32['p99_ms']:.0f} ms) | >= {TARGETS['x_baseline']:.0f}x, p99 <= baseline | "
        f"{_ok(x_base >= TARGETS['x_baseline'] and b32['p99_ms'] <= base32['p99_ms'])} |",
        f"| Bento / FastAPI+ours rps (HTTP stack) | {b32['rps'] / ours32['rps']:.2f}x | - | - |",
        f"| Bento / in-process ceiling ({WORKERS} procs, {ceiling:.0f} msg/s) | {share:.0%} | "
        f">= {TARGETS['share_of_ceiling']:.0%} | {_ok(share >= TARGETS['share_of_ceiling'])} |",
        f"| batch of 100, p50 at 1 client | {batch_p50:.1f} ms | < {TARGETS['batch100_ms']} ms |"
        f" {_ok(batch_p50 < TARGETS['batch100_ms'])} |",
    ]
    lines += ["", *model_kind_section(results, profile, profile_trees)]
    lines += ["", *floor_section(results, ceiling, servers)]
    lines += [
        "",
        "## Cold start and memory",
        "",
        "| server | spawn -> ready s | RSS per worker MB | workers measured | "
        "batch helpers' RSS per worker MB |",
        "|---|---|---|---|---|",
    ]
    for name, s in servers.items():
        lines.append(
            f"| {name} | {cold_start_cell(s)} | {s['rss_mb']:.0f} | {s['workers']} | "
            f"{s.get('helpers_rss_mb', 0.0):.0f} |"
        )
    bento = servers["bento"]
    lines += [
        "",
        f"Targets: cold start < {TARGETS['cold_start_s']} s: "
        f"{_ok(bento['cold_start_s'] < TARGETS['cold_start_s'])}; RSS < {TARGETS['rss_mb']} MB "
        f"per worker: {_ok(bento['rss_mb'] < TARGETS['rss_mb'])}. Baseline model fit: "
        f"{fit_s:.0f} s.",
        "",
        "## Where the time goes (per message, one process)",
        "",
        "| stage | µs |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in profile.items()]
    model_path = sum(v for k, v in profile.items() if "batch" not in k)
    per_req = 1e6 * WORKERS / b32["rps"] if b32["rps"] else float("nan")
    lines += [
        f"| model path total | {model_path:.0f} |",
        f"| Bento CPU per request at 32 clients ({WORKERS} cores / rps, incl. load generator) "
        f"| {per_req:.0f} |",
        f"| of which the load generator's own CPU per request at 32 clients "
        f"| {b32.get('client_cpu_us_per_request') or float('nan'):.0f} |",
        "",
        f"In-process ceiling: {ceiling_1:.0f} msg/s with 1 process, {ceiling:.0f} msg/s with "
        f"{WORKERS} (parse + featurize + ONNX, no explanations, no HTTP).",
    ]
    return "\n".join(lines) + "\n"


def model_kind_section(results: dict, profile: dict, profile_trees: dict) -> list[str]:
    """The deployed model against the previous model kind on the same server settings."""
    new, old = results["bento"][32], results[TREES_ONLY][32]
    b_new = results["bento batch100"][1]["p50_ms"]
    b_old = results[f"{TREES_ONLY} batch100"][1]["p50_ms"]
    rps_ratio = new["rps"] / old["rps"] if old["rps"] else float("nan")
    batch_ratio = b_new / b_old if b_old else float("nan")
    lines = [
        "## The deployed model against the previous model kind",
        "",
        "Same service, same settings; the previous kind is the deployed model's own trees "
        "without the stacking block (no char n-gram model, no signs' column block; the parser "
        "is the same for both).",
        "",
        "| measure | deployed model | trees only | ratio | target | met |",
        "|---|---|---|---|---|---|",
        f"| /predict rps at 32 clients (median round) | {new['rps']:.0f} | {old['rps']:.0f} | "
        f"{rps_ratio:.2f}x | >= {MIN_RPS_VS_TREES:.1f}x | {_ok(rps_ratio >= MIN_RPS_VS_TREES)} |",
        f"| /predict p99 at 32 clients ms | {new['p99_ms']:.1f} | {old['p99_ms']:.1f} | "
        f"{new['p99_ms'] / old['p99_ms']:.2f}x | - | - |",
        f"| /predict_batch of 100, p50 at 1 client ms | {b_new:.1f} | {b_old:.1f} | "
        f"{batch_ratio:.2f}x | <= {MAX_BATCH_VS_TREES:.1f}x | "
        f"{_ok(batch_ratio <= MAX_BATCH_VS_TREES)} |",
        "",
        "| stage, µs per message | deployed model | trees only |",
        "|---|---|---|",
    ]
    lines += [
        f"| {k} | {v:.0f} | {profile_trees.get(k, float('nan')):.0f} |" for k, v in profile.items()
    ]
    return lines


def cold_start_cell(server: dict) -> str:
    """``4.6`` for one start; ``4.6 (median of 4.9 / 4.6 / 4.4)`` for several."""
    samples = server.get("cold_starts_s") or []
    if len(samples) < 2:
        return f"{server['cold_start_s']:.1f}"
    listed = " / ".join(f"{v:.1f}" for v in samples)
    return f"{server['cold_start_s']:.1f} (median of {listed})"


def rounds_section(results: dict) -> list[str]:
    """Every server's 32-client rounds: how much one point moves, and the median used."""
    lines = [
        f"## 32 clients, {ROUNDS_AT_32} interleaved rounds",
        "",
        "Round 1 is each server's concurrency sweep; every later round loads every server in "
        "turn, so the machine's drift reaches all of them alike. The median round stands for "
        "the server in the table above, the ratios and the targets.",
        "",
        "| server | rps by round | median rps | p99 ms by round | its p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name in PORTS:
        r = results[name][32]
        rps = " / ".join(f"{x:.0f}" for x in r.get("rounds_rps", [r["rps"]]))
        p99 = " / ".join(f"{x:.0f}" for x in r.get("rounds_p99_ms", [r["p99_ms"]]))
        lines.append(f"| {name} | {rps} | {r['rps']:.0f} | {p99} | {r['p99_ms']:.1f} |")
    return lines


def floor_section(results: dict, ceiling: float, servers: dict | None = None) -> list[str]:
    """The HTTP stacks' floors and what they leave reachable (see :func:`stack_bound`)."""
    base = results["fastapi+sklearn"][32]["rps"]
    lines = [
        "## The HTTP stack's floor and what it leaves reachable",
        "",
        "Each stack's empty endpoint (same request body, same workers, same load) at its best "
        "concurrency, and the upper bound for a service on that stack that also runs the model "
        f"path (in-process ceiling {ceiling:.0f} msg/s): `1 / (1/floor + 1/ceiling)`, "
        "optimistic (no contention, no explanations). At 32 clients Little's law turns the "
        "bound into the least possible mean latency; a p99 is at least that.",
        "",
        "| stack | empty endpoint rps (best, at clients) | its p99 at 32 ms | bound rps |"
        " bound / ceiling | bound / FastAPI+sklearn | least mean latency at 32 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    bounds = {}
    for stack, name in FLOORS.items():
        clients, best = max(results[name].items(), key=lambda kv: kv[1]["rps"])
        b = bounds[stack] = stack_bound(best["rps"], ceiling)
        lines.append(
            f"| {stack} | {best['rps']:.0f} ({clients}) | {results[name][32]['p99_ms']:.1f} | "
            f"{b['rps']:.0f} | {b['share_of_ceiling']:.0%} | {b['rps'] / base:.2f}x | "
            f"{b['min_mean_ms']:.1f} |"
        )
    b = bounds["bento"]
    lines += [
        "",
        "Reachable with BentoML on this machine, by the bound: "
        f"rps >= {TARGETS['rps_at_32']}: {_ok(b['rps'] >= TARGETS['rps_at_32'])}; "
        f"p99 <= {TARGETS['p99_ms_at_32']} ms at 32 clients: "
        f"{_ok(b['min_mean_ms'] <= TARGETS['p99_ms_at_32'])}; "
        f"{TARGETS['x_baseline']:.0f}x the baseline: "
        f"{_ok(b['rps'] >= TARGETS['x_baseline'] * base)}; "
        f"{TARGETS['share_of_ceiling']:.0%} of the ceiling: "
        f"{_ok(b['share_of_ceiling'] >= TARGETS['share_of_ceiling'])}. "
        f"The service reaches {results['bento'][32]['rps'] / b['rps']:.0%} of the bound at 32 "
        "clients.",
    ]
    empty = (servers or {}).get(FLOORS["bento"])
    if empty:
        lines += [
            "",
            f"BentoML's own spawn -> ready (empty endpoint): {empty['cold_start_s']:.1f} s "
            f"(target for the service: < {TARGETS['cold_start_s']} s).",
        ]
    return lines


def _ok(flag: bool) -> str:
    return "yes" if flag else "**no**"


if __name__ == "__main__":
    main()
