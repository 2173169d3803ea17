"""The watermark as a logits processor, in numpy: add delta to the logits of the green tokens."""

from __future__ import annotations

import numpy as np

from hydraguard.watermark.greenlist import as_token_ids, green_mask
from hydraguard.watermark.keys import WatermarkKey
from hydraguard.watermark.params import WatermarkParams


class WatermarkProcessor:
    """Biases next-token logits given the ids so far (prompt included); the adapters wrap this."""

    def __init__(self, key: WatermarkKey, params: WatermarkParams) -> None:
        self.key = key
        self.params = params

    def bias(self, input_ids: np.ndarray, vocab_size: int) -> np.ndarray:
        """(b, vocab_size) float32 additive bias for a batch of id rows (b, length) of equal length.

        Rows shorter than the context width get no bias: there is nothing to seed a green list with.
        """
        ids = as_token_ids(input_ids, ndim=2, what="input_ids")
        width = self.params.context_width
        if ids.shape[1] < width:
            return np.zeros((ids.shape[0], vocab_size), dtype=np.float32)
        vocabulary = np.arange(vocab_size, dtype=np.uint32)
        mask = green_mask(self.key, self.params.gamma, ids[:, ids.shape[1] - width :], vocabulary)
        return mask.astype(np.float32) * np.float32(self.params.delta)

    def apply(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Biased copy of `scores`: one row (length,) with (vocab,), or a batch (b, length) with (b, vocab)."""
        single = np.ndim(scores) == 1
        rows = np.atleast_2d(scores)
        ids = np.asarray(input_ids)
        ids = ids[None, :] if single else ids
        if ids.ndim != 2 or rows.ndim != 2 or ids.shape[0] != rows.shape[0]:
            raise ValueError(f"input_ids {np.shape(input_ids)} and scores {np.shape(scores)} do not match")
        biased = rows + self.bias(ids, rows.shape[1]).astype(rows.dtype, copy=False)
        return biased[0] if single else biased
