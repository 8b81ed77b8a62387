"""Build a real Feast store (offline Parquet + registry + online rows) the way the assets do."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from spam_assets.lib.reputation import TIMESTAMP, reputation_tables
from spam_serving.feature_repo.repo import feast_objects, offline_path
from spam_serving.feature_store import feature_store
from spam_serving.parsing import ParsedMessage, parse_message
from spam_serving.settings import SpamSettings


def message_frame(messages: list[ParsedMessage], labels: list[int], split: str = "train"):
    """The columns ``reputation_tables`` reads, from parsed messages."""
    return pd.DataFrame(
        {
            "message_id": [f"m{i:05d}" for i in range(len(messages))],
            "label": labels,
            "split": split,
            "sender": [m.sender for m in messages],
            "sender_domain": [m.sender_domain for m in messages],
            "received_at": pd.to_datetime([m.received_at for m in messages], utc=True),
            "sent_at": pd.to_datetime([m.sent_at for m in messages], utc=True),
        }
    )


def sample_frame(sample: list[tuple[str, int, bytes]]) -> tuple[list[ParsedMessage], pd.DataFrame]:
    messages = [parse_message(raw) for _, _, raw in sample]
    return messages, message_frame(messages, [label for _, label, _ in sample])


def build_store(settings: SpamSettings, frame: pd.DataFrame, kind: str | None = None):
    """Offline tables -> apply -> full materialization; returns (store, tables)."""
    offline = settings.feast_dir / "offline"
    offline.mkdir(parents=True, exist_ok=True)
    tables = reputation_tables(frame)
    for view, table in tables.items():
        table.to_parquet(offline_path(offline, view), index=False)
    store = feature_store(settings, kind)
    store.apply(feast_objects(offline))
    start = min(t[TIMESTAMP].min() for t in tables.values()).to_pydatetime()
    store.materialize(start_date=start, end_date=datetime.now(UTC))
    return store, tables
