"""Offline reputation tables and the point-in-time join that feeds training.

Each table row is an entity's state *after* a labelled message, stamped with that message's
delivery time. Training asks for every message's features at its own time minus one
microsecond, so Feast's point-in-time join (latest row with ``event_timestamp <= asked time``)
returns the state from strictly earlier messages: a message never sees its own label, nor any
later one. Messages delivered in the same instant by the same entity collapse to one row (the
state after all of them), so none of them sees the others either.

Only labels the training side may know feed the tables: train, validation and feedback rows;
test labels never do (they are the evaluation).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from spam_assets.lib.splits import event_time
from spam_serving.parsing import ParsedMessage
from spam_serving.reputation import (
    ADDRESS_ENTITY,
    ADDRESS_FIELDS,
    ADDRESS_VIEW,
    DOMAIN_ENTITY,
    DOMAIN_FIELDS,
    DOMAIN_VIEW,
    address_key,
    domain_key,
    message_time,
    reputation_matrix,
)

TIMESTAMP = "event_timestamp"
#: what :func:`labelled_events` reads of a split table
EVENT_COLUMNS = (
    "sender_domain",
    "sender",
    "received_at",
    "sent_at",
    "label",
    "message_id",
    "split",
)
#: Asking "just before the message" keeps the message's own label out of its features.
JUST_BEFORE = timedelta(microseconds=1)


def labelled_events(df: pd.DataFrame) -> pd.DataFrame:
    """Messages whose label may feed reputation, with entity keys and delivery time."""
    known = df[df["split"] != "test"] if "split" in df.columns else df
    out = pd.DataFrame(
        {
            DOMAIN_ENTITY: known["sender_domain"].map(domain_key),
            ADDRESS_ENTITY: known["sender"].map(address_key),
            TIMESTAMP: event_time(known),
            "label": known["label"].astype("int64"),
            "message_id": known["message_id"],
        }
    )
    return out[out[TIMESTAMP].notna()].sort_values([TIMESTAMP, "message_id"], kind="stable")


def _cumulative(events: pd.DataFrame, key: str) -> pd.DataFrame:
    ev = events[events[key].notna()]
    g = ev.groupby(key, sort=False)
    out = pd.DataFrame(
        {
            key: ev[key],
            TIMESTAMP: ev[TIMESTAMP],
            "messages": g.cumcount().astype("int64") + 1,
            "spam": g["label"].cumsum().astype("int64"),
            "first_seen": g[TIMESTAMP].cummin(),
        }
    )
    out["spam_rate"] = ((out["spam"] + 1.0) / (out["messages"] + 2.0)).astype("float64")
    out["first_seen"] = (out["first_seen"].astype("int64") // 10**9).astype("int64")
    if key == DOMAIN_ENTITY:
        new_sender = ~ev.duplicated([key, ADDRESS_ENTITY]) & ev[ADDRESS_ENTITY].notna()
        out["senders"] = new_sender.astype("int64").groupby(ev[key], sort=False).cumsum()
    # one row per (entity, instant): the state after every message of that instant
    return out.drop_duplicates([key, TIMESTAMP], keep="last").reset_index(drop=True)


def reputation_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{view name: offline table}`` from split (or feedback) rows; see module docstring."""
    events = labelled_events(df)
    domain = _cumulative(events, DOMAIN_ENTITY)
    address = _cumulative(events, ADDRESS_ENTITY)
    return {
        DOMAIN_VIEW: domain[[DOMAIN_ENTITY, TIMESTAMP, *DOMAIN_FIELDS]],
        ADDRESS_VIEW: address[[ADDRESS_ENTITY, TIMESTAMP, *ADDRESS_FIELDS]],
    }


def entity_frame(messages: list[ParsedMessage]) -> pd.DataFrame:
    """Feast entity dataframe: keys and "just before delivery" per message (row order kept)."""
    times = pd.to_datetime([message_time(m) for m in messages], utc=True)
    return pd.DataFrame(
        {
            DOMAIN_ENTITY: [domain_key(m.sender_domain) or "" for m in messages],
            ADDRESS_ENTITY: [address_key(m.sender) or "" for m in messages],
            TIMESTAMP: times - pd.Timedelta(JUST_BEFORE),
        }
    )


def historical_reputation(store, messages: list[ParsedMessage]) -> np.ndarray:
    """Point-in-time ``rep:*`` columns for training, through ``get_historical_features``.

    One query per view, on distinct (key, time) pairs, mapped back to the messages: Feast's
    file (dask) offline store collapses entity rows with the same key and time, and drops an
    entity row whose key only has *later* rows instead of returning nulls; a pair missing
    from the answer therefore means "no earlier state", which is exactly unknown. Messages
    without a delivery time cannot be placed on the timeline and are unknown too."""
    frame = entity_frame(messages)
    domains = _point_in_time(store, frame, DOMAIN_ENTITY, DOMAIN_VIEW, DOMAIN_FIELDS)
    addresses = _point_in_time(store, frame, ADDRESS_ENTITY, ADDRESS_VIEW, ADDRESS_FIELDS)
    return reputation_matrix(messages, domains, addresses)


def _point_in_time(
    store, frame: pd.DataFrame, key: str, view: str, fields: tuple[str, ...]
) -> list[dict | None]:
    placed = frame[(frame[key] != "") & frame[TIMESTAMP].notna()]
    asked = placed[[key, TIMESTAMP]].drop_duplicates()
    if asked.empty:
        return [None] * len(frame)
    joined = store.get_historical_features(
        entity_df=asked.reset_index(drop=True),
        features=[f"{view}:{f}" for f in fields],
        full_feature_names=True,
    ).to_df()
    found = {
        (rec[key], pd.Timestamp(rec[TIMESTAMP]).value): _fields(rec, view, fields)
        for rec in joined.to_dict("records")
    }
    return [
        None if pd.isna(ts) else found.get((k, pd.Timestamp(ts).value))
        for k, ts in zip(frame[key], frame[TIMESTAMP], strict=True)
    ]


def _fields(rec: dict, view: str, fields: tuple[str, ...]) -> dict | None:
    values = {f: rec.get(f"{view}__{f}") for f in fields}
    messages = values.get("messages")
    if messages is None or pd.isna(messages):
        return None
    return {k: (None if v is None or pd.isna(v) else v) for k, v in values.items()}
