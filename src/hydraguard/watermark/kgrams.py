"""The distinct (context, token) k-grams of a set of token sequences: each is scored once.

Repeated text (a looped template, a memorized answer) repeats k-grams whose green/red outcomes are not
independent draws; counting them again would inflate the score without adding evidence (Sander et al., NeurIPS
2024, "Watermarking Makes Language Models Radioactive"). De-duplicating across the whole set of texts keeps the
green count under the null hypothesis an exact Binomial(n, gamma).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hydraguard.watermark.greenlist import as_token_ids


def unique_kgrams(sequences: Iterable[object], context_width: int) -> tuple[np.ndarray, np.ndarray]:
    """(contexts (n, h), tokens (n,)) for the n distinct windows of h+1 consecutive ids over all sequences."""
    windows = [
        sliding_window_view(ids, context_width + 1)
        for ids in (as_token_ids(sequence, ndim=1, what="a token sequence") for sequence in sequences)
        if len(ids) > context_width
    ]
    if not windows:
        return np.empty((0, context_width), dtype=np.uint32), np.empty(0, dtype=np.uint32)
    distinct = np.unique(np.concatenate(windows), axis=0)
    return distinct[:, :context_width], distinct[:, context_width]
