"""Which tokens are green: a keyed PRF of (previous h token ids, token id), compared with gamma * 2^64.

Kirchenbauer et al. seed a random permutation of the vocabulary with a hash of the context and take its first
gamma*V entries. We use the standard efficient variant: token t is green after context c when
    u(c, t) = SplitMix64_{t+1}(BLAKE2b_key(c)) < gamma * 2^64
i.e. the context is hashed once with keyed BLAKE2b (a cryptographic PRF: learning the green lists of one context
reveals nothing about the key or about other contexts), and each token id draws the (t+1)-th output of the
SplitMix64 generator seeded with that value (a bijective 64-bit mixer, vectorized in numpy). Testing one
(context, token) pair costs one hash and a few integer operations, without materializing a permutation, and the
green list does not depend on the vocabulary size (padded logit rows are handled for free). Each token is green
independently with probability gamma, so the green list holds gamma*V tokens in expectation rather than exactly;
the detector's null distribution (Binomial(n, gamma) over distinct k-grams) is exact either way.
"""

from __future__ import annotations

import hashlib

import numpy as np

from hydraguard.watermark.keys import WatermarkKey

_PERSON = b"hg-wm-context"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_MAX_TOKEN_ID = 2**32 - 1


def as_token_ids(values: object, *, ndim: int, what: str) -> np.ndarray:
    """Token ids as a uint32 array, refusing floats, negatives and ids that do not fit 32 bits."""
    array = np.asarray(values)
    if array.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-dimensional, got shape {array.shape}")
    if array.size == 0:
        return array.astype(np.uint32)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be integer token ids, got dtype {array.dtype}")
    if array.min() < 0 or array.max() > _MAX_TOKEN_ID:
        raise ValueError(f"{what} must be token ids in [0, 2^32), got values in [{array.min()}, {array.max()}]")
    return array.astype(np.uint32)


def green_threshold(gamma: float) -> np.uint64:
    return np.uint64(int(gamma * 2.0**64))


def context_seeds(key: WatermarkKey, contexts: np.ndarray) -> np.ndarray:
    """One 64-bit keyed BLAKE2b value per row of `contexts` (n, h)."""
    rows = np.ascontiguousarray(as_token_ids(contexts, ndim=2, what="contexts"), dtype="<u4")
    width = rows.shape[1] * 4
    data = memoryview(rows.tobytes())
    base = hashlib.blake2b(key=key.secret, digest_size=8, person=_PERSON)
    digests = bytearray()
    for start in range(0, len(data), width):
        hasher = base.copy()
        hasher.update(data[start : start + width])
        digests += hasher.digest()
    return np.frombuffer(bytes(digests), dtype="<u8").astype(np.uint64)


def token_draws(seeds: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """SplitMix64's (token+1)-th output for each seed; broadcasts like `seeds + tokens`."""
    z = seeds + (tokens.astype(np.uint64) + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def is_green(key: WatermarkKey, gamma: float, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Green or not, for each pair (contexts[i], tokens[i])."""
    tokens = as_token_ids(tokens, ndim=1, what="tokens")
    if len(tokens) != len(contexts):
        raise ValueError(f"{len(contexts)} contexts but {len(tokens)} tokens")
    return token_draws(context_seeds(key, contexts), tokens) < green_threshold(gamma)


def green_mask(key: WatermarkKey, gamma: float, contexts: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(b, m) booleans: whether each of m candidate token ids is green after each of the b contexts."""
    seeds = context_seeds(key, contexts)
    candidates = as_token_ids(candidates, ndim=1, what="candidates")
    return token_draws(seeds[:, None], candidates[None, :]) < green_threshold(gamma)
