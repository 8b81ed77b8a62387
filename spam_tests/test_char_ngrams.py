"""The char n-gram text model: numpy scoring equals scikit-learn's, state round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from spam_serving.char_ngrams import CharNgramModel
from spam_serving.featurize import Featurizer, FeaturizerConfig
from spam_serving.parsing import parse_message


@pytest.fixture(scope="module")
def fitted(real_sample):
    msgs = [parse_message(raw) for _, _, raw in real_sample]
    y = np.array([label for _, label, _ in real_sample])
    f = Featurizer(FeaturizerConfig(max_text_features=200, min_df=2, stacked=True))
    texts = [f.char_text(m) for m in msgs]
    return texts, y


def test_logit_equals_scikit_learn(fitted):
    """The three-array model reproduces TfidfVectorizer(char_wb) + LogisticRegression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts, y = fitted
    model = CharNgramModel.fit(texts, y, max_features=20_000, min_df=2)
    vec = TfidfVectorizer(
        sublinear_tf=True, min_df=2, analyzer="char_wb", ngram_range=(2, 5), max_features=20_000
    )
    x = vec.fit_transform(texts)
    lr = LogisticRegression(C=10.0, max_iter=3000).fit(x, y)
    # texts with repeated words, very short words and words unseen in training
    extra = ["a a a a b", "zzzzqqq xx", "", "FREE free FrEe money!!! $$$ http://a.biz/x?y=1"]
    ref = lr.decision_function(vec.transform(texts + extra))
    ours = model.logits(texts + extra)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    # the word cache gives the same answer the second time
    np.testing.assert_array_equal(model.logits(texts[:30]), ours[:30])


def test_state_round_trip_and_validation(fitted):
    texts, y = fitted
    model = CharNgramModel.fit(texts, y, max_features=5_000, min_df=2)
    again = CharNgramModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(again.logits(texts[:50]), model.logits(texts[:50]))
    state = model.to_dict()
    state["ngram_range"] = [1, 3]
    with pytest.raises(ValueError, match="n-gram range"):
        CharNgramModel.from_dict(state)
    with pytest.raises(ValueError, match="corrupt"):
        CharNgramModel(model.vocab[:-1], model.idf, model.coef, model.intercept)


def test_novel_text_and_hash_lookup(fitted):
    """No cache: text the model never saw scores like any other, every vocabulary n-gram is
    found by the hash table (also the ones in shared slots), and nothing else is."""
    texts, y = fitted
    model = CharNgramModel.fit(texts, y, max_features=20_000, min_df=2)
    assert len(model._shared_index) > 0  # some entries share a slot: the fallback is used
    from spam_serving.char_ngrams import _codes, _ngram_hashes

    for n in range(2, 6):
        grams = [g for g in model.vocab if len(g) == n]
        codes = _codes("".join(grams))
        h = _ngram_hashes(codes, np.arange(0, len(codes), n), n)
        idx, hit = model._lookup(h)
        assert hit.all() and [model.vocab[i] for i in idx] == grams
    absent = _ngram_hashes(_codes("\x00\x01\x02"), np.array([0]), 3)
    assert not model._lookup(absent)[1].any()
    # the word cache holds no object the garbage collector tracks, and starts over when full
    import gc

    from spam_serving import char_ngrams

    words = " ".join(f"w{i:07d}" for i in range(50_000))
    assert np.isfinite(model.logit(words)) and not gc.is_tracked(model._slots)
    small = CharNgramModel(model.vocab, model.idf, model.coef, model.intercept)
    small._buf = np.empty(20_000, dtype=np.int32)
    again = [small.logit(t) for t in texts[:80]]  # refills many times
    np.testing.assert_allclose(again, model.logits(texts[:80]), rtol=1e-12)
    assert small._used <= len(small._buf) == 20_000 and char_ngrams.CACHE_NGRAMS >= 10**6


def test_featurizer_cuts_long_words():
    """A 10,000-character word reaches the char model as 40 characters."""
    from spam_serving.parsing import message_from_fields

    f = Featurizer(FeaturizerConfig(stacked=True))
    text = f.char_text(message_from_fields(subject="hi", body="x" * 10_000 + " short"))
    assert max(len(w) for w in text.split()) == 40 and text.endswith("short")


def test_concurrent_threads_get_the_same_logits(fitted):
    """A worker featurizes batches in threads: shared scratch state must not mix messages."""
    from concurrent.futures import ThreadPoolExecutor

    texts, y = fitted
    model = CharNgramModel.fit(texts, y, max_features=20_000, min_df=2)
    expected = CharNgramModel(model.vocab, model.idf, model.coef, model.intercept).logits(texts)
    model._buf = np.empty(30_000, dtype=np.int32)  # small: the cache starts over under load
    with ThreadPoolExecutor(4) as pool:
        chunks = list(pool.map(model.logits, [texts[i::4] for i in range(4)] * 3))
    for i, got in enumerate(chunks):
        np.testing.assert_allclose(got, expected[i % 4 :: 4], rtol=1e-12)


def test_pickles_as_its_state(fitted):
    """The IO manager pickles the featurizer; the lock and thread-local scratch are rebuilt."""
    import pickle

    texts, y = fitted
    model = CharNgramModel.fit(texts, y, max_features=5_000, min_df=2)
    model.logits(texts[:10])
    again = pickle.loads(pickle.dumps(model))
    assert again._slots == {} and again._used == 0
    np.testing.assert_array_equal(again.logits(texts[:20]), model.logits(texts[:20]))
