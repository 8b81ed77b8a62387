"""Bad corpus configuration fails the Dagster run with a message naming the problem, and
leaves previously landed data untouched."""

from __future__ import annotations

from spam_tests.helpers.corpus import write_apache_tarballs
from spam_tests.helpers.env import set_sources
from spam_tests.helpers.pipeline import failure_messages, latest_metadata, run_assets


def test_missing_path(spam_env, monkeypatch, instance, tmp_path):
    set_sources(monkeypatch, [str(tmp_path / "no_such_corpus.tar.bz2")])
    result = run_assets(instance, ["raw_corpus"])
    assert not result.success
    assert "no_such_corpus.tar.bz2: corpus source not found" in failure_messages(result)


def test_corrupt_tarball_keeps_previous_data(spam_env, monkeypatch, instance, tmp_path, shared_tgz):
    good = write_apache_tarballs(tmp_path / "c", {"easy-ham-1": 8, "spam-1": 5}, shared_tgz)
    set_sources(monkeypatch, [str(p) for p in good])
    assert run_assets(instance, ["raw_corpus"]).success
    manifest = spam_env / "data" / "raw" / "manifest.json"
    before = manifest.read_bytes()

    broken = tmp_path / "20030228_spam_cut.tar.bz2"
    broken.write_bytes(good[1].read_bytes()[:3000])
    set_sources(monkeypatch, [str(good[0]), str(broken)])
    result = run_assets(instance, ["raw_corpus"])
    assert not result.success
    msg = failure_messages(result)
    assert "20030228_spam_cut.tar.bz2" in msg and ("corrupt" in msg or "readable" in msg)
    assert manifest.read_bytes() == before
    assert latest_metadata(instance, "raw_corpus")["n_messages"] == 13


def test_empty_corpus(spam_env, monkeypatch, instance, tmp_path):
    empty = tmp_path / "spam_inbox"
    empty.mkdir()
    set_sources(monkeypatch, [str(empty)])
    result = run_assets(instance, ["raw_corpus"])
    assert not result.success
    assert "spam_inbox: source contains no messages" in failure_messages(result)


def test_corpus_without_newer_period(spam_env, monkeypatch, instance, tmp_path, shared_tgz):
    only_old = write_apache_tarballs(tmp_path / "c", {"easy-ham-1": 10, "spam-1": 6}, shared_tgz)
    set_sources(monkeypatch, [str(p) for p in only_old])
    result = run_assets(
        instance, ["raw_corpus", "parsed_messages", "labelled_feedback", "dataset_splits"]
    )
    assert not result.success
    assert "split(s) ['test'] are empty" in failure_messages(result)
