"""Detection: the green count over distinct k-grams, its z-score and exact binomial p-value, for one or many keys.

Under the null hypothesis (the text does not depend on the key) each distinct k-gram is green with probability
gamma independently, so the green count G over n distinct k-grams is Binomial(n, gamma) and
p = P[Binomial(n, gamma) >= G] exactly (scipy's survival function; no normal approximation). The z-score
(G - gamma*n) / sqrt(n*gamma*(1-gamma)) of Kirchenbauer et al. is reported alongside for comparison with their
thresholds (e.g. z = 4).

Testing K keys and keeping the best one is a multiple test. For a text independent of all keys, the K green
counts are independent (independent keys give independent PRFs over the same k-grams), so the minimum p-value is
corrected exactly with Sidak's formula 1 - (1 - p_min)^K; the discrete binomial p-values are conservative, so the
corrected value still holds its nominal rate. (Bonferroni's K * p_min is never smaller and would also be valid.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hydraguard.watermark.greenlist import is_green
from hydraguard.watermark.keys import WatermarkKey
from hydraguard.watermark.kgrams import unique_kgrams
from hydraguard.watermark.params import WatermarkParams


@dataclass(frozen=True)
class Score:
    scored: int  # distinct k-grams tested
    green: int
    z: float
    p: float


@dataclass(frozen=True)
class Attribution:
    scope: str  # the key with the most green k-grams: the most likely account or cluster
    score: Score  # that key's own test
    corrected_p: float  # its p-value corrected for the number of keys tested
    keys_tested: int


def score_count(green: int, scored: int, gamma: float) -> Score:
    if scored == 0:  # nothing to test: no evidence either way
        return Score(scored=0, green=0, z=0.0, p=1.0)
    z = (green - gamma * scored) / math.sqrt(scored * gamma * (1.0 - gamma))
    from scipy.stats import binom  # imported here: scipy.stats costs half a second of every CLI start

    return Score(scored=scored, green=green, z=z, p=float(binom.sf(green - 1, scored, gamma)))


def sidak(p_min: float, tests: int) -> float:
    """P[min of `tests` independent p-values <= p_min] (computed without cancellation for small p)."""
    if tests < 1:
        raise ValueError("at least one test")
    return float(min(1.0, -math.expm1(tests * math.log1p(-p_min)))) if p_min < 1.0 else 1.0


def score(key: WatermarkKey, params: WatermarkParams, sequences: Iterable[object]) -> Score:
    """Test token-id sequences (from the generating model's tokenizer) against one key, k-grams de-duplicated."""
    contexts, tokens = unique_kgrams(sequences, params.context_width)
    green = int(is_green(key, params.gamma, contexts, tokens).sum())
    return score_count(green, len(tokens), params.gamma)


def attribute(keys: Sequence[WatermarkKey], params: WatermarkParams, sequences: Iterable[object]) -> Attribution:
    """Test the same distinct k-grams against every key; report the best key with its multiple-test correction."""
    if not keys:
        raise ValueError("no keys to test")
    contexts, tokens = unique_kgrams(sequences, params.context_width)
    counts = np.array([int(is_green(key, params.gamma, contexts, tokens).sum()) for key in keys])
    best = int(np.argmax(counts))
    best_score = score_count(int(counts[best]), len(tokens), params.gamma)
    return Attribution(
        scope=keys[best].scope,
        score=best_score,
        corrected_p=sidak(best_score.p, len(keys)),
        keys_tested=len(keys),
    )
