"""The Feast store from settings, and the online reputation lookup the service makes.

``feature_repo/feature_store*.yaml`` is the per-target configuration; its ``${SPAM_*}``
placeholders are filled from :class:`SpamSettings` here, so the one settings object stays the
only place values live. Feast is imported lazily: a worker serving a model without reputation
features never pays its import.

The lookup is one ``get_online_features_async`` round trip per request (or per batch), bounded
by ``reputation_timeout_ms``. Any failure or timeout answers with the unknown-sender values and
a reason; the service marks such answers degraded. After a failure the store is left alone for
``reputation_retry_after_s`` so a dead Redis costs nothing per request.

Importing Feast takes ~7.5 s of CPU here, so the store is built (and one lookup made, which
opens the async Redis connection) by :meth:`OnlineReputation.warm_up` off the event loop at
worker start; until then lookups answer degraded (``starting``) instead of blocking requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import string
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from spam_serving.parsing import ParsedMessage
from spam_serving.reputation import (
    ADDRESS_ENTITY,
    ADDRESS_FIELDS,
    ADDRESS_VIEW,
    DOMAIN_ENTITY,
    DOMAIN_FIELDS,
    DOMAIN_VIEW,
    FEATURE_REFS,
    address_key,
    domain_key,
    reputation_matrix,
    unknown_matrix,
)
from spam_serving.settings import SpamSettings

logger = logging.getLogger(__name__)
REPO_DIR = Path(__file__).parent / "feature_repo"
YAML_FILES = {
    "sqlite": REPO_DIR / "feature_store.yaml",
    "redis": REPO_DIR / "feature_store.redis.yaml",
    "azure": REPO_DIR / "feature_store.azure.yaml",
}
#: Which online store the last ``feast_registry`` materialization chose (read by the service).
CHOICE_FILE = "online_store.json"


def redis_answers(connection: str, timeout_s: float = 0.5) -> bool:
    """True when something speaking Redis answers PING at the connection string's host:port."""
    host, _, port = connection.split(",", 1)[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except (OSError, ValueError):
        return False


def online_store_kind(settings: SpamSettings, resolve: bool = False) -> str:
    """``sqlite``, ``redis`` or (``SPAM_TARGET=azure``) ``azure``. ``auto`` is resolved by the
    materializing side (``resolve``), recorded under ``feast_dir``, and read back by the
    service, so both use the same store."""
    if settings.target == "azure":
        return "azure"
    if settings.feast_online_store != "auto":
        return settings.feast_online_store
    choice = settings.feast_dir / CHOICE_FILE
    if not resolve and choice.is_file():
        return json.loads(choice.read_text())["online_store"]
    kind = "redis" if redis_answers(settings.feast_redis) else "sqlite"
    if resolve:
        choice.parent.mkdir(parents=True, exist_ok=True)
        choice.write_text(json.dumps({"online_store": kind}))
    return kind


def _redis_connection(settings: SpamSettings) -> str:
    """The connection string with our timeouts unless it sets its own."""
    conn = settings.feast_redis
    timeout = f"{settings.reputation_timeout_ms / 1000.0:g}"
    for param in ("socket_timeout", "socket_connect_timeout"):
        if f"{param}=" not in conn:
            conn += f",{param}={timeout}"
    return conn


def template_values(settings: SpamSettings) -> dict[str, str]:
    """``SPAM_*`` placeholder -> value for the feature_store yaml files."""
    registry = settings.feast_registry or str(settings.feast_dir / "registry.db")
    return {
        "SPAM_FEAST_PROJECT": settings.feast_project,
        "SPAM_FEAST_REGISTRY": registry,
        "SPAM_FEAST_REGISTRY_CACHE_TTL_S": str(settings.feast_registry_cache_ttl_s),
        "SPAM_FEAST_SQLITE_PATH": str(settings.feast_dir / "online.db"),
        "SPAM_FEAST_REDIS": _redis_connection(settings),
        "SPAM_FEAST_KEY_TTL_SECONDS": str(settings.feast_key_ttl_seconds),
    }


def repo_config(settings: SpamSettings, kind: str | None = None):
    """Feast ``RepoConfig`` for ``kind`` (sqlite, redis or azure; default: the resolved one)."""
    from feast.repo_config import RepoConfig

    kind = kind or online_store_kind(settings)
    text = string.Template(YAML_FILES[kind].read_text()).substitute(template_values(settings))
    raw = yaml.safe_load(text)
    if kind != "azure":  # azure: registry in PostgreSQL, nothing local to create
        settings.feast_dir.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(**raw)
    config.repo_path = REPO_DIR
    return config


def feature_store(settings: SpamSettings, kind: str | None = None):
    """A Feast ``FeatureStore`` for these settings."""
    from feast import FeatureStore

    return FeatureStore(config=repo_config(settings, kind))


def entity_rows(messages: Sequence[ParsedMessage]) -> tuple[list, list]:
    """Normalised (domain, address) keys per message; None where the key is not valid."""
    return (
        [domain_key(m.sender_domain) for m in messages],
        [address_key(m.sender) for m in messages],
    )


def _rows_by_entity(response: dict, view: str, fields: tuple[str, ...], n: int) -> list:
    out: list[dict | None] = []
    for i in range(n):
        values = {f: response[f"{view}__{f}"][i] for f in fields}
        out.append(None if values["messages"] is None else values)
    return out


class OnlineReputation:
    """Per-worker online reputation lookup with a time budget and a back-off after failures."""

    def __init__(self, settings: SpamSettings) -> None:
        self.settings = settings
        self.timeout_s = settings.reputation_timeout_ms / 1000.0
        self.retry_after_s = settings.reputation_retry_after_s
        self._store = None
        self._down_until = 0.0
        self._building: asyncio.Task | None = None
        #: True once a warm-up finished (successfully or not): the service's readiness
        self.started = False

    @property
    def store(self):
        """The Feast store; building it is slow (imports Feast), never do it on the loop."""
        if self._store is None:
            self._store = feature_store(self.settings)
        return self._store

    async def warm_up(self, budget_s: float = 30.0) -> None:
        """Build the store in a thread and make one lookup with a generous budget."""
        import anyio

        try:
            await anyio.to_thread.run_sync(lambda: self.store)
            probe = ParsedMessage(sender="warm-up@example.invalid", sender_domain="example.invalid")
            await self._read(*entity_rows([probe]), [0], timeout_s=budget_s)
        except Exception:
            logger.exception("feature store warm-up failed; lookups degrade until it answers")
        finally:
            self.started = True
            self._building = None

    async def lookup(self, messages: Sequence[ParsedMessage]) -> tuple[np.ndarray, str | None]:
        """``rep:*`` rows for the messages and None, or unknown-sender rows and why:
        ``timeout``, ``error`` (the store failed) or ``backoff`` (it failed moments ago)."""
        n = len(messages)
        if self._store is None:  # not built yet: build in the background, answer now
            if self._building is None:
                self._building = asyncio.get_running_loop().create_task(self.warm_up())
            return unknown_matrix(n), "starting"
        if time.monotonic() < self._down_until:
            return unknown_matrix(n), "backoff"
        domains, addresses = entity_rows(messages)
        wanted = [i for i in range(n) if domains[i] is not None or addresses[i] is not None]
        dom_rows: list[dict | None] = [None] * n
        addr_rows: list[dict | None] = [None] * n
        if wanted:
            try:
                response = await self._read(domains, addresses, wanted)
            except Exception as exc:  # any store failure degrades, never fails the request
                reason = "timeout" if isinstance(exc, TimeoutError) else "error"
                self._down_until = time.monotonic() + self.retry_after_s
                logger.warning("online reputation lookup failed (%s): %r", reason, exc)
                return unknown_matrix(n), reason
            for j, i in enumerate(wanted):
                dom_rows[i] = response[0][j]
                addr_rows[i] = response[1][j]
        return reputation_matrix(messages, dom_rows, addr_rows), None

    async def _read(
        self, domains: list, addresses: list, wanted: list[int], timeout_s: float | None = None
    ) -> tuple:
        rows = [
            {DOMAIN_ENTITY: domains[i] or "", ADDRESS_ENTITY: addresses[i] or ""} for i in wanted
        ]
        response = await asyncio.wait_for(
            self.store.get_online_features_async(
                features=list(FEATURE_REFS), entity_rows=rows, full_feature_names=True
            ),
            timeout_s or self.timeout_s,
        )
        data = response.to_dict()
        return (
            _rows_by_entity(data, DOMAIN_VIEW, DOMAIN_FIELDS, len(rows)),
            _rows_by_entity(data, ADDRESS_VIEW, ADDRESS_FIELDS, len(rows)),
        )
