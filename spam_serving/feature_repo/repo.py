"""Feast objects: entities ``sender_domain``/``sender_address`` and their reputation views.

The ``feast_registry`` asset applies :func:`feast_objects` through the Python SDK. The module
also exposes the objects at top level so that ``feast -c spam_serving/feature_repo apply``
registers the same thing from the CLI (paths from the same settings).

Views have no ``ttl`` (``timedelta(0)``): reputation is cumulative state, valid until replaced,
so neither the point-in-time join nor online reads should drop it by age. Idle senders leave
the online store through Redis's own key expiry (``key_ttl_seconds`` in feature_store.yaml).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

from spam_serving.reputation import ADDRESS_ENTITY, ADDRESS_VIEW, DOMAIN_ENTITY, DOMAIN_VIEW
from spam_serving.settings import get_settings

TIMESTAMP = "event_timestamp"


def offline_path(offline_dir: str | Path, view: str) -> str:
    """Where the ``sender_reputation`` asset writes a view's table (a FileSource path)."""
    return str(Path(offline_dir) / f"{view}.parquet")


def _view(
    name: str, entity: Entity, schema: list, offline_dir: str | Path, description: str
) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=timedelta(0),
        schema=schema,
        source=FileSource(
            name=f"{name}_source",
            path=offline_path(offline_dir, name),
            timestamp_field=TIMESTAMP,
        ),
        online=True,
        description=description,
    )


def feast_objects(offline_dir: str | Path) -> list:
    """Entities and feature views over the offline tables in ``offline_dir``."""
    domain = Entity(
        name=DOMAIN_ENTITY,
        join_keys=[DOMAIN_ENTITY],
        value_type=ValueType.STRING,
        description="Registrable domain of the From address (lower case).",
    )
    address = Entity(
        name=ADDRESS_ENTITY,
        join_keys=[ADDRESS_ENTITY],
        value_type=ValueType.STRING,
        description="From address (lower case).",
    )
    counts = [
        Field(name="messages", dtype=Int64, description="labelled messages so far"),
        Field(name="spam_rate", dtype=Float64, description="(spam + 1) / (messages + 2)"),
    ]
    domain_view = _view(
        DOMAIN_VIEW,
        domain,
        [
            *counts,
            Field(name="first_seen", dtype=Int64, description="first message, epoch seconds"),
            Field(name="senders", dtype=Int64, description="distinct From addresses so far"),
        ],
        offline_dir,
        "Sender-domain reputation from labelled mail, state after each message.",
    )
    address_view = _view(
        ADDRESS_VIEW,
        address,
        counts,
        offline_dir,
        "Sender-address reputation from labelled mail, state after each message.",
    )
    return [domain, address, domain_view, address_view]


# for the Feast CLI (`feast apply` scans this module for objects)
domain_entity, address_entity, domain_reputation, address_reputation = feast_objects(
    get_settings().feast_dir / "offline"
)
