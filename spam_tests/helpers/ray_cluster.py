"""A real multi-node Ray cluster on this machine: ``ray start --head`` plus worker nodes, each
a separate ``ray start --block`` process (its own raylet and object store), stopped again by
process group; never ``ray stop``, which would take every Ray on the machine with it.

Ray turns 127.0.0.1 into the machine's own address (``services.resolve_ip_for_localhost``:
nodes must reach each other) and its GCS listens on every interface, so the cluster runs with
token authentication and a token of its own, which every driver passes in its environment."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from spam_tests.helpers.env import free_port

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass(frozen=True)
class RayCluster:
    address: str
    #: what a driver needs in its environment to be let in
    env: dict[str, str]


def _start(args: list[str], log: Path, auth: dict[str, str]) -> subprocess.Popen:
    env = {
        **os.environ,
        **auth,
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
             *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _alive_nodes(address: str, auth: dict[str, str]) -> int:
    """Alive nodes as the cluster's GCS reports them (a separate driver process)."""
    code = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False, "
        "configure_logging=False); print(sum(n['Alive'] for n in ray.nodes()))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={**os.environ, **auth, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"},
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    return int(lines[-1]) if proc.returncode == 0 and lines else 0


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def ray_cluster(tmp_path: Path, nodes: int = 2, cpus_per_node: int = 1) -> Iterator[RayCluster]:
    """``nodes`` Ray nodes (a head and ``nodes - 1`` workers) on this machine; yields the
    address drivers connect to (``SPAM_RAY_ADDRESS``) and the auth environment."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    log = tmp_path / "ray-cluster.log"
    temp_dir = Path("/tmp") / f"rayc-{port}"  # AF_UNIX paths must stay short
    procs = [
        _start(
            ["--head", f"--port={port}", f"--num-cpus={cpus_per_node}",
             "--include-dashboard=false", f"--temp-dir={temp_dir}",
             f"--ray-client-server-port={free_port()}"],
            log,
            auth,
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _alive_nodes(address, auth) < 1:
            if time.monotonic() > deadline or procs[0].poll() is not None:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"Ray head did not start; see {log}:\n{tail}")
            time.sleep(1)
        for _ in range(nodes - 1):
            procs.append(_start([f"--address={address}", f"--num-cpus={cpus_per_node}"], log, auth))
        while _alive_nodes(address, auth) < nodes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(
                    f"Ray workers did not join; see {log}:\n{log.read_text()[-3000:]}"
                )
            time.sleep(1)
        yield RayCluster(address, auth)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        # a node process that left the group (Ray daemonizes some) goes by its temp dir
        for leftover in psutil.process_iter(["cmdline"]):
            if str(temp_dir) in " ".join(leftover.info["cmdline"] or []):
                leftover.kill()
