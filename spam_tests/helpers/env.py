"""A test's private environment: free ports, corpus sources, and its Redis rows."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

#: Redis db the tests' Feast projects live in (db 0 stays for `make run`).
TEST_REDIS_DB = 1


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Until ``proc`` accepts connections on 127.0.0.1:``port``; a clear error when it exits
    first or does not listen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} did not listen on {port} within {timeout:.0f} s"
                ) from None
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def set_sources(monkeypatch: pytest.MonkeyPatch, sources: list[str]) -> None:
    monkeypatch.setenv("SPAM_CORPUS_SOURCES", json.dumps(sources))


def delete_redis_project(db: int, project: str) -> int:
    """Remove a Feast project's online rows (keys end with the project name) from a db."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    keys = list(client.scan_iter(match=f"*{project}", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)
