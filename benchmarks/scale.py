"""``make bench-scale``: wall time and peak memory of every step of the chain as the corpus grows.

For each size (``SPAM_SCALE_SIZES``, default 10,000 / 100,000 / 1,000,000 generated messages,
see :mod:`benchmarks.scale_corpus`) the chain from ``raw_corpus`` to ``onnx_model`` (plus
``sender_reputation`` and ``drift_reference``) is materialized one asset per process, exactly
as a Dagster step runs it (``dagster asset materialize``, in-process executor, a fresh
``SPAM_HOME`` per size). Per step it measures the wall time, the step process's own peak RSS
(``wait4``'s ``ru_maxrss``: measured by the kernel, not sampled) and the peak of the summed RSS
of the step's whole process tree (sampled every 0.2 s; Ray's workers live there). A step that
fails, passes ``SPAM_SCALE_STEP_TIMEOUT_S`` or whose tree passes ``SPAM_SCALE_MAX_RSS_GB`` is
stopped and reported as such, and the rest of that size is skipped (it needs that step).

In the same run, the baseline: the real corpus (6,046 messages) through the same harness with
the source tree of ``SPAM_SCALE_BASELINE_REV`` (the code before the scale work), so the report
compares like with like on one machine on one day. The growth exponent per step is the slope
of log(time) and log(memory) against log(messages) over the generated sizes.

Last, a real Ray cluster on this machine with 1 and then 2 nodes: the smallest generated
corpus's parts parsed as Ray tasks and data-parallel trees on the largest run's training rows,
rows/s side by side (``SPAM_SCALE_CLUSTER=0`` skips it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks.common import machine, write_report
from benchmarks.scale_corpus import Generator, write_tar
from spam_serving.settings import PROJECT_ROOT, get_settings

STEPS = (
    "raw_corpus",
    "parsed_messages",
    "labelled_feedback",
    "dataset_splits",
    "feature_pipeline",
    "sender_reputation",
    "feature_matrices",
    "tuned_model",
    "model_evaluation",
    "onnx_model",
    "drift_reference",
)
#: Steps whose cost the issue asks to be (at least) linear with memory bounded by a chunk.
STREAMING = ("raw_corpus", "parsed_messages", "dataset_splits", "feature_matrices")
WORK = Path(os.environ.get("SPAM_SCALE_WORK", "/tmp/spam-scale"))
#: training rows the 1-vs-2-node comparison trains on
ROWS_ON_CLUSTER = 20_000


@dataclass
class Step:
    asset: str
    wall_s: float = 0.0
    step_s: float = 0.0
    own_peak_mb: float = 0.0
    tree_peak_mb: float = 0.0
    #: the step process's anonymous memory (heap, arrays), sampled: its resident set less
    #: the file pages of memory-mapped matrices and libraries, which the kernel can drop
    anon_peak_mb: float = 0.0
    outcome: str = "ok"
    log_tail: str = ""


@dataclass
class Run:
    label: str
    n_messages: int
    steps: list[Step] = field(default_factory=list)
    home: Path | None = None


def _env(home: Path, source: Path, src_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "DAGSTER_"))}
    env.update(
        SPAM_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        SPAM_CORPUS_SOURCES=json.dumps([str(source)]),
        SPAM_EXECUTOR="in_process",
        PYTHONPATH=str(src_root),
        RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
    )
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return env


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def _anon_rss(pid: int) -> int:
    """``RssAnon`` of a live process in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_step(asset: str, env: dict[str, str], cwd: Path, timeout_s: float, max_rss: float) -> Step:
    """One asset in its own process; kernel-measured peak RSS via ``wait4``."""
    argv = [sys.executable, "-m", "dagster", "asset", "materialize", "-m",
            "spam_assets.definitions", "--select", asset]  # fmt: skip
    log = cwd / f".scale-{asset}.log"
    step = Step(asset)
    started = time.perf_counter()
    with open(log, "wb") as out:
        popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        proc = psutil.Process(popen.pid)
        peak_tree = peak_anon = 0
        while True:
            pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, _tree_rss(proc))
            peak_anon = max(peak_anon, _anon_rss(popen.pid))
            elapsed = time.perf_counter() - started
            if elapsed > timeout_s or peak_tree > max_rss:
                step.outcome = (
                    f"stopped: over {timeout_s:.0f} s"
                    if elapsed > timeout_s
                    else f"stopped: tree RSS over {max_rss / 2**30:.0f} GB"
                )
                for child in proc.children(recursive=True):
                    child.kill()
                popen.kill()
                pid, status, usage = os.wait4(popen.pid, 0)
                break
            time.sleep(0.2)
    step.wall_s = time.perf_counter() - started
    step.own_peak_mb = usage.ru_maxrss / 1024
    step.tree_peak_mb = max(peak_tree, usage.ru_maxrss * 1024) / 2**20
    step.anon_peak_mb = peak_anon / 2**20
    code = os.waitstatus_to_exitcode(status)
    if step.outcome == "ok" and code != 0:
        step.outcome = f"failed (exit {code})"
    step.log_tail = log.read_text(errors="replace")[-1500:] if step.outcome != "ok" else ""
    step.step_s = _step_seconds(Path(env["DAGSTER_HOME"]))
    return step


def _step_seconds(dagster_home: Path) -> float:
    """The last run's steps (the asset and its checks) as Dagster timed them: the process's
    wall time minus the ~15 s of interpreter start, code loading and run bookkeeping."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(limit=1)
        if not runs:
            return 0.0
        stats = instance.get_run_step_stats(runs[0].run_id)
    if any(s.start_time is None or s.end_time is None for s in stats):
        return math.nan  # a step stopped or failed mid-way has no end
    return sum(s.end_time - s.start_time for s in stats)


def answers(home: Path) -> dict[str, str]:
    """What the run's model says on the test split (``model_evaluation``), its threshold
    (``tuned_model``) and the ONNX parity check: the real-corpus runs must agree."""
    import dagster as dg

    out: dict[str, str] = {}
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        for asset, keys in (
            ("model_evaluation", ("f1", "recall", "easy_ham_fpr", "hard_ham_fpr")),
            ("tuned_model", ("threshold", "search_sample")),
        ):
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            meta = event.asset_materialization.metadata if event else {}
            out.update({k: str(meta[k].value) for k in keys if k in meta})
        key = dg.AssetCheckKey(dg.AssetKey("onnx_model"), "onnx_parity")
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])
        entry = latest[key].event if key in latest else None
        if entry is not None and entry.dagster_event is not None:
            data = entry.dagster_event.event_specific_data
            if "max_abs_diff" in getattr(data, "metadata", {}):
                out["onnx max |diff|"] = f"{data.metadata['max_abs_diff'].value:.2e}"
    return out


def run_chain(label: str, n: int, source: Path, src_root: Path) -> Run:
    home = WORK / "homes" / label
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = _env(home, source, src_root)
    timeout_s = float(os.environ.get("SPAM_SCALE_STEP_TIMEOUT_S", 5400))
    max_rss = float(os.environ.get("SPAM_SCALE_MAX_RSS_GB", 20)) * 2**30
    run = Run(label, n, home=home)
    for asset in STEPS:
        step = run_step(asset, env, src_root, timeout_s, max_rss)
        run.steps.append(step)
        print(
            f"[{label}] {asset}: {step.step_s:.1f} s ({step.wall_s:.1f} s process), "
            f"own {step.own_peak_mb:.0f} MB, tree {step.tree_peak_mb:.0f} MB, {step.outcome}",
            flush=True,
        )
        if step.outcome != "ok":
            print(step.log_tail, flush=True)
            break
    return run


def source_tree(rev: str) -> Path:
    """The source tree of ``rev`` (``git archive``), run with the same virtualenv: a run of
    hours must not pick up edits made to the checkout meanwhile."""
    out = WORK / f"src-{rev}"
    if not (out / "spam_assets").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", rev], cwd=PROJECT_ROOT, capture_output=True,
            check=True,
        ).stdout  # fmt: skip
        with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
            tar.extractall(out, filter="data")
    return out


def exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x): 1.0 is linear growth."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def report(runs: list[Run], baseline_rev: str, head: str, corpus_note: str) -> str:
    lines = [
        "# Scale: the chain from raw_corpus to onnx_model as the corpus grows",
        "",
        f"Machine: {machine()}, {psutil.virtual_memory().total / 2**30:.0f} GiB. "
        "Each step is its own `dagster asset materialize` process (in-process executor); "
        "step s = the asset and its checks as Dagster timed them, process s = the whole "
        "process (~15 s more: interpreter, code loading, run bookkeeping); own peak = the "
        "step process's kernel-measured maximum RSS (`wait4`), tree peak = "
        "summed RSS of the step and its children sampled every 0.2 s (Ray workers included); "
        "anon peak = the step process's anonymous memory (`RssAnon`: its heap and arrays, "
        "without the file pages of memory-mapped matrices and libraries, which the kernel can "
        "drop at any time), sampled every 0.2 s.",
        "",
        f"Code: `{head}`. Baseline: the real corpus with the code of `{baseline_rev}` (before "
        "the scale work), same harness, same run.",
        "",
        corpus_note,
        "",
        "| run | messages | step | step s | process s | own peak MB | tree peak MB | "
        "anon peak MB | messages/s | outcome |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for s in run.steps:
            done = s.outcome == "ok" and s.step_s > 0
            step = f"{s.step_s:.1f}" if done else "-"
            rate = f"{run.n_messages / s.step_s:,.0f}" if done else "-"
            lines.append(
                f"| {run.label} | {run.n_messages:,} | {s.asset} | {step} | "
                f"{s.wall_s:.1f} | "
                f"{s.own_peak_mb:.0f} | {s.tree_peak_mb:.0f} | {s.anon_peak_mb:.0f} | {rate} | "
                f"{s.outcome} |"
            )
    generated = [r for r in runs if r.label.startswith("generated")]
    lines += [
        "",
        "## Growth exponents over the generated sizes (1.0 = linear)",
        "",
        "| step | time exponent | own-memory exponent | sizes |",
        "|---|---|---|---|",
    ]
    for asset in STEPS:
        pts = [
            (r.n_messages, s) for r in generated for s in r.steps if s.asset == asset
            and s.outcome == "ok"
        ]  # fmt: skip
        if len(pts) < 2:
            continue
        t = exponent([n for n, _ in pts], [s.step_s for _, s in pts])
        m = exponent([n for n, _ in pts], [s.own_peak_mb for _, s in pts])
        lines.append(f"| {asset} | {t:.2f} | {m:.2f} | {', '.join(f'{n:,}' for n, _ in pts)} |")
    real = [r for r in runs if "real corpus" in r.label and r.home is not None]
    if real:
        found = {r.label: answers(r.home) for r in real}
        keys = sorted({k for a in found.values() for k in a})
        lines += [
            "",
            "## The same answers on the real corpus",
            "",
            "| | " + " | ".join(found) + " |",
            "|---|" + "---|" * len(found),
            *(f"| {k} | " + " | ".join(a.get(k, "") for a in found.values()) + " |" for k in keys),
        ]
    lines += ["", "## Whole chain", "",
              "| run | wall min | largest step peak MB | complete | largest anon peak MB |",
              "|---|---|---|---|---|"]  # fmt: skip
    for run in (r for r in runs if r.steps):
        wall = sum(s.wall_s for s in run.steps)
        peak = max(s.own_peak_mb for s in run.steps)
        anon = max(s.anon_peak_mb for s in run.steps)
        done = len(run.steps) == len(STEPS) and all(s.outcome == "ok" for s in run.steps)
        lines.append(
            f"| {run.label} | {wall / 60:.1f} | {peak:.0f} | {'yes' if done else 'no'} | "
            f"{anon:.0f} |"
        )
    return "\n".join(lines) + "\n"


def cluster_section(corpus: Path, matrices: Path | None) -> str:
    """Rows/s through a real Ray cluster on this machine with 1 and with 2 nodes (one CPU
    each): the generated corpus's parts parsed as Ray tasks, and data-parallel trees (one
    Ray Train worker per node) on up to ``ROWS_ON_CLUSTER`` training rows of a run's matrices
    (``matrices``: the directory ``feature_matrices`` wrote), or random rows without one."""
    import numpy as np
    import pyarrow.parquet as pq

    from spam_assets.lib.raw_store import land
    from spam_tests.helpers.ray_cluster import ray_cluster

    work = WORK / "cluster"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    land([str(corpus)], work / "raw", work / "cache", 120, 1000)
    if matrices is not None and (matrices / "train.npy").exists():
        x = np.load(matrices / "train.npy", mmap_mode="r")[:ROWS_ON_CLUSTER]
        y = pq.read_table(matrices / "train.keys.parquet").column("y").to_numpy()[: len(x)]
    else:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(ROWS_ON_CLUSTER, 200)).astype(np.float32)
        y = (x[:, 0] + rng.normal(size=len(x)) > 0).astype(np.float32)
    np.save(work / "x.npy", np.asarray(x, np.float32))
    np.save(work / "y.npy", np.asarray(y, np.float32))
    results = []
    for nodes in (1, 2):
        with ray_cluster(work, nodes=nodes) as cluster:
            env = {**os.environ, **cluster.env, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
            proc = subprocess.run(
                [sys.executable, "-m", "spam_tests.helpers.ray_driver", "rate",
                 cluster.address, str(work)],
                capture_output=True, text=True, timeout=3600, env=env, cwd=PROJECT_ROOT,
            )  # fmt: skip
            if proc.returncode != 0:
                results.append({"nodes": nodes, "error": proc.stderr[-500:]})
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    lines = [
        "## Through a Ray cluster: 1 node vs 2 nodes",
        "",
        "A real cluster on this machine (`ray start --head` + `ray start --address`, one CPU "
        "per node): parsing as Ray tasks over the generated corpus's parts, and data-parallel "
        "XGBoost (Ray Train, one worker per node, 100 rounds). On 2 cores the point is that it "
        "works and the data goes through the cluster, not the speed-up.",
        "",
        "| nodes | messages parsed | parse msg/s | tree rows | train rows/s | nodes that trained |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['nodes']} | failed: {r['error'][-200:]} | | | | |")
            continue
        lines.append(
            f"| {r['nodes']} | {r['messages']:,} | {r['messages'] / r['parse_s']:,.0f} | "
            f"{r['rows']:,} | {r['rows'] / r['train_s']:,.0f} | {r['train_nodes']} |"
        )
    ok = [r for r in results if "error" not in r]
    if len(ok) == 2:
        lines.append(
            f"\n2 nodes / 1 node: parse {ok[0]['parse_s'] / ok[1]['parse_s']:.2f}x, train "
            f"{ok[0]['train_s'] / ok[1]['train_s']:.2f}x."
        )
    return "\n".join(lines) + "\n"


CORPUS_NOTE = (
    "The generated corpora come from `benchmarks/scale_corpus.py`: each message is a real "
    "message of the same group (label, period, MIME/HTML/header structure) with a new "
    "sender, recipient and Message-ID, its header dates moved together by up to 90 days, URL "
    "hosts replaced, words of the subject and body text replaced from the corpus vocabulary, "
    "and plain bodies extended by another message's paragraph; de-duplication keeps ~99.7%. "
    "Words are shuffled within a label, so nothing here is a quality result: time and memory "
    "only."
)


def main() -> None:
    sizes = [int(x) for x in os.environ.get("SPAM_SCALE_SIZES", "10000,100000,1000000").split(",")]
    baseline_rev = os.environ.get("SPAM_SCALE_BASELINE_REV", "e53128a")
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
        text=True, check=True,
    ).stdout.strip()  # fmt: skip
    current = source_tree(head)
    real = Path(get_settings().corpus_sources[0])
    runs = []
    if os.environ.get("SPAM_SCALE_BASELINE", "1") != "0":
        runs.append(run_chain("baseline (real corpus)", 6046, real, source_tree(baseline_rev)))
        runs.append(run_chain("current (real corpus)", 6046, real, current))
    generator = None
    for n in sizes:
        corpus = WORK / "corpora" / f"gen-{n}.tar"
        if not corpus.exists():
            generator = generator or Generator(real, seed=0)
            started = time.perf_counter()
            write_tar(generator, n, corpus)
            print(f"generated {n:,} messages in {time.perf_counter() - started:.0f} s")
        runs.append(run_chain(f"generated {n:,}", n, corpus, current))
    text = report(runs, baseline_rev, head, CORPUS_NOTE)
    if os.environ.get("SPAM_SCALE_CLUSTER", "1") != "0" and sizes:
        text += "\n" + cluster_section(
            WORK / "corpora" / f"gen-{sizes[0]}.tar", latest_matrices(runs[-1])
        )
    write_report("scale", text)


def latest_matrices(run: Run) -> Path | None:
    """The newest directory ``feature_matrices`` wrote in a run's home, if any."""
    root = (run.home or Path("/nonexistent")) / "data" / "matrices"
    dirs = sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith("."))
    return dirs[-1] if dirs else None


if __name__ == "__main__":
    main()
