"""Feature store stage: sender reputation tables, the Feast registry, the online store.

``sender_reputation`` writes the offline tables (Parquet, the FileSources of the feature
views); ``feast_registry`` applies the entities and views through the Python SDK (what
``feast apply`` does); ``online_features`` materializes them into the online store (SQLite by
default, Redis when configured or when ``auto`` finds one). Training reads the point-in-time
join from the same store (``feature_matrices``), the service reads the online rows.
"""

import hashlib
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd

from spam_assets.defs.resources import FeastResource
from spam_assets.lib.files import write_atomic
from spam_assets.lib.reputation import EVENT_COLUMNS, TIMESTAMP, reputation_tables
from spam_assets.lib.split_store import SplitTable
from spam_serving.feature_repo.repo import feast_objects, offline_path
from spam_serving.reputation import ADDRESS_VIEW, DOMAIN_VIEW

#: The UI flags the tables as stale when nothing refreshed them for this long.
FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(days=7), warn_window=timedelta(days=1)
)


def _tables_fingerprint(offline_dir) -> str:
    h = hashlib.sha256()
    for view in (DOMAIN_VIEW, ADDRESS_VIEW):
        with open(offline_path(offline_dir, view), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


@dg.asset(
    group_name="features",
    freshness_policy=FRESHNESS,
    description="Offline sender reputation tables (per domain and per address), state after "
    "each labelled message, event time = delivery time; test labels never feed them.",
)
def sender_reputation(dataset_splits: SplitTable, feast: FeastResource) -> dg.MaterializeResult:
    tables = reputation_tables(dataset_splits.read(list(EVENT_COLUMNS)))
    offline_dir = feast.offline_dir
    metadata: dict[str, object] = {}
    for view, table in tables.items():
        path = offline_path(offline_dir, view)
        write_atomic(path, lambda tmp, t=table: t.to_parquet(tmp, index=False))
        entity = table.columns[0]
        metadata[f"{view}_rows"] = len(table)
        metadata[f"{view}_entities"] = int(table[entity].nunique())
        metadata[f"{view}_path"] = dg.MetadataValue.path(path)
    domains = tables[DOMAIN_VIEW]
    latest = domains[TIMESTAMP].max()
    top = (
        domains.drop_duplicates("sender_domain", keep="last")
        .nlargest(10, "messages")[["sender_domain", "messages", "spam_rate", "senders"]]
        .round(3)
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(len(t) for t in tables.values()),
            **metadata,
            "latest_event": dg.MetadataValue.timestamp(latest) if pd.notna(latest) else "none",
            "fingerprint": _tables_fingerprint(offline_dir),
            "top_domains": dg.MetadataValue.json(top.to_dict("records")),
        }
    )


@dg.asset(
    group_name="features",
    deps=[sender_reputation],
    description="Entities sender_domain/sender_address and their reputation feature views, "
    "applied to the Feast registry through the Python SDK (feast apply).",
)
def feast_registry(feast: FeastResource) -> dg.MaterializeResult:
    store = feast.store(resolve=True)
    objects = feast_objects(feast.offline_dir)
    store.apply(objects)
    views = [v.name for v in store.list_feature_views()]
    return dg.MaterializeResult(
        metadata={
            "project": store.project,
            "online_store": store.config.online_store.type,
            "registry": str(store.config.registry.path),
            "feature_views": ", ".join(sorted(views)),
            "entities": ", ".join(sorted(e.name for e in store.list_entities())),
            "dagster/row_count": len(views),
        }
    )


@dg.asset(
    group_name="features",
    deps=[feast_registry],
    freshness_policy=FRESHNESS,
    description="Reputation rows materialized into the online store: incremental by event "
    "time; a rebuilt offline table (new fingerprint) is materialized in full.",
)
def online_features(
    context: dg.AssetExecutionContext, feast: FeastResource
) -> dg.MaterializeResult:
    store = feast.store()
    offline_dir = feast.offline_dir
    fingerprint = _tables_fingerprint(offline_dir)
    previous = context.instance.get_latest_materialization_event(context.asset_key)
    last = previous.asset_materialization.metadata if previous else {}
    last_fingerprint = getattr(last.get("fingerprint"), "value", None)
    end = datetime.now(UTC)
    tables = {v: pd.read_parquet(offline_path(offline_dir, v)) for v in (DOMAIN_VIEW, ADDRESS_VIEW)}
    views = store.list_feature_views()
    never = any(v.most_recent_end_time is None for v in views)
    if never or fingerprint != last_fingerprint:
        times = pd.concat([t[TIMESTAMP] for t in tables.values()])
        start = times.min().to_pydatetime() if len(times) else end - timedelta(days=1)
        store.materialize(start_date=start, end_date=end)
        mode = "full"
    else:
        store.materialize_incremental(end_date=end)
        mode = "incremental"
    entities = {v: int(t.iloc[:, 0].nunique()) for v, t in tables.items()}
    latest = max((t[TIMESTAMP].max() for t in tables.values() if len(t)), default=None)
    return dg.MaterializeResult(
        metadata={
            "mode": mode,
            "online_store": store.config.online_store.type,
            "fingerprint": fingerprint,
            "materialized_until": dg.MetadataValue.timestamp(end),
            "latest_event": dg.MetadataValue.timestamp(latest) if latest is not None else "none",
            "dagster/row_count": sum(entities.values()),
            **{f"{v}_entities": n for v, n in entities.items()},
        }
    )
