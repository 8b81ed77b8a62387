"""Featurizing in worker processes gives the rows one process gives, in input order, for
split-table rows, parsed messages, reputation blocks and JSON-fields copies."""

from __future__ import annotations

import numpy as np
import pytest

from spam_assets.lib.ensemble import fields_copy
from spam_assets.lib.featurize_pool import Chunk, FeaturizePool
from spam_assets.lib.messages import messages_of
from spam_serving.featurize import Featurizer, FeaturizerConfig
from spam_serving.reputation import REPUTATION_FEATURES
from spam_tests.helpers.corpus import real_splits


@pytest.fixture(scope="module")
def fitted(real_sample):
    rows = real_splits(real_sample)
    config = FeaturizerConfig(max_text_features=300, max_meta_features=60, min_df=2,
                              stacked=True, reputation=True, char_features=5_000)  # fmt: skip
    rep = np.random.default_rng(3).random((len(rows), len(REPUTATION_FEATURES)), np.float32)
    f = Featurizer(config).fit(messages_of(rows), rows["label"].to_numpy())
    return f, rows, rep


def test_two_processes_give_the_rows_of_one_in_order(fitted):
    f, rows, rep = fitted
    msgs = messages_of(rows)
    step = 45
    chunks = [
        Chunk(rows.iloc[i : i + step], rep[i : i + step], fields=(i // step) % 2 == 1)
        for i in range(0, len(rows), step)
    ]
    expected = [
        f.transform(
            [fields_copy(m) for m in msgs[i : i + step]] if c.fields else msgs[i : i + step],
            rep[i : i + step],
        )
        for i, c in zip(range(0, len(rows), step), chunks, strict=True)
    ]
    with FeaturizePool(f, workers=2) as pool:
        got = list(pool.map(iter(chunks)))
        assert pool._pool is not None  # the chunks really went to worker processes
        whole = pool.transform(msgs, rep, chunk_rows=64)  # parsed messages, several tasks
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole, f.transform(msgs, rep))


def test_one_chunk_or_one_worker_stays_in_this_process(fitted):
    f, rows, rep = fitted
    with FeaturizePool(f, workers=2) as pool:
        (only,) = pool.map([Chunk(rows.iloc[:30], rep[:30])])
        assert pool._pool is None
    np.testing.assert_array_equal(only, f.transform(messages_of(rows.iloc[:30]), rep[:30]))
    with FeaturizePool(f, workers=1) as pool:
        assert len(list(pool.map([Chunk(rows.iloc[:5], rep[:5])] * 3))) == 3
        assert pool._pool is None
    with pytest.raises(ValueError, match="workers"):
        FeaturizePool(f, workers=0)


def test_a_failing_chunk_fails_the_caller_with_its_reason(fitted):
    """A worker's error reaches the step (named), not a hang or a silently short matrix."""
    f, rows, _ = fitted
    bad = [Chunk(rows.iloc[:10], None), Chunk(rows.iloc[10:20], None)]  # reputation missing
    with FeaturizePool(f, workers=2) as pool, pytest.raises(ValueError, match="reputation"):
        list(pool.map(bad))
