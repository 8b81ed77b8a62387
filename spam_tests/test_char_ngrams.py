"""The char n-gram text model: numpy scoring equals scikit-learn's, state round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from spam_serving.char_ngrams import CACHE_WORDS, CharNgramModel
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


def test_word_cache_is_bounded(fitted):
    """Hostile input made of unique words costs time, not memory."""
    texts, y = fitted
    model = CharNgramModel.fit(texts, y, max_features=2_000, min_df=2)
    words = " ".join(f"w{i:07d}" for i in range(CACHE_WORDS + 10))
    model.logit(words)
    assert len(model._cache) <= CACHE_WORDS


def test_featurizer_cuts_long_words():
    """A 10,000-character word reaches the char model as 40 characters."""
    from spam_serving.parsing import message_from_fields

    f = Featurizer(FeaturizerConfig(stacked=True))
    text = f.char_text(message_from_fields(subject="hi", body="x" * 10_000 + " short"))
    assert max(len(w) for w in text.split()) == 40 and text.endswith("short")
