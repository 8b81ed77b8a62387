"""The filters a mail admin would run instead, scored on the same messages in the same run:
Apache SpamAssassin (stock rules; and with its Bayes classifier trained by ``sa-learn`` on the
training period) and rspamd (stock rules; and with its Bayes trained on the training period).

Both come from Debian's packages (``make install-peers``); a peer that is not installed is
reported as missing, never silently dropped. Network tests are off for both (SpamAssassin
``-L``; rspamd with every DNS/URL-list module disabled and no remote maps), so they judge
the message alone, as our model does. Each runs as a real daemon on 127.0.0.1 with its own
state directory (rspamd's Bayes with its own ``redis-server`` on a free port), fed over its
own protocol: SPAMD ``SYMBOLS`` for spamd, HTTP ``/checkv2`` and ``/learnspam``/``/learnham``
for rspamd. Each peer's *own* operating point is its stock configuration: SpamAssassin's
``required_score`` 5.0, rspamd's ``add header`` action at 6 (``reject`` at 15).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spam_tests.helpers.env import free_port, stop_process, wait_listening

#: Stock operating points: (action name, lowest score that takes it), strictest first.
SPAMASSASSIN_ACTIONS = (("spam", 5.0),)
RSPAMD_ACTIONS = (("reject", 15.0), ("add header", 6.0))
_CLIENTS = 3
"""Concurrent requests per daemon (two children each, plus one in flight)."""
_RSPAMD_MODULES_OFF = (
    "rbl",
    "spf",
    "dkim",
    "dmarc",
    "arc",
    "fuzzy_check",
    "asn",
    "neural",
    "ratelimit",
    "greylist",
    "replies",
    "dcc",
    "mx_check",
    "url_redirector",
    "external_services",
    "antivirus",
    "dkim_signing",
    "history_redis",
    "reputation",
    "clickhouse",
    "elastic",
    "metadata_exporter",
)


@dataclass
class PeerRun:
    """One peer's scores on the test messages, and what it cost."""

    name: str
    scores: np.ndarray
    actions: tuple[tuple[str, float], ...]
    seconds: float
    learn_seconds: float = 0.0
    note: str = ""


def missing() -> dict[str, str]:
    """Peer -> why it cannot run here (empty when every peer is installed)."""
    out = {}
    for name, binaries in (
        ("SpamAssassin", ("spamd", "sa-learn")),
        ("rspamd", ("rspamd", "redis-server")),
    ):
        absent = [b for b in binaries if shutil.which(b) is None]
        if absent:
            out[name] = f"not installed ({', '.join(absent)} missing; run `make install-peers`)"
    return out


def _write_messages(folder: Path, raws: Sequence[bytes]) -> None:
    folder.mkdir(parents=True)
    for i, raw in enumerate(raws):
        (folder / f"{i:06d}.eml").write_bytes(raw)


def _open_to_all(path: Path) -> None:
    """The daemons drop root (spamd to ``nobody``, rspamd to ``_rspamd``)."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)


# ---------------------------------------------------------------------- SpamAssassin
def _spamd_check(port: int, raw: bytes) -> float:
    """SPAMD ``SYMBOLS``: the score from the ``Spam:`` header."""
    with socket.create_connection(("127.0.0.1", port), timeout=300) as s:
        s.sendall(b"SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\nUser: nobody\r\n\r\n" % len(raw))
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head = b"".join(chunks).decode("latin-1").split("\r\n\r\n", 1)[0].split("\r\n")
    if " 0 EX_OK" not in head[0]:
        raise RuntimeError(f"spamd: {head[0]}")
    for line in head[1:]:
        if line.startswith("Spam:"):
            return float(line.split(";")[1].split("/")[0])
    raise RuntimeError("spamd: no Spam: header in the answer")


def spamassassin(
    test: Sequence[bytes], train: Sequence[tuple[bytes, int]] | None, work: Path
) -> PeerRun:
    """SpamAssassin's scores on ``test``; with ``train`` its Bayes learns those first."""
    site = work / "site"
    site.mkdir(parents=True)
    for pre in Path("/etc/spamassassin").glob("*.pre"):
        shutil.copy(pre, site)
    bayes = train is not None
    (site / "local.cf").write_text(
        f"use_bayes {int(bayes)}\nbayes_auto_learn 0\nbayes_auto_expire 0\n"
        f"bayes_path {work / 'bayes' / 'bayes'}\nbayes_file_mode 0777\nuse_auto_whitelist 0\n"
    )
    (work / "bayes").mkdir()
    learn_s = 0.0
    if bayes:
        started = time.perf_counter()
        for label, kind in ((1, "spam"), (0, "ham")):
            folder = work / "learn" / kind
            _write_messages(folder, [raw for raw, y in train if y == label])
            subprocess.run(
                ["sa-learn", f"--siteconfigpath={site}", "-L", f"--{kind}", str(folder)],
                check=True,
                capture_output=True,
                timeout=3600,
            )
        learn_s = time.perf_counter() - started
    _open_to_all(work)
    port = free_port()
    with open(work / "spamd.log", "wb") as log:  # the child keeps its own copy of the fd
        proc = subprocess.Popen(
            [
                "spamd",
                "-L",
                "-x",
                "-u",
                "nobody",
                "-i",
                f"127.0.0.1:{port}",
                "-m",
                "2",
                "--min-children",
                "2",
                f"--siteconfigpath={site}",
                "-H",
                str(work),
                "-s",
                "stderr",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_listening(port, proc, 120, "spamd")
        started = time.perf_counter()
        with ThreadPoolExecutor(_CLIENTS) as pool:
            scores = list(pool.map(lambda raw: _spamd_check(port, raw), test))
        elapsed = time.perf_counter() - started
    finally:
        stop_process(proc)
    name = "SpamAssassin rules + Bayes (trained on train)" if bayes else "SpamAssassin rules"
    return PeerRun(name, np.asarray(scores), SPAMASSASSIN_ACTIONS, elapsed, learn_s)


# ---------------------------------------------------------------------- rspamd
def _rspamd_config(conf: Path, normal: int, controller: int, proxy: int, redis: int) -> None:
    local, override = conf / "local.d", conf / "override.d"
    local.mkdir(parents=True)
    override.mkdir()
    (local / "worker-normal.inc").write_text(f'bind_socket = "127.0.0.1:{normal}";\ncount = 2;\n')
    (local / "worker-controller.inc").write_text(
        f'bind_socket = "127.0.0.1:{controller}";\nsecure_ip = "127.0.0.1";\ncount = 1;\n'
    )
    (override / "worker-proxy.inc").write_text(f'bind_socket = "127.0.0.1:{proxy}";\n')
    (override / "worker-fuzzy.inc").write_text("count = -1;\n")
    (local / "redis.conf").write_text(f'servers = "127.0.0.1:{redis}";\n')
    (local / "classifier-bayes.conf").write_text("autolearn = false;\n")
    (local / "logging.inc").write_text('type = "console";\nlevel = "error";\n')
    for module in _RSPAMD_MODULES_OFF:
        (local / f"{module}.conf").write_text("enabled = false;\n")


def _post(url: str, raw: bytes) -> dict:
    request = urllib.request.Request(url, data=raw, method="POST")
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.loads(answer.read())


def _learn(url: str, raw: bytes) -> str:
    """One ``/learnspam`` or ``/learnham``: ``"learned"``, or why rspamd skipped it (it
    answers 208 with no body for a message whose digest it has learned already, and 4xx
    with a JSON error for one it will not learn, e.g. too few tokens)."""
    request = urllib.request.Request(url, data=raw, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=300) as answer:
            return "learned" if answer.status == 200 else f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"


def rspamd(test: Sequence[bytes], train: Sequence[tuple[bytes, int]] | None, work: Path) -> PeerRun:
    """rspamd's scores on ``test``; with ``train`` its Bayes (in its own Redis) learns first."""
    ports = [free_port() for _ in range(4)]
    normal, controller, proxy, redis_port = ports
    conf = work / "conf"
    _rspamd_config(conf, normal, controller, proxy, redis_port)
    for d in ("db", "run", "log"):
        (work / d).mkdir()
    _open_to_all(work)
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work / "db"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    daemon = None
    try:
        wait_listening(redis_port, redis, 30, "redis-server")
        with open(work / "rspamd.log", "wb") as log:
            daemon = subprocess.Popen(
                [
                    "rspamd",
                    "-f",
                    "-u",
                    "_rspamd",
                    "-g",
                    "_rspamd",
                    f"--var=LOCAL_CONFDIR={conf}",
                    f"--var=DBDIR={work / 'db'}",
                    f"--var=RUNDIR={work / 'run'}",
                    f"--var=LOGDIR={work / 'log'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_listening(normal, daemon, 120, "rspamd")
        wait_listening(controller, daemon, 60, "rspamd controller")
        learn_s, outcomes = 0.0, Counter()
        if train is not None:
            started = time.perf_counter()
            with ThreadPoolExecutor(_CLIENTS) as pool:
                outcomes = Counter(
                    pool.map(
                        lambda item: _learn(
                            f"http://127.0.0.1:{controller}/"
                            + ("learnspam" if item[1] else "learnham"),
                            item[0],
                        ),
                        train,
                    )
                )
            learn_s = time.perf_counter() - started
        started = time.perf_counter()
        with ThreadPoolExecutor(_CLIENTS) as pool:
            answers = list(
                pool.map(lambda raw: _post(f"http://127.0.0.1:{normal}/checkv2", raw), test)
            )
        elapsed = time.perf_counter() - started
    finally:
        if daemon is not None:
            stop_process(daemon)
        stop_process(redis)
    bayes_fired = sum("BAYES_SPAM" in a["symbols"] or "BAYES_HAM" in a["symbols"] for a in answers)
    name = "rspamd + Bayes (trained on train)" if train is not None else "rspamd rules"
    note = (
        f"learned {outcomes['learned']} of {len(train)} ("
        + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()) if k != "learned")
        + f"); Bayes symbol on {bayes_fired} of {len(answers)} test messages"
        if train is not None
        else ""
    )
    scores = np.asarray([float(a["score"]) for a in answers])
    return PeerRun(name, scores, RSPAMD_ACTIONS, elapsed, learn_s, note)


def run_peers(
    test: Sequence[bytes], train: Sequence[tuple[bytes, int]]
) -> tuple[list[PeerRun], dict[str, str]]:
    """Every installed peer, rules only and with Bayes; and the ones that are missing."""
    absent = missing()
    runs = []
    with tempfile.TemporaryDirectory(prefix="spam-peers-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o777)
        for name, fn in (("SpamAssassin", spamassassin), ("rspamd", rspamd)):
            if name in absent:
                continue
            for learned in (None, train):
                work = root / f"{name}-{'bayes' if learned is not None else 'rules'}"
                runs.append(fn(test, learned, work))
    return runs, absent
