"""A design candidate (``benchmarks.design_oof``), not deployed: token-level Bayes in the
SpamBayes/SpamAssassin style, Robinson's smoothed per-token spam probability, the most
significant tokens of a message combined as log odds.

Why try it: SpamAssassin's trained Bayes classifier is what lifts its stock rules from 78% to 92%
of spam caught at its own false-positive point on our time split (``make bench-quality``);
it is a plain learner over *which* tokens a message contains (not how often), judged by the
tokens that say most. A column of the same kind beside the char n-gram logit would give the
ensemble's second stage that evidence. It reads only what both doors have (subject, body,
sender, link domains), so a JSON caller gets the same column as raw mail.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spam_serving.featurize import word_counts
from spam_serving.parsing import ParsedMessage

#: Robinson's strength of the prior (SpamBayes: 0.45) and its assumed probability
STRENGTH, PRIOR = 0.45, 0.5
#: the most significant tokens a message is judged by (SpamAssassin: 150)
MAX_TOKENS = 150
#: tokens whose probability is this close to 0.5 say nothing and are skipped
MIN_DISTANCE = 0.1
#: body characters read (as the featurizer's other text models)
MAX_CHARS = 20_000


def tokens(msg: ParsedMessage, max_chars: int = MAX_CHARS) -> set[str]:
    """The distinct tokens of a message: body and subject words, sender and link domains."""
    body, subject = word_counts(msg, max_chars)
    out = {"w:" + t for t in body}
    out.update("s:" + t for t in subject)
    if msg.sender_domain:
        out.add("from:" + msg.sender_domain)
    out.update("u:" + d for d in msg.url_domains.split())
    return out


class WordBayes:
    """Per-token log odds ``log(f / (1 - f))`` of Robinson's ``f(w)``; a message's logit is
    the sum over its ``MAX_TOKENS`` most significant known tokens."""

    def __init__(self, log_odds: dict[str, float]) -> None:
        self.log_odds = log_odds

    @classmethod
    def fit(cls, messages: Sequence[ParsedMessage], labels: Sequence[int]) -> WordBayes:
        y = np.asarray(labels).astype(int)
        n_spam, n_ham = int((y == 1).sum()), int((y == 0).sum())
        if n_spam == 0 or n_ham == 0:
            raise ValueError("token Bayes needs spam and ham to learn from")
        counts: dict[str, list[int]] = {}
        for msg, label in zip(messages, y, strict=True):
            for t in tokens(msg):
                counts.setdefault(t, [0, 0])[label] += 1
        log_odds = {}
        for t, (ham, spam) in counts.items():
            ps, ph = spam / n_spam, ham / n_ham
            p = ps / (ps + ph)
            n = ham + spam
            f = (STRENGTH * PRIOR + n * p) / (STRENGTH + n)
            if abs(f - 0.5) >= MIN_DISTANCE:
                log_odds[t] = float(np.log(f / (1.0 - f)))
        return cls(log_odds)

    def logit(self, msg: ParsedMessage) -> float:
        known = [v for t in tokens(msg) if (v := self.log_odds.get(t)) is not None]
        if len(known) > MAX_TOKENS:
            known.sort(key=abs, reverse=True)
            known = known[:MAX_TOKENS]
        return float(sum(known))

    def logits(self, messages: Sequence[ParsedMessage]) -> np.ndarray:
        return np.array([self.logit(m) for m in messages], dtype=np.float64)
