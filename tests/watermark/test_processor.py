from __future__ import annotations

import numpy as np
import pytest

from hydraguard.watermark.greenlist import green_mask
from hydraguard.watermark.keys import WatermarkKey
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.processor import WatermarkProcessor


def test_delta_is_added_to_exactly_the_green_logits(key: WatermarkKey) -> None:
    params = WatermarkParams(context_width=2, gamma=0.25, delta=3.0)
    scores = np.random.default_rng(0).normal(size=(2, 1_000)).astype(np.float32)
    input_ids = np.array([[1, 2, 3, 4], [9, 8, 7, 6]])
    biased = WatermarkProcessor(key, params).apply(input_ids, scores)
    green = green_mask(key, params.gamma, np.array([[3, 4], [7, 6]]), np.arange(1_000))
    assert biased.dtype == np.float32
    np.testing.assert_allclose(biased - scores, 3.0 * green, atol=1e-6)
    assert 0 < green.sum() < green.size


def test_one_row_gives_one_row(key: WatermarkKey, params: WatermarkParams) -> None:
    processor = WatermarkProcessor(key, params)
    scores = np.zeros(300)
    batch = processor.apply(np.array([[4, 5]]), scores[None, :])
    np.testing.assert_array_equal(processor.apply(np.array([4, 5]), scores), batch[0])


def test_no_bias_before_the_context_is_long_enough(key: WatermarkKey) -> None:
    processor = WatermarkProcessor(key, WatermarkParams(context_width=3))
    scores = np.ones(100, dtype=np.float32)
    np.testing.assert_array_equal(processor.apply(np.array([1, 2]), scores), scores)


def test_mismatched_shapes_are_refused(key: WatermarkKey, params: WatermarkParams) -> None:
    with pytest.raises(ValueError, match="do not match"):
        WatermarkProcessor(key, params).apply(np.array([[1], [2]]), np.zeros((3, 10)))
