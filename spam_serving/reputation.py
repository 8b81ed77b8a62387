"""Sender reputation: what the store holds per sender, and how it becomes model features.

The Feast feature views (``spam_serving/feature_repo``) hold *raw* per-entity state after each
labelled message: message count, add-one smoothed spam rate, first-seen time, distinct senders.
:func:`reputation_matrix` turns those raw values into the model's ``rep:*`` columns, and both
sides call it: training with the point-in-time rows of ``get_historical_features``, serving with
the rows of ``get_online_features``. One conversion is what keeps the two identical.

An entity the store does not know (a first message, an invalid key, or the store being down)
gets :data:`UNKNOWN`: exactly what a domain with no history looks like at training time, so a
degraded answer is a message-only answer the model has seen during training.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np

from spam_serving.parsing import ParsedMessage

#: Feast objects (names shared by the feature repo, the assets and the service).
DOMAIN_ENTITY = "sender_domain"
ADDRESS_ENTITY = "sender_address"
DOMAIN_VIEW = "domain_reputation"
ADDRESS_VIEW = "address_reputation"
DOMAIN_FIELDS = ("messages", "spam_rate", "first_seen", "senders")
ADDRESS_FIELDS = ("messages", "spam_rate")
FEATURE_REFS: tuple[str, ...] = tuple(f"{DOMAIN_VIEW}:{f}" for f in DOMAIN_FIELDS) + tuple(
    f"{ADDRESS_VIEW}:{f}" for f in ADDRESS_FIELDS
)

#: Model columns, in order (the featurizer prefixes them with ``rep:``).
REPUTATION_FEATURES: tuple[str, ...] = (
    "domain_messages",
    "domain_spam_rate",
    "domain_age_days",
    "domain_senders",
    "sender_messages",
    "sender_spam_rate",
)
#: Add-one smoothing: a sender with no labelled history sits at 0.5, not at an extreme.
UNKNOWN = np.array([0.0, 0.5, 0.0, 0.0, 0.0, 0.5], dtype=np.float32)

_MAX_DOMAIN = 253
_MAX_ADDRESS = 320
_BAD_KEY_RE = re.compile(r"[\s\x00-\x1f\x7f]")


def smoothed_rate(spam: float, messages: float) -> float:
    """Add-one (Laplace) smoothed spam rate."""
    return (spam + 1.0) / (messages + 2.0)


def _valid_key(value: object, max_len: int) -> str | None:
    if not isinstance(value, str):
        return None
    key = value.strip().lower()
    if not key or len(key) > max_len or _BAD_KEY_RE.search(key):
        return None
    return key


def domain_key(value: object) -> str | None:
    """Normalised ``sender_domain`` entity key, or None for one that cannot be a domain."""
    return _valid_key(value, _MAX_DOMAIN)


def address_key(value: object) -> str | None:
    """Normalised ``sender_address`` entity key (needs an ``@``), or None."""
    key = _valid_key(value, _MAX_ADDRESS)
    return key if key and "@" in key else None


def message_time(msg: ParsedMessage) -> datetime | None:
    """When the message arrived: delivery (Received) time, falling back to the Date header.

    The same clock the time split runs on; a spammer controls Date, not the receiving relay.
    """
    return msg.received_at or msg.sent_at


def _number(value: object) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _history(values: Mapping[str, object] | None) -> tuple[float, float] | None:
    """(messages, spam rate) of an entity with labelled history, else None."""
    if values is None:
        return None
    messages = _number(values.get("messages"))
    if messages is None or messages <= 0:
        return None
    rate = _number(values.get("spam_rate"))
    return messages, 0.5 if rate is None else rate


def reputation_row(
    domain: Mapping[str, object] | None,
    address: Mapping[str, object] | None,
    at: datetime | None,
) -> np.ndarray:
    """Raw store values (None: entity unknown) -> the ``rep:*`` columns of one message."""
    row = UNKNOWN.copy()
    known = _history(domain)
    if known is not None:
        row[0], row[1] = known
        first_seen = _number(domain.get("first_seen"))
        if first_seen is not None and at is not None:
            row[2] = max(0.0, (at.timestamp() - first_seen) / 86400.0)
        row[3] = _number(domain.get("senders")) or 0.0
    known = _history(address)
    if known is not None:
        row[4], row[5] = known
    return row


def reputation_matrix(
    messages: Sequence[ParsedMessage],
    domains: Sequence[Mapping[str, object] | None],
    addresses: Sequence[Mapping[str, object] | None],
    times: Sequence[datetime | None] | None = None,
) -> np.ndarray:
    """``[N, len(REPUTATION_FEATURES)]`` float32: one row per message, ages at message time."""
    if not (len(messages) == len(domains) == len(addresses)):
        raise ValueError("one domain and one address row per message")
    at = times if times is not None else [message_time(m) for m in messages]
    out = np.empty((len(messages), len(REPUTATION_FEATURES)), dtype=np.float32)
    for i, (d, a, t) in enumerate(zip(domains, addresses, at, strict=True)):
        out[i] = reputation_row(d, a, t)
    return out


def unknown_matrix(n: int) -> np.ndarray:
    """Message-only answer: every sender unknown (the degraded path)."""
    return np.tile(UNKNOWN, (n, 1))
