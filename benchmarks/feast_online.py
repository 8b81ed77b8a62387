"""``make bench-feast``: online sender-reputation read latency on loopback, side by side.

All on the real corpus's reputation tables, materialized into the real Redis (127.0.0.1:6379,
db 2, a project of its own, removed afterwards) and into SQLite, in one run:

* ours: ``OnlineReputation.lookup`` (Feast async SDK, the time budget, unknown-sender fill),
  what the service calls per request / per batch;
* Feast's synchronous ``get_online_features`` on the same store (the usual SDK call);
* the same sync call on the SQLite online store (the embedded default);
* the floor: one raw redis-py ``HGETALL`` pipeline for the same Feast keys (no Feast code on
  the read; keys built with Feast's own encoder), i.e. the Redis round trip itself.

Each cell: single lookups (one sender) and batches of 100 senders, N timed calls after warm-up.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.common import machine, raw_table, split_table, write_report
from spam_assets.lib.reputation import TIMESTAMP, reputation_tables
from spam_serving.feature_repo.repo import feast_objects, offline_path
from spam_serving.feature_store import OnlineReputation, entity_rows, feature_store
from spam_serving.parsing import from_record
from spam_serving.reputation import ADDRESS_ENTITY, DOMAIN_ENTITY, FEATURE_REFS
from spam_serving.settings import get_settings

REDIS_DB = 2
N_SINGLE = 3000
N_BATCH = 300
TARGET_P99_MS = 2.0


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _time(fn, calls: list) -> tuple[float, float]:
    for args in calls[:50]:
        fn(*args)
    out = []
    for args in calls:
        start = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - start)
    return _percentiles(out)


def _time_async(loop: asyncio.Runner, fn, calls: list) -> tuple[float, float]:
    async def run() -> list[float]:
        for args in calls[:50]:
            await fn(*args)
        out = []
        for args in calls:
            start = time.perf_counter()
            await fn(*args)
            out.append(time.perf_counter() - start)
        return out

    return _percentiles(loop.run(run()))


def measure(rows, ours, sdk, raw, redis_store, sqlite_store, singles, batches) -> None:
    """Every implementation on the same calls, in one process, one after another."""
    with asyncio.Runner() as loop:
        loop.run(ours.warm_up())
        for name, per in (("single", singles), ("batch of 100", batches)):
            rows.setdefault(name, {})
            rows[name]["ours: OnlineReputation.lookup (Feast async, Redis)"] = _time_async(
                loop, ours.lookup, per
            )
            rows[name]["Feast sync get_online_features (Redis)"] = _time(
                lambda m: sdk(redis_store, m), per
            )
            rows[name]["Feast sync get_online_features (SQLite)"] = _time(
                lambda m: sdk(sqlite_store, m), per
            )
            rows[name]["floor: raw redis-py HGETALL pipeline"] = _time(raw, per)


def main() -> None:
    splits = split_table(raw_table())
    messages = [from_record(r) for r in splits.to_dict("records")]
    rng = np.random.default_rng(0)
    singles = [[[messages[i]]] for i in rng.integers(0, len(messages), N_SINGLE)]
    batches = [[[messages[i] for i in rng.integers(0, len(messages), 100)]] for _ in range(N_BATCH)]
    project = f"bench{uuid.uuid4().hex[:8]}"
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = get_settings().model_copy(
            update={
                "home": Path(tmp),
                "feast_project": project,
                "feast_redis": f"127.0.0.1:6379,db={REDIS_DB}",
            }
        )
        offline = base.feast_dir / "offline"
        offline.mkdir(parents=True)
        tables = reputation_tables(splits)
        for view, table in tables.items():
            table.to_parquet(offline_path(offline, view), index=False)
        start = min(t[TIMESTAMP].min() for t in tables.values()).to_pydatetime()
        stores = {}
        for kind in ("redis", "sqlite"):
            s = base.model_copy(update={"feast_online_store": kind})
            store = feature_store(s)
            store.apply(feast_objects(offline))
            store.materialize(start_date=start, end_date=datetime.now(UTC))
            stores[kind] = (s, store)
        n_entities = sum(t.iloc[:, 0].nunique() for t in tables.values())

        def sdk(store, msgs):
            domains, addresses = entity_rows(msgs)
            store.get_online_features(
                features=list(FEATURE_REFS),
                entity_rows=[
                    {DOMAIN_ENTITY: d or "", ADDRESS_ENTITY: a or ""}
                    for d, a in zip(domains, addresses, strict=True)
                ],
                full_feature_names=True,
            ).to_dict()

        # the floor: Feast's key encoding, then a bare pipelined HGETALL per key
        import redis
        from feast.infra.online_stores.helpers import _redis_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)

        def raw(msgs):
            domains, addresses = entity_rows(msgs)
            pipe = client.pipeline(transaction=False)
            for key, value in [(DOMAIN_ENTITY, d) for d in domains] + [
                (ADDRESS_ENTITY, a) for a in addresses
            ]:
                ek = EntityKey(join_keys=[key], entity_values=[Value(string_val=value or "")])
                pipe.hgetall(_redis_key(project, ek, 3))
            pipe.execute()

        redis_settings, redis_store = stores["redis"]
        ours = OnlineReputation(redis_settings)
        try:
            measure(rows, ours, sdk, raw, redis_store, stores["sqlite"][1], singles, batches)
        finally:  # the bench's project never stays in Redis
            keys = list(client.scan_iter(match=f"*{project}"))
            if keys:
                client.delete(*keys)
            client.close()

    floor = {k: v["floor: raw redis-py HGETALL pipeline"] for k, v in rows.items()}
    lines = []
    for name, cells in rows.items():
        for impl, (p50, p99) in cells.items():
            f50, f99 = floor[name]
            lines.append(
                f"| {name} | {impl} | {p50:.3f} | {p99:.3f} | {p50 / f50:.2f}x | {p99 / f99:.2f}x |"
            )
    ours_single_p99 = rows["single"]["ours: OnlineReputation.lookup (Feast async, Redis)"][1]
    verdict = "met" if ours_single_p99 < TARGET_P99_MS else "NOT met"
    report = f"""# Online feature read benchmark ({time.strftime("%Y-%m-%d")})

Machine: {machine()}. Redis 127.0.0.1:6379 (loopback), db {REDIS_DB}; SQLite on local disk.
Reputation of the real corpus: {n_entities} entities (sender domains + addresses) materialized.
{N_SINGLE} single lookups and {N_BATCH} batches of 100 senders (random corpus messages, so
some senders are unknown), timed one after another after 50 warm-up calls.

| call | implementation | p50 ms | p99 ms | p50 vs floor | p99 vs floor |
|---|---|---|---|---|---|
{chr(10).join(lines)}

Target: p99 < {TARGET_P99_MS} ms for one lookup on loopback (ours): {ours_single_p99:.3f} ms,
**{verdict}**.
"""
    write_report("feast", report)


if __name__ == "__main__":
    main()
