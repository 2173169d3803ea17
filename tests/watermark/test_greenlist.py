from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from hydraguard.watermark.greenlist import green_mask, is_green
from hydraguard.watermark.keys import WatermarkKey, derive_key
from tests.watermark.conftest import MASTER


def _within_binomial_bounds(hits: int, trials: int, rate: float) -> bool:
    low, high = binom.interval(0.999, trials, rate)
    return low <= hits <= high


def test_the_green_fraction_is_gamma(key: WatermarkKey) -> None:
    contexts = np.arange(200)[:, None]
    for gamma in (0.1, 0.25, 0.5, 0.9):
        mask = green_mask(key, gamma, contexts, np.arange(1_000))
        assert _within_binomial_bounds(int(mask.sum()), mask.size, gamma)


def test_one_pair_test_agrees_with_the_whole_green_list(key: WatermarkKey) -> None:
    rng = np.random.default_rng(1)
    contexts = rng.integers(0, 30_000, size=(50, 2))
    mask = green_mask(key, 0.25, contexts, np.arange(30_000))
    tokens = rng.integers(0, 30_000, size=50)
    assert (is_green(key, 0.25, contexts, tokens) == mask[np.arange(50), tokens]).all()


def test_green_lists_depend_on_key_context_and_order_but_not_on_vocabulary_size(key: WatermarkKey) -> None:
    vocabulary = np.arange(20_000)
    base = green_mask(key, 0.5, np.array([[5, 9]]), vocabulary)[0]
    assert (base == green_mask(key, 0.5, np.array([[5, 9]]), vocabulary)[0]).all()
    other_key = derive_key(MASTER, "account", "someone-else")
    for changed in (
        green_mask(other_key, 0.5, np.array([[5, 9]]), vocabulary)[0],
        green_mask(key, 0.5, np.array([[9, 5]]), vocabulary)[0],
        green_mask(key, 0.5, np.array([[5, 10]]), vocabulary)[0],
    ):
        # independent lists at gamma = 0.5 agree on about half the tokens
        assert _within_binomial_bounds(int((changed == base).sum()), len(vocabulary), 0.5)
    assert (green_mask(key, 0.5, np.array([[5, 9]]), vocabulary[:500])[0] == base[:500]).all()


@pytest.mark.parametrize(
    ("tokens", "message"),
    [(np.array([1.5]), "integer"), (np.array([-1]), r"\[0, 2\^32\)"), (np.array([2**32]), r"\[0, 2\^32\)")],
)
def test_invalid_token_ids_are_refused(key: WatermarkKey, tokens: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        is_green(key, 0.25, np.array([[1]]), tokens)


def test_mismatched_lengths_are_refused(key: WatermarkKey) -> None:
    with pytest.raises(ValueError, match="2 contexts but 1 tokens"):
        is_green(key, 0.25, np.array([[1], [2]]), np.array([3]))
