"""Serve a Bento on 127.0.0.1: hot swap or (re)start, direct or as a canary, smoke-tested, the
previous deployment restored on failure. Plain Python; the ``local_deployment`` asset only
checks the target, moves the MLflow alias and shapes metadata.

A running server of the same service code keeps running and hot-swaps the model (no dropped
requests); different code, a dead server or ``restart`` starts a new process. The alias file
is written before the server is touched and restored on any failure, so the previous model
keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from spam_assets.lib.local_server import (
    ServerError,
    pid_alive,
    port_in_use,
    smoke_test,
    start_server,
    stop_server,
    wait_for_version,
    wait_ready,
)
from spam_serving.model_store import read_aliases, read_canary, write_aliases

STATE_FILE = "local_deployment.json"
STRATEGIES = ("direct", "canary")


def local_state(state_dir: Path) -> dict:
    """The last successful local deployment (the CLI summary, the canary judge)."""
    path = Path(state_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_state(state_dir: Path, state: dict) -> None:
    (Path(state_dir) / STATE_FILE).write_text(json.dumps(state, indent=2))


@dataclass(frozen=True)
class LocalTarget:
    """Where and how the local server runs (from the serving settings)."""

    host: str
    port: int
    url: str
    state_dir: Path
    alias_file: Path
    env: dict[str, str]
    startup_timeout_s: float
    api_key: str

    @property
    def log_file(self) -> Path:
        return self.state_dir / "bento.log"


@dataclass(frozen=True)
class LocalDeployment:
    """What a deployment did: the state it recorded, how, and its smoke answer."""

    state: dict
    mode: str
    ready_s: float
    smoke: dict
    canary: dict = field(default_factory=dict)


class DeploymentFailed(Exception):
    """The new model is not serving; the previous one is (aliases restored)."""


def deploy_local(
    bento: dict,
    target: LocalTarget,
    *,
    strategy: str,
    restart: bool,
    canary_fraction: float,
    log: Callable[[str], None],
) -> LocalDeployment:
    """Serve ``bento``'s model under both aliases (``direct``), or as the challenger taking
    ``canary_fraction`` of production while the champion stays (``canary``, when a different
    champion is serving); smoke-test every alias; record and return the state."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
    state = local_state(target.state_dir)
    version = str(bento["model_version"])
    entry = {"model_tag": bento["model_tag"], "model_version": version}
    previous_aliases = read_aliases(target.alias_file)
    previous_canary = read_canary(target.alias_file)
    running = bool(state) and pid_alive(state["pid"]) and state.get("port") == target.port
    hot_swap = running and not restart and state.get("code_hash") == bento["code_hash"]
    champion = previous_aliases.get("champion")
    canary = (
        strategy == "canary"
        and champion is not None
        and str(champion.get("model_version")) != version
    )
    if canary:
        canary_state = {
            "version": version,
            "champion_version": str(champion.get("model_version")),
            "fraction": canary_fraction,
            "started_at": datetime.now(UTC).isoformat(),
        }
        write_aliases(target.alias_file, {"champion": champion, "challenger": entry}, canary_state)
    else:
        canary_state = {}
        write_aliases(target.alias_file, {"champion": entry, "challenger": entry})
    try:
        if hot_swap:
            mode, ready_s, pid = ("canary" if canary else "hot-swap"), 0.0, state["pid"]
            log(f"server pid {pid} runs the same code; swapping the model")
            wait_for_version(
                target.url, target.api_key, version, "staging" if canary else "production"
            )
        else:
            mode, ready_s, pid = _start(bento, target, state, running, log)
        if canary:
            smoke = smoke_test(target.url, target.api_key, version, "staging")
            versions = (str(champion.get("model_version")), version)
            smoke_test(target.url, target.api_key, versions, "production")
        else:
            smoke = smoke_test(target.url, target.api_key, version, "production")
            smoke_test(target.url, target.api_key, version, "staging")
    except ServerError as exc:
        if previous_aliases:
            write_aliases(target.alias_file, previous_aliases, previous_canary)
        if running and not hot_swap and not pid_alive(state["pid"]):
            _restart_previous(target, state, log)
        raise DeploymentFailed(str(exc)) from exc

    new_state = {
        "pid": pid,
        "port": target.port,
        "url": target.url,
        "bento_tag": bento["bento_tag"] if not hot_swap else state["bento_tag"],
        "code_hash": bento["code_hash"],
        "model_version": canary_state.get("champion_version", version),
        "canary": canary_state,
        "deployed_at": datetime.now(UTC).isoformat(),
    }
    write_state(target.state_dir, new_state)
    return LocalDeployment(new_state, mode, ready_s, smoke, canary_state)


def _start(
    bento: dict, target: LocalTarget, state: dict, running: bool, log: Callable[[str], None]
) -> tuple[str, float, int]:
    """Stop the running server (if any) and start ``bento``: (mode, seconds to ready, pid)."""
    if running:
        log(f"stopping server pid {state['pid']} ({state['bento_tag']})")
        stop_server(state["pid"])
    elif port_in_use(target.host, target.port):
        raise ServerError(
            f"port {target.port} is in use by a process this deployment did not start; "
            "stop it or set SPAM_SERVE_PORT"
        )
    server = start_server(bento["bento_tag"], target.host, target.port, target.env, target.log_file)
    try:
        ready_s = wait_ready(server, target.startup_timeout_s)
    except ServerError:
        stop_server(server.pid)
        raise
    return ("restart" if running else "start"), ready_s, server.pid


def _restart_previous(target: LocalTarget, state: dict, log: Callable[[str], None]) -> None:
    """Best effort: bring the previous Bento back on the port after a failed replacement."""
    try:
        server = start_server(
            state["bento_tag"], target.host, target.port, target.env, target.log_file
        )
        wait_ready(server, target.startup_timeout_s)
        write_state(target.state_dir, {**state, "pid": server.pid})
        log(f"previous deployment {state['bento_tag']} restarted")
    except ServerError as exc:
        log(f"could not restart the previous deployment: {exc}")
