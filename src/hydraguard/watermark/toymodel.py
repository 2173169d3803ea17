"""A toy language model for tests, benchmarks and demos: a bigram logit table over whole-word tokens.

Whole words only, so that decoding to text and re-tokenizing returns the same ids (WordPiece would otherwise
merge "##" pieces); the watermark is applied on the real token ids. `fit` trains a bigram student on a
teacher's outputs: the smallest model that can show watermark radioactivity.
"""

from __future__ import annotations

import numpy as np

from hydraguard.watermark.greenlist import green_mask
from hydraguard.watermark.keys import WatermarkKey
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.tokenizer import ModelTokenizer


def whole_word_ids(tokenizer: ModelTokenizer, count: int) -> np.ndarray:
    """`count` sorted token ids that decode to one word and re-tokenize to themselves."""
    words = sorted(
        (token_id for token, token_id in tokenizer.vocabulary().items() if token.isalpha() and token.islower()),
    )
    round_trip = [i for i in words if tokenizer.encode(tokenizer.decode([i])).tolist() == [i]]
    return np.asarray(round_trip[:count], dtype=np.int64)


class BigramModel:
    def __init__(self, token_ids: np.ndarray, logits: np.ndarray) -> None:
        self.token_ids = token_ids  # sorted real ids; row/column i of `logits` is token_ids[i]
        self.logits = logits.astype(np.float32)

    @classmethod
    def random(cls, token_ids: np.ndarray, *, seed: int, scale: float = 2.0) -> BigramModel:
        rng = np.random.default_rng(seed)
        return cls(token_ids, rng.normal(0.0, scale, size=(len(token_ids), len(token_ids))))

    @classmethod
    def fit(cls, token_ids: np.ndarray, sequences: np.ndarray, *, smoothing: float = 0.01) -> BigramModel:
        """A student: maximum-likelihood bigrams (add-`smoothing`) of the real-id sequences it is trained on."""
        indices = np.searchsorted(token_ids, sequences)
        counts = np.full((len(token_ids), len(token_ids)), smoothing)
        np.add.at(counts, (indices[:, :-1].ravel(), indices[:, 1:].ravel()), 1.0)
        return cls(token_ids, np.log(counts))

    def generate(
        self,
        batch: int,
        length: int,
        rng: np.random.Generator,
        watermark: tuple[WatermarkKey, WatermarkParams] | None = None,
    ) -> np.ndarray:
        """(batch, length) real token ids, sampled at temperature 1, watermarked with `watermark` if given."""
        picks = np.empty((batch, length), dtype=np.int64)
        picks[:, 0] = rng.integers(0, len(self.token_ids), size=batch)
        for step in range(1, length):
            logits = self.logits[picks[:, step - 1]]
            if watermark is not None and step >= watermark[1].context_width:
                key, params = watermark
                contexts = self.token_ids[picks[:, step - params.context_width : step]]
                logits = logits + params.delta * green_mask(key, params.gamma, contexts, self.token_ids)
            probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            uniforms = rng.random((batch, 1))
            picks[:, step] = np.minimum((probabilities.cumsum(axis=1) < uniforms).sum(axis=1), len(self.token_ids) - 1)
        return self.token_ids[picks]
