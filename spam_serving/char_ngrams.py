"""Character n-gram text model: logistic regression on sublinear TF-IDF of 2-5-grams.

The strongest text ranking measured on the time split (``make bench-quality``): spelling
variants, obfuscated words and URL pieces share n-grams where a word vocabulary sees
unrelated tokens. It is fitted with scikit-learn (``TfidfVectorizer(analyzer="char_wb")`` +
``LogisticRegression``), then kept as three arrays so serving needs neither scikit-learn nor
a 200,000-column matrix: the model is linear, so its logit is

    b + sum_j (1 + log tf_j) * coef_j * idf_j / sqrt(sum_j ((1 + log tf_j) * idf_j)^2)

over the n-grams j of the text. ``char_wb`` n-grams never cross a word, so a message's
counts are a sum over its distinct words of each word's own n-gram counts: each word is
turned into (vocabulary index, count) arrays once and cached, and a message costs a
``Counter`` of its words plus a few numpy calls (tested equal to scikit-learn's logit).
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

NGRAM_RANGE = (2, 5)
#: Words (as lower-cased, space-padded tokens) whose n-gram arrays are cached per model; the
#: cache is emptied when full, so hostile input made of unique words costs time, not memory.
CACHE_WORDS = 100_000
_EMPTY = (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _unb64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4").astype(np.float32)


class CharNgramModel:
    """A fitted char n-gram logistic regression: ``logits(texts)`` in numpy."""

    def __init__(
        self, vocab: Sequence[str], idf: np.ndarray, coef: np.ndarray, intercept: float
    ) -> None:
        if not (len(vocab) == len(idf) == len(coef)):
            raise ValueError("char n-gram state is corrupt: vocabulary and arrays differ")
        self.vocab = list(vocab)
        self.index = {g: i for i, g in enumerate(self.vocab)}
        self.idf = np.asarray(idf, dtype=np.float32)
        self.coef = np.asarray(coef, dtype=np.float32)
        self.intercept = float(intercept)
        # float64 products once: the per-message sums are then one gather each
        self._w = self.idf.astype(np.float64) * self.coef.astype(np.float64)
        self._idf2 = self.idf.astype(np.float64) ** 2
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        #: per-call n-gram count accumulator, all zeros between calls
        self._acc = np.zeros(len(self.vocab), dtype=np.float64)

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        y: np.ndarray,
        *,
        max_features: int = 200_000,
        min_df: int = 3,
        c: float = 10.0,
        sample_weight: np.ndarray | None = None,
    ) -> CharNgramModel:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vec = TfidfVectorizer(
            sublinear_tf=True,
            min_df=min_df,
            analyzer="char_wb",
            ngram_range=NGRAM_RANGE,
            max_features=max_features,
            dtype=np.float32,
        )
        x = vec.fit_transform(texts)
        lr = LogisticRegression(C=c, max_iter=3000)
        lr.fit(x, np.asarray(y), sample_weight=sample_weight)
        vocab = vec.get_feature_names_out().tolist()
        return cls(vocab, vec.idf_, lr.coef_[0], float(lr.intercept_[0]))

    # ------------------------------------------------------------------ scoring
    def _word(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        """(vocabulary indices, counts) of one padded word's n-grams, as ``char_wb`` cuts."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        w = " " + word + " "
        n_w = len(w)
        counts: Counter = Counter()
        lo, hi = NGRAM_RANGE
        for n in range(lo, hi + 1):
            if n >= n_w:  # scikit-learn keeps the whole padded word once, then stops
                counts[w] += 1
                break
            counts.update(w[i : i + n] for i in range(n_w - n + 1))
        index = self.index
        pairs = [(index[g], c) for g, c in counts.items() if g in index]
        if pairs:
            idx, cnt = zip(*pairs, strict=True)
            hit = (np.asarray(idx, dtype=np.int32), np.asarray(cnt, dtype=np.float32))
        else:
            hit = _EMPTY
        if len(self._cache) >= CACHE_WORDS:
            self._cache.clear()
        self._cache[word] = hit
        return hit

    def logit(self, text: str) -> float:
        """The model's logit for one text.

        Duplicate n-grams across words are merged without sorting: their counts go into a
        reused accumulator, and each occurrence ``i`` of n-gram ``j`` carries the share
        ``cnt_i / tf_j`` of that n-gram's term, so the sums over occurrences equal the sums
        over distinct n-grams."""
        idx_parts, cnt_parts, lens, mult = [], [], [], []
        word = self._word
        for token, k in Counter(text.lower().split()).items():
            idx, cnt = word(token)
            if len(idx):
                idx_parts.append(idx)
                cnt_parts.append(cnt)
                lens.append(len(idx))
                mult.append(k)
        if not idx_parts:
            return self.intercept
        idx = np.concatenate(idx_parts)
        cnt = np.concatenate(cnt_parts).astype(np.float64)
        if max(mult) > 1:
            cnt *= np.repeat(np.asarray(mult, dtype=np.float64), lens)
        acc = self._acc
        np.add.at(acc, idx, cnt)
        tf = acc[idx]
        acc[idx] = 0.0
        share = cnt / tf
        s = 1.0 + np.log(tf)
        norm = math.sqrt(float(np.dot(share * s * s, self._idf2[idx])))
        return self.intercept + float(np.dot(share * s, self._w[idx])) / norm

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.logit(t) for t in texts), dtype=np.float64, count=len(texts))

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "ngram_range": list(NGRAM_RANGE),
            "vocab": self.vocab,
            "idf": _b64(self.idf),
            "coef": _b64(self.coef),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, state: dict) -> CharNgramModel:
        if tuple(state["ngram_range"]) != NGRAM_RANGE:
            raise ValueError(f"char n-gram state has n-gram range {state['ngram_range']}")
        return cls(state["vocab"], _unb64(state["idf"]), _unb64(state["coef"]), state["intercept"])
