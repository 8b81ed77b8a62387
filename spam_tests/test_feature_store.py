"""Feast sender reputation against the real Redis at 127.0.0.1:6379 (db 1, one project per
test, keys removed afterwards): point-in-time joins, materialization, online reads, key expiry,
outage and slow-store behaviour, bad entity keys, and training/serving feature identity."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis

from spam_assets.lib.reputation import historical_reputation, reputation_tables
from spam_serving.feature_store import OnlineReputation, online_store_kind, redis_answers
from spam_serving.featurize import Featurizer, FeaturizerConfig
from spam_serving.parsing import ParsedMessage
from spam_serving.reputation import REPUTATION_FEATURES, UNKNOWN, address_key, domain_key
from spam_serving.settings import get_settings
from spam_tests.helpers.env import TEST_REDIS_DB, free_port
from spam_tests.helpers.reputation import build_store, message_frame, sample_frame

T0 = datetime(2002, 8, 1, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.redis


def msg(sender: str, at: datetime | None) -> ParsedMessage:
    domain = sender.rsplit("@", 1)[-1] if "@" in sender else ""
    return ParsedMessage(sender=sender, sender_domain=domain, received_at=at, body="x")


@pytest.fixture
def loop():
    """One event loop per test, as a service worker has (the async Redis client is bound
    to the loop that opened it)."""
    with asyncio.Runner() as runner:
        yield runner


def lookup(loop, rep: OnlineReputation, messages: list[ParsedMessage]):
    return loop.run(rep.lookup(messages))


def warm(loop, settings) -> OnlineReputation:
    rep = OnlineReputation(settings)
    loop.run(rep.warm_up())
    return rep


# ---------------------------------------------------------------- point-in-time correctness
TIMELINE = [  # (sender, delivered, label): d.com's history
    ("a@d.com", T0, 1),
    ("b@d.com", T0 + timedelta(hours=1), 0),
    ("a@d.com", T0 + timedelta(hours=1), 0),  # same instant as the one before
    ("c@d.com", T0 + timedelta(days=2), 1),
]


def test_point_in_time_join_never_sees_the_message_itself_or_the_future(spam_env, monkeypatch):
    monkeypatch.setenv("SPAM_FEAST_ONLINE_STORE", "sqlite")
    history = [msg(s, t) for s, t, _ in TIMELINE]
    frame = message_frame(history, [y for *_, y in TIMELINE])
    # a test-split message: its label is the evaluation and must not feed reputation
    frame.loc[len(frame)] = ["t0", 1, "test", "z@d.com", "d.com", T0 + timedelta(days=1), None]
    store, tables = build_store(get_settings(), frame)
    assert len(tables["domain_reputation"]) == 3  # the two messages of one instant -> one row

    asked = [*history, msg("z@d.com", T0 + timedelta(days=5)), msg("new@d.com", None)]
    rep = historical_reputation(store, asked)
    cols = {n: i for i, n in enumerate(REPUTATION_FEATURES)}
    domain_messages = rep[:, cols["domain_messages"]].tolist()
    # each sees strictly earlier labelled messages only; same-instant ones not each other
    assert domain_messages == [0, 1, 1, 3, 4, 0]
    np.testing.assert_allclose(
        rep[:, cols["domain_spam_rate"]], [0.5, 2 / 3, 2 / 3, 2 / 5, 3 / 6, 0.5], rtol=1e-6
    )
    np.testing.assert_allclose(rep[3, cols["domain_age_days"]], 2.0, rtol=1e-6)
    assert rep[3, cols["domain_senders"]] == 2  # a and b before c
    assert rep[4, cols["domain_senders"]] == 3
    # sender_address: a@d.com's second message sees its first (spam) only
    assert rep[2, cols["sender_messages"]] == 1
    np.testing.assert_allclose(rep[2, cols["sender_spam_rate"]], 2 / 3, rtol=1e-6)
    np.testing.assert_array_equal(rep[0], UNKNOWN)
    np.testing.assert_array_equal(rep[5], UNKNOWN)  # no delivery time: cannot be placed


def test_tables_hold_only_valid_keys():
    frame = message_frame(
        [msg("ok@d.com", T0), msg("", T0), msg("x y@bad domain", T0), msg("n@d.com", None)],
        [1, 0, 1, 0],
    )
    tables = reputation_tables(frame)
    assert tables["domain_reputation"]["sender_domain"].tolist() == ["d.com"]
    assert tables["address_reputation"]["sender_address"].tolist() == ["ok@d.com"]


@pytest.mark.parametrize(
    "value",
    ["", "   ", "a\x00b.com", "a b.com", "x" * 300, None, 42, "tab\t.com", "\x7f.com"],
)
def test_bad_entity_keys_are_rejected(value):
    assert domain_key(value) is None
    assert address_key(value) is None


# ---------------------------------------------------------------- online store (real Redis)
def test_auto_finds_the_real_redis_and_records_the_choice(spam_env):
    s = get_settings()
    assert redis_answers(s.feast_redis)
    assert online_store_kind(s, resolve=True) == "redis"
    assert (s.feast_dir / "online_store.json").is_file()
    assert not redis_answers(f"127.0.0.1:{free_port()}")


def test_materialized_rows_read_back_and_match_training_features(spam_env, real_sample, loop):
    s = get_settings()
    messages, frame = sample_frame(real_sample)
    store, tables = build_store(s, frame, "redis")
    r = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    keys = list(r.scan_iter(match=f"*{s.feast_project}"))
    n_entities = sum(t.iloc[:, 0].nunique() for t in tables.values())
    assert len(keys) == n_entities
    assert all(0 < r.ttl(k) <= s.feast_key_ttl_seconds for k in keys)

    # a new message from every known sender, after all events: the training path
    # (point-in-time join) and the serving path (online read) must give identical rows
    times = [m.received_at or m.sent_at for m in messages]
    later = max(t for t in times if t is not None) + timedelta(hours=1)
    probes = [
        ParsedMessage(sender=m.sender, sender_domain=m.sender_domain, received_at=later)
        for m in messages
    ]
    offline = historical_reputation(store, probes)
    online, degraded = lookup(loop, warm(loop, s), probes)
    assert degraded is None
    np.testing.assert_array_equal(offline, online)
    assert (online[:, 0] > 0).mean() > 0.9  # nearly every sender is known

    # and the whole feature row the model sees is identical too
    f = Featurizer(FeaturizerConfig(max_text_features=200, min_df=2, reputation=True))
    f.fit(messages, frame["label"].to_numpy())
    np.testing.assert_array_equal(f.transform(probes, offline), f.transform(probes, online))


def test_unknown_and_bad_keys_read_as_unknown_not_degraded(spam_env, real_sample, loop):
    s = get_settings()
    _, frame = sample_frame(real_sample[:60])
    build_store(s, frame, "redis")
    weird = [
        ParsedMessage(sender="", sender_domain=""),
        ParsedMessage(sender="nobody@never-seen.example", sender_domain="never-seen.example"),
        ParsedMessage(sender="a\x00b@x.com", sender_domain="x\x00.com"),
        ParsedMessage(sender="q@" + "y" * 400, sender_domain="y" * 400),
        ParsedMessage(sender="üser@bücher.de", sender_domain="bücher.de"),
    ]
    rows, degraded = lookup(loop, warm(loop, s), weird)
    assert degraded is None
    np.testing.assert_array_equal(rows, np.tile(UNKNOWN, (len(weird), 1)))


def test_redis_key_ttl_expires_senders(spam_env, real_sample, monkeypatch, loop):
    monkeypatch.setenv("SPAM_FEAST_KEY_TTL_SECONDS", "1")
    s = get_settings()
    messages, frame = sample_frame(real_sample[:80])
    build_store(s, frame, "redis")
    known = [m for m in messages if domain_key(m.sender_domain)][:5]
    rep = warm(loop, s)
    rows, _ = lookup(loop, rep, known)
    assert (rows[:, 0] > 0).all()
    r = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    deadline = time.monotonic() + 10
    while list(r.scan_iter(match=f"*{s.feast_project}")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(r.scan_iter(match=f"*{s.feast_project}"))  # Redis expired them itself
    rows, degraded = lookup(loop, rep, known)
    assert degraded is None
    np.testing.assert_array_equal(rows, np.tile(UNKNOWN, (len(known), 1)))


def test_redis_down_degrades_then_backs_off(spam_env, real_sample, monkeypatch, loop):
    messages, frame = sample_frame(real_sample[:60])
    build_store(get_settings(), frame, "redis")  # registry exists; then Redis "goes away"
    monkeypatch.setenv("SPAM_FEAST_REDIS", f"127.0.0.1:{free_port()},db={TEST_REDIS_DB}")
    monkeypatch.setenv("SPAM_REPUTATION_RETRY_AFTER_S", "0.5")
    rep = warm(loop, get_settings())
    assert rep.started
    rows, degraded = lookup(loop, rep, messages[:3])
    assert degraded == "error"
    np.testing.assert_array_equal(rows, np.tile(UNKNOWN, (3, 1)))
    assert lookup(loop, rep, messages[:3])[1] == "backoff"  # no connection attempt per request
    time.sleep(0.6)
    assert lookup(loop, rep, messages[:3])[1] == "error"  # tried again after the back-off


def test_slow_redis_times_out_within_the_budget(spam_env, real_sample, monkeypatch, loop):
    messages, frame = sample_frame(real_sample[:60])
    build_store(get_settings(), frame, "redis")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (kernel backlog) and never answers
    port = silent.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SPAM_FEAST_REDIS", f"127.0.0.1:{port},db={TEST_REDIS_DB}")
        monkeypatch.setenv("SPAM_REPUTATION_TIMEOUT_MS", "100")
        rep = OnlineReputation(get_settings())
        loop.run(rep.warm_up(budget_s=0.5))  # the warm-up itself gives up too
        start = time.monotonic()
        rows, degraded = lookup(loop, rep, messages[:2])
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
        for c in accepted:
            c.close()
        silent.close()
    assert degraded in ("timeout", "error")
    assert elapsed < 5.0  # bounded by the budget, not by the silent server
    np.testing.assert_array_equal(rows, np.tile(UNKNOWN, (2, 1)))


@pytest.mark.parametrize("kind", ["sqlite", "redis", "azure"])
def test_every_target_yaml_loads_into_a_feast_config(spam_env, monkeypatch, kind):
    from spam_serving.feature_store import repo_config

    if kind == "azure":  # built and checked without contacting Azure
        monkeypatch.setenv("SPAM_FEAST_REGISTRY", "postgresql+psycopg://u@db:5432/feast")
        monkeypatch.setenv("SPAM_FEAST_REDIS", "spam.redis.cache.windows.net:6380,ssl=true")
    config = repo_config(get_settings(), kind)
    assert config.project == get_settings().feast_project
    assert config.entity_key_serialization_version == 3
    assert config.online_store.type == ("sqlite" if kind == "sqlite" else "redis")
    if kind != "sqlite":
        assert config.online_store.key_ttl_seconds == get_settings().feast_key_ttl_seconds
        timeout = get_settings().reputation_timeout_ms / 1000.0
        assert f"socket_timeout={timeout:g}" in config.online_store.connection_string
    if kind == "azure":
        assert config.registry.registry_type == "sql"
