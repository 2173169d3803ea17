from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from hydraguard.watermark.detect import attribute, score, score_count, sidak
from hydraguard.watermark.greenlist import is_green
from hydraguard.watermark.keys import WatermarkKey, derive_key, derive_keys
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.toymodel import BigramModel
from tests.watermark.conftest import MASTER

ALPHA = 0.01


def _fpr_upper_bound(trials: int, rate: float) -> int:
    """Most false positives a detector at nominal `rate` shows in `trials` with 99.9% probability."""
    return int(binom.isf(0.001, trials, rate))


def test_the_p_value_is_the_exact_binomial_tail() -> None:
    assert score_count(4, 4, 0.25).p == pytest.approx(0.25**4)
    assert score_count(0, 10, 0.25).p == pytest.approx(1.0)
    result = score_count(40, 100, 0.25)
    assert result.z == pytest.approx((40 - 25) / math.sqrt(100 * 0.25 * 0.75))
    assert result.p == pytest.approx(binom.sf(39, 100, 0.25))


def test_nothing_to_score_is_no_evidence(key: WatermarkKey, params: WatermarkParams) -> None:
    assert score(key, params, [np.array([5]), np.array([], dtype=np.int64)]) == score_count(0, 0, 0.25)
    assert score_count(0, 0, 0.25).p == 1.0


def test_sidak_correction() -> None:
    assert sidak(0.03, 1) == pytest.approx(0.03)
    assert sidak(0.01, 1_000) == pytest.approx(1 - 0.99**1_000)
    assert sidak(1e-12, 1_000) == pytest.approx(1e-9, rel=1e-6)  # no cancellation for small p
    assert sidak(1.0, 5) == 1.0


def test_false_positive_rate_holds_its_nominal_rate_on_unwatermarked_text(
    key: WatermarkKey, params: WatermarkParams, toy_model: BigramModel
) -> None:
    sequences = toy_model.generate(1_000, 200, np.random.default_rng(11))
    p_values = np.array([score(key, params, [sequence]).p for sequence in sequences])
    assert (p_values < ALPHA).sum() <= _fpr_upper_bound(1_000, ALPHA)
    # and the test is not vacuous: p-values spread over (0, 1] rather than sitting at 1
    assert 0.3 < np.median(p_values) < 0.8


def test_watermarked_generations_are_detected(
    key: WatermarkKey, params: WatermarkParams, toy_model: BigramModel
) -> None:
    marked = toy_model.generate(100, 200, np.random.default_rng(12), watermark=(key, params))
    scores = [score(key, params, [sequence]) for sequence in marked]
    assert all(result.z > 4 for result in scores)
    assert all(result.p < 1e-6 for result in scores)
    # the same text carries no signal under another account's key
    other = derive_key(MASTER, "account", "acct-other")
    assert max(score(other, params, [sequence]).z for sequence in marked[:20]) < 4


def test_a_gentler_watermark_needs_more_text(toy_model: BigramModel, key: WatermarkKey) -> None:
    params = WatermarkParams(context_width=2, gamma=0.5, delta=0.5)
    marked = toy_model.generate(40, 200, np.random.default_rng(13), watermark=(key, params))
    one = [score(key, params, [sequence]).z for sequence in marked]
    pooled = score(key, params, list(marked))
    assert np.median(one) < 4 < pooled.z


def _naive_green_count(key: WatermarkKey, params: WatermarkParams, ids: np.ndarray) -> tuple[int, int]:
    h = params.context_width
    contexts = np.lib.stride_tricks.sliding_window_view(ids[:-1], h)
    return int(is_green(key, params.gamma, contexts, ids[h:]).sum()), len(ids) - h


def test_repeated_text_does_not_inflate_the_score(
    key: WatermarkKey, params: WatermarkParams, toy_model: BigramModel
) -> None:
    # an unwatermarked text that happens to lean green, repeated as a looping template would be
    candidates = toy_model.generate(100, 100, np.random.default_rng(14))
    leaning = next(ids for ids in candidates if 0.02 < score(key, params, [ids]).p < 0.1)
    once = score(key, params, [leaning])
    repeated = np.tile(leaning, 20)
    deduplicated = score(key, params, [repeated])
    assert deduplicated.scored <= once.scored + 1  # only the seam k-gram is new
    assert deduplicated.z == pytest.approx(once.z, abs=0.2)
    assert deduplicated.p > ALPHA
    # counting every position would have called it watermarked
    naive = score_count(*_naive_green_count(key, params, repeated), params.gamma)
    assert naive.p < 1e-6
    # the same text submitted several times counts once too
    assert score(key, params, [leaning] * 5) == once


def test_attribution_picks_the_right_account_among_1000(params: WatermarkParams, toy_model: BigramModel) -> None:
    ids = [f"acct-{n}" for n in range(1_000)]
    keys = derive_keys(MASTER, "account", ids)
    rng = np.random.default_rng(15)
    for culprit in (0, 537, 999):
        marked = toy_model.generate(1, 200, rng, watermark=(keys[culprit], params))
        result = attribute(keys, params, list(marked))
        assert result.scope == f"account:acct-{culprit}"
        assert result.keys_tested == 1_000
        assert result.corrected_p < 1e-6
        assert result.corrected_p >= result.score.p


def test_attribution_corrects_for_testing_1000_keys_on_unwatermarked_text(
    params: WatermarkParams, toy_model: BigramModel
) -> None:
    keys = derive_keys(MASTER, "account", [f"acct-{n}" for n in range(1_000)])
    texts = toy_model.generate(25, 200, np.random.default_rng(16))
    results = [attribute(keys, params, [text]) for text in texts]
    # the best of 1,000 keys almost always looks significant on its own...
    assert sum(result.score.p < ALPHA for result in results) >= 20
    # ...and the corrected p-value holds the nominal rate
    assert sum(result.corrected_p < ALPHA for result in results) <= _fpr_upper_bound(25, ALPHA)


def test_attribution_needs_keys(params: WatermarkParams) -> None:
    with pytest.raises(ValueError, match="no keys"):
        attribute([], params, [np.array([1, 2, 3])])
