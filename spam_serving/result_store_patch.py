"""BentoML's async-task result store without "database is locked".

BentoML 1.4 keeps ``/predict_async`` tasks in one SQLite file (``Sqlite3Store``, WAL mode,
5 s busy timeout) that every worker opens, each through one aiosqlite connection shared by
all its requests, in Python's default transaction mode: a write opens a transaction
implicitly, and concurrent requests on the same connection run their statements inside it.
When such a transaction holds a read snapshot and another worker writes, SQLite refuses the
upgrade at once (no busy wait: waiting cannot help), and the connection is stuck in that
transaction: every later call of that worker fails too. Seen in the soak (two workers, mixed
traffic): ~10% of async calls answered 500 "database is locked"; a two-process stress of the
store alone: one process failed 147,784 of 148,432 calls, the other none.

The fix: the store's connection in autocommit mode (``isolation_level=None``), so each
statement is its own transaction and SQLite's busy timeout applies; and, as a backstop, each
store method retried a few times on "database is locked" after an explicit ``ROLLBACK``.
Retrying is safe: a failed statement took effect nowhere, inserting a task uses a fresh id,
and the updates set absolute values.

And one clash: Feast's SQLite online store replaces, at import and for the whole process,
sqlite3's converter of ``TIMESTAMP`` columns with one that reads Unix epochs; BentoML's
store keeps ISO text there, so once Feast is imported (a model with sender reputation),
every task status call failed with ``ValueError`` (a 500). Each store call (re)registers a
converter that reads both, so neither library depends on who was imported last.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

METHODS = ("new_entry", "get", "get_status", "set_status", "set_result")
ATTEMPTS = 8
"""Tries per call; backoff 10 ms doubling to 0.5 s: ~1.6 s at most before the error stands."""


def install() -> None:
    """Patch the store (idempotent; a no-op if BentoML no longer has it)."""
    try:
        from _bentoml_impl.tasks.result import Sqlite3Store
    except ImportError:
        return
    if not getattr(Sqlite3Store._connect, "_autocommit", False):
        Sqlite3Store._connect = _autocommit_connect
    for name in METHODS:
        method = getattr(Sqlite3Store, name, None)
        if method is not None and not getattr(method, "_retries_locked", False):
            setattr(Sqlite3Store, name, retry_when_locked(method))


def _autocommit_connect(self: Any, db_file: str) -> Any:
    """``Sqlite3Store._connect`` as BentoML 1.4 writes it, plus ``isolation_level=None``
    (set at connect: the connection lives in aiosqlite's own thread)."""
    import aiosqlite

    return aiosqlite.connect(
        db_file,
        detect_types=sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES,
        timeout=30.0,
        isolation_level=None,
    )


_autocommit_connect._autocommit = True  # type: ignore[attr-defined]


def tolerant_timestamp(value: bytes) -> datetime.datetime:
    """A ``TIMESTAMP`` column as a datetime, whether it holds a Unix epoch (Feast's tables,
    read as Feast's converter reads them) or ISO text (sqlite3's own convention)."""
    text = value.decode()
    try:
        return datetime.datetime.fromtimestamp(int(text))
    except ValueError:
        return datetime.datetime.fromisoformat(text)


def retry_when_locked(
    method: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    """``method`` of a store with a ``_conn`` (aiosqlite), retried on "database is locked"."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        sqlite3.register_converter("timestamp", tolerant_timestamp)
        delay = 0.01
        for attempt in range(ATTEMPTS):
            try:
                return await method(self, *args, **kwargs)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == ATTEMPTS - 1:
                    raise
                with contextlib.suppress(sqlite3.Error):
                    await self._conn.execute("ROLLBACK")
                await asyncio.sleep(delay)
                delay = min(0.5, delay * 2)
        raise AssertionError("unreachable")

    wrapper._retries_locked = True  # type: ignore[attr-defined]
    return wrapper
