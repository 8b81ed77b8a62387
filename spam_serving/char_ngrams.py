"""Character n-gram text model: logistic regression on sublinear TF-IDF of 2-5-grams.

The strongest text ranking measured on the time split (``make bench-quality``): spelling
variants, obfuscated words and URL pieces share n-grams where a word vocabulary sees
unrelated tokens. It is fitted with scikit-learn (``TfidfVectorizer(analyzer="char_wb")`` +
``LogisticRegression``), then kept as three arrays so serving needs neither scikit-learn nor
a 200,000-column matrix: the model is linear, so its logit is

    b + sum_j (1 + log tf_j) * coef_j * idf_j / sqrt(sum_j ((1 + log tf_j) * idf_j)^2)

over the n-grams j of the text. ``char_wb`` n-grams are the substrings of length 2-5 of each
word padded with a space on both sides, so scoring is vectorized in numpy with no Python loop
per word or n-gram: the distinct words are laid out padded in one code-point array, every
within-word substring of each length gets a 64-bit hash, and a direct-mapped table built at
load time (hash -> vocabulary index, exact: the hash is checked against the n-gram's own)
finds the vocabulary hits. Each word's hits are kept in a packed cache (two numpy buffers and
a ``str -> int`` dict, nothing the garbage collector tracks), so a message pays the hashing
only for words it is the first to use. Equal to scikit-learn's logit (tested).
"""

from __future__ import annotations

import base64
import threading
from collections import Counter
from collections.abc import Sequence

import numpy as np

NGRAM_RANGE = (2, 5)
_MUL = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
#: n-gram hits the per-model word cache holds (4 bytes each) before it starts over
CACHE_NGRAMS = 4_000_000
_EMPTY_INT = np.zeros(0, dtype=np.int64)
#: table slots per vocabulary entry (as a power of two above it): 8x keeps ~6% of entries
#: in shared slots, which fall back to a binary search
_TABLE_SPREAD_BITS = 3


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _unb64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4").astype(np.float32)


def _finish(h: np.ndarray, n: int) -> np.ndarray:
    """The length mixed in, then splitmix64's finalizer, so the top bits that index the
    table are well spread."""
    with np.errstate(over="ignore"):
        h = h ^ np.uint64(n)
        h = (h ^ (h >> np.uint64(30))) * _MIX1
        h = (h ^ (h >> np.uint64(27))) * _MIX2
        return h ^ (h >> np.uint64(31))


def _ngram_hashes(codes: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of the ``n`` code points at each of ``starts`` (the same value
    :meth:`CharNgramModel.logit` computes incrementally)."""
    with np.errstate(over="ignore"):
        h = codes[starts]
        for k in range(1, n):
            h = h * _MUL + codes[starts + k]
    return _finish(h, n)


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.uint64)


class CharNgramModel:
    """A fitted char n-gram logistic regression: ``logits(texts)`` in numpy."""

    def __init__(
        self, vocab: Sequence[str], idf: np.ndarray, coef: np.ndarray, intercept: float
    ) -> None:
        if not (len(vocab) == len(idf) == len(coef)):
            raise ValueError("char n-gram state is corrupt: vocabulary and arrays differ")
        self.vocab = list(vocab)
        self.idf = np.asarray(idf, dtype=np.float32)
        self.coef = np.asarray(coef, dtype=np.float32)
        self.intercept = float(intercept)
        # float64 products once: the per-message sums are then one gather each
        self._w = self.idf.astype(np.float64) * self.coef.astype(np.float64)
        self._idf2 = self.idf.astype(np.float64) ** 2
        #: per-thread n-gram count accumulator, all zeros between calls (a worker featurizes
        #: batches in threads: a shared one would mix two messages' counts)
        self._local = threading.local()
        #: word -> its n-gram hits in ``_buf`` (offset << 24 | length), see :meth:`_segments`;
        #: filled and read under ``_lock``
        self._slots: dict[str, int] = {}
        self._buf = np.empty(CACHE_NGRAMS, dtype=np.int32)
        self._used = 0
        self._lock = threading.Lock()
        self._build_table()

    def _build_table(self) -> None:
        """Hash every vocabulary n-gram; slot = the hash's top bits. A slot that two entries
        share holds -2, and those entries are looked up by binary search instead."""
        lo, hi = NGRAM_RANGE
        lens = np.fromiter((len(v) for v in self.vocab), dtype=np.int64, count=len(self.vocab))
        if len(lens) and (lens.min() < lo or lens.max() > hi):
            raise ValueError("char n-gram state is corrupt: an n-gram outside the range")
        codes = _codes("".join(self.vocab))
        offsets = np.r_[0, np.cumsum(lens)[:-1]].astype(np.int64)
        vh = np.zeros(len(self.vocab), dtype=np.uint64)
        for n in range(lo, hi + 1):
            sel = np.flatnonzero(lens == n)
            vh[sel] = _ngram_hashes(codes, offsets[sel], n)
        if len(np.unique(vh)) != len(vh):
            raise ValueError("char n-gram vocabulary has colliding hashes")
        bits = max(10, int(np.ceil(np.log2(max(len(vh), 1)))) + _TABLE_SPREAD_BITS)
        self._shift = np.uint64(64 - bits)
        slots = (vh >> self._shift).astype(np.int64)
        table = np.full(1 << bits, -1, dtype=np.int32)
        uniq, first, counts = np.unique(slots, return_index=True, return_counts=True)
        table[uniq] = np.where(counts == 1, first, -2).astype(np.int32)
        shared = np.flatnonzero(counts[np.searchsorted(uniq, slots)] > 1)
        order = np.argsort(vh[shared])
        self._table, self._hashes = table, vh
        self._shared_hashes, self._shared_index = vh[shared][order], shared[order]

    def _lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vocabulary indices of the hits, mask of ``h`` that hit)."""
        cand = self._table[(h >> self._shift).astype(np.int64)]
        out = np.where(cand >= 0, cand, 0).astype(np.int64)
        hit = (cand >= 0) & (self._hashes[out] == h)
        shared = np.flatnonzero(cand == -2)
        if len(shared) and len(self._shared_hashes):
            pos = np.searchsorted(self._shared_hashes, h[shared])
            pos[pos >= len(self._shared_hashes)] = 0
            found = self._shared_hashes[pos] == h[shared]
            out[shared[found]] = self._shared_index[pos[found]]
            hit[shared[found]] = True
        return out[hit], hit

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
    def _hits(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vocabulary indices of every n-gram occurrence in ``words`` (padded as ``char_wb``
        pads them) and the position in ``words`` of the word each belongs to, sorted by it.

        Vectorized: the words are laid out padded in one code-point array; the polynomial
        hash of an (n+1)-gram extends the n-gram's at the same start, so each length costs
        one multiply-add over the text, and an n-gram never crosses a word (its first and
        last code point share one)."""
        padded = [" " + word + " " for word in words]
        lengths = np.fromiter((len(p) for p in padded), dtype=np.int64, count=len(padded))
        codes = _codes("".join(padded))
        word = np.repeat(np.arange(len(padded)), lengths)
        n_codes = len(codes)
        lo, hi = NGRAM_RANGE
        hashes, owners = [], []
        with np.errstate(over="ignore"):
            rolling = codes.copy()
            for n in range(2, hi + 1):
                if n_codes < n:
                    break
                rolling = rolling[:-1] * _MUL + codes[n - 1 :]
                if n < lo:
                    continue
                starts = np.flatnonzero(word[: n_codes - n + 1] == word[n - 1 :])
                hashes.append(_finish(rolling[starts], n))
                owners.append(word[starts])
        if not hashes:
            return _EMPTY_INT, _EMPTY_INT
        idx, hit = self._lookup(np.concatenate(hashes))
        owner = np.concatenate(owners)[hit]
        order = np.argsort(owner, kind="stable")
        return idx[order], owner[order]

    def _segments(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(offset, length) of each word's n-gram hits in the packed cache, filling it for
        words not seen before. The cache is a ``dict`` of ``str -> int`` over two numpy
        buffers: no object in it is tracked by the garbage collector, and when the buffer
        is full it starts over, so hostile input made of unique words costs time, not memory.
        """
        packed = [self._slots.get(w, -1) for w in words]
        missing = [i for i, v in enumerate(packed) if v < 0]
        if missing:
            novel = [words[i] for i in missing]
            idx, owner = self._hits(novel)
            if self._used + len(idx) > len(self._buf):
                self._slots.clear()
                self._used = 0
                if len(idx) > len(self._buf):  # one message larger than the whole cache
                    self._buf = np.empty(len(idx), dtype=np.int32)
                return self._segments(words)
            self._buf[self._used : self._used + len(idx)] = idx
            sizes = np.bincount(owner, minlength=len(novel))
            starts = self._used + np.r_[0, np.cumsum(sizes)[:-1]]
            for i, w, start, size in zip(
                missing, novel, starts.tolist(), sizes.tolist(), strict=True
            ):
                packed[i] = self._slots[w] = (start << 24) | size
            self._used += len(idx)
        p = np.asarray(packed, dtype=np.int64)
        return p >> 24, p & 0xFFFFFF

    def logit(self, text: str) -> float:
        """The model's logit for one text (``char_wb``: lower-cased, split on whitespace).

        Duplicate n-grams are merged without sorting: counts (an occurrence times its
        word's count) go into a reused accumulator, and each occurrence carries the share
        ``count / tf`` of its n-gram's term, so sums over occurrences equal sums over
        distinct n-grams."""
        counts = Counter(text.lower().split())
        if not counts:
            return self.intercept
        words = list(counts)
        with self._lock:  # the buffer may start over when another thread fills it
            offsets, lengths = self._segments(words)
            total = int(lengths.sum())
            if not total:
                return self.intercept
            first = np.repeat(offsets - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
            idx = self._buf[first + np.arange(total)]
        mult = np.fromiter(counts.values(), dtype=np.float64, count=len(words))
        cnt = np.repeat(mult, lengths)
        acc = getattr(self._local, "acc", None)
        if acc is None:
            acc = self._local.acc = np.zeros(len(self.vocab), dtype=np.float64)
        np.add.at(acc, idx, cnt)
        tf = acc[idx]
        acc[idx] = 0.0
        share = cnt / tf
        s = 1.0 + np.log(tf)
        # element-wise products and sums, not np.dot: a BLAS dot may start OpenBLAS threads,
        # which spin on the other core after every call (measured: 2.8x a worker's CPU)
        norm = np.sqrt(float((share * s * s * self._idf2[idx]).sum()))
        return self.intercept + float((share * s * self._w[idx]).sum()) / norm

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.logit(t) for t in texts), dtype=np.float64, count=len(texts))

    # ------------------------------------------------------------------ persistence
    def __reduce__(self):
        """Pickled as its state (the IO manager pickles the featurizer): the lock, the
        per-thread scratch and the cache are rebuilt, not copied."""
        return (CharNgramModel.from_dict, (self.to_dict(),))

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
