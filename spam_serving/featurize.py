"""THE featurizer: one implementation for training (Dagster assets) and serving (BentoML).

A message becomes one dense float32 row of three blocks:

* ``num:*``  structural features (URL counts, HTML ratio, attachments, shouting, hops...);
* ``w:*``/``s:*`` sublinear TF-IDF of body/subject words, L2-normalised, vocabulary chosen on
  the training split by chi-square;
* ``m:*``    binary metadata tokens: URL domains, sender domain, header names, mailer;
* ``rep:*``  optional sender reputation from the feature store (``spam_serving.reputation``),
  passed in by the caller: point-in-time rows at training, online rows at serving;
* the *stacking block* (``FeaturizerConfig.stacked``, :data:`STACK_COLUMNS`):
  ``text:char_ngrams``, the logit of a character n-gram text model
  (``spam_serving.char_ngrams``), ``sign:*``, the parser's rule-style signs
  (``spam_serving.signs``) as 0/1, and ``form:json_fields``, 1 for a message built from JSON
  fields. The tree model reads the columns before it (:attr:`Featurizer.n_base_features`);
  the ensemble's linear second stage reads it and the trees' margin
  (``spam_assets.lib.ensemble``).

Dense on purpose: XGBoost treats entries absent from a sparse matrix as *missing* while ONNX
Runtime sees 0.0, which silently diverges predictions; training on the same dense
representation we serve removes that class of bug (the ONNX parity check proves it).

Speed matters (this is the request path's main cost): tokenising is one regex ``findall`` plus a
C-level ``Counter``, and only vocabulary hits touch Python code.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from spam_serving.char_ngrams import CharNgramModel
from spam_serving.parsing import ParsedMessage
from spam_serving.reputation import REPUTATION_FEATURES
from spam_serving.signs import SIGNS

FEATURIZER_FORMAT = 2
_WORD_RE = re.compile(r"[a-z$][a-z0-9$'_-]{1,24}")
_WORD_NUM_RE = re.compile(r"[a-z$][a-z0-9$'_-]{1,24}|\d+(?:[.,]\d+)?%?")
#: Metadata token kinds: URL domains, sender domain, header names, content type, mailer,
#: priority. The default keeps only the ones that stay stable across the corpus periods.
META_KINDS = ("u:", "from:", "h:", "ct:", "xm:", "prio:")
_UPPER_RE = re.compile(r"[A-Z]")
_DIGIT_RE = re.compile(r"\d")
_RE_FWD_RE = re.compile(r"^\s*(re|fw|fwd|aw)\s*:", re.IGNORECASE)
_DIGIT_SENDER_RE = re.compile(r"\d{3,}")
#: Words the char n-gram model reads are cut to 40 characters: a word's n-gram count (and
#: cost) grows with its length, and no real word or URL piece needs more to be recognised.
_LONG_WORD_RE = re.compile(r"(\S{40})\S+")

NUMERIC_FEATURES: tuple[str, ...] = (
    "body_chars_log",
    "subject_chars",
    "n_urls",
    "n_url_domains",
    "url_ip_host",
    "is_html",
    "html_only",
    "html_ratio",
    "n_images",
    "n_links",
    "n_attachments",
    "n_parts",
    "upper_ratio",
    "subject_upper_ratio",
    "exclaim_per_kchar",
    "subject_exclaims",
    "dollars_per_kchar",
    "digit_ratio",
    "non_ascii_ratio",
    "n_received",
    "has_message_id",
    "sender_has_digits",
    "reply_to_differs",
    "missing_date",
    "date_skew_hours_log",
    "subject_is_reply",
    "truncated",
    "has_defects",
)


#: Structural features read off delivery headers (relays, Date, Message-ID, Reply-To): for a
#: message built from JSON fields they are *absent* (NaN, which the trees were trained to
#: route, see ``spam_assets.lib.ensemble.fields_copy``), not a faked "no Date, no relay".
DELIVERY_NUMERIC = (
    "n_received",
    "has_message_id",
    "reply_to_differs",
    "missing_date",
    "date_skew_hours_log",
)
_DELIVERY_COLUMNS = [NUMERIC_FEATURES.index(n) for n in DELIVERY_NUMERIC]


@dataclass(frozen=True, slots=True)
class FeaturizerConfig:
    """Vocabulary sizes and limits; part of the saved state so serving reproduces training."""

    max_text_features: int = 3000
    max_meta_features: int = 500
    min_df: int = 3
    max_chars: int = 20_000
    #: Number tokens ("2002", "7.3") mostly encode *when* a message was sent, a
    #: period artifact the time split punishes; off by default.
    number_tokens: bool = False
    #: Sender domains, URL domains and header names describe the delivery path (which lists,
    #: which relays) and shift between periods: in the time split they raised test easy-ham
    #: FPR from ~0.4% to ~1.5% for a linear model. Kept: content type, mailer, priority.
    meta_kinds: tuple[str, ...] = ("ct:", "xm:", "prio:")
    #: Append the ``rep:*`` sender reputation block (Feast); off unless it helps (README).
    reputation: bool = False
    #: Append the stacking block (char n-gram logit + signs) for the ensemble model.
    stacked: bool = False
    #: Character n-gram vocabulary size of the stacking block's text model.
    char_features: int = 200_000


def _domain_is_ip(domain: str) -> bool:
    return domain.replace(".", "").isdigit()


def _numeric(msg: ParsedMessage, body: str) -> list[float]:
    subject = msg.subject
    n_chars = max(len(body), 1)
    domains = msg.url_domains.split() if msg.url_domains else []
    skew = 0.0
    if isinstance(msg.sent_at, datetime) and isinstance(msg.received_at, datetime):
        skew = math.log1p(abs((msg.received_at - msg.sent_at).total_seconds()) / 3600.0)
    return [
        math.log1p(len(msg.body)),
        float(len(subject)),
        float(msg.n_urls),
        float(len(domains)),
        float(any(_domain_is_ip(d) for d in domains)),
        float(msg.is_html),
        float(msg.html_only),
        msg.html_chars / (msg.html_chars + len(msg.body) + 1),
        float(msg.n_images),
        float(msg.n_links),
        float(msg.n_attachments),
        float(msg.n_parts),
        len(_UPPER_RE.findall(body)) / n_chars,
        len(_UPPER_RE.findall(subject)) / max(len(subject), 1),
        1000.0 * body.count("!") / n_chars,
        float(subject.count("!")),
        1000.0 * body.count("$") / n_chars,
        len(_DIGIT_RE.findall(body)) / n_chars,
        (len(body.encode("utf-8", "replace")) - len(body)) / n_chars,
        float(msg.n_received),
        float(msg.has_message_id),
        float(bool(_DIGIT_SENDER_RE.search(msg.sender))),
        float(bool(msg.reply_to_domain) and msg.reply_to_domain != msg.sender_domain),
        float(msg.sent_at is None),
        skew,
        float(bool(_RE_FWD_RE.match(subject))),
        float(msg.truncated),
        float(bool(msg.defects)),
    ]


def word_counts(
    msg: ParsedMessage, max_chars: int, numbers: bool = False
) -> tuple[Counter, Counter]:
    """Bare word counts of the body (first ``max_chars``) and of the subject: the one
    tokenizer. ``transform`` looks these up directly (no prefixed string per token)."""
    word_re = _WORD_NUM_RE if numbers else _WORD_RE
    return (
        Counter(word_re.findall(msg.body[:max_chars].lower())),
        Counter(word_re.findall(msg.subject.lower())),
    )


def text_tokens(msg: ParsedMessage, max_chars: int, numbers: bool = False) -> Counter:
    """Word counts: body words as ``w:word``, subject words as ``s:word``."""
    body, subject = word_counts(msg, max_chars, numbers)
    counts = Counter({"w:" + t: c for t, c in body.items()})
    counts.update({"s:" + t: c for t, c in subject.items()})
    return counts


def meta_tokens(msg: ParsedMessage, kinds: Sequence[str] = META_KINDS) -> set[str]:
    """Binary metadata tokens that a bag of words cannot see, of the given kinds."""
    tokens: set[str] = set()
    if "u:" in kinds and msg.url_domains:
        tokens.update("m:u:" + d for d in msg.url_domains.split())
    if "from:" in kinds and msg.sender_domain:
        tokens.add("m:from:" + msg.sender_domain)
    if msg.header_tokens:
        header_kinds = tuple(k for k in kinds if k not in ("u:", "from:"))
        tokens.update("m:" + t for t in msg.header_tokens.split() if t.startswith(header_kinds))
    return tokens


#: The stacking block's columns: the char n-gram logit, one 0/1 column per sign, and which
#: door the message came through (1.0: built from JSON fields), which selects the ensemble's
#: second stage for that form (``spam_assets.lib.ensemble.Stack``).
STACK_COLUMNS: tuple[str, ...] = (
    "text:char_ngrams",
    *("sign:" + s for s in SIGNS),
    "form:json_fields",
)
_SIGN_COLUMN = {name: 1 + j for j, name in enumerate(SIGNS)}


class Featurizer:
    """Fit on training messages, then turn any message into a dense float32 row."""

    def __init__(self, config: FeaturizerConfig | None = None) -> None:
        self.config = config or FeaturizerConfig()
        self.text_vocab: dict[str, int] = {}
        self.idf: np.ndarray = np.zeros(0, dtype=np.float32)
        self.meta_vocab: dict[str, int] = {}
        self.char_model: CharNgramModel | None = None
        self._word_vocab_cache: tuple[dict, dict[str, int], dict[str, int]] | None = None

    # ------------------------------------------------------------------ fitting
    def fit(self, messages: Sequence[ParsedMessage], labels: Sequence[int]) -> Featurizer:
        """Choose vocabularies by chi-square against the labels, IDF from document frequency."""
        from scipy import sparse
        from sklearn.feature_selection import chi2

        y = np.asarray(labels, dtype=np.int8)
        if len(messages) != len(y) or len(set(y.tolist())) < 2:
            raise ValueError("fit needs messages of both classes with one label each")
        cfg = self.config
        docs_text = [set(text_tokens(m, cfg.max_chars, cfg.number_tokens)) for m in messages]
        docs_meta = [meta_tokens(m, cfg.meta_kinds) for m in messages]
        self.text_vocab, df = self._select(
            docs_text, y, self.config.max_text_features, chi2, sparse
        )
        self.meta_vocab, _ = self._select(docs_meta, y, self.config.max_meta_features, chi2, sparse)
        n = len(messages)
        self.idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
        if cfg.stacked:
            texts = [self.char_text(m) for m in messages]
            self.char_model = CharNgramModel.fit(
                texts, y, max_features=cfg.char_features, min_df=cfg.min_df
            )
        return self

    def char_text(self, msg: ParsedMessage) -> str:
        """What the character n-gram model reads: subject and the first ``max_chars`` of body."""
        return _LONG_WORD_RE.sub(r"\1", msg.subject + "\n" + msg.body[: self.config.max_chars])

    def _select(self, docs, y, k, chi2, sparse) -> tuple[dict[str, int], np.ndarray]:
        df = Counter(t for d in docs for t in d)
        candidates = sorted(t for t, c in df.items() if c >= self.config.min_df)
        if not candidates:
            return {}, np.zeros(0)
        index = {t: i for i, t in enumerate(candidates)}
        rows, cols = [], []
        for r, d in enumerate(docs):
            for t in d:
                j = index.get(t)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
        x = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(docs), len(candidates))
        )
        scores, _ = chi2(x, y)
        scores = np.nan_to_num(scores, nan=0.0)
        # stable order: best score first, ties broken by token text for determinism
        order = sorted(range(len(candidates)), key=lambda j: (-scores[j], candidates[j]))[:k]
        chosen = sorted(candidates[j] for j in order)
        vocab = {t: i for i, t in enumerate(chosen)}
        return vocab, np.array([df[t] for t in chosen], dtype=np.float64)

    # ------------------------------------------------------------------ transform
    def _word_vocabs(self) -> tuple[dict[str, int], dict[str, int]]:
        """Body and subject vocabularies keyed by the bare word (cached per ``text_vocab``).

        ``transform`` counts raw tokens with C-level ``Counter`` and looks them up here,
        instead of building a ``"w:" + word`` string for every token of every message."""
        cache = self._word_vocab_cache
        if cache is None or cache[0] is not self.text_vocab:
            vocab = self.text_vocab
            body = {t[2:]: j for t, j in vocab.items() if t.startswith("w:")}
            subject = {t[2:]: j for t, j in vocab.items() if t.startswith("s:")}
            cache = self._word_vocab_cache = (vocab, body, subject)
        return cache[1], cache[2]

    @property
    def n_base_features(self) -> int:
        """Columns the tree model reads: every block before the stacking block."""
        n_rep = len(REPUTATION_FEATURES) if self.config.reputation else 0
        return len(NUMERIC_FEATURES) + len(self.text_vocab) + len(self.meta_vocab) + n_rep

    @property
    def n_features(self) -> int:
        return self.n_base_features + (len(STACK_COLUMNS) if self.config.stacked else 0)

    @property
    def feature_names(self) -> list[str]:
        """Human-readable names in column order (the model itself sees ``f0..fN``)."""
        text = sorted(self.text_vocab, key=self.text_vocab.__getitem__)
        meta = sorted(self.meta_vocab, key=self.meta_vocab.__getitem__)
        rep = ["rep:" + n for n in REPUTATION_FEATURES] if self.config.reputation else []
        stack = list(STACK_COLUMNS) if self.config.stacked else []
        return ["num:" + n for n in NUMERIC_FEATURES] + text + meta + rep + stack

    def transform(
        self, messages: Sequence[ParsedMessage], reputation: np.ndarray | None = None
    ) -> np.ndarray:
        """Dense ``[N, n_features]`` float32 matrix; identical for the same message anywhere.

        ``reputation`` (``[N, len(REPUTATION_FEATURES)]``) is required exactly when the config
        uses it: a silently missing block would train or serve a different model."""
        if not self.text_vocab and not self.meta_vocab:
            raise RuntimeError("Featurizer is not fitted")
        if self.config.reputation != (reputation is not None):
            need = "needs" if self.config.reputation else "does not use"
            raise ValueError(f"this featurizer {need} reputation features")
        if reputation is not None and reputation.shape != (len(messages), len(REPUTATION_FEATURES)):
            raise ValueError(f"reputation block has shape {reputation.shape}")
        n_num = len(NUMERIC_FEATURES)
        text_off = n_num
        meta_off = n_num + len(self.text_vocab)
        out = np.zeros((len(messages), self.n_features), dtype=np.float32)
        meta_vocab, idf = self.meta_vocab, self.idf
        body_vocab, subject_vocab = self._word_vocabs()
        max_chars = self.config.max_chars
        numbers, kinds = self.config.number_tokens, self.config.meta_kinds
        # header-less input reads as absent only for the ensemble, whose trees saw it
        absent = self.config.stacked
        log = math.log
        for r, msg in enumerate(messages):
            body = msg.body[:max_chars]
            row = out[r]
            row[:n_num] = _numeric(msg, body)
            idx, vals = [], []
            # text_tokens()'s counts and order: body words, then subject words
            body_counts, subject_counts = word_counts(msg, max_chars, numbers)
            for counts, vocab in ((body_counts, body_vocab), (subject_counts, subject_vocab)):
                for tok, c in counts.items():
                    j = vocab.get(tok)
                    if j is not None:
                        idx.append(j)
                        vals.append(1.0 + log(c))
            if idx:
                w = np.asarray(vals, dtype=np.float32) * idf[idx]
                norm = float(np.sqrt((w * w).sum()))  # not np.dot: no BLAS threads
                row[text_off + np.asarray(idx)] = w / norm
            if absent and msg.from_fields:
                row[_DELIVERY_COLUMNS] = np.nan
                row[meta_off : meta_off + len(meta_vocab)] = np.nan
                continue
            for tok in meta_tokens(msg, kinds):
                j = meta_vocab.get(tok)
                if j is not None:
                    row[meta_off + j] = 1.0
        n_base = self.n_base_features
        if reputation is not None:
            out[:, n_base - len(REPUTATION_FEATURES) : n_base] = reputation
        if self.config.stacked:
            self._stacking_block(messages, out[:, n_base:])
        return out

    def _stacking_block(self, messages: Sequence[ParsedMessage], block: np.ndarray) -> None:
        """Column 0: the char n-gram logit; then one 0/1 column per sign, in ``SIGNS`` order;
        the last: 1.0 for a message built from JSON fields."""
        if self.char_model is None:
            raise RuntimeError("stacked featurizer has no char n-gram model")
        sign_col = _SIGN_COLUMN
        for r, msg in enumerate(messages):
            block[r, 0] = self.char_model.logit(self.char_text(msg))
            if msg.from_fields:
                block[r, -1] = 1.0
            if msg.signs:
                for name in msg.signs.split():
                    j = sign_col.get(name)
                    if j is not None:
                        block[r, j] = 1.0

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-safe state (no pickle: the serving side loads it from the model registry)."""
        config = asdict(self.config)
        if not config["reputation"]:
            del config["reputation"]  # state (and hash) of earlier bundles stays the same
        if not config["stacked"]:
            del config["stacked"], config["char_features"]
        return {
            "format": FEATURIZER_FORMAT,
            "config": config,
            "numeric_features": list(NUMERIC_FEATURES),
            "text_vocab": sorted(self.text_vocab, key=self.text_vocab.__getitem__),
            "idf": [float(v) for v in self.idf],
            "meta_vocab": sorted(self.meta_vocab, key=self.meta_vocab.__getitem__),
            **(
                {"reputation_features": list(REPUTATION_FEATURES)} if self.config.reputation else {}
            ),
            **(
                {"stack_columns": list(STACK_COLUMNS), "char_model": self.char_model.to_dict()}
                if self.config.stacked and self.char_model is not None
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, state: dict) -> Featurizer:
        if state.get("format") != FEATURIZER_FORMAT:
            raise ValueError(f"unsupported featurizer format {state.get('format')!r}")
        if list(state["numeric_features"]) != list(NUMERIC_FEATURES):
            raise ValueError("featurizer state was saved by a different numeric feature set")
        if list(state.get("reputation_features", REPUTATION_FEATURES)) != list(REPUTATION_FEATURES):
            raise ValueError("featurizer state was saved by a different reputation feature set")
        config = dict(state["config"])
        config["meta_kinds"] = tuple(config.get("meta_kinds", META_KINDS))
        f = cls(FeaturizerConfig(**config))
        f.text_vocab = {t: i for i, t in enumerate(state["text_vocab"])}
        f.idf = np.asarray(state["idf"], dtype=np.float32)
        f.meta_vocab = {t: i for i, t in enumerate(state["meta_vocab"])}
        if len(f.idf) != len(f.text_vocab):
            raise ValueError("featurizer state is corrupt: idf and vocabulary lengths differ")
        if f.config.stacked:
            if list(state.get("stack_columns", ())) != list(STACK_COLUMNS):
                raise ValueError("featurizer state was saved with a different stacking block")
            f.char_model = CharNgramModel.from_dict(state["char_model"])
        return f

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Featurizer:
        return cls.from_dict(json.loads(text))

    @property
    def state_hash(self) -> str:
        """Content hash of the fitted state: pins a model to the featurizer it was trained with."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]
