"""A test's private environment: free ports, corpus sources, and its Redis rows."""

from __future__ import annotations

import json
import socket

import pytest

#: Redis db the tests' Feast projects live in (db 0 stays for `make run`).
TEST_REDIS_DB = 1


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
