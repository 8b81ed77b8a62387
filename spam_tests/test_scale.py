"""Scale: the generated corpus is varied and real in structure; ingest and parsing in parts
give the one-shot result and touch only new mail; the search samples rows without losing the
labels' balance or the time order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from benchmarks.common import raw_frame
from benchmarks.scale_corpus import Generator, write_tar
from spam_assets.lib.corpus_sources import CorpusError, iter_source, read_sources
from spam_assets.lib.parsed_store import deduplicated, update_parts
from spam_assets.lib.raw_store import land
from spam_assets.lib.splits import assign_splits, deduplicate, parse_raw_table
from spam_assets.lib.training import tune_data


def _matrices(n_train: int, n_val: int) -> dict:
    rng = np.random.default_rng(1)

    def part(n: int) -> dict:
        y = (rng.random(n) < 0.3).astype(np.int8)
        x = np.column_stack([np.arange(n, dtype=np.float32), y.astype(np.float32)])
        return {"X": np.hstack([x, np.ones((n, 2), np.float32)]), "y": y}

    return {"train": part(n_train), "validation": part(n_val)}


def test_the_search_samples_training_rows_stratified_and_in_time_order():
    m = _matrices(20_000, 4_000)
    data = tune_data(m, n_base=2, max_rows=5_000, seed=3)
    assert data["sampled"] and data["n_train_all"] == 20_000
    assert len(data["y_train"]) == 5_000 and len(data["y_val"]) == 1_000
    assert data["X_train"].shape[1] == 2  # the stacking block is not searched over
    for x, y, full in ((data["X_train"], data["y_train"], m["train"]),
                       (data["X_val"], data["y_val"], m["validation"])):  # fmt: skip
        assert np.all(np.diff(x[:, 0]) > 0)  # rows keep their (time) order
        assert np.array_equal(x[:, 1], y)  # features and labels stay paired
        assert abs(y.mean() - full["y"].mean()) < 0.002  # the label share is kept
    again = tune_data(m, n_base=2, max_rows=5_000, seed=3)
    assert np.array_equal(again["X_train"], data["X_train"])  # same seed, same sample
    whole = tune_data(m, n_base=2, max_rows=50_000, seed=3)
    assert not whole["sampled"] and len(whole["y_train"]) == 20_000


def test_generated_corpus_is_varied_labelled_and_parses_like_mail(tmp_path: Path, shared_tgz):
    out = write_tar(Generator(shared_tgz, seed=0), 1_500, tmp_path / "gen.tar")
    msgs = list(iter_source(str(out), tmp_path))
    assert len(msgs) == 1_500
    parsed = parse_raw_table(raw_frame(msgs))
    kept, dups = deduplicate(parsed)
    assert len(kept) >= 0.99 * len(parsed), dups  # varied enough that de-dup keeps them
    assert parsed["parse_error"].isna().all()
    assert parsed["received_at"].fillna(parsed["sent_at"]).notna().mean() > 0.99
    assert (parsed["n_parts"] > 1).sum() > 50 and parsed["is_html"].sum() > 50
    splits = assign_splits(kept, 0.2)
    assert set(splits["split"]) == {"train", "validation", "test"}
    assert set(kept.groupby("group")["label"].first()) == {0, 1}
    assert kept["sender_domain"].nunique() > 0.9 * len(kept)  # new senders


def _one_shot(specs: list[str], tmp_path: Path) -> pd.DataFrame:
    """What parsed_messages produced before the stores: every message in one frame, parsed,
    de-duplicated, through Parquet once (as the IO manager stored it)."""
    msgs = read_sources(specs, tmp_path)
    raw = raw_frame(msgs).sort_values("message_id", ignore_index=True)
    kept, _ = deduplicate(parse_raw_table(raw))
    kept.to_parquet(tmp_path / "one-shot.parquet", index=False)
    return pd.read_parquet(tmp_path / "one-shot.parquet")


def _land_and_parse(specs: list[str], home: Path, chunk_rows: int, workers: int = 2):
    landing = land(specs, home / "raw", home / "cache", 60, chunk_rows)
    parsed_now, reused, _ = update_parts(home / "raw", landing.parts, home / "parsed", workers)
    corpus, stats = deduplicated(home / "parsed", landing.parts)
    return landing, parsed_now, reused, corpus, stats


def _mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(directory.glob("*.parquet"))}


def test_chunked_ingest_and_parse_equal_the_one_shot_result(tmp_path: Path, shared_tgz):
    """Several sources in parts of 300 messages, parsed by 2 worker processes: the same
    rows, columns and types as one frame parsed at once (what every later asset reads)."""
    specs = [
        str(write_tar(Generator(shared_tgz, seed=1), 900, tmp_path / "gen.tar")),
        str(write_tar(Generator(shared_tgz, seed=6), 500, tmp_path / "more.tar")),
    ]
    expected = _one_shot(specs, tmp_path)
    landing, _, reused, corpus, stats = _land_and_parse(specs, tmp_path / "a", 300)
    assert len(landing.parts) == 3 + 2 and reused == []  # ceil(900/300) + ceil(500/300)
    assert landing.n_messages == 900 + 500 == stats["n_input"]
    pd.testing.assert_frame_equal(corpus.read(), expected)
    assert stats["n_kept"] == corpus.n_kept == len(expected)
    # one part per source: the same again
    _, _, _, whole, _ = _land_and_parse(specs, tmp_path / "b", 100_000, workers=1)
    pd.testing.assert_frame_equal(whole.read(), expected)


def test_new_mail_is_the_only_mail_landed_and_parsed(tmp_path: Path, shared_tgz):
    home = tmp_path / "home"
    first = write_tar(Generator(shared_tgz, seed=2), 800, tmp_path / "first.tar")
    landing, parsed_now, _, _, _ = _land_and_parse([str(first)], home, 300)
    assert len(parsed_now) == 3
    raw_before, parsed_before = _mtimes(home / "raw" / "parts"), _mtimes(home / "parsed")

    # unchanged: nothing written, nothing parsed
    again, parsed_now, reused, _, _ = _land_and_parse([str(first)], home, 300)
    assert again.written == () and parsed_now == [] and len(reused) == 3
    assert again.fingerprint == landing.fingerprint
    assert _mtimes(home / "raw" / "parts") == raw_before

    # a new source: only its parts are landed and parsed; the earlier files stay as they were
    second = write_tar(Generator(shared_tgz, seed=3), 400, tmp_path / "second.tar")
    grown, parsed_now, reused, corpus, _ = _land_and_parse([str(first), str(second)], home, 300)
    assert grown.written == (str(second),) and len(parsed_now) == 2 and len(reused) == 3
    after_raw, after_parsed = _mtimes(home / "raw" / "parts"), _mtimes(home / "parsed")
    assert {k: after_raw[k] for k in raw_before} == raw_before
    assert {k: after_parsed[k] for k in parsed_before if k != "kept.parquet"} == {
        k: v for k, v in parsed_before.items() if k != "kept.parquet"
    }
    pd.testing.assert_frame_equal(corpus.read(), _one_shot([str(first), str(second)], tmp_path))

    # a source dropped: its parts go, the other's stay
    shrunk, parsed_now, _, corpus, _ = _land_and_parse([str(second)], home, 300)
    assert shrunk.removed and parsed_now == []
    assert len(list((home / "raw" / "parts").glob("*.parquet"))) == 2
    assert corpus.n_kept == len(_one_shot([str(second)], tmp_path))


def test_a_parser_change_parses_again_and_a_bad_source_changes_nothing(tmp_path: Path, shared_tgz):
    home = tmp_path / "home"
    source = write_tar(Generator(shared_tgz, seed=4), 600, tmp_path / "g.tar")
    landing, _, _, _, _ = _land_and_parse([str(source)], home, 300)
    # a parsed part written by another parser version is stale
    part = home / "parsed" / f"{landing.parts[0].id}.parquet"
    table = pq.read_table(part)
    pq.write_table(
        table.replace_schema_metadata({**table.schema.metadata, b"parser_version": b"older"}),
        part,
    )
    _, parsed_now, reused, _, _ = _land_and_parse([str(source)], home, 300)
    assert parsed_now == [landing.parts[0].id] and reused == [landing.parts[1].id]

    manifest = (home / "raw" / "manifest.json").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(source.read_bytes()[:200_000])
    with pytest.raises(CorpusError, match=r"cut\.tar"):
        land([str(source), str(cut)], home / "raw", home / "cache", 60, 300)
    assert (home / "raw" / "manifest.json").read_bytes() == manifest
    assert len(list((home / "raw" / "parts").glob("*.parquet"))) == 2


def test_feature_matrices_are_files_written_by_chunk_and_equal_the_whole(tmp_path, real_sample):
    """Chunked featurizing into memory-mapped files gives the rows featurizing each split at
    once gives; the value that goes through the IO manager is paths (a few hundred bytes)."""
    import pickle

    from spam_assets.lib.featurize_pool import Chunk, FeaturizePool
    from spam_assets.lib.matrices import write_matrices
    from spam_assets.lib.messages import messages_of
    from spam_assets.lib.split_store import table_of
    from spam_serving.featurize import Featurizer, FeaturizerConfig
    from spam_tests.helpers.corpus import real_splits

    splits = real_splits(real_sample)
    train = splits[splits["split"] == "train"]
    config = FeaturizerConfig(max_text_features=300, max_meta_features=60, min_df=2)
    featurizer = Featurizer(config).fit(messages_of(train), train["label"].to_numpy())
    parts = {str(s): p for s, p in splits.groupby("split")}
    table = table_of(splits, tmp_path / "splits")

    def transform(frames):
        return (featurizer.transform(messages_of(r)) for r in frames)

    with FeaturizePool(featurizer, workers=2) as pool:  # as feature_matrices does
        out = write_matrices(
            tmp_path / "m",
            table,
            lambda frames: pool.map(Chunk(r) for r in frames),
            featurizer.n_features,
            chunk_rows=37,
        )
    for split, part in parts.items():
        whole = featurizer.transform(messages_of(part))
        got = out[split]
        np.testing.assert_array_equal(np.asarray(got["X"]), whole.astype(np.float32))
        assert got["message_id"] == part["message_id"].tolist()
        assert np.array_equal(got["y"], part["label"].to_numpy())
        assert not got["X"].flags.writeable  # readers cannot change what the next step reads
    blob = pickle.dumps(out)
    assert len(blob) < 2_000 and pickle.loads(blob)["train"]["X"].shape == out["train"]["X"].shape
    for _ in range(4):  # older materializations are pruned, the newest kept
        write_matrices(tmp_path / "m", table, transform,
                       featurizer.n_features, 500)  # fmt: skip
    assert len([p for p in (tmp_path / "m").iterdir()]) == 3
