"""Dagster storage: SQLite under SPAM_HOME by default, PostgreSQL (real server) when set."""

from __future__ import annotations

import mailbox

import dagster as dg
import psycopg2
import pytest
import yaml

from spam_assets.instance import InstanceConfigError, prepare_dagster_home
from spam_tests.helpers.env import set_sources
from spam_tests.helpers.pipeline import latest_metadata, run_assets

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
pytestmark = pytest.mark.postgres


def _tiny_corpus(tmp_path, monkeypatch):
    box = mailbox.mbox(str(tmp_path / "spam.mbox"))
    for i in range(3):
        box.add(f"From: a{i}@b.com\nSubject: s{i}\n\nbuy {i}\n".encode())
    box.flush()
    set_sources(monkeypatch, [str(tmp_path / "spam.mbox")])


def test_default_is_sqlite_under_spam_home(spam_env, monkeypatch, tmp_path):
    _tiny_corpus(tmp_path, monkeypatch)
    home = prepare_dagster_home()
    assert home == (spam_env / "dagster").resolve()
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert "sqlite" in config["storage"]
    with dg.DagsterInstance.get() as instance:
        assert run_assets(instance, ["raw_corpus"]).success
        assert latest_metadata(instance, "raw_corpus")["n_messages"] == 3
    assert (home / "storage").is_dir()


def test_postgres_storage(spam_env, monkeypatch, tmp_path):
    _tiny_corpus(tmp_path, monkeypatch)
    monkeypatch.setenv("SPAM_DAGSTER_POSTGRES_URL", POSTGRES_URL)
    home = prepare_dagster_home()
    text = (home / "dagster.yaml").read_text()
    assert "SPAM_DAGSTER_POSTGRES_URL" in text and "127.0.0.1" not in text  # no URL on disk
    with dg.DagsterInstance.get() as instance:
        result = run_assets(instance, ["raw_corpus"])
        assert result.success
        try:
            with psycopg2.connect(POSTGRES_URL) as conn, conn.cursor() as cur:
                cur.execute("select status from runs where run_id = %s", (result.run_id,))
                assert cur.fetchone() == ("SUCCESS",)
                cur.execute(
                    "select count(*) from event_logs where run_id = %s "
                    "and dagster_event_type = 'ASSET_MATERIALIZATION'",
                    (result.run_id,),
                )
                assert cur.fetchone() == (1,)
        finally:
            instance.delete_run(result.run_id)
    with psycopg2.connect(POSTGRES_URL) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from runs where run_id = %s", (result.run_id,))
        assert cur.fetchone() == (0,)


def test_bad_postgres_url_fails_clearly(spam_env, monkeypatch):
    monkeypatch.setenv("SPAM_DAGSTER_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/no_db")
    with pytest.raises(InstanceConfigError, match='database "no_db" does not exist'):
        prepare_dagster_home()
