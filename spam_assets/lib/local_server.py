"""A ``bentoml serve`` process on 127.0.0.1: start, wait for readiness, smoke-test, stop.

Used by the ``local_deployment`` asset, the serving tests and the serving benchmark, so all
three exercise the same real process. The server runs in its own session (process group), so
it outlives the Dagster step that started it and can be stopped as a group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

SMOKE_MESSAGE = {
    "subject": "Meeting notes for Thursday",
    "body": "Hi all, the notes from today's meeting are attached. See you on Thursday.",
    "sender": "alice@example.org",
}


#: The example message of the "try it" command, field by field: a few sentences of ordinary
#: spam (a handful of words gives a filter held to a 0.2% ham budget too little evidence).
TRY_IT_FIELDS = (
    '"subject": "Lowest mortgage rates in 40 years"',
    '"sender": "offers@lowrate-refi.biz"',
    '"body": "Dear Homeowner, you are pre-approved for a low rate mortgage. No credit check. '
    'CLICK HERE: http://www.lowrate-refi.biz/apply"',
)


def try_it_command(url: str, api_keys_file: str, multiline: bool = False) -> str:
    """A curl command for the CLI summary and the UI that reads the key from its file (never
    printed); ``multiline`` breaks it with shell continuations (and the JSON between its
    fields) so a page need not scroll sideways."""
    body = "{" + (",\n      " if multiline else ", ").join(TRY_IT_FIELDS) + "}"
    parts = [
        f"curl -s {url}/predict",
        f"-H \"X-API-Key: $(grep -v '^#' {api_keys_file} | head -1)\"",
        "-H 'Content-Type: application/json'",
        f"-d '{body}'",
    ]
    return (" \\\n  " if multiline else " ").join(parts)


class ServerError(RuntimeError):
    """The server did not start, did not become ready, or failed its smoke test."""


@dataclass
class ServerProcess:
    pid: int
    url: str
    log_path: Path

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); reap it if it is ours
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def start_process(
    cmd: list[str], url: str, env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> ServerProcess:
    """Spawn a server command in its own session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=str(cwd) if cwd else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return ServerProcess(pid=proc.pid, url=url, log_path=log_path)


def start_server(
    target: str, host: str, port: int, env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> ServerProcess:
    """Spawn ``bentoml serve TARGET`` (a Bento tag or ``module:Service``)."""
    if port_in_use(host, port):
        raise ServerError(f"port {host}:{port} is already in use by another process")
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    cmd = [bentoml, "serve", target, "--host", host, "--port", str(port)]
    return start_process(cmd, f"http://{host}:{port}", env, log_path, cwd)


def wait_ready(server: ServerProcess, timeout_s: float) -> float:
    """Seconds until ``/readyz`` answered 200; raises with the log tail otherwise."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if not server.alive():
            raise ServerError(f"server exited during start-up:\n{server.log_tail()}")
        try:
            if requests.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return time.perf_counter() - start
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise ServerError(f"server not ready after {timeout_s:.0f}s:\n{server.log_tail()}")


def smoke_test(
    url: str, api_key: str, expect_version: str | tuple[str, ...], environment: str
) -> dict:
    """One real prediction; the answer must come from ``expect_version`` (or one of them:
    during a canary, production is answered by either side)."""
    expected = {expect_version} if isinstance(expect_version, str) else set(expect_version)
    resp = requests.post(
        f"{url}/predict",
        json=SMOKE_MESSAGE,
        headers={"X-API-Key": api_key, "X-Environment": environment},
        timeout=30,
    )
    if resp.status_code != 200:
        raise ServerError(f"smoke prediction ({environment}): HTTP {resp.status_code} {resp.text}")
    body = resp.json()
    if body.get("model_version") not in expected:
        raise ServerError(
            f"smoke prediction ({environment}) answered by model v{body.get('model_version')}, "
            f"expected v{expect_version}"
        )
    if body.get("label") not in ("spam", "ham"):
        raise ServerError(f"smoke prediction ({environment}): bad answer {json.dumps(body)}")
    return body


def wait_for_version(
    url: str, api_key: str, version: str, environment: str, timeout_s: float = 30.0
) -> dict:
    """After an alias move: until every worker answers with ``version`` (hot reload)."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            body = smoke_test(url, api_key, version, environment)
            seen += 1
            if seen >= 8:  # several answers in a row: every worker has swapped
                return body
            continue
        except (ServerError, requests.RequestException) as exc:
            last, seen = exc, 0
        time.sleep(0.2)
    raise ServerError(f"model v{version} not served after {timeout_s:.0f}s: {last}")


def stop_server(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the server's process group (graceful), SIGKILL after ``timeout_s``."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
