"""One featurizer for training and serving: deterministic, serialisable, identical outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spam_serving.featurize import NUMERIC_FEATURES, Featurizer, FeaturizerConfig
from spam_serving.parsing import from_record, message_from_fields, parse_message

CONFIG = FeaturizerConfig(max_text_features=400, max_meta_features=100, min_df=2)


@pytest.fixture(scope="module")
def parsed(real_sample):
    msgs = [parse_message(raw) for _, _, raw in real_sample]
    labels = np.array([label for _, label, _ in real_sample])
    return msgs, labels


def test_fit_is_deterministic(parsed):
    msgs, labels = parsed
    a = Featurizer(CONFIG).fit(msgs, labels)
    b = Featurizer(CONFIG).fit(list(msgs), labels.copy())
    assert a.state_hash == b.state_hash
    np.testing.assert_array_equal(a.transform(msgs), b.transform(msgs))


def test_shape_names_and_dtype(parsed):
    msgs, labels = parsed
    f = Featurizer(CONFIG).fit(msgs, labels)
    x = f.transform(msgs[:10])
    assert x.dtype == np.float32 and x.shape == (10, f.n_features)
    assert len(f.feature_names) == f.n_features
    assert f.feature_names[: len(NUMERIC_FEATURES)] == ["num:" + n for n in NUMERIC_FEATURES]
    assert 0 < len(f.text_vocab) <= CONFIG.max_text_features
    assert 0 < len(f.meta_vocab) <= CONFIG.max_meta_features
    # explicit zeros, never NaN: XGBoost and ONNX must see the same representation
    assert not np.isnan(x).any()


def test_json_roundtrip_gives_identical_outputs(parsed):
    msgs, labels = parsed
    f = Featurizer(CONFIG).fit(msgs, labels)
    g = Featurizer.from_json(f.to_json())
    assert g.state_hash == f.state_hash
    np.testing.assert_array_equal(f.transform(msgs), g.transform(msgs))


def test_training_path_equals_serving_path(parsed, real_sample, tmp_path):
    """Training featurizes Parquet rows; serving featurizes freshly parsed raw bytes."""
    msgs, labels = parsed
    f = Featurizer(CONFIG).fit(msgs, labels)
    path = tmp_path / "rows.parquet"
    pd.DataFrame([m.to_record() for m in msgs]).to_parquet(path)
    from_parquet = [from_record(r) for r in pd.read_parquet(path).to_dict("records")]
    fresh = [parse_message(raw) for _, _, raw in real_sample]
    np.testing.assert_array_equal(f.transform(from_parquet), f.transform(fresh))


def test_row_independent_of_batch(parsed):
    msgs, labels = parsed
    f = Featurizer(CONFIG).fit(msgs, labels)
    batch = f.transform(msgs[:50])
    singles = np.vstack([f.transform([m]) for m in msgs[:50]])
    np.testing.assert_array_equal(batch, singles)


def test_unfitted_and_corrupt_state_are_rejected(parsed):
    msgs, labels = parsed
    with pytest.raises(RuntimeError, match="not fitted"):
        Featurizer(CONFIG).transform(msgs[:1])
    state = Featurizer(CONFIG).fit(msgs, labels).to_dict()
    state["idf"] = state["idf"][:-1]
    with pytest.raises(ValueError, match="corrupt"):
        Featurizer.from_dict(state)
    with pytest.raises(ValueError, match="format"):
        Featurizer.from_dict({**state, "format": 999})


def test_unseen_words_give_empty_text_block(parsed):
    msgs, labels = parsed
    f = Featurizer(CONFIG).fit(msgs, labels)
    row = f.transform([message_from_fields(subject="zzqx", body="qqqzzz")])[0]
    n_num = len(NUMERIC_FEATURES)
    assert not row[n_num : n_num + len(f.text_vocab)].any()  # no known word: no TF-IDF mass
    assert row[:n_num].any() and np.isfinite(row).all()


@pytest.mark.parametrize("number_tokens", [False, True])
def test_text_block_is_tfidf_of_text_tokens(parsed, number_tokens):
    """transform() counts words on its own fast path; fit() uses text_tokens(). Both must
    agree, or serving would weight words the model never saw weighted that way."""
    import math

    from spam_serving.featurize import text_tokens

    msgs, labels = parsed
    cfg = FeaturizerConfig(max_text_features=400, min_df=2, number_tokens=number_tokens)
    f = Featurizer(cfg).fit(msgs, labels)
    x = f.transform(msgs)
    n_num = len(NUMERIC_FEATURES)
    for r, msg in enumerate(msgs):
        expected = np.zeros(len(f.text_vocab), dtype=np.float64)
        for tok, c in text_tokens(msg, cfg.max_chars, number_tokens).items():
            j = f.text_vocab.get(tok)
            if j is not None:
                expected[j] = (1.0 + math.log(c)) * f.idf[j]
        norm = np.linalg.norm(expected)
        if norm:
            expected /= norm
        np.testing.assert_allclose(x[r, n_num : n_num + len(f.text_vocab)], expected, atol=1e-6)
    assert x[:, n_num : n_num + len(f.text_vocab)].any(axis=1).mean() > 0.9
